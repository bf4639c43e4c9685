"""Prefaulting fresh segment pages ahead of the appends (storage/prefault.py)."""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import threading

import streamlog
from streamlog import _ext
from streamlog.backends.local.storage import prefault


def _mapping(path, size: int, writable: bool = True) -> _ext.Mapping:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, size)
        return _ext.Mapping(fd, size, writable)
    finally:
        os.close(fd)


def test_prefault_changes_nothing_and_clips_its_range(tmp_path):
    """Populating reads nothing and writes nothing; ranges are clipped to the mapping;
    a kernel without MADV_POPULATE_READ answers EINVAL, which is only a lost hint."""
    m = _mapping(tmp_path / "f", 64 * 1024)
    memoryview(m)[100:105] = b"hello"
    ok = (0, errno.EINVAL)
    assert m.prefault(0, 64 * 1024) in ok
    assert m.prefault(5000, 10 ** 9) in ok  # past the end: clipped
    assert m.prefault(-10, 10) in ok
    assert m.prefault(10, 10) == 0  # empty
    assert bytes(memoryview(m)[100:105]) == b"hello"
    assert bytes(memoryview(m)[:100]) == bytes(100)
    ro = _mapping(tmp_path / "f", 64 * 1024, writable=False)
    assert ro.prefault(0, 64 * 1024) in ok
    assert bytes(memoryview(ro)[100:105]) == b"hello"


def test_appends_across_reserved_chunks_ask_for_prefaults(tmp_path, monkeypatch):
    """Each chunk an append reserves is handed to the prefault thread, starting past the
    bytes that append writes itself, and every record reads back."""
    asked = []
    real = prefault.request

    def spy(mapping, start, end):
        asked.append((start, end))
        real(mapping, start, end)

    monkeypatch.setattr(prefault, "request", spy)
    with streamlog.open(tmp_path / "s", durability="never") as log:
        t = log.topic("t", segment_bytes=64 << 20)
        value = os.urandom(1000)
        for _ in range(12_000):  # ~12.5 MB: three reservations past the first 4 MiB
            t.append(value)
        assert len(asked) >= 2
        assert all(start < end for start, end in asked)
        assert all(b[0] >= a[1] for a, b in zip(asked, asked[1:], strict=False))
        assert [r.value for r in t.read(0, 0)] == [value] * 12_000
        assert log.verify() == []



def test_batches_written_with_pwrite_ask_for_no_prefault(tmp_path, monkeypatch):
    """A chunk reserved by a batch of PWRITE_MIN_BYTES or more (append_many, append_batch)
    is not populated: pwrite needs no page there first, and populating would zero each
    page only for the write to overwrite it. Per-record appends still ask; every record
    reads back either way."""
    asked = []
    real = prefault.request

    def spy(mapping, start, end):
        asked.append((start, end))
        real(mapping, start, end)

    monkeypatch.setattr(prefault, "request", spy)
    with streamlog.open(tmp_path / "s", durability="never") as log:
        t = log.topic("t", segment_bytes=64 << 20)
        values = [os.urandom(1000) for _ in range(100)]  # ~100 KB per call
        assert 100 * 1000 >= _ext.PWRITE_MIN_BYTES
        for _ in range(120):  # ~12 MB: several chunks reserved, all by batches
            t.append_many(values)
        assert asked == []
        for _ in range(6_000):  # then ~6 MB one record at a time: they ask again
            t.append(values[0])
        assert asked
        assert len(list(t.read(0))) == 120 * 100 + 6_000
        assert log.verify() == []

def _child_prefault(path: str, q) -> None:
    m = _mapping(path, 1 << 20)
    prefault.request(m, 0, 1 << 20)
    done = threading.Event()

    class Probe:  # stands for a mapping: tells when the child's thread reached it
        def prefault(self, start, end):
            done.set()

    prefault.request(Probe(), 0, 1)
    q.put(done.wait(10))


def test_a_forked_child_gets_its_own_prefault_thread(tmp_path):
    """The parent's thread does not exist in a fork()ed child: the child starts its own."""
    m = _mapping(tmp_path / "p", 1 << 20)
    prefault.request(m, 0, 1 << 20)  # the parent's thread is running
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_prefault, args=(str(tmp_path / "c"), q))
    p.start()
    assert q.get(timeout=30) is True
    p.join(30)
    assert p.exitcode == 0


def test_written_chunks_are_handed_to_writeback_in_order(tmp_path, monkeypatch):
    """As appends reserve chunks, the full pages written before them go to the kernel's
    writeback (no wait) in non-overlapping, page-aligned steps of at least 1 MiB that
    never reach past the written data; a roll starts the new segment from 0; every
    record reads back; sync_file_range on a bad descriptor is only a lost hint."""
    asked = []
    real = prefault.request_writeback

    def spy(fd, start, end):
        asked.append((os.fstat(fd).st_ino, start, end))
        real(fd, start, end)

    monkeypatch.setattr(prefault, "request_writeback", spy)
    with streamlog.open(tmp_path / "s", durability="never") as log:
        t = log.topic("t", segment_bytes=8 << 20)
        value = os.urandom(1000)
        for _ in range(20_000):  # ~20 MB: two rolls, several reservations per segment
            t.append(value)
        assert len(asked) >= 3
        by_file: dict[int, list[tuple[int, int]]] = {}
        for ino, start, end in asked:
            by_file.setdefault(ino, []).append((start, end))
        assert len(by_file) >= 2
        for spans in by_file.values():
            assert spans[0][0] == 0
            for (_s0, e0), (s1, _e1) in zip(spans, spans[1:], strict=False):
                assert e0 == s1
            for s, e in spans:
                assert e - s >= 1 << 20 and s % 4096 == 0 and e % 4096 == 0
                assert e <= 8 << 20
        assert [r.value for r in t.read(0, 0)] == [value] * 20_000
    assert _ext.writeback(-1, 0, 4096) == errno.EBADF
    fd = os.open(tmp_path / "w", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x" * 8192)
        assert _ext.writeback(fd, 0, 8192) == 0 and _ext.writeback(fd, 10, 10) == 0
    finally:
        os.close(fd)


def test_the_next_chunk_is_reserved_before_the_appends_reach_it(tmp_path):
    """The fast path hands an append to the slow path to reserve the next chunk while
    RESERVE_LOOKAHEAD_BYTES of the current one are still free (so its pages are being
    populated before the appends get there), and never loops at a segment's end."""
    from streamlog._limits import SEGMENT_ALLOCATION_CHUNK_BYTES

    assert 0 < _ext.RESERVE_LOOKAHEAD_BYTES < SEGMENT_ALLOCATION_CHUNK_BYTES
    with streamlog.open(tmp_path / "s", durability="never") as log:
        t = log.topic("t", segment_bytes=16 << 20)
        part = t._parts[0]
        value = os.urandom(1000)
        for i in range(40_000):  # ~41 MB: two rolls, reservations up to each segment's end
            t.append(value)
            if i % 997 == 0:
                ctl = part.ctl
                room = ctl.allocated_end - ctl.end_pos
                assert room >= _ext.RESERVE_LOOKAHEAD_BYTES or ctl.allocated_end == ctl.capacity
        assert t.end_offset(0) == 40_000
        assert sum(1 for _ in t.read(0, 0)) == 40_000
