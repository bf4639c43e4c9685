"""msg_id dedupe when the appending process is SIGKILLed mid-way and the work is retried."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from collections import Counter

import pytest

import streamlog


@pytest.fixture(autouse=True)
def _small_segments(monkeypatch):
    """Topics these tests create get 1 MiB segments: segments are preallocated, and the
    default 64 MiB per partition would dominate the run time of tests about groups."""
    monkeypatch.setattr(streamlog.backends.local.log, "DEFAULT_SEGMENT_BYTES", 1 << 20)

CTX = mp.get_context("spawn")
IDS = [f"evt-{i}" for i in range(2000)]


def _append_all(path: str, started) -> None:
    with streamlog.open(path) as log:
        t = log.topic("events")
        started.set()
        for mid in IDS:
            t.append(b"payload", msg_id=mid)


def test_retry_after_sigkill_writes_each_id_once(tmp_path):
    """A producer killed at arbitrary points while appending with msg_ids, then the whole
    batch retried (twice, as an at-least-once producer would): every id is in the log
    exactly once."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        log.topic("events", partitions=2)
    rng = random.Random(5)
    for _ in range(3):
        started = CTX.Event()
        p = CTX.Process(target=_append_all, args=(path, started))
        p.start()
        assert started.wait(60)
        time.sleep(rng.uniform(0.01, 0.2))
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
    for _ in range(2):  # the retries, in this process
        with streamlog.open(path) as log:
            t = log.topic("events")
            for mid in IDS:
                t.append(b"payload", msg_id=mid)
    with streamlog.open(path) as log:
        t = log.topic("events")
        seen = Counter(r.headers["sl-msg-id"].decode() for p in range(2) for r in t.read(p))
    assert sorted(seen) == sorted(IDS)
    assert set(seen.values()) == {1}
