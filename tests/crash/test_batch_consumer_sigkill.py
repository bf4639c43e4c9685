"""A columnar consumer (``poll_batch``) killed with SIGKILL before its ``ack_batch``: the
batch's records come back to another consumer after ack_wait_s (not before), with
delivery_count 2; a batch it acked before the kill stays acked."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

import streamlog


@pytest.fixture(autouse=True)
def _small_segments(monkeypatch):
    """1 MiB segments: the default 64 MiB preallocation would dominate the run time."""
    monkeypatch.setattr(streamlog.backends.local.log, "DEFAULT_SEGMENT_BYTES", 1 << 20)


CTX = mp.get_context("spawn")
ACK_WAIT_S = 0.6


def _batch_and_hang(path: str, ready) -> None:
    """Child: ack one batch of 3, lease a second batch of 4, then hang until killed."""
    log = streamlog.open(path)
    g = log.topic("jobs").group("w", ack_wait_s=ACK_WAIT_S, consumer="doomed")
    done = g.poll_batch(3, timeout=5)
    assert list(g.ack_batch(done)) == [True] * 3
    held = g.poll_batch(4, timeout=5)
    assert len(held) == 4
    ready.set()
    time.sleep(600)


def test_killed_batch_consumer_records_come_back_after_ack_wait(tmp_path):
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        log.topic("jobs", partitions=1).append_many([b"%d" % i for i in range(10)])
        log.topic("jobs").group("w", ack_wait_s=ACK_WAIT_S)
    started = time.monotonic()
    ready = CTX.Event()
    p = CTX.Process(target=_batch_and_hang, args=(path, ready))
    p.start()
    assert ready.wait(60)
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert p.exitcode == -signal.SIGKILL
    with streamlog.open(path) as log:
        g = log.topic("jobs").group("w", ack_wait_s=ACK_WAIT_S, consumer="survivor")
        got: dict[int, int] = {}
        deadline = time.monotonic() + 20
        while len(got) < 7 and time.monotonic() < deadline:
            b = g.poll_batch(100, timeout=0.5)
            if not len(b):
                continue
            if any(b.delivery_counts == 2):  # the dead one's leases: only after ack_wait_s
                assert time.monotonic() - started >= ACK_WAIT_S - 0.05
            got.update(zip(b.offsets.tolist(), b.delivery_counts.tolist(), strict=True))
            assert all(g.ack_batch(b))
        assert got == {3: 2, 4: 2, 5: 2, 6: 2, 7: 1, 8: 1, 9: 1}
        assert g.lag() == 0
