"""Shared groups across real processes: work is split, each record acked once, polls wake
on appends made by other processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import pytest

import streamlog


@pytest.fixture(autouse=True)
def _small_segments(monkeypatch):
    """Topics these tests create get 1 MiB segments: segments are preallocated, and the
    default 64 MiB per partition would dominate the run time of tests about groups."""
    monkeypatch.setattr(streamlog.backends.local.log, "DEFAULT_SEGMENT_BYTES", 1 << 20)

CTX = mp.get_context("spawn")


def _consume(path: str, idx: int, turn, after, start, out) -> None:
    """Child: one consumer of group "w"; reports every offset it acked. Its first poll
    comes at its ``turn`` (the others' leases are live then), the rest after ``start``."""
    with streamlog.open(path) as log:
        g = log.topic("jobs").group("w", consumer=f"c{idx}")
        out.put(("ready", idx))
        turn.wait()
        msgs = g.poll(max_records=50, timeout=0)
        out.put(("first", idx, len(msgs)))
        after.set()
        start.wait()
        acked = []
        idle = 0
        while idle < 3:
            if not msgs:
                msgs = g.poll(max_records=50, timeout=0.2)
                if not msgs:
                    idle += 1 if g.lag() == 0 else 0
                    continue
            idle = 0
            time.sleep(0.002)  # "processing": lets the other consumers take their share
            for m, ok in zip(msgs, g.ack(msgs), strict=True):
                assert ok and m.delivery_count == 1
                acked.append(m.offset)
            msgs = []
        out.put((idx, acked))


def test_three_processes_share_a_group_each_record_acked_once(tmp_path):
    """3 consumer processes of one shared group on a 1-partition topic ack 3,000 records:
    every record exactly once between them; a consumer polling while the others hold
    leases gets records they do not hold."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        log.topic("jobs").append_many([b"%d" % i for i in range(3000)])
        log.topic("jobs").group("w")
    n = 3
    turns, afters = [CTX.Event() for _ in range(n)], [CTX.Event() for _ in range(n)]
    start, out = CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=_consume, args=(path, i, turns[i], afters[i], start, out),
                         daemon=True)  # a failed assert here must not leave them waiting
             for i in range(n)]
    for p in procs:
        p.start()
    assert sorted(out.get(timeout=120) for _ in procs) == [("ready", i) for i in range(n)]
    for i in range(n):  # one poll each, in turn: every consumer gets work by the guarantee
        turns[i].set()
        assert afters[i].wait(120)
        assert out.get(timeout=120) == ("first", i, 50)
    start.set()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    all_offsets = [o for offs in results.values() for o in offs]
    assert sorted(all_offsets) == list(range(3000))
    with streamlog.open(path) as log:
        assert log.topic("jobs").group("w").lag() == 0


def _blocked_poll(path: str, ready, out) -> None:
    """Child: block in poll until the parent appends; report what arrived."""
    with streamlog.open(path) as log:
        g = log.topic("jobs").group("w")
        g.poll(1, timeout=0)  # joined and warmed up
        ready.set()
        msgs = g.poll(1, timeout=3600)
        out.put([m.value for m in msgs])


def _waiters(path: str) -> int:
    """Processes waiting on the topic's wake-up word (bytes 4-7 of its notify file)."""
    with open(os.path.join(path, "topics", "jobs", "notify"), "rb") as f:
        return int.from_bytes(f.read(8)[4:8], "little")


def test_blocked_poll_wakes_when_another_process_appends(tmp_path):
    """A poll blocked in one process (timeout: an hour) returns when another process
    appends."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        log.topic("jobs").group("w")
    ready, out = CTX.Event(), CTX.Queue()
    p = CTX.Process(target=_blocked_poll, args=(path, ready, out), daemon=True)
    p.start()
    assert ready.wait(60)
    deadline = time.monotonic() + 60
    while _waiters(path) == 0:  # the child sleeps in its poll now
        assert time.monotonic() < deadline, "the child never waited"
        time.sleep(0.005)
    with streamlog.open(path) as log:
        log.topic("jobs").append(b"wake up")
    assert out.get(timeout=120) == [b"wake up"]  # woken by the append: not after an hour
    p.join(10)


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
