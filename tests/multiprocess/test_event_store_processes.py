"""The event store shared by processes: expected-version races, live subscriptions
across a process boundary, and an appender killed before its index reached LMDB."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import streamlog
from streamlog import WrongExpectedVersion

CTX = mp.get_context("spawn")


def _race(path, rounds, barrier, out):
    wins = 0
    with streamlog.open(path) as log:
        es = log.event_store("race")
        for r in range(rounds):
            barrier.wait(60)
            try:
                es.append("s", [b"%d:%d" % (os.getpid(), r)], expected_version=r)
                wins += 1
            except WrongExpectedVersion:
                pass
            barrier.wait(60)
    out.put(wins)


def test_processes_racing_on_one_expected_version(tmp_path):
    """Three processes append at the same expected version in each round: exactly one
    wins every round, and the stream's versions stay dense."""
    path = str(tmp_path / "s")
    rounds, workers = 25, 3
    with streamlog.open(path) as log:
        log.event_store("race").append("s", [b"start"], expected_version=streamlog.NO_STREAM)
    barrier = CTX.Barrier(workers)
    out = CTX.Queue()
    procs = [CTX.Process(target=_race, args=(path, rounds, barrier, out))
             for _ in range(workers)]
    for p in procs:
        p.start()
    wins = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sum(wins) == rounds
    with streamlog.open(path) as log:
        events = log.event_store("race").read("s")
    assert [e.version for e in events] == list(range(rounds + 1))


def _append_any(path, n, tag, barrier):
    with streamlog.open(path) as log:
        es = log.event_store("many")
        barrier.wait(60)
        for i in range(n):
            es.append("shared", [b"%s-%d" % (tag, i)])
            es.append(f"own-{tag.decode()}", [b"%d" % i])


def test_processes_appending_with_any(tmp_path):
    """Two processes appending to one stream without a check: every event once, dense
    versions, each process's events in its own order; the index agrees with the log."""
    path = str(tmp_path / "s")
    n = 1200  # more than one index write-back per process
    barrier = CTX.Barrier(2)
    procs = [CTX.Process(target=_append_any, args=(path, n, tag, barrier))
             for tag in (b"a", b"b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with streamlog.open(path) as log:
        es = log.event_store("many")
        events = es.read("shared")
        assert [e.version for e in events] == list(range(2 * n))
        for tag in (b"a", b"b"):
            mine = [e.value for e in events if e.value.startswith(tag + b"-")]
            assert mine == [b"%s-%d" % (tag, i) for i in range(n)]
            assert len(es.read(f"own-{tag.decode()}")) == n
        assert es.last_version("shared") == 2 * n - 1
        assert [e.position for e in es.read_all()] == list(range(4 * n))


def _append_later(path, start_event, n):
    assert start_event.wait(60)
    with streamlog.open(path) as log:
        es = log.event_store("live")
        for i in range(n):
            es.append(f"s{i % 2}", [b"live-%d" % i])


def test_subscription_receives_events_from_another_process(tmp_path):
    """A subscription catches up on stored events, then receives, as they are
    committed, the events another process appends."""
    path = str(tmp_path / "s")
    start = CTX.Event()
    n = 50
    proc = CTX.Process(target=_append_later, args=(path, start, n))
    with streamlog.open(path) as log:
        es = log.event_store("live")
        es.append("s0", [b"old-0", b"old-1"])
        proc.start()
        got = []
        with es.subscribe(timeout=60) as sub:
            for e in sub:
                got.append(e.value)
                if len(got) == 2:
                    start.set()  # caught up: now the other process appends
                if len(got) == 2 + n:
                    break
        proc.join(60)
        assert proc.exitcode == 0
    assert got == [b"old-0", b"old-1"] + [b"live-%d" % i for i in range(n)]


def _append_and_die(path, n):
    log = streamlog.open(path)
    es = log.event_store("crash")
    v = es.last_version("s")
    for i in range(n):
        v = es.append("s", [b"%d" % i], expected_version=v)
        es.append(f"other-{i % 3}", [b"o"])
    os.kill(os.getpid(), signal.SIGKILL)  # no close: the index never reaches LMDB


def test_appender_killed_before_its_index_was_written(tmp_path):
    """An appender SIGKILLed with its index only in memory loses nothing: the next
    process rebuilds the index from the log and checks versions against it."""
    path = str(tmp_path / "s")
    n = 300
    proc = CTX.Process(target=_append_and_die, args=(path, n))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    with streamlog.open(path) as log:
        es = log.event_store("crash")
        assert es.last_version("s") == n - 1
        assert [e.value for e in es.read("s")] == [b"%d" % i for i in range(n)]
        try:
            es.append("s", [b"stale"], expected_version=n - 2)
            raise AssertionError("a stale expected version was accepted")
        except WrongExpectedVersion as e:
            assert e.actual == n - 1
        assert es.append("s", [b"next"], expected_version=n - 1) == n
        assert len(es.read("other-0")) == 100
