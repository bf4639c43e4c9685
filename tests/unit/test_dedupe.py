"""msg_id dedupe in one process: repeats inside the window write nothing, across
restarts, with the index derived from the records' sl-msg-id header."""

from __future__ import annotations

import time

import pytest

import streamlog
from streamlog import RecordTooLarge
from streamlog._types import now_ms
from streamlog.backends.local import codec as _codec
from streamlog.backends.local.dedupe import MSG_ID_HEADER, partition_for_msg_id


@pytest.fixture(autouse=True)
def _small_segments(monkeypatch):
    """Topics these tests create get 1 MiB segments: segments are preallocated, and the
    default 64 MiB per partition would dominate the run time of tests about groups."""
    monkeypatch.setattr(streamlog.backends.local.log, "DEFAULT_SEGMENT_BYTES", 1 << 20)


def test_repeat_returns_first_position_and_writes_nothing(store):
    """A second append with the same msg_id returns the first Position; the log holds one
    record."""
    t = store.topic("orders")
    p1 = t.append(b"a", msg_id="order-1")
    p2 = t.append(b"b", msg_id="order-1")
    p3 = t.append(b"c", msg_id=b"order-1")  # str ids are their UTF-8 bytes
    assert p1 == p2 == p3 == streamlog.Position(0, 0)
    assert [r.value for r in t.read(0)] == [b"a"]
    assert t.append(b"d", msg_id="order-2") == streamlog.Position(0, 1)


def test_msg_id_travels_in_the_record_header(store):
    """The record carries its msg_id in the sl-msg-id header (a caller's one is replaced)."""
    t = store.topic("orders")
    t.append(b"a", headers={"x": "1", MSG_ID_HEADER: "spoof"}, msg_id="id-1")
    (r,) = list(t.read(0))
    assert r.headers == {"x": b"1", MSG_ID_HEADER: b"id-1"}


def test_keyless_record_with_msg_id_goes_to_the_id_partition(store):
    """Keyless appends with a msg_id go to murmur2(msg_id)'s partition, so retries meet."""
    t = store.topic("orders", partitions=8)
    for i in range(20):
        mid = b"m-%d" % i
        pos = t.append(b"x", msg_id=mid)
        assert pos.partition == partition_for_msg_id(mid, 8)
        assert pos.partition == _codec.partition_for_key(mid, 8)
        assert t.append(b"x", msg_id=mid) == pos


def test_keyed_record_with_msg_id_goes_to_the_key_partition(store):
    """With a key, the key picks the partition as usual; a repeat is still caught."""
    t = store.topic("orders", partitions=8)
    pos = t.append(b"x", key=b"customer-7", msg_id="id")
    assert pos.partition == _codec.partition_for_key(b"customer-7", 8)
    assert t.append(b"x", key=b"customer-7", msg_id="id") == pos


def test_repeat_after_window_is_written_again(store):
    """Outside the topic's dedupe window the same msg_id appends a new record."""
    t = store.topic("orders", dedupe_window_s=0.2)
    p1 = t.append(b"a", msg_id="x")
    assert t.append(b"a", msg_id="x") == p1
    time.sleep(0.3)
    p2 = t.append(b"a", msg_id="x")
    assert p2.offset == 1
    assert t.append(b"a", msg_id="x") == p2


def test_dedupe_survives_reopen(tmp_path):
    """Ids appended before a restart are still caught after it."""
    path = tmp_path / "s"
    with streamlog.open(path) as log:
        pos = log.topic("orders").append(b"a", msg_id="once")
    with streamlog.open(path) as log:
        t = log.topic("orders")
        assert t.append(b"a", msg_id="once") == pos
        assert t.end_offset(0) == 1


def test_index_is_rebuilt_from_the_segments(store):
    """With the LMDB index gone the ids are found again in the records' headers."""
    t = store.topic("orders")
    pos = [t.append(b"v", msg_id=f"id-{i}") for i in range(5)]
    t.append(b"plain")
    kv = store.kv("dedupe")
    for k, _ in kv.scan(b""):
        kv.delete(k)
    assert [t.append(b"v", msg_id=f"id-{i}") for i in range(5)] == pos
    assert t.end_offset(0) == 6


