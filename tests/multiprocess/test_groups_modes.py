"""key_shared and exclusive groups across real processes: one holder per key with per-key
order, one owner per partition with in-order delivery, stale owners refused."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import defaultdict

import pytest

import streamlog
from streamlog.backends.local import codec as _codec


@pytest.fixture(autouse=True)
def _small_segments(monkeypatch):
    """Topics these tests create get 1 MiB segments: segments are preallocated, and the
    default 64 MiB per partition would dominate the run time of tests about groups."""
    monkeypatch.setattr(streamlog.backends.local.log, "DEFAULT_SEGMENT_BYTES", 1 << 20)

CTX = mp.get_context("spawn")
KEYS = [b"k%02d" % i for i in range(12)]


def _key_worker(path: str, idx: int, turn, after, start, out) -> None:
    """Child: a key_shared consumer recording when it held each record.

    First a coordinated round: it polls when its ``turn`` comes, while the
    consumers before it still hold what they got, and reports the keys it
    got; then, after ``start``, it consumes freely with the others.
    """
    with streamlog.open(path) as log:
        g = log.topic("orders").group("ks", mode="key_shared", consumer=f"c{idx}")
        out.put(("ready", idx))
        turn.wait()
        first = g.poll(max_records=4, timeout=0)
        got = time.monotonic()
        out.put(("first", idx, sorted({m.key for m in first})))
        after.set()
        start.wait()
        spans = []
        msgs = first
        idle = 0
        while idle < 3:
            if not msgs:
                msgs = g.poll(max_records=8, timeout=0.2)
                if not msgs:
                    idle += 1 if g.lag() == 0 else 0
                    continue
                got = time.monotonic()
            idle = 0
            time.sleep(0.003)  # processing: the keys are held meanwhile
            done = time.monotonic()
            results = g.ack(msgs)
            assert all(results)
            spans.extend((m.key, m.offset, got, done) for m in msgs)
            msgs = []
        out.put((idx, spans))


def test_key_shared_one_holder_per_key_and_per_key_order(tmp_path):
    """3 processes in a key_shared group: no key is ever held by two consumers at once,
    each key's records are processed in append order, each record once; a consumer that
    polls while the others hold keys gets records of the keys they do not hold."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        t = log.topic("orders")
        t.append_many([b"%d" % i for i in range(600)], keys=[KEYS[i % 12] for i in range(600)])
        t.group("ks", mode="key_shared")
    n = 3
    turns, afters = [CTX.Event() for _ in range(n)], [CTX.Event() for _ in range(n)]
    start, out = CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=_key_worker, args=(path, i, turns[i], afters[i], start, out),
                         daemon=True)  # a failed assert here must not leave them waiting
             for i in range(n)]
    for p in procs:
        p.start()
    assert sorted(out.get(timeout=120) for _ in procs) == [("ready", i) for i in range(n)]
    # One poll each, in turn, each while the earlier consumers hold their keys: the
    # spread of work is then a matter of the guarantee, not of scheduling.
    first = {}
    for i in range(n):
        turns[i].set()
        assert afters[i].wait(120)
        tag, idx, keys = out.get(timeout=120)
        assert (tag, idx) == ("first", i)
        first[idx] = keys
    for i in range(n):
        assert len(first[i]) == 4, first  # 12 keys: 4 free ones for each of 3 consumers
    assert len({k for keys in first.values() for k in keys}) == 12  # disjoint
    start.set()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    offsets = sorted(o for spans in results.values() for _, o, _, _ in spans)
    assert offsets == list(range(600))
    by_key = defaultdict(list)
    for idx, spans in results.items():
        for key, off, got, done in spans:
            by_key[key].append((got, done, off, idx))
    for _key, spans in by_key.items():
        spans.sort()
        # per-key order: processing start times follow offsets
        assert [s[2] for s in spans] == sorted(s[2] for s in spans)
        # one holder at a time: spans of different consumers never overlap
        for i, (g1, d1, _, c1) in enumerate(spans):
            for g2, d2, _, c2 in spans[i + 1:]:
                assert c1 == c2 or g2 >= d1 or g1 >= d2


