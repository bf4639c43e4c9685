"""The group state's layout in LMDB: entries per run and a due index, kept consistent by
every operation; a poll or an ack touches as many entries with 5,000 leases outstanding
as with 10; states written in the older one-JSON-value layout still open."""

from __future__ import annotations

import random

import pytest

import streamlog
from streamlog.backends.local import groups
from streamlog.backends.local import groupstate as gs
from streamlog.backends.local.storage import meta

FAR = 600_000


@pytest.fixture(autouse=True)
def _small_segments(monkeypatch):
    monkeypatch.setattr(streamlog.backends.local.log, "DEFAULT_SEGMENT_BYTES", 1 << 20)


def fill(t, n, key=None):
    t.append_many([b"v%d" % i for i in range(n)], keys=None if key is None else [key] * n)


def check_layout(ps: groups._PartStore) -> gs.PartState:
    """Every entry of the layout agrees with the others: runs tile [committed, next), the
    head counts the pending records, the due index holds exactly the unacked runs."""
    h = ps.head
    st = ps.load()
    pos = st.committed
    for r in st.runs:
        assert r[0] == pos and r[1] > r[0], st.runs
        pos = r[1]
    assert pos == st.next
    assert not st.runs or st.runs[0][2] is not None, "an acked run at the front"
    assert h.pending == gs.pending_count(st)
    want = {(gs.ready_at(r, h.bo), r[0]) for r in st.runs if r[2] is not None}
    got = set()
    e = ps.due_after(None)
    while e is not None:
        got.add((e[1], e[2]))
        e = ps.due_after(e[0])
    assert got == want
    return st


def test_random_operations_keep_the_layout_consistent_and_drain(store):
    """Polls by three consumers, acks, nacks, extensions and expiries in random order,
    each in its own transaction, against the LMDB layout itself."""
    rnd = random.Random(7)
    end = 3000
    kv = store.kv("groups")
    key = groups._part_key("t", "g", 0)
    kv.transact(lambda tx: groups._PartStore(tx, key).create(gs.PartState(0)))
    held: dict[str, set[int]] = {"a": set(), "b": set(), "c": set()}
    now = [1_000_000]
    aw = 5_000

    def op(fn, *args):
        def run(tx):
            ps = groups._PartStore(tx, key)
            ps.open(write=True)
            out = fn(ps, *args)
            ps.save_head()
            return out
        return kv.transact(run)

    for _ in range(1500):
        me = rnd.choice("abc")
        x = rnd.random()
        now[0] += rnd.randint(0, 400)
        if x < 0.45:
            res = op(gs.lease_shared_store, me, now[0], rnd.randint(1, 30), end, aw, 1000,
                     400, 1000)
            for lo, hi, _ in res.deliver:
                offs = set(range(lo, hi))
                for other, hs in held.items():
                    if other != me:
                        hs -= offs  # their leases expired: the ack of a taker wins
                held[me] |= offs
        elif x < 0.8 and held[me]:
            pick = rnd.sample(sorted(held[me]), min(len(held[me]), rnd.randint(1, 20)))
            done = op(gs.ack_store, me, gs.to_ranges(pick))
            assert sorted(o for lo, hi in done for o in range(lo, hi)) == sorted(pick)
            for lo, hi in done:
                held[me] -= set(range(lo, hi))
        elif x < 0.9 and held[me]:
            pick = rnd.sample(sorted(held[me]), min(len(held[me]), 5))
            t_due = now[0] + rnd.randint(0, 2000)
            op(gs.apply_store, gs.to_ranges(pick), _give_back(me, t_due))
            held[me] -= set(pick)
        elif held[me]:
            pick = sorted(held[me])[:10]
            op(gs.apply_store, gs.to_ranges(pick), _extend(me, now[0] + aw))
        if rnd.random() < 0.05:
            kv.transact(lambda tx: check_layout(_opened(tx, key)))
    # drain: one consumer takes and acks whatever is left, whenever it comes due
    for _ in range(10_000):
        now[0] += aw
        res = op(gs.lease_shared_store, "z", now[0], 500, end, aw, 1000, 10_000, 1000)
        for lo, hi, _ in res.deliver:
            op(gs.ack_store, "z", [(lo, hi)])
        st = kv.transact(lambda tx: check_layout(_opened(tx, key)))
        if st.committed == end:
            break
    assert st.committed == st.next == end and st.runs == []


