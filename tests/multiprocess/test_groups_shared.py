"""Shared groups across real processes: work is split, each record acked once, polls wake
on appends made by other processes."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

import streamlog


@pytest.fixture(autouse=True)
def _small_segments(monkeypatch):
    """Topics these tests create get 1 MiB segments: segments are preallocated, and the
    default 64 MiB per partition would dominate the run time of tests about groups."""
    monkeypatch.setattr(streamlog._log, "DEFAULT_SEGMENT_BYTES", 1 << 20)

CTX = mp.get_context("spawn")


def _consume(path: str, idx: int, start, out) -> None:
    """Child: one consumer of group "w"; reports every offset it acked."""
    with streamlog.open(path) as log:
        g = log.topic("jobs").group("w", consumer=f"c{idx}")
        out.put(("ready", idx))
        start.wait()
        acked = []
        idle = 0
        while idle < 3:
            msgs = g.poll(max_records=50, timeout=0.2)
            if not msgs:
                idle += 1 if g.lag() == 0 else 0
                continue
            idle = 0
            time.sleep(0.002)  # "processing": lets the other consumers take their share
            for m, ok in zip(msgs, g.ack(msgs), strict=True):
                assert ok and m.delivery_count == 1
                acked.append(m.offset)
        out.put((idx, acked))


def test_three_processes_share_a_group_each_record_acked_once(tmp_path):
    """3 consumer processes of one shared group on a 1-partition topic ack 3,000 records:
    every record exactly once between them, and every process got work."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        log.topic("jobs").append_many([b"%d" % i for i in range(3000)])
        log.topic("jobs").group("w")
    start, out = CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=_consume, args=(path, i, start, out)) for i in range(3)]
    for p in procs:
        p.start()
    assert sorted(out.get(timeout=120) for _ in procs) == [("ready", i) for i in range(len(procs))]
    start.set()  # every consumer has joined: they start together
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    all_offsets = [o for offs in results.values() for o in offs]
    assert sorted(all_offsets) == list(range(3000))
    assert all(len(offs) > 0 for offs in results.values()), {
        k: len(v) for k, v in results.items()}
    with streamlog.open(path) as log:
        assert log.topic("jobs").group("w").lag() == 0


def _blocked_poll(path: str, ready, out) -> None:
    """Child: block in poll until the parent appends; report what arrived and when."""
    with streamlog.open(path) as log:
        g = log.topic("jobs").group("w")
        g.poll(1, timeout=0)  # joined and warmed up
        ready.set()
        msgs = g.poll(1, timeout=20)
        got = time.time_ns()
        out.put(([m.value for m in msgs], got))


def test_blocked_poll_wakes_when_another_process_appends(tmp_path):
    """A poll blocked in one process returns promptly (far inside its 20 s timeout) when
    another process appends."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        log.topic("jobs").group("w")
    ready, out = CTX.Event(), CTX.Queue()
    p = CTX.Process(target=_blocked_poll, args=(path, ready, out))
    p.start()
    assert ready.wait(60)
    time.sleep(0.2)  # let the child reach its wait
    with streamlog.open(path) as log:
        sent = time.time_ns()
        log.topic("jobs").append(b"wake up")
    values, got = out.get(timeout=30)
    p.join(10)
    assert values == [b"wake up"]
    assert (got - sent) / 1e9 < 10  # woken by the append, not by the 20 s timeout


def _ack_after_restart(path: str, out) -> None:
    with streamlog.open(path) as log:
        g = log.topic("jobs").group("w", ack_wait_s=60, consumer="worker")
        msgs = g.poll(10, timeout=0)
        out.put([(m.offset, m.delivery_count) for m in msgs])
        g.ack(msgs)


def test_leases_and_acks_are_seen_by_other_processes(tmp_path):
    """Acks made in this process and leases it holds are seen by a consumer in another
    process, which reclaims its own name's leases at once."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        t = log.topic("jobs")
        t.append_many([b"x"] * 6)
        g = t.group("w", ack_wait_s=60, consumer="worker")
        msgs = g.poll(4, timeout=0)
        g.ack(msgs[:2])
        out = CTX.Queue()
        p = CTX.Process(target=_ack_after_restart, args=(path, out))
        p.start()
        got = out.get(timeout=60)
        p.join(30)
        assert got == [(2, 2), (3, 2), (4, 1), (5, 1)]
        assert g.lag() == 0
        assert msgs[2].ack() is False  # acked by the other process already