def test_entry_for_a_record_never_written_does_not_hide_a_retry(store):
    """An index entry whose record never reached the segment (the process died between
    the LMDB commit and the write) is ignored: the retry is written."""
    from streamlog.backends.local import dedupe

    t = store.topic("orders")
    t.append(b"other")
    kv = store.kv("dedupe")
    kv.put(dedupe._id_key("orders", b"lost"), dedupe._ENTRY.pack(0, 0, now_ms()))
    kv.put(dedupe._hwm_key("orders", 0), dedupe._U64.pack(1))
    pos = t.append(b"retry", msg_id="lost")
    assert pos.offset == 1
    assert t.append(b"retry", msg_id="lost") == pos


def test_index_entries_past_the_end_are_dropped(store):
    """A high-water mark past the partition's end (a write that never happened) is rolled
    back and its entry forgotten."""
    from streamlog.backends.local import dedupe

    t = store.topic("orders")
    kv = store.kv("dedupe")
    kv.put(dedupe._id_key("orders", b"ghost"), dedupe._ENTRY.pack(0, 0, now_ms()))
    kv.put(dedupe._order_key("orders", 0, 0),
           dedupe._ORDER_VALUE.pack(now_ms()) + dedupe._id_key("orders", b"ghost"))
    kv.put(dedupe._hwm_key("orders", 0), dedupe._U64.pack(1))
    assert t.append(b"real", msg_id="ghost") == streamlog.Position(0, 0)
    assert [r.value for r in t.read(0)] == [b"real"]


def test_expired_ids_are_pruned(store):
    """Ids out of the window are removed from the index as later appends go by."""
    t = store.topic("orders", dedupe_window_s=0.05)
    for i in range(10):
        t.append(b"x", msg_id=f"a{i}")
    time.sleep(0.1)
    t.append(b"x", msg_id="late")
    ids = [k for k, _ in store.kv("dedupe").scan(b"i")]
    assert len(ids) <= 10 - 5  # a batch of expired ids went with this append


def test_deleting_the_topic_forgets_its_ids(store):
    """A topic re-created under the same name does not inherit the old ids."""
    t = store.topic("orders")
    t.append(b"a", msg_id="x")
    t.append(b"b", msg_id="y")
    store.delete_topic("orders")
    assert store.kv("dedupe").scan(b"") == []
    t = store.topic("orders")
    t.append(b"first")
    assert t.append(b"a", msg_id="x") == streamlog.Position(0, 1)


def test_long_msg_ids_are_hashed_and_still_exact(store):
    """Ids longer than the index key limit work; two long ids differing at the end are
    distinct."""
    t = store.topic("orders")
    a, b = "x" * 5000 + "a", "x" * 5000 + "b"
    pa = t.append(b"1", msg_id=a)
    pb = t.append(b"2", msg_id=b)
    assert pa != pb
    assert t.append(b"3", msg_id=a) == pa


def test_size_check_counts_the_msg_id_header(store):
    """RecordTooLarge is raised before writing when the id header tips the record over."""
    t = store.topic("orders", max_record_bytes=100)
    t.append(b"x" * 90)
    with pytest.raises(RecordTooLarge):
        t.append(b"x" * 90, msg_id="id-that-adds-bytes")
    assert t.end_offset(0) == 1


@pytest.mark.parametrize("mid, exc", [(b"", ValueError), ("", ValueError), (5, TypeError),
                                      (["a"], TypeError)])
def test_bad_msg_id(store, mid, exc):
    """An empty msg_id is a ValueError, a non str/bytes one a TypeError; nothing written."""
    t = store.topic("orders")
    with pytest.raises(exc):
        t.append(b"x", msg_id=mid)
    assert t.end_offset(0) == 0