def _keys_per_partition(n):
    out = {}
    i = 0
    while len(out) < n:
        k = b"p%d" % i
        out.setdefault(_codec.partition_for_key(k, n), k)
        i += 1
    return [out[p] for p in range(n)]


def _exclusive_worker(path: str, idx: int, start, out) -> None:
    with streamlog.open(path) as log:
        g = log.topic("orders").group("ex", mode="exclusive", ack_wait_s=2,
                                      consumer=f"c{idx}")
        out.put(("ready", idx))
        start.wait()
        seen = []
        idle = 0
        while idle < 10:
            msgs = g.poll(max_records=5, timeout=0.1)
            if not msgs:
                idle += 1 if g.lag() == 0 else 0
                continue
            idle = 0
            time.sleep(0.002)
            ok = g.ack(msgs)
            seen.extend((m.partition, m.offset, good) for m, good in zip(msgs, ok, strict=True))
        out.put((idx, seen))


def test_exclusive_partitions_in_order_one_owner_each(tmp_path):
    """2 processes in an exclusive group on 4 partitions: each partition's records are
    acked once and in offset order. (Which consumer gets how many partitions depends on
    when each polls; the fair share itself is tested in one process, step by step:
    tests/unit/test_groups_modes.py::test_exclusive_spreads_partitions_over_live_consumers.)"""
    path = str(tmp_path / "s")
    keys = _keys_per_partition(4)
    with streamlog.open(path) as log:
        t = log.topic("orders", partitions=4)
        t.group("ex", mode="exclusive", ack_wait_s=2)
        t.append_many([b"%d" % i for i in range(800)], keys=[keys[i % 4] for i in range(800)])
    start, out = CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=_exclusive_worker, args=(path, i, start, out))
             for i in range(2)]
    for p in procs:
        p.start()
    assert sorted(out.get(timeout=120) for _ in procs) == [("ready", i) for i in range(len(procs))]
    start.set()  # every consumer has joined: they start together
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    acked = defaultdict(list)
    for _idx, seen in results.items():
        for part, off, good in seen:
            if good:
                acked[part].append(off)
    for part in range(4):
        assert sorted(acked[part]) == list(range(200)), part
    # each consumer's view of a partition is in order
    for seen in results.values():
        per = defaultdict(list)
        for part, off, good in seen:
            if good:
                per[part].append(off)
        assert all(offs == sorted(offs) for offs in per.values())


def _stale_owner(path: str, polled, go_ack, out) -> None:
    with streamlog.open(path) as log:
        g = log.topic("orders").group("ex", mode="exclusive", ack_wait_s=0.5, consumer="old")
        msgs = g.poll(10, timeout=5)
        polled.set()
        go_ack.wait(60)  # silent meanwhile: no poll, no ack
        out.put([m.ack() for m in msgs])


def test_stale_owner_ack_is_refused_after_takeover(tmp_path):
    """An owner that stopped polling for ack_wait_s loses the partition to a consumer in
    another process; its acks then return False and the new owner gets the records."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        t = log.topic("orders")
        for i in range(3):
            t.append(b"%d" % i)
        t.group("ex", mode="exclusive", ack_wait_s=0.5)
    polled, go_ack, out = CTX.Event(), CTX.Event(), CTX.Queue()
    p = CTX.Process(target=_stale_owner, args=(path, polled, go_ack, out))
    p.start()
    assert polled.wait(60)
    with streamlog.open(path) as log:
        g = log.topic("orders").group("ex", mode="exclusive", ack_wait_s=0.5, consumer="new")
        msgs = []
        deadline = time.monotonic() + 20
        while not msgs and time.monotonic() < deadline:
            msgs = g.poll(10, timeout=1)
        assert [(m.offset, m.delivery_count) for m in msgs] == [(0, 2), (1, 1), (2, 1)]
        go_ack.set()
        assert out.get(timeout=30) == [False, False, False]
        p.join(30)
        assert g.ack(msgs) == [True, True, True]
