"""The conformance suite: behaviours every backend must show, as shared test classes.

A backend's test module subclasses each class once with a harness that says
how to open a store on fresh storage (see ``test_local.py``); the classes use
the public API and the contract of ``streamlog.api`` only, never an engine's
internals. docs/backend.md maps each contract member to the class here that
checks it. Where a backend cannot give a behaviour exactly, its module
overrides the test with one named for the difference, never a silent skip.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
from typing import Any

import pytest

from streamlog import api
from streamlog._types import GroupReset, Retention
from streamlog.errors import (
    ConfigMismatch,
    GroupActive,
    OffsetOutOfRange,
    RecordTooLarge,
    RemoteError,
    RequestTimeout,
    StoreClosed,
    StreamlogError,
    TopicNotFound,
    WrongExpectedVersion,
)


def _murmur2(data: bytes) -> int:
    """Kafka's murmur2, written out here so placement is checked against the definition."""
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    n = len(data) & ~3
    for i in range(0, n, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = len(data) & 3
    if rest == 3:
        h ^= data[n + 2] << 16
    if rest >= 2:
        h ^= data[n + 1] << 8
    if rest >= 1:
        h ^= data[n]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def kafka_partition(key: bytes, partitions: int) -> int:
    return (_murmur2(key) & 0x7FFFFFFF) % partitions


def wait_for(cond, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


class Harness:
    """How a backend's test module opens stores: override ``open_store``."""

    def open_store(self, where: Any) -> Any:
        raise NotImplementedError

    def location(self, tmp_path) -> Any:
        """Fresh storage for one test (a directory; a store name on a server)."""
        return tmp_path / "store"

    @pytest.fixture
    def store(self, tmp_path):
        self._where = self.location(tmp_path)
        s = self.open_store(self._where)
        self._open = [s]
        yield s
        for s in self._open:
            s.close()

    def reopen(self, store) -> Any:
        """Close ``store`` and open the same storage again (closed after the test)."""
        store.close()
        s = self.open_store(self._where)
        self._open.append(s)
        return s

    def second_handle(self) -> Any:
        """Another open store on the same storage, as a second process would have."""
        s = self.open_store(self._where)
        self._open.append(s)
        return s


# ---------------------------------------------------------------------------- topics
class TopicContract(Harness):
    """Appends, reads, placement, headers, timestamps, limits: ``api.Topic``."""

    def test_the_store_and_topic_satisfy_the_protocols(self, store):
        t = store.topic("proto")
        assert isinstance(store, api.Store) and isinstance(t, api.Topic)
        assert isinstance(store.url, str) and store.url

    def test_offsets_are_dense_from_zero_per_partition(self, store):
        t = store.topic("dense", partitions=3)
        seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
        for i in range(60):
            p = t.append(b"%d" % i, key=b"k%d" % i)
            seen[p.partition].append(p.offset)
        for p, offs in seen.items():
            assert offs == list(range(len(offs)))
            assert t.end_offset(p) == len(offs) and t.start_offset(p) == 0

    def test_keys_go_to_kafkas_murmur2_partition(self, store):
        t = store.topic("placed", partitions=7)
        for i in range(50):
            key = b"customer-%d" % i
            assert t.append(b"v", key=key).partition == kafka_partition(key, 7)
        many = t.append_many([b"a", b"b"], keys=[b"x", b"yy"])
        assert [p.partition for p in many] == [kafka_partition(b"x", 7),
                                               kafka_partition(b"yy", 7)]

    def test_records_round_trip(self, store):
        t = store.topic("rt", partitions=1)
        pos = t.append(b"value", key=b"key", headers={"h1": b"\x00\xff", "h2": "text"},
                       timestamp_ms=1_700_000_000_123)
        r = t.get(0, pos.offset)
        assert (r.topic, r.partition, r.offset) == ("rt", 0, pos.offset)
        assert (r.key, r.value, r.timestamp_ms) == (b"key", b"value", 1_700_000_000_123)
        assert r.headers == {"h1": b"\x00\xff", "h2": b"text"}
        t.append(b"", key=None)
        r2 = list(t.read(0, 1))[0]
        assert (r2.key, r2.value, r2.headers) == (None, b"", {})

    def test_read_limits_and_ranges(self, store):
        t = store.topic("ranges", partitions=1)
        t.append_many([b"%d" % i for i in range(20)])
        assert [r.offset for r in t.read(0, 5, 3)] == [5, 6, 7]
        assert [r.offset for r in t.read(0, 18)] == [18, 19]
        assert list(t.read(0, 20)) == []
        with pytest.raises(OffsetOutOfRange):
            t.get(0, 20)
        b = t.read_batch(0, 2, 4)
        assert list(b.offsets) == [2, 3, 4, 5] and b.value(0) == b"2"

    def test_append_batch_round_trips_atomically(self, store):
        """append_batch stores a RecordBatch's records (from arrays, or as read_batch
        returned them) at dense offsets from the returned first offset, keys and
        timestamps kept, on the named partition whatever its keys; bad input (an empty
        batch, a null value on a topic that is not compacted, a record over the limit, a
        wrong type) raises before anything is stored."""
        import numpy as np

        from streamlog import RecordBatch
        from streamlog.errors import RecordTooLarge

        t = store.topic("columns", partitions=2, max_record_bytes=1_000)
        t.append(b"before", key=b"k", timestamp_ms=1)
        p = kafka_partition(b"k", 2)
        values = np.arange(50, dtype=np.uint64).astype("<u8")
        keys = [b"key-%d" % i if i % 3 else None for i in range(50)]
        batch = RecordBatch.from_arrays(values, keys=keys,
                                        timestamps_ms=np.arange(1_000, 1_050))
        first = t.append_batch(p, batch)
        assert first == 1 and t.end_offset(p) == 51 and t.end_offset(1 - p) == 0
        got = list(t.read(p, 1))
        assert [r.offset for r in got] == list(range(1, 51))
        assert [r.value for r in got] == [int(i).to_bytes(8, "little") for i in range(50)]
        assert [r.key for r in got] == keys
        assert [r.timestamp_ms for r in got] == list(range(1_000, 1_050))
        assert all(r.headers == {} for r in got)
        # What read_batch returns goes back in as it is, to any partition.
        again = t.append_batch(1 - p, t.read_batch(p, 0, 100))
        assert again == 0
        assert [(r.key, r.value, r.timestamp_ms) for r in t.read(1 - p)] == \
            [(r.key, r.value, r.timestamp_ms) for r in t.read(p)]
        before = [t.end_offset(q) for q in (0, 1)]
        for bad, err in ((RecordBatch.from_arrays([]), ValueError),
                         (RecordBatch.from_arrays([b"x", None]), ValueError),
                         (RecordBatch.from_arrays([b"x", b"y" * 1_001]), RecordTooLarge),
                         ([b"x"], TypeError)):
            with pytest.raises(err):
                t.append_batch(p, bad)
        with pytest.raises(ValueError):
            t.append_batch(2, batch)
        assert [t.end_offset(q) for q in (0, 1)] == before

    def test_offset_for_time(self, store):
        t = store.topic("times", partitions=1)
        for i, ts in enumerate((1000, 2000, 3000)):
            t.append(b"%d" % i, timestamp_ms=ts)
        assert t.offset_for_time(0, 0) == 0
        assert t.offset_for_time(0, 2000) == 1
        assert t.offset_for_time(0, 2001) == 2
        assert t.offset_for_time(0, 9999) == 3

    def test_append_many_lands_in_order_per_partition(self, store):
        t = store.topic("many", partitions=2)
        values = [b"%d" % i for i in range(100)]
        keys = [b"k%d" % (i % 5) for i in range(100)]
        pos = t.append_many(values, keys=keys)
        for p in (0, 1):
            got = [(r.key, r.value) for r in t.read(0 if p == 0 else 1)]
            want = [(k, v) for k, v, q in zip(keys, values, pos, strict=True) if q.partition == p]
            assert got == want

    def test_dedupe_by_msg_id(self, store):
        t = store.topic("dd", partitions=3)
        first = t.append(b"once", msg_id="order-1")
        again = t.append(b"twice", msg_id="order-1")
        assert first == again
        assert sum(t.end_offset(p) for p in range(3)) == 1
        assert t.append(b"other", msg_id="order-2") != first

    def test_bad_input_writes_nothing(self, store):
        t = store.topic("bad", partitions=1)
        with pytest.raises(TypeError):
            t.append("not bytes")
        with pytest.raises(TypeError):
            t.append(b"v", headers={"h": 5})
        with pytest.raises(ValueError):
            store.topic("bad name!")
        assert t.end_offset(0) == 0

    def test_config_mismatch_and_existing_topic(self, store):
        store.topic("cfg", partitions=2)
        with pytest.raises(ConfigMismatch):
            store.topic("cfg", partitions=3)
        assert store.existing_topic("cfg").partitions == 2
        with pytest.raises(TopicNotFound):
            store.existing_topic("nope")

    def test_delete_topic_takes_its_groups_and_name(self, store):
        t = store.topic("gone", partitions=1)
        t.append(b"x")
        t.group("g").close()
        store.delete_topic("gone")
        assert "gone" not in store.topics()
        with pytest.raises(TopicNotFound):
            store.existing_topic("gone")
        again = store.topic("gone", partitions=1)
        assert again.end_offset(0) == 0 and again.groups() == []
        with pytest.raises(TopicNotFound):
            store.delete_topic("never")

    def test_records_survive_reopen(self, store):
        t = store.topic("kept", partitions=2)
        pos = t.append_many([b"a", b"b", b"c"], keys=[b"1", b"2", b"3"])
        store = self.reopen(store)
        t = store.existing_topic("kept")
        for p, v in zip(pos, (b"a", b"b", b"c"), strict=True):
            assert t.get(p.partition, p.offset).value == v

    def test_a_second_handle_reads_what_the_first_wrote(self, store):
        t = store.topic("shared", partitions=1)
        other = self.second_handle()
        t.append(b"hello")
        assert [r.value for r in other.existing_topic("shared").read(0)] == [b"hello"]

    def test_closed_store_refuses(self, store):
        t = store.topic("closing", partitions=1)
        store.close()
        with pytest.raises(StoreClosed):
            t.append(b"x")
        with pytest.raises(StoreClosed):
            store.topics()

    def test_watch_wakes_on_append(self, store):
        t = store.topic("watched", partitions=2)
        w = t.watch()
        assert isinstance(w, api.Watch)
        seen = w.seq()
        assert w.wait(seen, 0.01) is False
        threading.Timer(0.05, lambda: t.append(b"x")).start()
        assert w.wait(seen, 5) is True and w.seq() != seen
        seen = w.seq()
        w.wake()
        assert w.wait(seen, 1) is True

    def test_watch_can_be_awaited(self, store):
        """``wait_async`` ends on an append from another thread, and times out with False."""
        t = store.topic("awaited", partitions=1)
        w = t.watch()

        async def main():
            seen = w.seq()
            assert await w.wait_async(seen, 0.01) is False
            threading.Timer(0.05, lambda: t.append(b"x")).start()
            return await w.wait_async(seen, 5)

        assert asyncio.run(main()) is True

    def test_delayed_append_is_not_delivered_before_its_time(self, store):
        t = store.topic("later", partitions=1)
        due = int(time.time() * 1000) + 300
        t.append_delayed(b"later", due)
        t.append(b"now")
        assert [r.value for r in t.read(0)] == [b"later", b"now"]  # readers see both
        g = t.group("g", max_deliver=1)
        first = g.poll(10, timeout=0.1)
        assert [m.value for m in first] == [b"now"]
        first[0].ack()
        (m,) = g.poll(10, timeout=5)
        assert m.value == b"later" and m.delivery_count == 1
        assert int(time.time() * 1000) >= due
        m.ack()
        assert g.lag() == 0


# ---------------------------------------------------------------------------- groups
class GroupContract(Harness):
    """Group semantics shared by all three modes, and the shared mode's own."""

    def test_each_record_to_one_consumer_and_lag(self, store):
        t = store.topic("work", partitions=2)
        t.append_many([b"%d" % i for i in range(40)])
        a, b = t.group("g", consumer="a"), t.group("g", consumer="b")
        assert isinstance(a, api.Group)
        got = []
        while True:
            ms = a.poll(7, timeout=0) + b.poll(5, timeout=0)
            if not ms:
                break
            for m in ms:
                got.append(m.value)
                assert m.ack()
        assert sorted(got) == sorted(b"%d" % i for i in range(40))
        assert a.lag() == 0

    def test_poll_waits_for_an_append(self, store):
        t = store.topic("wait", partitions=1)
        g = t.group("g")
        threading.Timer(0.05, lambda: t.append(b"late")).start()
        ms = g.poll(10, timeout=5)
        assert [m.value for m in ms] == [b"late"]

    def test_lease_expiry_redelivers_and_stale_ack_fails(self, store):
        t = store.topic("lease", partitions=1)
        t.append(b"x")
        g = t.group("g", ack_wait_s=0.1)
        (m,) = g.poll(1, timeout=0)
        other = t.group("g", ack_wait_s=0.1)
        (m2,) = other.poll(1, timeout=3)
        assert (m2.offset, m2.delivery_count) == (0, 2)
        assert m.ack() is False
        assert m2.ack() is True

    def test_nack_delay_and_backoff(self, store):
        t = store.topic("nk", partitions=1)
        t.append(b"x")
        g = t.group("g", backoff_s=[0.2])
        (m,) = g.poll(1, timeout=0)
        t0 = time.monotonic()
        m.nack()
        assert g.poll(1, timeout=0.05) == []
        (m,) = g.poll(1, timeout=3)
        assert time.monotonic() - t0 >= 0.2 and m.delivery_count == 2
        m.ack()

    def test_in_progress_extends_the_lease(self, store):
        t = store.topic("ip", partitions=1)
        t.append(b"x")
        g = t.group("g", ack_wait_s=0.3)
        (m,) = g.poll(1, timeout=0)
        other = t.group("g", ack_wait_s=0.3)
        for _ in range(4):
            time.sleep(0.1)
            assert m.in_progress()
        assert other.poll(1, timeout=0) == []
        assert m.ack()

    def test_max_deliver_moves_to_dead_letter_with_origin(self, store):
        t = store.topic("dl", partitions=1)
        t.append(b"poison", key=b"k")
        g = t.group("g", max_deliver=2, dead_letter="dl.dead")
        for _ in range(2):
            (m,) = g.poll(1, timeout=1)
            m.nack(error="bad data")
        assert g.poll(1, timeout=0.1) == []
        dead = list(g.dead_letters().read(0))
        assert [r.value for r in dead] == [b"poison"] and dead[0].key == b"k"
        h = dead[0].headers
        assert any(b"bad data" in v for v in h.values())
        assert any(v == b"dl" for v in h.values())
        assert g.lag() == 0

    def test_positions_survive_reopen(self, store):
        t = store.topic("pos", partitions=1)
        t.append_many([b"a", b"b", b"c"])
        g = t.group("g")
        (m,) = g.poll(1, timeout=0)
        m.ack()
        store = self.reopen(store)
        g = store.existing_topic("pos").group("g")
        assert [m.value for m in g.poll(10, timeout=0)] == [b"b", b"c"]

    def test_start_latest_and_seek(self, store):
        t = store.topic("st", partitions=1)
        t.append(b"old")
        g = t.group("g", start="latest")
        t.append(b"new")
        assert [m.value for m in g.poll(10, timeout=0)] == [b"new"]
        g.seek(0, 0)
        assert [m.value for m in g.poll(10, timeout=0)] == [b"old", b"new"]

    def test_group_config_and_listing(self, store):
        t = store.topic("gc", partitions=1)
        assert t.group_config("g") is None
        t.group("g", mode="key_shared", ack_wait_s=7).close()
        cfg = t.group_config("g")
        assert cfg is not None and cfg["mode"] == "key_shared" and cfg["ack_wait_s"] == 7
        assert t.groups() == ["g"]
        with pytest.raises(ConfigMismatch):
            t.group("g", mode="shared")
        t.delete_group("g")
        assert t.groups() == [] and t.group_config("g") is None

    def test_close_hands_leases_to_others_at_once(self, store):
        t = store.topic("cl", partitions=1)
        t.append(b"x")
        a = t.group("g", ack_wait_s=60)
        assert len(a.poll(1, timeout=0)) == 1
        a.close()
        b = t.group("g", ack_wait_s=60)
        (m,) = b.poll(1, timeout=1)
        assert m.value == b"x"


class KeySharedContract(Harness):
    """key_shared: no key held by two consumers at once, per-key order kept."""

    def test_no_key_held_by_two_consumers(self, store):
        t = store.topic("ks", partitions=1)
        for i in range(6):
            t.append(b"%d" % i, key=b"A" if i % 2 == 0 else b"B")
        a = t.group("g", mode="key_shared", consumer="a")
        b = t.group("g", mode="key_shared", consumer="b")
        (ma,) = a.poll(1, timeout=0)
        assert ma.key == b"A"
        mb = b.poll(10, timeout=0)
        assert {m.key for m in mb} == {b"B"}
        for m in mb:
            m.ack()
        ma2 = a.poll(10, timeout=0)
        assert [(m.key, m.offset) for m in ma2] == [(b"A", 2), (b"A", 4)]

    def test_redelivery_keeps_key_order(self, store):
        t = store.topic("ko", partitions=1)
        for i in range(3):
            t.append(b"%d" % i, key=b"A")
        a = t.group("g", mode="key_shared")
        (first,) = a.poll(1, timeout=0)
        first.nack(delay_s=0.2)
        b = t.group("g", mode="key_shared")
        assert b.poll(10, timeout=0) == []
        again = b.poll(10, timeout=3)
        assert [(m.offset, m.delivery_count) for m in again] == [(0, 2), (1, 1), (2, 1)]


class ExclusiveContract(Harness):
    """exclusive: one active consumer; takeover; stale acks refused; redelivery from the
    oldest unacknowledged record."""

    def test_one_active_consumer_and_takeover(self, store):
        t = store.topic("ex", partitions=1)
        t.append_many([b"0", b"1", b"2"])
        a = t.group("g", mode="exclusive", consumer="a", ack_wait_s=0.2)
        got = a.poll(2, timeout=0)
        assert [m.value for m in got] == [b"0", b"1"]
        got[0].ack()
        b = t.group("g", mode="exclusive", consumer="b", ack_wait_s=0.2)
        assert b.poll(10, timeout=0) == []  # a is active
        taken = b.poll(10, timeout=3)  # a's leases expire: b takes over
        assert [m.value for m in taken] == [b"1", b"2"]
        assert got[1].ack() is False  # the old owner's ack is refused
        for m in taken:
            assert m.ack()
        assert b.lag() == 0


# ------------------------------------------------------------------------ lifecycle
def keys_for(partition: int, partitions: int, count: int = 1) -> list[bytes]:
    """Keys that murmur2 sends to ``partition`` of ``partitions``."""
    out, i = [], 0
    while len(out) < count:
        k = b"key-%d" % i
        if kafka_partition(k, partitions) == partition:
            out.append(k)
        i += 1
    return out


def poll_until(g, want: int, timeout: float = 10.0) -> list:
    """Poll ``g`` until ``want`` messages came (or ``timeout`` passed); all of them."""
    got: list = []
    end = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < end:
        got += g.poll(want - len(got), timeout=min(1.0, max(0.0, end - time.monotonic())))
    return got


class LifecycleContract(Harness):
    """Steering a store in use: ``Store.alter_topic``, ``Topic.reset_group``,
    ``Topic.group_consumers``, ``Topic.delete_group(force=False)`` and the group
    figures of ``Store.stats``."""

    def test_growing_partitions_maps_keys_anew_and_groups_start_them_at_zero(self, store):
        t = store.topic("orders", partitions=2)
        g = t.group("billing")
        key = keys_for(3, 4)[0]
        assert t.append(b"before", key=key).partition == kafka_partition(key, 2)
        g.ack(poll_until(g, 1))
        t2 = store.alter_topic("orders", partitions=4)
        assert t2.partitions == 4 and t2.config["partitions"] == 4
        assert store.existing_topic("orders").partitions == 4
        assert t2.append(b"after", key=key).partition == 3  # murmur2(key) % 4: anew
        # The handles opened before take the change too (at once, or within seconds).
        assert wait_for(lambda: t.append(b"old handle", key=key).partition == 3, 10)
        total = sum(t2.end_offset(p) for p in range(4))
        got = poll_until(g, total - 1, timeout=15)  # all but the first, acked before
        assert [(m.partition, m.offset, m.value) for m in got if m.partition == 3] == [
            (3, 0, b"after"), (3, 1, b"old handle")]
        assert len(got) == total - 1
        g.ack(got)
        assert g.lag() == 0
        figures = store.stats()["groups"]["orders"]["billing"]
        assert [x["partition"] for x in figures["partitions"]] == [0, 1, 2, 3]
        g.close()

    def test_an_exclusive_group_claims_the_new_partitions(self, store):
        t = store.topic("orders", partitions=1)
        g = t.group("ex", mode="exclusive", consumer="only")
        assert g.poll(10, timeout=0) == []
        t2 = store.alter_topic("orders", partitions=3)
        for p in (1, 2):
            t2.append(b"v%d" % p, key=keys_for(p, 3)[0])
        got = poll_until(g, 2)
        assert sorted(m.partition for m in got) == [1, 2]
        g.ack(got)
        g.close()

    def test_fewer_partitions_and_bad_arguments_change_nothing(self, store):
        t = store.topic("orders", partitions=3)
        before = dict(store.existing_topic("orders").config)
        for kwargs, error in (({"partitions": 2}, ValueError), ({}, ValueError),
                              ({"partitions": 0}, ValueError), ({"partitions": "4"}, TypeError),
                              ({"retention": (1, 2)}, TypeError),
                              ({"max_record_bytes": 0}, ValueError),
                              ({"dedupe_window_s": -1}, ValueError),
                              ({"dedupe_window_s": 600,
                                "retention": Retention(None, 60)}, ValueError)):
            with pytest.raises(error):
                store.alter_topic("orders", **kwargs)
        assert store.existing_topic("orders").config == before and t.partitions == 3
        with pytest.raises(TopicNotFound):
            store.alter_topic("nope", partitions=2)

    def test_retention_dedupe_window_and_record_limit_change(self, store):
        store.topic("orders", dedupe_window_s=300)
        t2 = store.alter_topic("orders", retention=Retention(None, 60), max_record_bytes=1000)
        assert t2.config["dedupe_window_s"] == 60.0  # follows the shorter retention
        assert t2.config["retention"] == [None, 60] and t2.config["max_record_bytes"] == 1000
        t = store.existing_topic("orders")
        assert t.config == t2.config
        with pytest.raises(RecordTooLarge):
            t.append(b"x" * 2000)
        first = t.append(b"pay", msg_id="order-1")
        assert t.append(b"pay", msg_id="order-1") == first
        t3 = store.alter_topic("orders", retention=Retention(None, None))
        assert not any(t3.config["retention"] or [])

    def test_an_event_store_topic_keeps_one_partition_and_every_event(self, store):
        es = store.event_store("bank")
        es.append("acct-1", [b"opened"])
        with pytest.raises(ValueError, match="event store 'bank'.*partitions"):
            store.alter_topic("bank", partitions=2)
        with pytest.raises(ValueError, match="event store 'bank'.*retention"):
            store.alter_topic("bank", retention=Retention(None, 3600))
        assert [e.value for e in store.event_store("bank").read("acct-1")] == [b"opened"]

    def test_reset_targets_and_dry_run(self, store):
        t = store.topic("orders", partitions=2)
        for p in range(2):
            for i, k in enumerate(keys_for(p, 2, 5)):
                t.append(b"v", key=k, timestamp_ms=1_000_000 + i)
        g = t.group("g")
        g.ack(poll_until(g, 10))
        g.close()
        plan = t.reset_group("g", "earliest", dry_run=True)
        assert all(isinstance(r, GroupReset) for r in plan)
        assert [(r.partition, r.old, r.new, r.start_offset, r.end_offset) for r in plan] == [
            (0, 5, 0, 0, 5), (1, 5, 0, 0, 5)]
        g = t.group("g")
        assert g.lag() == 0  # a dry run changes nothing
        g.close()
        assert [r.new for r in t.reset_group("g", 3)] == [3, 3]
        assert [(r.old, r.new) for r in t.reset_group("g", 99)] == [(3, 5), (3, 5)]  # clamped
        assert [r.new for r in t.reset_group("g", "earliest")] == [0, 0]
        when = datetime.datetime.fromtimestamp(1_000_002 / 1000, datetime.UTC)
        assert [r.new for r in t.reset_group("g", when)] == [2, 2]
        assert [r.new for r in t.reset_group("g", "latest")] == [5, 5]
        with pytest.raises(ValueError, match="time zone"):
            t.reset_group("g", datetime.datetime(2020, 1, 1))
        with pytest.raises(ValueError, match="to must be"):
            t.reset_group("g", "start")
        with pytest.raises(TypeError):
            t.reset_group("g", 1.5)
        with pytest.raises(StreamlogError, match="no group 'nope'"):
            t.reset_group("nope", "latest")

    def test_a_reset_delivers_again_from_the_new_position(self, store):
        t = store.topic("orders", partitions=1)
        t.append_many([b"a", b"b", b"c"])
        g = t.group("g")
        g.ack(poll_until(g, 3))
        g.close()
        assert [(r.old, r.new) for r in t.reset_group("g", 1)] == [(3, 1)]
        g = t.group("g")
        got = poll_until(g, 2)
        assert [(m.value, m.delivery_count) for m in got] == [(b"b", 1), (b"c", 1)]
        g.ack(got)
        assert g.lag() == 0
        g.close()

    def test_a_live_group_is_reset_or_deleted_only_with_force(self, store):
        t = store.topic("orders", partitions=1)
        t.append(b"a")
        g = t.group("g", consumer="c1")
        msgs = poll_until(g, 1)
        assert t.group_consumers("g") == ["c1"]
        with pytest.raises(GroupActive) as e:
            t.reset_group("g", "earliest")
        assert e.value.consumers == ["c1"]
        with pytest.raises(GroupActive):
            t.delete_group("g", force=False)
        assert t.reset_group("g", "earliest", dry_run=True)[0].old == 0  # nothing changed
        rows = t.reset_group("g", "latest", force=True)
        assert (rows[0].old, rows[0].new) == (0, 1)
        assert g.ack(msgs) == [False]  # its lease went with the reset
        assert g.lag() == 0
        g.close()
        assert t.group_consumers("g") == []
        t.delete_group("g", force=False)
        assert t.groups() == []
        with pytest.raises(StreamlogError, match="no group"):
            t.delete_group("g", force=False)
        with pytest.raises(StreamlogError, match="no group"):
            t.group_consumers("g")
        t.delete_group("g")  # forced (the default): a missing group is no error

    def test_a_consumer_that_stopped_polling_is_not_live(self, store):
        t = store.topic("orders", partitions=1)
        g = t.group("g", consumer="quiet", ack_wait_s=0.2)
        g.poll(1, timeout=0)
        assert t.group_consumers("g") == ["quiet"]
        assert wait_for(lambda: t.group_consumers("g") == [], 5)
        t.reset_group("g", "earliest")  # not refused: nobody polls
        g.close()

    def test_stats_show_each_groups_figures(self, store):
        t = store.topic("orders", partitions=2)
        t.append_many([b"%d" % i for i in range(6)], keys=[b"k%d" % i for i in range(6)])
        g = t.group("g", consumer="c1", max_deliver=1, dead_letter="orders.dead")
        got = poll_until(g, 6)
        g.ack(got[:3])
        assert got[3].nack(error="bad")  # its last delivery: to the dead-letter topic
        time.sleep(0.05)
        stats = store.stats()
        # six records in the last minute: 0.1 a second
        assert stats["topics"]["orders"]["append_rate_per_s"] == pytest.approx(6 / 60)
        assert sum(p["append_rate_per_s"] for p in stats["topics"]["orders"]["partitions"]) \
            == pytest.approx(6 / 60)
        figures = stats["groups"]["orders"]["g"]
        assert figures["mode"] == "shared" and figures["dead_letter"] == "orders.dead"
        assert figures["consumers"] == 1
        assert figures["lag"] == 2 and figures["pending"] == 2
        assert figures["dead_letters"] == 1
        assert figures["oldest_unacked_age_seconds"] is not None
        assert figures["oldest_unacked_age_seconds"] >= 0.05
        parts = figures["partitions"]
        assert [x["partition"] for x in parts] == [0, 1]
        assert sum(x["lag"] for x in parts) == 2 and sum(x["dead_letters"] for x in parts) == 1
        assert sum(x["end_offset"] for x in parts) == 6
        g.ack(got[4:])
        figures = store.stats()["groups"]["orders"]["g"]
        assert figures["lag"] == 0 and figures["oldest_unacked_age_seconds"] is None
        g.close()


# ---------------------------------------------------------------------------- views
class QueueContract(Harness):
    """The queue view on the backend."""

    def test_each_message_to_one_consumer(self, store):
        a, b = store.queue("jobs"), store.queue("jobs")
        for i in range(20):
            a.put(b"%d" % i)
        got = []
        for q in (a, b) * 15:
            m = q.get(timeout=0.05)
            if m is not None:
                got.append(m.value)
                assert m.ack()
        assert sorted(got) == sorted(b"%d" % i for i in range(20))

    def test_acks_survive_reopen(self, store):
        q = store.queue("durable")
        for v in (b"a", b"b", b"c"):
            q.put(v)
        q.get().ack()
        store = self.reopen(store)
        q = store.queue("durable")
        rest = []
        while (m := q.get(timeout=0.05)) is not None:
            rest.append(m.value)
            m.ack()
        assert rest == [b"b", b"c"]

    def test_redelivery_and_dead_letter(self, store):
        q = store.queue("flaky", ack_wait_s=0.1, max_deliver=3)
        q.put(b"poison")
        counts = []
        m = q.get(timeout=1)
        counts.append(m.delivery_count)
        m.nack()
        m = q.get(timeout=1)
        counts.append(m.delivery_count)
        m = q.get(timeout=2)
        counts.append(m.delivery_count)
        m.nack()
        assert counts == [1, 2, 3]
        assert q.get(timeout=0.2) is None
        assert [r.value for r in q.dead_letters().read(0)] == [b"poison"]

    def test_delay_uses_no_delivery(self, store):
        q = store.queue("timer", max_deliver=1)
        t0 = time.monotonic()
        q.put(b"t", delay_s=0.3)
        assert q.get(timeout=0.1) is None
        m = q.get(timeout=3)
        assert m.value == b"t" and time.monotonic() - t0 >= 0.3 and m.delivery_count == 1
        m.ack()
        assert q.get(timeout=0.05) is None
        assert list(q.dead_letters().read(0)) == []

    def test_view_names_derive_and_show(self, store):
        """Each view's topics are ordinary topics named after the view."""
        store.queue("q1")
        store.pubsub("p1")
        store.rpc("r1")
        assert {"q1", "p1", "r1.requests", "r1.replies"} <= set(store.topics())

    def test_views_refuse_a_compacted_topic(self, store):
        store.topic("cq", compact=True)
        with pytest.raises(ConfigMismatch):
            store.queue("cq")


class PubSubContract(Harness):
    """The pub-sub view on the backend."""

    def test_fan_out_resume_and_latest(self, store):
        ps = store.pubsub("feed")
        ps.publish(b"before")
        early = ps.subscribe("early")
        late = ps.subscribe("late", start="latest")
        ps.publish(b"after")
        assert [m.value for m in late.listen(timeout=0.1)] == [b"after"]
        it = early.listen(timeout=0.1)
        assert next(it).value == b"before"
        next(it)
        it.close()
        store = self.reopen(store)
        ps = store.pubsub("feed")
        ps.publish(b"third")
        assert [m.value for m in ps.subscribe("early").listen(timeout=0.2)] == \
            [b"after", b"third"]
        assert [m.value for m in ps.subscribe("late").listen(timeout=0.1)] == [b"third"]


class RpcContract(Harness):
    """The request-reply view on the backend."""

    def test_round_trip_errors_and_concurrency(self, store):
        rpc = store.rpc("calc")

        def handler(m):
            if m.value == b"boom":
                raise RuntimeError("exploded")
            return m.value[::-1]

        failures = []

        def client(i):
            for j in range(30):
                body = b"%d:%d" % (i, j)
                if rpc.request(body, timeout=10) != body[::-1]:
                    failures.append(body)

        with rpc.serve(handler, workers=2):
            with pytest.raises(RemoteError) as exc:
                rpc.request(b"boom", timeout=5)
            assert (exc.value.type_name, exc.value.remote_message) == \
                ("RuntimeError", "exploded")
            threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        assert failures == []

    def test_reply_from_another_handle(self, store):
        """A server on a second handle (another process's view of the store) answers."""
        server_side = self.second_handle()
        with server_side.rpc("echo").serve(lambda m: m.value + b"!"):
            assert store.rpc("echo").request(b"hi", timeout=10) == b"hi!"

    def test_expired_request_is_never_served(self, store):
        rpc = store.rpc("late")
        with pytest.raises(RequestTimeout):
            rpc.request(b"x", timeout=0.05)
        served = []
        with rpc.serve(lambda m: served.append(m.value) or b"") as server:
            assert rpc.request(b"y", timeout=5) == b""
            assert wait_for(lambda: server.expired >= 1)
        assert served == [b"y"] and server.expired == 1


class EventStoreContract(Harness):
    """The event store view (and so ``api.EventLog``) on the backend."""

    def test_versions_positions_and_expected_versions(self, store):
        es = store.event_store("bank")
        # append returns the stream's new last version
        assert es.append("acc-1", [b"opened", b"deposited"], expected_version=api.NO_STREAM) == 1
        assert es.append("acc-2", [b"opened"]) == 0
        with pytest.raises(WrongExpectedVersion) as exc:
            es.append("acc-1", [b"x"], expected_version=0)
        assert (exc.value.expected, exc.value.actual) == (0, 1)
        with pytest.raises(WrongExpectedVersion):
            es.append("acc-2", [b"x"], expected_version=api.NO_STREAM)
        es.append("acc-1", [(b"withdrew", {"by": b"atm"})], expected_version=1)
        evs = es.read("acc-1")
        assert [(e.version, e.position, e.value) for e in evs] == \
            [(0, 0, b"opened"), (1, 1, b"deposited"), (2, 3, b"withdrew")]
        assert evs[2].headers["by"] == b"atm"
        assert es.last_version("acc-1") == 2 and es.last_version("none") == api.NO_STREAM
        assert [e.position for e in es.read_all()] == [0, 1, 2, 3]
        assert [e.stream_id for e in es.read_all(2, limit=1)] == ["acc-2"]
        assert es.end_position() == 4

    def test_racing_appenders_one_wins(self, store):
        es = store.event_store("race")
        es.append("s", [b"0"])
        results: list[Any] = []
        barrier = threading.Barrier(4)

        def racer(i):
            barrier.wait()
            try:
                results.append(es.append("s", [b"%d" % i, b"more"], expected_version=0))
            except WrongExpectedVersion:
                results.append(None)

        threads = [threading.Thread(target=racer, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert sum(r is not None for r in results) == 1
        assert es.last_version("s") == 2
        assert [e.position for e in es.read_all()] == [0, 1, 2]

    def test_versions_survive_reopen(self, store):
        es = store.event_store("kept")
        es.append("s", [b"a", b"b"])
        store = self.reopen(store)
        es = store.event_store("kept")
        assert es.last_version("s") == 1
        with pytest.raises(WrongExpectedVersion):
            es.append("s", [b"c"], expected_version=0)
        es.append("s", [b"c"], expected_version=1)
        assert [e.value for e in es.read("s", from_version=1)] == [b"b", b"c"]

    def test_subscribe_catches_up_then_goes_live(self, store):
        es = store.event_store("live")
        es.append("s", [b"old"])
        sub = es.subscribe(0, timeout=5)
        it = iter(sub)
        assert next(it).value == b"old"
        threading.Timer(0.05, lambda: es.append("t", [b"new"])).start()
        ev = next(it)
        assert (ev.stream_id, ev.value, ev.position) == ("t", b"new", 1)
        sub.close()

    def test_a_second_handle_sees_versions(self, store):
        es = store.event_store("two")
        other = self.second_handle().event_store("two")
        es.append("s", [b"a"])
        with pytest.raises(WrongExpectedVersion):
            other.append("s", [b"b"], expected_version=api.NO_STREAM)
        other.append("s", [b"b"], expected_version=0)
        assert [e.value for e in es.read("s")] == [b"a", b"b"]

    def test_bad_input_writes_nothing(self, store):
        es = store.event_store("bad")
        with pytest.raises(TypeError):
            es.append("s", [b"ok", 5])
        with pytest.raises(ValueError):
            es.append("", [b"x"])
        with pytest.raises(ValueError):
            es.append("s", [(b"x", {"es-stream": b"y"})])
        assert es.end_position() == 0


# ------------------------------------------------------------------------------ copy
class CopyContract(Harness):
    """What ``streamlog.copy`` needs of a backend: ``Topic.append_copies``,
    ``Topic.set_start_offset`` and ``Topic.group_positions``."""

    @staticmethod
    def _records(n: int, first_ts: int = 1_000) -> list:
        from streamlog import Record

        return [Record("src", 0, i, first_ts + i, None if i % 4 == 0 else b"k%d" % i,
                       b"v%d" % i, {"h": b"%d" % i, "odd name": b"\x00\xff"} if i % 2 else {})
                for i in range(n)]

    def test_append_copies_lands_at_offsets_with_every_field(self, store):
        t = store.topic("cp", partitions=2)
        recs = self._records(1500)
        assert t.append_copies(1, 0, recs) == 1500
        got = [(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in t.read(1)]
        assert got == [(i, r.timestamp_ms, r.key, r.value, r.headers) for i, r in enumerate(recs)]
        assert t.end_offset(0) == 0
        assert t.append_copies(1, 1500, []) == 1500

    def test_append_copies_refuses_an_offset_that_is_not_the_end(self, store):
        t = store.topic("cp")
        t.append_copies(0, 0, self._records(3))
        for wrong in (0, 2, 4):
            with pytest.raises(WrongExpectedVersion) as exc:
                t.append_copies(0, wrong, self._records(2))
            assert (exc.value.expected, exc.value.actual) == (wrong, 3)
        with pytest.raises(TypeError):
            t.append_copies(0, 3, [b"not a record"])
        assert t.end_offset(0) == 3
        # a second handle (another process) sees the same end and is refused alike
        other = self.second_handle().existing_topic("cp")
        with pytest.raises(WrongExpectedVersion):
            other.append_copies(0, 2, self._records(1))
        assert other.append_copies(0, 3, self._records(1)) == 4

    def test_set_start_offset_of_an_empty_partition(self, store):
        from streamlog.errors import StreamlogError

        t = store.topic("cp", partitions=2)
        t.set_start_offset(0, 250)
        t.set_start_offset(0, 250)  # idempotent
        assert (t.start_offset(0), t.end_offset(0)) == (250, 250)
        assert list(t.read(0)) == []
        assert t.append_copies(0, 250, self._records(2)) == 252
        assert [r.offset for r in t.read(0)] == [250, 251]
        with pytest.raises(StreamlogError, match="cannot start"):
            t.set_start_offset(0, 300)
        store = self.reopen(store)
        t = store.existing_topic("cp")
        assert (t.start_offset(0), t.end_offset(0)) == (250, 252)
        assert (t.start_offset(1), t.end_offset(1)) == (0, 0)
        with pytest.raises(OffsetOutOfRange):
            t.get(0, 10)
        # a group created now starts at the moved start
        g = t.group("late")
        assert [m.offset for m in g.poll(10, timeout=1) if m.partition == 0] == [250, 251]
        g.close()

    def test_group_positions_are_the_committed_positions(self, store):
        from streamlog.errors import StreamlogError

        t = store.topic("cp", partitions=1)
        t.append_many([b"%d" % i for i in range(10)])
        g = t.group("g")
        msgs = g.poll(6, timeout=1)
        assert g.ack(msgs[:4]) == [True] * 4
        assert t.group_positions("g") == {0: 4}  # 4 and 5 are leased, not acknowledged
        g.seek(0, 8)
        assert t.group_positions("g") == {0: 8}
        g.close()
        with pytest.raises(StreamlogError):
            t.group_positions("nope")

    def test_copied_event_records_keep_streams_and_versions(self, store):
        es = store.event_store("bank")
        es.append("a", [b"1", b"2"])
        es.append("b", [b"3"])
        copy = store.topic("bank2", partitions=1)
        copy.append_copies(0, 0, list(store.existing_topic("bank").read(0)))
        es2 = store.event_store("bank2")
        assert [(e.stream_id, e.version, e.position, e.value) for e in es2.read_all()] == \
            [(e.stream_id, e.version, e.position, e.value) for e in es.read_all()]
        with pytest.raises(WrongExpectedVersion):
            es2.append("a", [b"x"], expected_version=0)
        assert es2.append("a", [b"x"], expected_version=1) == 2
        assert es2.append("b", [b"y"], expected_version=0) == 1

# ------------------------------------------------------------------ message conventions
_SUBJECTS = ["orders.eu.created", "orders.eu.paid", "orders.eu.de.created", "orders.us.created",
             "orders", "billing.eu.created"]


def _drain(g, n: int = 100, timeout: float = 0.05) -> list:
    """Every message ``g`` hands out until a poll comes back empty, acked."""
    out = []
    while True:
        ms = g.poll(n, timeout=timeout)
        if not ms:
            return out
        for m in ms:
            assert m.ack()
        out += ms


class SubjectsContract(Harness):
    """Subjects: ``append(subject=)`` stores header ``subject``; groups and subscriptions
    with ``subjects=`` (NATS wildcards) deliver only matching records and count the rest
    as done (lag leaves them out once the group moved past them)."""

    def _fill(self, t) -> None:
        for i, s in enumerate(_SUBJECTS):
            t.append(b"%d" % i, key=b"k%d" % i, subject=s)
        t.append(b"no-subject", key=b"k")

    @pytest.mark.parametrize("mode", ["shared", "key_shared", "exclusive"])
    @pytest.mark.parametrize("filters, expected", [
        (["orders.eu.*"], ["orders.eu.created", "orders.eu.paid"]),
        (["orders.>"], ["orders.eu.created", "orders.eu.paid", "orders.eu.de.created",
                        "orders.us.created"]),
        (["*.eu.created", "orders"], ["orders.eu.created", "billing.eu.created", "orders"]),
    ])
    def test_group_delivers_only_matching_records(self, store, mode, filters, expected):
        t = store.topic("o", partitions=2)
        self._fill(t)
        g = t.group("g", mode=mode, subjects=filters)
        got = _drain(g)
        assert sorted(m.headers["subject"].decode() for m in got) == sorted(expected), got
        assert {m.delivery_count for m in got} == {1}
        assert g.lag() == 0
        assert t.group("all").lag() == len(_SUBJECTS) + 1  # another group is not filtered

    def test_subject_is_a_header_and_bad_ones_write_nothing(self, store):
        t = store.topic("h")
        pos = t.append(b"v", subject="orders.eu.created", headers={"x": "1"})
        assert t.get(*pos).headers == {"x": b"1", "subject": b"orders.eu.created"}
        for bad, exc in [("orders..eu", ValueError), ("orders.*", ValueError),
                         ("orders eu", ValueError), (b"orders", TypeError)]:
            with pytest.raises(exc):
                t.append(b"v", subject=bad)
        with pytest.raises(ValueError):
            t.group("bad", subjects=["orders.>.x"])
        assert t.end_offset(0) == 1

    def test_filter_is_a_stored_option(self, store):
        t = store.topic("opt")
        t.group("g", subjects=["b.*", "a.>", "b.*"]).close()
        assert t.group_config("g")["subjects"] == ["a.>", "b.*"]

    def test_sparse_matches_lag_and_redelivery(self, store):
        """1 record in 20 matches: the group gets exactly those; lag counts only what it
        still owes; a nacked match comes back (delivery 2) and nothing else does."""
        t = store.topic("sparse")
        for i in range(200):
            t.append(b"%d" % i, subject="orders.eu.created" if i % 20 == 0 else
                     "orders.us.created")
        g = t.group("g", subjects=["orders.eu.*"], ack_wait_s=5)
        ms = g.poll(100, timeout=1)
        while len(ms) < 10:
            more = g.poll(100, timeout=0.2)
            assert more, [m.offset for m in ms]
            ms += more
        assert [m.offset for m in ms] == list(range(0, 200, 20))
        for m in ms[1:]:
            assert m.ack()
        assert ms[0].nack()
        (again,) = g.poll(100, timeout=2)
        assert (again.offset, again.delivery_count) == (0, 2)
        assert g.lag() == 1
        assert again.ack()
        assert g.lag() == 0 and g.poll(100, timeout=0.05) == []

    def test_subscriptions_filter_by_subject(self, store):
        ps = store.pubsub("events")
        for s in _SUBJECTS:
            ps.publish(s.encode(), subject=s)
        eu = ps.subscribe("eu", subjects=["orders.eu.>"])
        assert sorted(m.value for m in eu.listen(timeout=0.2)) == [
            b"orders.eu.created", b"orders.eu.de.created", b"orders.eu.paid"]
        assert eu.lag() == 0


class SerializersContract(Harness):
    """Serializers on topic handles and views: values in and out, ``content-type``,
    ``schema-version``, bad values refused before anything is written."""

    @pytest.mark.parametrize("name, value, content_type", [
        ("json", {"order_id": "o-1", "items": ["book"]}, b"application/json"),
        ("msgpack", {"order_id": "o-1", "amount_cents": 1250}, b"application/msgpack"),
        ("str", "naïve café", b"text/plain; charset=utf-8"),
    ])
    def test_round_trip_through_topic_and_group(self, store, name, value, content_type):
        t = store.topic("ser", serializer=name, schema_version=2)
        pos = t.append(value, key="k")
        r = t.get(*pos)
        assert r.value == value and r.headers["content-type"] == content_type
        assert r.headers["schema-version"] == b"2"
        (m,) = t.group("g").poll(timeout=2)
        assert (m.value, m.key) == (value, b"k") and m.ack()
        raw = store.topic("ser").get(*pos)  # a plain handle sees the bytes
        assert isinstance(raw.value, bytes) and raw.value != value

    def test_value_that_does_not_serialize_writes_nothing(self, store):
        t = store.topic("bad", serializer="json")
        with pytest.raises(TypeError):
            t.append({"x": object()})
        assert t.end_offset(0) == 0

    def test_queue_and_pubsub_with_a_serializer(self, store):
        q = store.queue("jobs", serializer="json")
        q.put({"a": 1}, subject="jobs.email")
        m = q.get(timeout=2)
        assert m.value == {"a": 1} and m.headers["subject"] == b"jobs.email"
        m.ack()
        ps = store.pubsub("feed", serializer="msgpack")
        sub = ps.subscribe("s")
        ps.publish([1, 2, 3])
        assert [m.value for m in sub.listen(timeout=0.2)] == [[1, 2, 3]]


class CloudEventsContract(Harness):
    """CloudEvents (binary and structured mode) round trip through a topic, with the
    record's ``msg_id`` made of source and id (a repeat is written once)."""

    @staticmethod
    def _event():
        from cloudevents.http import CloudEvent

        return CloudEvent({"type": "com.example.order.placed", "source": "/shop/eu",
                           "id": "A-1001", "subject": "orders.eu.created",
                           "time": "2026-12-07T06:00:00Z",
                           "datacontenttype": "application/json", "partitionkey": "cust-9"},
                          {"order_id": "o-1", "amount_cents": 1250})

    @pytest.mark.parametrize("mode", ["binary", "structured"])
    def test_round_trip_and_dedupe(self, store, mode):
        from streamlog import cloudevents as sce

        t = store.topic("ce", partitions=2, dedupe_window_s=60)
        ev = self._event()
        rec = sce.to_record(ev, mode)
        pos = t.append(rec.value, key=rec.key, headers=rec.headers, msg_id=rec.msg_id,
                       subject="orders.eu.created")
        again = t.append(rec.value, key=rec.key, headers=rec.headers, msg_id=rec.msg_id,
                         subject="orders.eu.created")
        assert again == pos and t.end_offset(0) + t.end_offset(1) == 1
        assert sce.from_record(t.get(*pos)) == ev
        (m,) = t.group("g", subjects=["orders.eu.*"]).poll(timeout=2)
        assert sce.from_record(m) == ev and m.key == b"cust-9"


# ------------------------------------------------------------------ columnar polls
def _values(b) -> list:
    """The values of a RecordBatch, as bytes (None for a tombstone)."""
    return [None if v is None else bytes(v) for v in (b.value(i) for i in range(len(b)))]


def _batch_until(g, want: int = 1, max_records: int = 100, timeout: float = 10.0):
    """``g.poll_batch`` until it returns a batch of at least ``want`` records (a lease
    that expires, a backoff, a network round trip may take a few polls)."""
    end = time.monotonic() + timeout
    while True:
        b = g.poll_batch(max_records, timeout=0.2)
        if len(b) >= want or time.monotonic() > end:
            return b
        if len(b):
            g.nack_batch(b)


class BatchPollContract(Harness):
    """``Group.poll_batch`` / ``ack_batch`` / ``nack_batch``: the columnar poll leases
    records as ``poll`` does, all from one partition, and settles them as a whole."""

    def test_batch_of_one_partition_with_columns_and_counts(self, store):
        t = store.topic("cb", partitions=3)
        for p in range(3):
            t.append_many([b"p%d-%d" % (p, i) for i in range(5)], keys=keys_for(p, 3, 5))
        g = t.group("g")
        seen: dict[int, list] = {}
        while True:
            b = g.poll_batch(100, timeout=0.2)
            if not len(b):
                break
            assert b.topic == "cb" and b.partition in range(3) and b.partition not in seen
            assert list(b.offsets) == sorted(b.offsets)
            assert list(b.delivery_counts) == [1] * len(b)
            assert len(b.timestamps_ms) == len(b) and int(b.timestamps_ms.min()) > 0
            seen[b.partition] = _values(b)
            assert list(g.ack_batch(b)) == [True] * len(b)
        assert seen == {p: [b"p%d-%d" % (p, i) for i in range(5)] for p in range(3)}
        assert g.lag() == 0

    def test_leases_exclude_other_consumers_and_ack_ends_them(self, store):
        t = store.topic("cx", partitions=1)
        t.append_many([b"%d" % i for i in range(10)])
        a, b = t.group("g", consumer="a"), t.group("g", consumer="b")
        ba = a.poll_batch(4, timeout=1)
        assert _values(ba) == [b"0", b"1", b"2", b"3"]
        bb = b.poll_batch(100, timeout=1)
        assert _values(bb) == [b"%d" % i for i in range(4, 10)]
        assert len(b.poll_batch(100, timeout=0.1)) == 0  # a's records stay a's
        assert list(a.ack_batch(ba)) == [True] * 4
        assert list(b.ack_batch(bb)) == [True] * 6
        assert len(a.poll_batch(100, timeout=0.1)) == 0  # nothing redelivered
        assert a.lag() == 0

    def test_a_second_ack_repeats_and_a_nack_after_it_is_false(self, store):
        t = store.topic("c2", partitions=1)
        t.append_many([b"a", b"b"])
        g = t.group("g")
        b = g.poll_batch(10, timeout=1)
        assert list(g.ack_batch(b)) == [True, True]
        assert list(g.ack_batch(b)) == [True, True]
        assert list(g.nack_batch(b)) == [False, False]
        assert len(g.poll_batch(10, timeout=0.1)) == 0

    def test_nack_redelivers_with_count_two(self, store):
        t = store.topic("cn", partitions=1)
        t.append_many([b"a", b"b", b"c"])
        g = t.group("g")
        b = g.poll_batch(10, timeout=1)
        assert list(g.nack_batch(b)) == [True] * 3
        again = _batch_until(g, 3)
        assert _values(again) == [b"a", b"b", b"c"]
        assert list(again.delivery_counts) == [2, 2, 2]
        assert list(g.ack_batch(again)) == [True] * 3
        assert g.lag() == 0

    def test_a_lost_lease_acks_false(self, store):
        t = store.topic("cl", partitions=1)
        t.append_many([b"a", b"b"])
        g = t.group("g", ack_wait_s=0.2)
        b = g.poll_batch(10, timeout=1)
        other = t.group("g", ack_wait_s=0.2)
        b2 = _batch_until(other, 2)
        assert list(b2.delivery_counts) == [2, 2]
        assert list(g.ack_batch(b)) == [False, False]
        assert list(other.ack_batch(b2)) == [True, True]

    def test_poll_and_poll_batch_mix_on_one_group(self, store):
        t = store.topic("cm", partitions=1)
        t.append_many([b"%d" % i for i in range(9)])
        g = t.group("g")
        ms = g.poll(3, timeout=1)
        b = g.poll_batch(3, timeout=1)
        ms2 = g.poll(100, timeout=1)
        got = [m.value for m in ms] + _values(b) + [m.value for m in ms2]
        assert sorted(got) == sorted(b"%d" % i for i in range(9)) and len(got) == 9
        assert g.ack(ms) == [True] * 3
        assert list(g.ack_batch(b)) == [True] * 3
        assert g.ack(ms2) == [True] * 3
        assert g.lag() == 0
        # a nacked message comes back in a batch, a nacked batch to poll
        t.append_many([b"x", b"y"])
        (m, n) = poll_until(g, 2)
        assert g.nack([m, n]) == [True, True]
        b = _batch_until(g, 2)
        assert list(b.delivery_counts) == [2, 2]
        g.nack_batch(b)
        again = poll_until(g, 2)
        assert sorted(m.delivery_count for m in again) == [3, 3]
        assert g.ack(again) == [True, True]

    def test_max_deliver_moves_a_batch_to_the_dead_letters(self, store):
        t = store.topic("cd", partitions=1)
        t.append_many([b"p1", b"p2"], keys=[b"k1", b"k2"])
        g = t.group("g", max_deliver=2, dead_letter="cd.dead")
        for _ in range(2):
            b = _batch_until(g, 2)
            assert list(g.nack_batch(b, error="bad batch")) == [True, True]
        assert len(g.poll_batch(10, timeout=0.2)) == 0
        dead = g.dead_letters()
        assert wait_for(lambda: dead.end_offset(0) >= 2)
        recs = list(dead.read(0))
        assert [r.value for r in recs] == [b"p1", b"p2"]
        assert any(b"bad batch" in v for v in recs[0].headers.values())
        assert g.lag() == 0

    def test_subject_filter(self, store):
        t = store.topic("cs", partitions=1)
        for i, s in enumerate(["a.x", "b.x", "a.y", "c", "a.z"]):
            t.append(b"%d" % i, subject=s)
        g = t.group("g", subjects=["a.*"])
        got = []
        while True:
            b = g.poll_batch(100, timeout=0.2)
            if not len(b):
                break
            got += _values(b)
            assert all(g.ack_batch(b))
        assert got == [b"0", b"2", b"4"]
        assert g.lag() == 0

    @pytest.mark.parametrize("mode", ["key_shared", "exclusive"])
    def test_other_modes(self, store, mode):
        t = store.topic("co", partitions=2)
        t.append_many([b"%d" % i for i in range(20)], keys=[b"k%d" % (i % 4) for i in range(20)])
        g = t.group("g", mode=mode)
        got = []
        end = time.monotonic() + 10
        while len(got) < 20 and time.monotonic() < end:
            b = g.poll_batch(100, timeout=0.2)
            if len(b):
                got += _values(b)
                assert all(g.ack_batch(b))
        assert sorted(got) == sorted(b"%d" % i for i in range(20))
        assert g.lag() == 0

    def test_empty_batch_on_timeout_and_wakes_on_append(self, store):
        t = store.topic("ce", partitions=1)
        g = t.group("g")
        t0 = time.monotonic()
        b = g.poll_batch(10, timeout=0.2)
        assert len(b) == 0 and time.monotonic() - t0 >= 0.15
        assert len(b.offsets) == 0 and len(b.delivery_counts) == 0
        assert list(g.ack_batch(b)) == []
        threading.Timer(0.05, lambda: t.append(b"late")).start()
        b = g.poll_batch(10, timeout=5)
        assert _values(b) == [b"late"]
        g.ack_batch(b)

    def test_bad_input_is_refused_before_anything_changes(self, store):
        t = store.topic("ci", partitions=1)
        t.append_many([b"a", b"b"])
        g = t.group("g")
        for bad in (0, -1, 1.5, "3", None, True):
            with pytest.raises((TypeError, ValueError)):
                g.poll_batch(bad, timeout=0)
        with pytest.raises((TypeError, ValueError)):
            g.poll_batch(10, timeout=-1)
        other = t.group("g2")
        b = g.poll_batch(10, timeout=1)
        assert len(b) == 2  # the refused polls leased nothing
        with pytest.raises(ValueError):
            g.ack_batch(t.read_batch(0, 0, 10))
        with pytest.raises(ValueError):
            other.ack_batch(b)
        with pytest.raises(ValueError):
            t.group("g").ack_batch(b)  # another handle of the same group
        with pytest.raises(TypeError):
            g.ack_batch([1, 2])
        with pytest.raises((TypeError, ValueError)):
            g.nack_batch(b, delay_s=-1)
        assert list(g.ack_batch(b)) == [True, True]  # the refusals changed nothing
        assert g.lag() == 0

    def test_a_batch_appends_to_another_topic(self, store):
        src, dst = store.topic("cp-in", partitions=1), store.topic("cp-out", partitions=1)
        src.append_many([b"v%d" % i for i in range(50)], keys=[b"k%d" % i for i in range(50)])
        g = src.group("g")
        while True:
            b = g.poll_batch(16, timeout=0.2)
            if not len(b):
                break
            dst.append_batch(0, b)
            assert all(g.ack_batch(b))
        out = list(dst.read(0))
        assert [r.value for r in out] == [b"v%d" % i for i in range(50)]
        assert [r.key for r in out] == [b"k%d" % i for i in range(50)]

    def test_a_serialized_topic_hands_out_the_stored_bytes(self, store):
        """As read_batch: the columns are the stored bytes, not decoded."""
        t = store.topic("cj", partitions=1, serializer="json")
        t.append({"n": 1})
        t.append({"n": 2})
        g = t.group("g")
        b = _batch_until(g, 2)
        raw = store.topic("cj").read_batch(0, 0, 10)
        assert _values(b) == _values(raw) and isinstance(_values(b)[0], bytes)
        assert all(g.ack_batch(b)) and g.lag() == 0
