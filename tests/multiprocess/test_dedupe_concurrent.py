"""msg_id dedupe across real processes appending the same ids at the same time."""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter

import pytest

import streamlog


@pytest.fixture(autouse=True)
def _small_segments(monkeypatch):
    """Topics these tests create get 1 MiB segments: segments are preallocated, and the
    default 64 MiB per partition would dominate the run time of tests about groups."""
    monkeypatch.setattr(streamlog.backends.local.log, "DEFAULT_SEGMENT_BYTES", 1 << 20)

CTX = mp.get_context("spawn")
IDS = [f"msg-{i}" for i in range(300)]


def _producer(path: str, idx: int, start, out) -> None:
    with streamlog.open(path) as log:
        t = log.topic("orders")
        start.wait()
        out.put((idx, [tuple(t.append(b"from %d" % idx, msg_id=m)) for m in IDS]))


def test_two_processes_appending_the_same_ids_write_each_once(tmp_path):
    """Two processes append the same 300 msg_ids concurrently: each id is in the log once,
    and both processes were told the same position for it."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        log.topic("orders", partitions=3)
    start, out = CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=_producer, args=(path, i, start, out)) for i in range(2)]
    for p in procs:
        p.start()
    start.set()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert results[0] == results[1]
    with streamlog.open(path) as log:
        t = log.topic("orders")
        ids = Counter(r.headers["sl-msg-id"].decode() for p in range(3) for r in t.read(p))
        assert sorted(ids) == sorted(IDS) and set(ids.values()) == {1}
        for mid, pos in zip(IDS, results[0], strict=True):
            assert t.get(*pos).headers["sl-msg-id"] == mid.encode()