def test_an_ack_inside_a_run_at_the_front_leaves_the_rest_of_it_leased(store):
    """Two records leased in one run at the front of the window: acking the second
    leaves the first leased (and acking it then folds both)."""
    kv = store.kv("groups")
    key = groups._part_key("t", "g", 0)
    kv.transact(lambda tx: groups._PartStore(tx, key).create(gs.PartState(0)))

    def op(fn, *args):
        def run(tx):
            ps = groups._PartStore(tx, key)
            ps.open(write=True)
            out = fn(ps, *args)
            ps.save_head()
            return out, check_layout(ps)
        return kv.transact(run)

    res, _ = op(gs.lease_shared_store, "a", 1000, 2, 10, FAR, 5, 100, 100)
    assert res.deliver == [(0, 2, 1)]
    done, st = op(gs.ack_store, "a", [(1, 2)])
    assert done == [(1, 2)] and st.committed == 0
    assert st.runs == [[0, 1, "a", 1000 + FAR, 1, None], [1, 2, None, 0, 0, None]]
    done, st = op(gs.ack_store, "a", [(0, 1)])
    assert done == [(0, 1)] and (st.committed, st.runs) == (2, [])


def _give_back(me, due):
    """A nack's change: ``me``'s leases become free, deliverable from ``due``."""
    return lambda r: [gs.FREE, due, r[4], None] if r[2] == me else None


def _extend(me, deadline):
    """An in_progress's change: ``me``'s leases run until ``deadline``."""
    return lambda r: [me, deadline, r[4], r[5]] if r[2] == me else None


def _opened(tx, key):
    ps = groups._PartStore(tx, key)
    ps.open(write=False)
    return ps


class _Counting:
    """An LMDB transaction (and its cursors) that counts the entries and the bytes it reads
    and writes: ``counts`` is [entries, bytes]."""

    def __init__(self, txn, counts):
        self._txn = txn
        self._n = counts

    def _add(self, *blobs):
        self._n[0] += 1
        self._n[1] += sum(len(b) for b in blobs if b is not None)

    def get(self, key, *a, **k):
        v = self._txn.get(key, *a, **k)
        self._add(key, v)
        return v

    def put(self, key, value, *a, **k):
        self._add(key, value)
        return self._txn.put(key, value, *a, **k)

    def delete(self, key, *a, **k):
        self._add(key)
        return self._txn.delete(key, *a, **k)

    def cursor(self, *a, **k):
        return _CountingCursor(self._txn.cursor(*a, **k), self)


class _CountingCursor:
    def __init__(self, cur, counting):
        self._cur = cur
        self._c = counting

    def __getattr__(self, name):
        f = getattr(self._cur, name)
        if name in ("set_range", "prev", "last", "next", "delete", "first"):
            def moved(*a, **k):
                self._c._add(*a)
                return f(*a, **k)
            return moved
        if name in ("key", "value"):
            def read():
                v = f()
                self._c._n[1] += len(v)
                return v
            return read
        return f

    def __iter__(self):
        for k, v in self._cur:
            self._c._add(k, v)
            yield k, v


