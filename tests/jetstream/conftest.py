"""Real nats-server processes for the JetStream tests: a 3-node cluster per module and a
fresh store name per test, so tests share servers safely (the single node of the
session is ``nats_server`` in tests/conftest.py)."""

from __future__ import annotations

import itertools
import os

import pytest

from streamlog.backends.jetstream._client import Connection
from streamlog.backends.jetstream.server import JetStreamCluster

_store_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory):
    """Three routed JetStream nodes, healthy with a meta leader, for one test module."""
    cluster = JetStreamCluster(tmp_path_factory.mktemp("nats-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def store_name(request):
    """A store name no other test of this run (or a parallel run) uses."""
    return f"t{os.getpid()}-{next(_store_numbers)}"


@pytest.fixture
def js_url(nats_server, store_name):
    """A ``nats://127.0.0.1:PORT/STORE`` URL on the session's single node."""
    return f"{nats_server.client_url}/{store_name}"


@pytest.fixture
def conn(js_url):
    """An open Connection to the single node, closed after the test."""
    c = Connection(js_url)
    yield c
    c.close()
