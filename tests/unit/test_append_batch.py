"""append_batch on the embedded store: compacted topics, read-only and closed stores,
"always" durability, batches larger than a segment, the snapshot from_arrays takes,
and batches read back that go through the column encoder."""

from __future__ import annotations

import numpy as np
import pytest

import streamlog
from streamlog.errors import ReadOnlyStore, RecordTooLarge, StoreClosed


def test_compacted_topic_takes_tombstones_and_needs_keys(tmp_path):
    """On a compacted topic a null value is a tombstone and every record needs a key;
    elsewhere a null value is refused. Nothing is written by a refused batch."""
    with streamlog.open(tmp_path / "s") as log:
        t = log.topic("c", compact=True)
        first = t.append_batch(0, streamlog.RecordBatch.from_arrays([b"v", None],
                                                                    keys=[b"a", b"a"]))
        assert first == 0
        assert [(r.key, r.value) for r in t.read(0)] == [(b"a", b"v"), (b"a", None)]
        with pytest.raises(ValueError, match="key"):
            t.append_batch(0, streamlog.RecordBatch.from_arrays([b"v"]))
        columns = _columns(streamlog.RecordBatch.from_arrays([b"v"]))
        with pytest.raises(ValueError, match="key"):  # columns without an image: same check
            t.append_batch(0, streamlog.RecordBatch("c", 0, columns))
        plain = log.topic("p")
        with pytest.raises(ValueError, match="tombstone"):
            plain.append_batch(0, t.read_batch(0, 0, 2))
        assert t.end_offset(0) == 2 and plain.end_offset(0) == 0


def _columns(b: streamlog.RecordBatch) -> dict:
    return {name: getattr(b, name) for name in (
        "offsets", "timestamps_ms", "value_offsets", "value_data", "value_null",
        "key_offsets", "key_data", "key_null")}


def test_limits_are_checked_on_both_paths(tmp_path):
    """max_record_bytes applies to a from_arrays batch (its summary) and to a read_batch
    batch (the column encoder) alike."""
    with streamlog.open(tmp_path / "s") as log:
        big = log.topic("big")
        big.append_many([b"x" * 50, b"y" * 10], keys=[b"k" * 5, None])
        small = log.topic("small", max_record_bytes=54)
        with pytest.raises(RecordTooLarge):
            small.append_batch(0, big.read_batch(0, 0, 2))
        with pytest.raises(RecordTooLarge):
            small.append_batch(0, streamlog.RecordBatch.from_arrays(
                [b"x" * 50, b"y"], keys=[b"k" * 5, None]))
        assert small.append_batch(0, streamlog.RecordBatch.from_arrays(
            [b"x" * 49, b"y"], keys=[b"k" * 5, None])) == 0
        assert small.end_offset(0) == 2


def test_read_only_and_closed_stores_refuse(tmp_path):
    """A read-only store raises ReadOnlyStore, a closed one StoreClosed."""
    batch = streamlog.RecordBatch.from_arrays([b"v"])
    with streamlog.open(tmp_path / "s") as log:
        log.topic("t").append(b"first")
    with streamlog.open(tmp_path / "s", read_only=True) as ro:
        with pytest.raises(ReadOnlyStore):
            ro.topic("t").append_batch(0, batch)
    log = streamlog.open(tmp_path / "s")
    t = log.topic("t")
    log.close()
    with pytest.raises(StoreClosed):
        t.append_batch(0, batch)


def test_always_and_a_batch_larger_than_a_segment(tmp_path):
    """With durability="always" a batch larger than the topic's segment lands whole (the
    segment grows or rolls for it) and survives a reopen."""
    rows = np.arange(300_000, dtype=np.uint8).reshape(3_000, 100)
    with streamlog.open(tmp_path / "s", durability="always") as log:
        t = log.topic("t", segment_bytes=64 * 1024)
        t.append(b"before")
        assert t.append_batch(0, streamlog.RecordBatch.from_arrays(rows)) == 1
        assert t.append_batch(0, streamlog.RecordBatch.from_arrays(rows[:10])) == 3_001
    with streamlog.open(tmp_path / "s") as log:
        t = log.topic("t")
        b = t.read_batch(0, 1, 3_000)
        assert bytes(b.value_data) == rows.tobytes() and t.end_offset(0) == 3_011
        assert log.verify() == []


def test_from_arrays_is_a_snapshot(tmp_path):
    """Changing the arrays after from_arrays changes neither the columns nor what is
    appended; the caller's arrays stay writable."""
    rows = np.zeros((3, 4), np.uint8)
    ts = np.array([1, 2, 3], np.int64)
    batch = streamlog.RecordBatch.from_arrays(rows, timestamps_ms=ts)
    rows[:] = 7
    ts[:] = 9
    assert rows.flags.writeable and ts.flags.writeable
    assert not batch.value_data.any() and list(batch.timestamps_ms) == [1, 2, 3]
    with pytest.raises(ValueError):
        batch.value_data[0] = 1
    with streamlog.open(tmp_path / "s") as log:
        t = log.topic("t")
        t.append_batch(0, batch)
        assert [(r.value, r.timestamp_ms) for r in t.read(0)] == \
            [(bytes(4), 1), (bytes(4), 2), (bytes(4), 3)]


def test_from_arrays_refuses_bad_input():
    """str values, lengths that differ, negative timestamps, non-sequences: at once."""
    with pytest.raises(TypeError):
        streamlog.RecordBatch.from_arrays(["text"])
    with pytest.raises(TypeError):
        streamlog.RecordBatch.from_arrays(b"bytes")
    with pytest.raises(ValueError):
        streamlog.RecordBatch.from_arrays([b"a", b"b"], keys=[b"k"])
    with pytest.raises(ValueError):
        streamlog.RecordBatch.from_arrays([b"a"], timestamps_ms=[-1])
    with pytest.raises(ValueError):
        streamlog.RecordBatch.from_arrays([b"a", b"b"], timestamps_ms=[0, 1 << 40])
    assert streamlog.RecordBatch.from_arrays([b"a"], keys=["é"]).key(0) == "é".encode()
