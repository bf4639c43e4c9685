"""Shared fixtures; asserts which codec implementation this run exercises."""

from __future__ import annotations

import os

import pytest

import streamlog
from streamlog import _ext
from streamlog.backends.local import codec as _codec


def pytest_report_header(config):
    return f"streamlog codec: {'Cython extension' if _codec.NATIVE else 'Python reference'}"


# The codec is the extension unless STREAMLOG_NO_EXTENSIONS=1 asks for the
# reference; a run must never exercise a different one than it says.
if os.environ.get("STREAMLOG_NO_EXTENSIONS") == "1":
    assert not _codec.NATIVE and _codec.encode_record.__module__ == "streamlog.backends.local.codec"
else:
    assert _codec.NATIVE and _codec.encode_record is _ext.encode_record


@pytest.fixture
def store(tmp_path):
    """An open store in a fresh directory, closed after the test."""
    log = streamlog.open(tmp_path / "store")
    yield log
    log.close()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory):
    """One JetStream node on free ports for the whole session (the JetStream tests and
    the conformance suite on JetStream share it; each test uses its own store name)."""
    from streamlog.backends.jetstream.server import NatsServer

    server = NatsServer.start_single(tmp_path_factory.mktemp("nats-single"))
    yield server
    server.stop()
