"""Regressions: recovery keeps what it cuts; reads hand out good records before damage;
verify reports a dead writer's unfinished bytes as a torn tail, not corruption."""

from __future__ import annotations

import mmap
import os
import struct

import pytest

import streamlog
from streamlog.backends.local.storage import files


def _segments(root, topic="t", partition=0):
    d = files.partition_dir(str(root), topic, partition)
    return d, [os.path.join(d, files.segment_name(b)) for b in files.list_segments(d)]


def test_rebuild_cuts_a_damaged_active_tail_into_quarantine_I1(tmp_path):
    """A rebuilt partition cut at a damaged batch keeps the cut bytes under DIR/quarantine."""
    root = tmp_path / "s"
    with streamlog.open(root) as log:
        t = log.topic("t")
        positions = [t.append(b"value-%03d" % i) for i in range(10)]
        last = positions[-1].offset
    d, segs = _segments(root)
    with open(segs[-1], "r+b") as f:
        data = f.read()
        end = len(data.rstrip(b"\0"))
        f.seek(end - 3)  # inside the last record's value: a CRC mismatch, not a torn write
        f.write(b"X")
    os.unlink(os.path.join(d, files.CONTROL_FILE))
    with streamlog.open(root) as log:
        t = log.topic("t")
        assert [r.value for r in t.read(0)] == [b"value-%03d" % i for i in range(last)]
    qdir = root / files.QUARANTINE_DIR / "t" / "0"
    kept = list(qdir.iterdir())
    assert len(kept) == 1
    assert kept[0].read_bytes().endswith(b"value-X09")


def test_read_yields_the_records_before_a_damaged_batch(tmp_path):
    """Records decoded before a damaged batch in the same chunk still reach the caller."""
    root = tmp_path / "s"
    with streamlog.open(root) as log:
        t = log.topic("t")
        for i in range(300):
            t.append(b"v%05d" % i)
    _, segs = _segments(root)
    raw = open(segs[0], "rb").read()
    pos = raw.index(b"v00200")
    with open(segs[0], "r+b") as f:
        f.seek(pos)
        f.write(b"Z")
    with streamlog.open(root) as log:
        t = log.topic("t")
        seen = []
        with pytest.raises(streamlog.CorruptionError):
            for r in t.read(0):
                seen.append(r.value)
        assert seen == [b"v%05d" % i for i in range(200)]


def test_verify_reports_a_dead_writers_bytes_as_torn_then_the_next_append_cuts_them(tmp_path):
    """pending_end past end_pos (a writer died mid-copy) is a torn tail, not corruption."""
    root = tmp_path / "s"
    log = streamlog.open(root)
    t = log.topic("t")
    t.append(b"a")
    d, _ = _segments(root)
    with open(os.path.join(d, files.CONTROL_FILE), "r+b") as f:
        m = mmap.mmap(f.fileno(), 4096)
        end_pos = struct.unpack_from("<Q", m, 128)[0]
        struct.pack_into("<Q", m, 136, end_pos + 64)  # pending_end: a copy in progress
        m.close()
    problems = log.verify()
    assert [p.kind for p in problems] == ["torn"]
    assert t.append(b"b").offset == 1
    assert log.verify() == []
    assert [r.value for r in t.read(0)] == [b"a", b"b"]
    log.close()
