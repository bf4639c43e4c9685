"""Damaged closed segments are never returned as data: reads raise CorruptionError naming
the file and the damaged batch's byte position, and log.verify() lists them."""

from __future__ import annotations

import os

import pytest

import streamlog
from streamlog import CorruptionError
from streamlog.backends.local.codec import reference as _format
from streamlog.backends.local.storage import files


def _fill(path, partitions=1, count=120, segment_bytes=1024):
    """A store whose partitions have several closed segments; returns {partition: values}."""
    with streamlog.open(path) as log:
        t = log.topic("t", partitions=partitions, segment_bytes=segment_bytes)
        values: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        for i in range(count):
            v = b"value-%05d-" % i + bytes([65 + i % 26]) * (i % 40)
            pos = t.append(v, key=b"k%d" % i, headers={"n": str(i)})
            values[pos.partition].append(v)
        if count % 7 == 0:
            t.append_many([b"tail-a", b"tail-b"], keys=[b"x", b"x"])
        return values


def _segments(path, partition=0) -> list[str]:
    pdir = files.partition_dir(str(path), "t", partition)
    return sorted(os.path.join(pdir, n) for n in os.listdir(pdir)
                  if files.parse_segment(n) is not None)


def _batches(seg_path: str) -> list[tuple[int, int, int]]:
    """(file_pos, length, base_offset) of every batch of a closed segment."""
    data = open(seg_path, "rb").read()
    out, pos = [], 0
    while pos < len(data):
        length, count, _, _ = _format.batch_info(data, pos, len(data), -1, True)
        if length == 0:
            break
        out.append((pos, length, int.from_bytes(data[pos:pos + 8], "little")))
        pos += length
    return out


def _flip(path: str, file_pos: int, mask: int = 0x40) -> None:
    with open(path, "r+b") as f:
        f.seek(file_pos)
        b = f.read(1)
        f.seek(file_pos)
        f.write(bytes([b[0] ^ mask]))


@pytest.mark.parametrize("field_pos", [0, 3, 8, 12, 16, 20, 22, 23, 24, 28, 36, 44, 48, 52, 60,
                                       -1])
def test_flipped_byte_in_a_closed_segment_is_corruption(tmp_path, field_pos):
    """A flipped byte anywhere in a batch of a closed segment: reading through it raises
    CorruptionError(path, file_pos of that batch), records before it read correctly,
    records after it (next segment) stay readable, and verify() reports exactly it."""
    path = tmp_path / "s"
    values = _fill(path)[0]
    segs = _segments(path)
    assert len(segs) >= 4
    victim = segs[1]
    batches = _batches(victim)
    bpos, blen, bbase = batches[len(batches) // 2]
    _flip(victim, bpos + (field_pos if field_pos >= 0 else blen - 1))
    with streamlog.open(path) as log:
        t = log.topic("t")
        got = []
        with pytest.raises(CorruptionError) as ei:
            for r in t.read(0):
                got.append(r)
        assert ei.value.path == victim
        assert ei.value.file_pos == bpos
        assert "streamlog verify" in str(ei.value)
        # never damaged data: everything yielded precedes the damaged batch and is right
        assert [r.offset for r in got] == list(range(len(got)))
        assert len(got) <= bbase
        assert [r.value for r in got] == values[:len(got)]
        with pytest.raises(CorruptionError):
            t.get(0, bbase)
        with pytest.raises(CorruptionError):
            t.read_batch(0, bbase, 10)
        # the rest of the log is intact and readable from the next segment on
        nxt = files.parse_segment(os.path.basename(segs[2]))
        assert [r.value for r in t.read(0, nxt)] == values[nxt:]
        assert t.get(0, nxt).value == values[nxt]
        problems = log.verify()
        assert [(p.path, p.file_pos, p.topic, p.partition, p.kind) for p in problems] == [
            (victim, bpos, "t", 0, "corrupt")]
        assert problems[0].reason


def test_verify_is_empty_on_a_healthy_store(tmp_path):
    """verify() returns [] on a healthy multi-partition, multi-segment store, and calls
    progress once per partition."""
    path = tmp_path / "s"
    _fill(path, partitions=3, count=300)
    with streamlog.open(path) as log:
        log.topic("empty", partitions=2)
        calls = []
        assert log.verify(progress=lambda done, total: calls.append((done, total))) == []
        assert calls == [(i, 5) for i in range(1, 6)]


def test_verify_finds_damage_in_every_partition_and_the_active_segment(tmp_path):
    """verify() reports each damaged batch, across partitions and in the active segment."""
    path = tmp_path / "s"
    _fill(path, partitions=2, count=200)
    damaged = []
    for p in range(2):
        segs = _segments(path, p)
        target = segs[0] if p == 0 else segs[-1]
        if p == 0:
            bpos = _batches(target)[-1][0]
        else:
            # the active segment is preallocated: its batches end at the first zero header
            bpos = _batches(target)[0][0]
        _flip(target, bpos + 30)
        damaged.append((target, bpos))
    with streamlog.open(path) as log:
        problems = log.verify()
        assert sorted((p.path, p.file_pos) for p in problems) == sorted(damaged)


def test_damage_after_a_first_read_is_found_by_verify(tmp_path):
    """Damage made after this process verified a segment is still found by verify()."""
    path = tmp_path / "s"
    _fill(path)
    with streamlog.open(path) as log:
        t = log.topic("t")
        assert len(list(t.read(0))) == 120
        seg = _segments(path)[0]
        bpos = _batches(seg)[1][0]
        _flip(seg, bpos + 50)
        problems = log.verify()
        assert [(p.path, p.file_pos) for p in problems] == [(seg, bpos)]


def test_a_missing_middle_segment_is_reported(tmp_path):
    """A gap in the offsets between segments (I2) is reported by verify() and raises on read."""
    path = tmp_path / "s"
    _fill(path)
    segs = _segments(path)
    os.unlink(segs[2])
    for suffix in (files.INDEX_SUFFIX, files.TIMEINDEX_SUFFIX):
        os.unlink(segs[2][:-len(files.LOG_SUFFIX)] + suffix)
    with streamlog.open(path) as log:
        t = log.topic("t")
        with pytest.raises(CorruptionError) as ei:
            list(t.read(0))
        assert ei.value.path == segs[1]
        problems = log.verify()
        assert problems and {p.kind for p in problems} == {"corrupt"}
