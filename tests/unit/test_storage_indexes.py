"""Sparse offset and time indexes: entries point at batch starts (I4), time entries pair
with offset entries (I8), and lookups stay right when the index files are lost (I1)."""

from __future__ import annotations

import os
import random

import numpy as np

import streamlog
from streamlog.backends.local.codec import reference as _format
from streamlog.backends.local.storage import files


def _fill(path, n=3000, seed=3):
    """One partition, several 64 KiB segments, batches of 1..20 records, timestamps that
    go up and down; returns the (value, timestamp) list."""
    rnd = random.Random(seed)
    out = []
    with streamlog.open(path) as log:
        t = log.topic("t", segment_bytes=64 * 1024)
        while len(out) < n:
            ts = 5_000 + len(out) * 3 + rnd.randint(-40, 40)
            if rnd.random() < 0.2:
                k = rnd.randint(2, 20)
                vals = [b"m%05d" % (len(out) + i) + b"." * rnd.randint(0, 80) for i in range(k)]
                base = t.append_many(vals)[0].offset
                got_ts = t.get(0, base).timestamp_ms
                out.extend((v, got_ts) for v in vals)
            else:
                v = b"s%05d" % len(out) + b"." * rnd.randint(0, 200)
                t.append(v, timestamp_ms=ts)
                out.append((v, ts))
    return out


def _batch_starts(seg_path: str, base: int) -> dict[int, int]:
    """file_pos -> relative offset of every batch start of a segment."""
    data = open(seg_path, "rb").read()
    out, pos, off = {}, 0, base
    while pos < len(data):
        length, count, _, _ = _format.batch_info(data, pos, len(data), off, True)
        if length == 0:
            break
        out[pos] = off - base
        pos += length
        off += count
    return out


def test_index_entries_point_at_batch_starts_I4_I8(tmp_path):
    """Every .index entry is (relative offset, file_pos) of a batch start, strictly
    increasing, entry 0 is (0, 0), about one per 4 KiB; the .timeindex entry i holds the
    running maximum timestamp before that batch."""
    path = tmp_path / "s"
    recs = _fill(path)
    pdir = files.partition_dir(str(path), "t", 0)
    bases = files.list_segments(pdir)
    assert len(bases) >= 3
    running_before = {}
    running = -1
    for i, (_, ts) in enumerate(recs):
        running_before[i] = running
        running = max(running, ts)
    for base in bases[:-1]:  # closed segments: index files trimmed to their entries
        seg = os.path.join(pdir, files.segment_name(base))
        starts = _batch_starts(seg, base)
        idx = np.fromfile(os.path.join(pdir, files.segment_name(base, files.INDEX_SUFFIX)),
                          dtype="<u4").reshape(-1, 2)
        tidx = np.fromfile(os.path.join(pdir, files.segment_name(base, files.TIMEINDEX_SUFFIX)),
                           dtype=[("ts", "<i8"), ("rel", "<u4")])
        assert len(idx) == len(tidx) >= 2
        assert tuple(idx[0]) == (0, 0)
        assert np.all(np.diff(idx[:, 0].astype(np.int64)) > 0)
        assert np.all(np.diff(idx[:, 1].astype(np.int64)) > 0)
        for (rel, pos), (ts, trel) in zip(idx.tolist(), tidx.tolist(), strict=True):
            assert starts[pos] == rel == trel
            assert ts == running_before[base + rel]
        gaps = np.diff(idx[:, 1].astype(np.int64))
        assert gaps.min() >= 4096 and len(idx) >= os.path.getsize(seg) // (4096 + 300)


def test_lookups_with_and_without_index_files_I1(tmp_path):
    """get, read from any offset, read_batch and offset_for_time give the same answers when
    the index files of every segment are deleted (they are derived from the segments)."""
    path = tmp_path / "s"
    recs = _fill(path, n=1500)
    rnd = random.Random(5)
    probes = sorted(rnd.sample(range(len(recs)), 60)) + [0, len(recs) - 1]
    times = [rnd.randint(4_900, 5_000 + 3 * len(recs) + 100) for _ in range(40)]

    def answers():
        with streamlog.open(path) as log:
            t = log.topic("t")
            got = [t.get(0, o).value for o in probes]
            got += [[r.offset for r in t.read(0, o, limit=7)] for o in probes]
            got += [list(t.read_batch(0, o, 300).offsets[[0, -1]]) for o in probes[:-1]]
            got += [t.offset_for_time(0, ts) for ts in times]
            return got

    with_index = answers()
    assert with_index[:len(probes)] == [recs[o][0] for o in probes]
    running, want = -1, []
    for ts in times:
        running, found = -1, len(recs)
        for i, (_, rts) in enumerate(recs):
            running = max(running, rts)
            if running >= ts:
                found = i
                break
        want.append(found)
    assert with_index[-len(times):] == want
    pdir = files.partition_dir(str(path), "t", 0)
    for name in os.listdir(pdir):
        if name.endswith((files.INDEX_SUFFIX, files.TIMEINDEX_SUFFIX)):
            base = int(name[:20])
            if base != files.list_segments(pdir)[-1]:
                os.unlink(os.path.join(pdir, name))
    assert answers() == with_index


def test_reading_from_inside_a_batch(store):
    """A read, get or read_batch that starts in the middle of an append_many batch returns
    the records from that offset on, not the whole batch."""
    t = store.topic("t")
    t.append(b"first")
    t.append_many([b"b%d" % i for i in range(10)])
    t.append(b"last")
    assert [r.value for r in t.read(0, 4, limit=3)] == [b"b3", b"b4", b"b5"]
    assert t.get(0, 7).value == b"b6"
    batch = t.read_batch(0, 9, 10)
    assert list(batch.offsets) == [9, 10, 11]
    assert [bytes(batch.value(i)) for i in range(3)] == [b"b8", b"b9", b"last"]
    assert [r.offset for r in t.read(0, 11)] == [11]
    assert list(t.read(0, 12)) == []
