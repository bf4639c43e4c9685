"""Threads of one process sharing a Topic: appenders and followers race through rolls and
retention without a lost, doubled, torn or misplaced record."""

from __future__ import annotations

import random
import threading
import time

import streamlog
from streamlog import Retention
from tests.strategies import parse_value, record_value


def _run(threads):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # surfaced below
                errors.append(e)
        return run

    ts = [threading.Thread(target=wrap(fn), name=getattr(fn, "__name__", "worker"))
          for fn in threads]
    for t in ts:
        t.start()
    deadline = time.monotonic() + 120
    for t in ts:
        t.join(max(0.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    hung = [t.name for t in ts if t.is_alive()]
    assert not hung, f"threads hung: {hung}"


def test_appender_and_follower_threads_race_through_rolls(store):
    """4 appending threads and 2 following threads on a topic with 2 KiB segments: every
    follower sees each partition's records in offset order, whole, exactly once each."""
    t = store.topic("t", partitions=2, segment_bytes=2048)
    per_writer = 400
    total = 4 * per_writer
    done = threading.Event()

    def writer(w):
        def run():
            rnd = random.Random(w)
            seq = 0
            while seq < per_writer:
                if rnd.random() < 0.2:
                    n = min(rnd.randint(2, 6), per_writer - seq)
                    t.append_many([record_value(w, seq + i, rnd.randint(0, 300))
                                   for i in range(n)], keys=[b"w%d" % w] * n)
                    seq += n
                else:
                    t.append(record_value(w, seq, rnd.randint(0, 300)), key=b"w%d" % w)
                    seq += 1
        return run

    seen_by = [[], []]

    def follower(i):
        def run():
            got: dict[int, list] = {0: [], 1: []}
            while True:
                finished = done.is_set()
                for p in (0, 1):
                    for r in t.read(p, len(got[p])):
                        assert r.offset == len(got[p])
                        got[p].append(parse_value(r.value))
                if finished:
                    break
                time.sleep(0.001)  # let the writers have the GIL between passes
            seen_by[i] = got[0] + got[1]
        return run

    writers = [writer(w) for w in range(4)]

    def writers_then_done():
        try:
            _run(writers)
        finally:
            done.set()  # the followers stop even if a writer failed

    _run([writers_then_done, follower(0), follower(1)])
    for seen in seen_by:
        assert sorted(seen) == [(w, s) for w in range(4) for s in range(per_writer)]
    assert sum(t.end_offset(p) for p in (0, 1)) == total
    assert store.verify() == []


def test_retention_while_threads_read(tmp_path):
    """Readers iterating while appends roll and retention deletes segments under them get
    records in order from wherever the start moved to, never an error or a gap."""
    log = streamlog.open(tmp_path / "s", durability="never")
    t = log.topic("t", segment_bytes=1024, retention=Retention(max_bytes=4096))
    stop = threading.Event()
    n = 800

    def appender():
        try:
            for i in range(n):
                t.append(record_value(0, i, 60))
        finally:
            stop.set()

    def reader():
        while not stop.is_set():
            prev = None
            for r in t.read(0, 0):
                w, seq = parse_value(r.value)
                assert seq == r.offset
                if prev is not None and r.offset != prev + 1:
                    # overtaken by retention: it jumped to the start, skipping only
                    # records that are gone
                    assert r.offset > prev and t.start_offset(0) >= r.offset
                prev = r.offset
            time.sleep(0.001)  # let the appender have the GIL between passes

    try:
        _run([appender, reader, reader])
        assert t.end_offset(0) == n and t.start_offset(0) > 0
        assert [parse_value(r.value)[1] for r in t.read(0)] == list(range(t.start_offset(0), n))
    finally:
        log.close()


def test_concurrent_topic_handles_and_reopen(tmp_path):
    """Threads opening handles on the same topics while others append: one partition set per
    Log, dense offsets, and a new Log on the same directory sees everything."""
    path = tmp_path / "s"
    with streamlog.open(path) as log:
        def worker(w):
            def run():
                for i in range(200):
                    log.topic(f"t{i % 3}", partitions=3).append(record_value(w, i, 10))
            return run
        _run([worker(w) for w in range(4)])
        parts = {id(p) for name in ("t0", "t1", "t2") for p in log.topic(name)._parts}
        assert len(parts) == 9
    with streamlog.open(path) as log:
        n = 0
        for name in ("t0", "t1", "t2"):
            t = log.topic(name)
            for p in range(3):
                recs = list(t.read(p))
                assert [r.offset for r in recs] == list(range(len(recs)))
                n += len(recs)
        assert n == 800