def test_poll_and_ack_touch_as_much_at_5000_leases_as_at_10(store, monkeypatch):
    """The LMDB entries and bytes a poll(1) or an ack reads and writes do not grow with the
    leases outstanding: each operation is O(log n) in LMDB's B-tree, and no value holds
    the whole window (the older layout rewrote every run at every operation)."""
    t = store.topic("jobs")
    fill(t, 6000)
    g = t.group("work", ack_wait_s=600)
    counts = [0, 0]
    real = meta.Tx.__init__
    monkeypatch.setattr(meta.Tx, "__init__",
                        lambda self, txn, db: real(self, _Counting(txn, counts), db))
    msgs = []

    def cost(pending: int) -> tuple[list[int], list[int]]:
        while len(msgs) < pending:
            msgs.extend(g.poll(1, timeout=0))
        counts[:] = [0, 0]
        msgs.extend(g.poll(1, timeout=0))
        polled = list(counts)
        counts[:] = [0, 0]
        assert msgs.pop(len(msgs) // 2).ack()
        return polled, list(counts)

    small = cost(10)
    big = cost(5000)
    for a, b in zip(small, big, strict=True):
        # a poll may extend the last run (same deadline) or add one; an ack may split a run
        assert b[0] <= a[0] + 8 and b[1] <= a[1] + 400, (small, big)
    assert big[0][1] < 2000 and big[1][1] < 2000, big


def test_state_in_the_older_layout_is_read_and_upgraded_by_the_first_write(store):
    """A partition state stored as one JSON value (the layout before the indexed one)
    reads the same, and the first write transaction rewrites it in the indexed layout."""
    t = store.topic("jobs")
    fill(t, 20)
    t.group("work", ack_wait_s=600)
    kv = store.kv("groups")
    key = groups._part_key("jobs", "work", 0)
    far = streamlog._types.now_ms() + FAR * 10
    st = gs.PartState(2)
    st.next = 12
    st.runs = [[2, 5, "w1", far, 1, None], [5, 7, None, 0, 0, None],
               [7, 9, gs.FREE, 0, 1, "boom"], [9, 12, "w2", far, 2, None]]
    st.redeliveries = 3
    kv.put(key, gs.encode(st))

    reader = t.group("work", ack_wait_s=600)
    assert reader.lag() == 16  # 20 - committed 2 - acked 5, 6
    assert sorted((x.consumer, x.offset, x.delivery_count) for x in reader.pending()) == [
        ("w1", 2, 1), ("w1", 3, 1), ("w1", 4, 1), ("w2", 9, 2), ("w2", 10, 2), ("w2", 11, 2)]
    assert store.stats()["groups"]["jobs"]["work"]["redeliveries"] == 3
    assert not gs.is_head(kv.get(key)), "reading must not write"

    w1 = t.group("work", ack_wait_s=600, consumer="w1")  # a restart: reclaims its leases
    msgs = w1.poll(10, timeout=0)
    assert gs.is_head(kv.get(key))
    assert [(m.offset, m.delivery_count) for m in msgs] == [
        (2, 2), (3, 2), (4, 2), (7, 2), (8, 2), (12, 1), (13, 1), (14, 1), (15, 1), (16, 1)]
    assert all(w1.ack(msgs))
    stats = store.stats()["groups"]["jobs"]["work"]
    assert (stats["lag"], stats["pending"], stats["redeliveries"]) == (6, 3, 8)
    assert stats["partitions"][0]["committed"] == 9
    assert sorted(x.offset for x in reader.pending()) == [9, 10, 11]
    rest = []
    w3 = t.group("work", ack_wait_s=600, consumer="w3")
    while m := w3.poll(100, timeout=0):
        rest.extend(m)
        assert all(w3.ack(m))
    assert [m.offset for m in rest] == [17, 18, 19]
    assert reader.lag() == 3  # w2's leases, still live


def test_older_layout_keeps_owner_epoch_and_keys(store):
    """An exclusive owner and epoch, and key_shared key hashes, survive the upgrade."""
    t = store.topic("keyed")
    fill(t, 6, key=b"k")
    t.group("ks", mode="key_shared")
    kv = store.kv("groups")
    key = groups._part_key("keyed", "ks", 0)
    far = streamlog._types.now_ms() + FAR
    st = gs.PartState(0)
    st.next = 3
    h = streamlog.backends.local.codec.murmur2(b"k")
    st.runs = [[0, 3, "other", far, 1, None]]
    st.keys = {0: h, 1: h, 2: h}
    st.owner, st.epoch = "someone", 7
    kv.put(key, gs.encode(st))
    g = t.group("ks", mode="key_shared")
    assert g.poll(10, timeout=0) == []  # the key is held by "other"'s live leases
    assert gs.is_head(kv.get(key))
    got = kv.transact(lambda tx: _opened(tx, key).load())
    assert (got.owner, got.epoch, got.runs[0]) == ("someone", 7, st.runs[0])
    assert got.keys == {o: h for o in range(6)}  # 3-5 wait in the window for their key
