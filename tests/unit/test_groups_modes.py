"""key_shared and exclusive groups through the public API, in one process."""

from __future__ import annotations

import time

import pytest

import streamlog
from streamlog.backends.local import codec as _codec


@pytest.fixture(autouse=True)
def _small_segments(monkeypatch):
    """Topics these tests create get 1 MiB segments: segments are preallocated, and the
    default 64 MiB per partition would dominate the run time of tests about groups."""
    monkeypatch.setattr(streamlog.backends.local.log, "DEFAULT_SEGMENT_BYTES", 1 << 20)


def keys_in_partitions(n):
    """One key per partition of an n-partition topic."""
    out = {}
    i = 0
    while len(out) < n:
        k = b"key%d" % i
        out.setdefault(_codec.partition_for_key(k, n), k)
        i += 1
    return [out[p] for p in range(n)]


# ------------------------------------------------------------------ key_shared
def test_key_shared_never_gives_one_key_to_two_consumers(store):
    """While a consumer holds a key, other consumers get other keys (or nothing); once it
    acks, the key's next records go to whoever polls, in order."""
    t = store.topic("orders")
    for i in range(6):
        t.append(b"%d" % i, key=b"A" if i % 2 == 0 else b"B")
    a = t.group("g", mode="key_shared", consumer="a")
    b = t.group("g", mode="key_shared", consumer="b")
    (ma,) = a.poll(1, timeout=0)
    assert (ma.key, ma.offset) == (b"A", 0)
    mb = b.poll(10, timeout=0)
    assert [m.key for m in mb] == [b"B", b"B", b"B"]  # A is a's
    b.ack(mb)
    ma2 = a.poll(10, timeout=0)
    assert [(m.key, m.offset) for m in ma2] == [(b"A", 2), (b"A", 4)]
    a.ack([ma] + ma2)
    assert a.lag() == 0


def test_key_shared_keyless_records_go_to_anyone(store):
    """Records without a key are shared freely between consumers."""
    t = store.topic("orders")
    t.append(b"k", key=b"A")
    for _ in range(4):
        t.append(b"free")
    a = t.group("g", mode="key_shared")
    b = t.group("g", mode="key_shared")
    got_a = a.poll(2, timeout=0)
    got_b = b.poll(10, timeout=0)
    assert [m.key for m in got_a] == [b"A", None]
    assert [m.key for m in got_b] == [None, None, None]


def test_key_shared_redelivery_keeps_key_order(store):
    """A nacked record of a key comes back before any later record of that key."""
    t = store.topic("orders")
    for i in range(3):
        t.append(b"%d" % i, key=b"A")
    a = t.group("g", mode="key_shared")
    first = a.poll(1, timeout=0)
    first[0].nack(delay_s=0.2)
    b = t.group("g", mode="key_shared")
    assert b.poll(10, timeout=0) == []  # offset 1 and 2 wait behind offset 0
    again = b.poll(10, timeout=3)
    assert [(m.offset, m.delivery_count) for m in again] == [(0, 2), (1, 1), (2, 1)]


def test_key_shared_expired_holder_loses_the_key(store):
    """When a holder's lease expires another consumer takes the key; the old ack fails."""
    t = store.topic("orders")
    t.append(b"x", key=b"A")
    t.append(b"y", key=b"A")
    a = t.group("g", mode="key_shared", ack_wait_s=0.15)
    b = t.group("g", mode="key_shared", ack_wait_s=0.15)
    ma = a.poll(1, timeout=0)
    assert b.poll(5, timeout=0) == []
    mb = b.poll(5, timeout=3)
    assert [m.offset for m in mb] == [0, 1]
    assert ma[0].ack() is False


# ------------------------------------------------------------------- exclusive
def test_exclusive_single_consumer_gets_all_partitions_in_order(store):
    """One live consumer owns every partition and receives each one in offset order."""
    t = store.topic("orders", partitions=3)
    keys = keys_in_partitions(3)
    for i in range(30):
        t.append(b"%d" % i, key=keys[i % 3])
    g = t.group("g", mode="exclusive")
    got = []
    while msgs := g.poll(7, timeout=0):
        got.extend(msgs)
        g.ack(msgs)
    for p in range(3):
        offs = [m.offset for m in got if m.partition == p]
        assert offs == list(range(10))


def test_exclusive_spreads_partitions_over_live_consumers(store):
    """Two consumers of an exclusive group on 4 partitions end up owning 2 each, and never
    receive records of the same partition."""
    t = store.topic("orders", partitions=4)
    keys = keys_in_partitions(4)
    a = t.group("g", mode="exclusive", ack_wait_s=5, consumer="a")
    b = t.group("g", mode="exclusive", ack_wait_s=5, consumer="b")
    a.poll(1, timeout=0)
    b.poll(1, timeout=0)
    a.poll(1, timeout=0)  # a lets go of its excess (nothing leased)
    b.poll(1, timeout=0)  # b claims it
    for i in range(40):
        t.append(b"%d" % i, key=keys[i % 4])
    pa = {m.partition for m in a.poll(100, timeout=0)}
    pb = {m.partition for m in b.poll(100, timeout=0)}
    assert len(pa) == 2 and len(pb) == 2 and not pa & pb
    owners = {p["owner"] for p in store.stats()["groups"]["orders"]["g"]["partitions"]}
    assert owners == {"a", "b"}


def test_exclusive_redelivery_restarts_from_oldest_unacked(store):
    """A nack makes the partition restart at that record; later records follow in order."""
    t = store.topic("orders")
    for i in range(5):
        t.append(b"%d" % i)
    g = t.group("g", mode="exclusive")
    msgs = g.poll(5, timeout=0)
    g.ack(msgs[:2])
    msgs[2].nack()
    again = g.poll(10, timeout=0)
    assert [(m.offset, m.delivery_count) for m in again] == [(2, 2), (3, 1), (4, 1)]
    # The same consumer got offset 3 again: whichever copy it acks first counts, once.
    assert msgs[3].ack() is True
    assert g.ack(again) == [True, False, True]
    assert g.lag() == 0


def test_exclusive_failover_when_owner_closes(store):
    """When the owner closes another consumer takes the partition from the oldest unacked
    record, and the old owner's acks are refused."""
    t = store.topic("orders")
    for i in range(4):
        t.append(b"%d" % i)
    a = t.group("g", mode="exclusive", consumer="a")
    b = t.group("g", mode="exclusive", consumer="b")
    ma = a.poll(10, timeout=0)
    assert b.poll(10, timeout=0) == []
    a.ack(ma[:1])
    a.close()
    mb = b.poll(10, timeout=0)
    assert [m.offset for m in mb] == [1, 2, 3]
    assert ma[1].ack() is False


def test_exclusive_failover_when_owner_stops_polling(store):
    """An owner silent for ack_wait_s loses its partition; its late ack is refused."""
    t = store.topic("orders")
    for i in range(3):
        t.append(b"%d" % i)
    a = t.group("g", mode="exclusive", ack_wait_s=0.3, consumer="a")
    b = t.group("g", mode="exclusive", ack_wait_s=0.3, consumer="b")
    ma = a.poll(10, timeout=0)
    assert len(ma) == 3
    t0 = time.monotonic()
    mb = b.poll(10, timeout=5)
    assert time.monotonic() - t0 >= 0.25
    assert [m.offset for m in mb] == [0, 1, 2]
    assert ma[0].ack() is False
    assert a.poll(10, timeout=0) == []  # a is back, but b owns the only partition
    assert b.ack(mb) == [True, True, True]


def test_exclusive_in_progress_keeps_ownership_and_leases(store):
    """A slow owner that calls in_progress keeps its partition and its later leases."""
    t = store.topic("orders")
    for i in range(3):
        t.append(b"%d" % i)
    a = t.group("g", mode="exclusive", ack_wait_s=0.3, consumer="a")
    b = t.group("g", mode="exclusive", ack_wait_s=0.3, consumer="b")
    ma = a.poll(10, timeout=0)
    for _ in range(4):
        time.sleep(0.12)
        assert ma[0].in_progress()
        assert b.poll(10, timeout=0) == []
    assert a.ack(ma) == [True, True, True]
