"""Compaction keeps the newest record of every key in closed segments, never changes an
offset (reads skip removed ones, I2 with gap batches), drops tombstones after
delete_retention_s, keeps indexes and the time index right, and opens stores of the
previous on-disk format."""

from __future__ import annotations

import json
import os
import tarfile
import time

import pytest

import streamlog
from streamlog import ConfigMismatch, OffsetOutOfRange, Retention
from streamlog.backends.local.storage import compaction, files

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "store-format1.tar.gz")


@pytest.fixture
def no_background(monkeypatch):
    """Only explicit log.compact() calls compact (results are then exact)."""
    monkeypatch.setattr(compaction.Background, "check", lambda self, log: None)


def _fill(t, n=300, keys=10, ts0=1_700_000_000_000):
    """Append n records over ``keys`` keys; returns {offset: (key, value)}."""
    model = {}
    for i in range(n):
        k = b"k%d" % (i % keys)
        v = b"value-%d-" % i + b"x" * (i % 13)
        pos = t.append(v, key=k, timestamp_ms=ts0 + i)
        model[pos.offset] = (k, v)
    return model


def _newest(model: dict) -> dict:
    out = {}
    for off in sorted(model):
        k, v = model[off]
        out[k] = (off, v)
    return out


def _closed_end(t, p=0) -> int:
    return t._parts[p].view()[1]


def _check_against(t, model: dict, p=0) -> list:
    """Every record read is the one appended at its offset; every offset missing is one
    whose key has a newer record (or a tombstone), and only in closed segments."""
    recs = list(t.read(p))
    seen = {r.offset: (r.key, r.value) for r in recs}
    assert [r.offset for r in recs] == sorted(seen)
    for off, kv in seen.items():
        assert model[off] == kv
    newest = _newest(model)
    for off in set(model) - set(seen):
        k, v = model[off]
        assert off < _closed_end(t, p)
        assert newest[k][0] > off or v is None, f"offset {off} lost the newest value of {k}"
    for k, (off, v) in newest.items():
        if v is not None:
            assert seen.get(off) == (k, v), f"newest value of {k} at {off} missing"
    return recs


def test_compact_keeps_newest_per_key_offsets_unchanged_I2(store, no_background):
    t = store.topic("c", compact=True, segment_bytes=1024)
    model = _fill(t)
    end = t.end_offset(0)
    res = store.compact("c")
    assert isinstance(res, streamlog.CompactionResult)
    assert res.records_removed > 0 and res.bytes_freed > 0 and res.segments_rewritten > 0
    recs = _check_against(t, model)
    assert len(recs) == len(model) - res.records_removed
    assert t.end_offset(0) == end and t.start_offset(0) == 0
    # appends go on at the same end; the compacted segments read back in any order
    pos = t.append(b"after", key=b"k1")
    assert pos.offset == end
    assert store.verify() == []
    # a second compaction with nothing new removes nothing
    assert store.compact("c").records_removed == 0


def test_get_of_a_compacted_offset_says_so(store, no_background):
    t = store.topic("c", compact=True, segment_bytes=1024)
    model = _fill(t)
    store.compact("c")
    kept = {r.offset for r in t.read(0)}
    gone = min(set(model) - kept)
    with pytest.raises(OffsetOutOfRange, match="compacted away"):
        t.get(0, gone)
    some = min(kept)
    assert t.get(0, some).value == model[some][1]
    # reads that start inside a gap start at the next record kept
    assert next(t.read(0, gone)).offset == min(o for o in kept if o > gone)


def test_keyless_append_on_a_compacted_topic_is_refused(store):
    t = store.topic("c", compact=True)
    with pytest.raises(ValueError, match="needs a key"):
        t.append(b"v")
    with pytest.raises(ValueError, match="needs a key"):
        t.append(b"v", headers={"h": "x"})
    with pytest.raises(ValueError, match="needs a key"):
        t.append_many([b"a", b"b"])
    with pytest.raises(ValueError, match="needs a key"):
        t.append_many([b"a", b"b"], keys=[b"k", None])
    assert t.end_offset(0) == 0
    t.append_many([b"a", b"b"], keys=[b"k", b"j"])
    assert t.end_offset(0) == 2
    plain = store.topic("plain")
    plain.append(b"v")  # keyless is fine elsewhere
    with pytest.raises(ConfigMismatch):
        store.compact("plain")


def test_tombstones_marked_then_dropped_after_delete_retention(store, no_background):
    t = store.topic("c", compact=True, segment_bytes=1024, delete_retention_s=3600)
    old = int(time.time() * 1000) - 7200_000
    model = _fill(t, n=100, ts0=old)
    pos = t.append(None, key=b"k3", timestamp_ms=old + 200)
    model[pos.offset] = (b"k3", None)
    for i in range(60):  # more records of other keys, so the tombstone's segment closes
        p = t.append(b"pad%d" % i, key=b"p%d" % (i % 4), timestamp_ms=old + 300 + i)
        model[p.offset] = (b"p%d" % (i % 4), b"pad%d" % i)
    assert pos.offset < _closed_end(t)
    cols = t.read_batch(0, pos.offset, 1)
    assert bool(cols.value_null[0]) and cols.offsets[0] == pos.offset
    store.compact("c")
    # the segment was closed just now: the tombstone stays (a day by default, here 1 h)
    assert t.get(0, pos.offset).value is None
    assert all(r.key != b"k3" or r.value is None for r in t.read(0))
    # once its segment is older than delete_retention_s too, it goes
    pdir = files.partition_dir(store.path, "c", 0)
    for b in files.list_segments(pdir)[:-1]:
        path = os.path.join(pdir, files.segment_name(b))
        os.utime(path, (old / 1000, old / 1000))
    res = store.compact("c")
    assert res.records_removed >= 1
    with pytest.raises(OffsetOutOfRange, match="compacted"):
        t.get(0, pos.offset)
    assert all(r.key != b"k3" for r in t.read(0))


def test_indexes_and_time_index_stay_right_after_a_rewrite(tmp_path, no_background):
    path = tmp_path / "s"
    ts0 = 1_700_000_000_000
    with streamlog.open(path) as log:
        t = log.topic("c", compact=True, segment_bytes=64 * 1024)
        for i in range(6000):  # several index entries per segment (one per 4 KiB)
            t.append(b"v%06d" % i + b"." * 40, key=b"k%d" % (i % 50), timestamp_ms=ts0 + i)
        before = {ts: t.offset_for_time(0, ts) for ts in range(ts0, ts0 + 6000, 97)}
        log.compact("c")
        kept = [r.offset for r in t.read(0)]
        after = {ts: t.offset_for_time(0, ts) for ts in before}
        # the running maximum is unchanged (gap batches keep the removed timestamps),
        # so each answer reads from the same place: the first kept record at or after it
        for ts in before:
            want = next((o for o in kept if o >= before[ts]), t.end_offset(0))
            got = next((o for o in kept if o >= after[ts]), t.end_offset(0))
            assert got == want
        for off in kept[::37]:
            assert t.get(0, off).offset == off
        listing = [(r.offset, r.value) for r in t.read(0)]
    # the index files of the rewritten segments equal what a rebuild derives
    pdir = files.partition_dir(str(path), "c", 0)
    written = {}
    for b in files.list_segments(pdir)[:-1]:
        with open(os.path.join(pdir, files.segment_name(b, files.INDEX_SUFFIX)), "rb") as f:
            written[b] = f.read()
    with streamlog.open(path) as log:
        t = log.existing_topic("c")
        part = t._parts[0]
        for b, raw in written.items():
            assert compaction._index_entries_of_file(part, b)[0] == raw
        assert [(r.offset, r.value) for r in t.read(0)] == listing
        assert log.verify() == []


def test_verify_finds_damage_in_a_compacted_segment(store, no_background):
    t = store.topic("c", compact=True, segment_bytes=1024)
    _fill(t)
    store.compact("c")
    pdir = files.partition_dir(store.path, "c", 0)
    b = files.list_segments(pdir)[0]
    path = os.path.join(pdir, files.segment_name(b))
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        data[30] ^= 0xFF  # inside the first batch's CRC range
        f.seek(0)
        f.write(data)
    problems = streamlog.open(store.path, read_only=True).verify()
    assert any(p.kind == "corrupt" and p.path == path for p in problems)


def test_bounded_key_map_compacts_in_several_passes(store, no_background, monkeypatch):
    """Past COMPACTION_MAX_KEYS keys the map stops at a segment boundary; the next
    compaction goes on from there, and the result is the same in the end."""
    from streamlog import _limits

    monkeypatch.setattr(_limits, "COMPACTION_MAX_KEYS", 20)
    t = store.topic("c", compact=True, segment_bytes=1024)
    model = _fill(t, n=400, keys=60)
    removed = [store.compact("c").records_removed]
    # one segment's keys (about 15) per pass, until the checkpoint reaches the end
    while compaction._checkpoint(t._parts[0]) < _closed_end(t):
        removed.append(store.compact("c").records_removed)
        assert len(removed) < 100
    assert sum(removed) > 0 and len(removed) > 3
    recs = _check_against(t, model)
    closed = _closed_end(t)
    newest_closed = _newest({o: kv for o, kv in model.items() if o < closed})
    # in the end every record superseded inside the closed segments is gone
    assert all(newest_closed[r.key][0] == r.offset for r in recs if r.offset < closed)


def test_retention_combines_with_compaction(store, no_background):
    t = store.topic("c", compact=True, segment_bytes=1024, retention=Retention(max_bytes=3000))
    model = _fill(t, n=300)
    store.compact("c")
    start = t.start_offset(0)
    assert start > 0
    recs = list(t.read(0))
    assert recs[0].offset >= start
    for r in recs:
        assert model[r.offset] == (r.key, r.value)


def test_unfinished_compaction_is_completed_or_undone_on_open(tmp_path, no_background):
    """A `.swap` (complete, renamed after every `.cleaned` was synced) is installed; a
    `.cleaned` (maybe partial) is deleted."""
    path = tmp_path / "s"
    with streamlog.open(path) as log:
        t = log.topic("c", compact=True, segment_bytes=1024)
        model = _fill(t)
        part = t._parts[0]
        pdir = part.path
        bases = files.list_segments(pdir)
        data = compaction._read_segment(part, bases[0])
        newest = {compaction.key_hash(k): off for off, (k, _) in model.items()}
        new, _ = compaction._rewrite(data, bases[0], "x", newest, -1)
        data1 = compaction._read_segment(part, bases[1])
        new1, _ = compaction._rewrite(data1, bases[1], "x", newest, -1)
    open(os.path.join(pdir, files.COMPACT_LOCK_FILE), "wb").close()  # a compaction's first step
    with open(os.path.join(pdir, files.segment_name(bases[0], ".swap")), "wb") as f:
        f.write(new)
    with open(os.path.join(pdir, files.segment_name(bases[1], ".cleaned")), "wb") as f:
        f.write(new1[: len(new1) // 2])
    with streamlog.open(path) as log:
        t = log.existing_topic("c")
        assert compaction.needs_recovery(pdir) is False
        with open(os.path.join(pdir, files.segment_name(bases[0])), "rb") as f:
            assert f.read() == bytes(new)
        with open(os.path.join(pdir, files.segment_name(bases[1])), "rb") as f:
            assert f.read() == data1
        _check_against(t, model)
        assert log.verify() == []


def test_store_of_the_previous_format_opens_reads_and_upgrades(tmp_path, no_background):
    """A store written by format 1 (checked in) is read in place; its first compaction
    marks it format 2 before writing a gap batch."""
    path = tmp_path / "old"
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(path, filter="data")
    with open(path / files.FORMAT_FILE) as f:
        assert json.load(f)["format"] == 1
    with streamlog.open(path) as log:
        assert log.topics() == ["customers", "plain"]
        t = log.existing_topic("customers")
        recs = list(t.read(0))
        assert len(recs) == 61 and [r.offset for r in recs] == list(range(61))
        assert recs[-1].key == b"k3" and recs[-1].value is None
        model = {r.offset: (r.key, r.value) for r in recs}
        assert [r.value for r in log.existing_topic("plain").read(0)] == \
            [b"x%d" % i for i in range(30)]
        with open(path / files.FORMAT_FILE) as f:
            assert json.load(f)["format"] == 1  # reading changes nothing
        res = log.compact("customers")
        assert res.records_removed > 0
        with open(path / files.FORMAT_FILE) as f:
            assert json.load(f)["format"] == 2
        _check_against(t, model)
        tbl = log.table("customers")
        assert sorted(tbl.keys()) == [b"k%d" % i for i in range(7) if i != 3]
        assert tbl["k4"] == b"v4-53"
        assert log.verify() == []


def test_background_compaction_runs_when_half_the_closed_bytes_are_superseded(
        tmp_path, monkeypatch):
    """A process with the store open for writing compacts a partition by itself (woken
    by its rolls) once at least half of the closed bytes would go; not before."""
    import threading

    checked = threading.Event()
    real = compaction.Background.check

    def check(self, log):
        real(self, log)
        checked.set()

    monkeypatch.setattr(compaction.Background, "check", check)
    with streamlog.open(tmp_path / "s") as log:
        t = log.topic("c", compact=True, segment_bytes=1024)
        for i in range(40):  # distinct keys: nothing superseded, nothing compacted
            t.append(b"v%d" % i + b"." * 30, key=b"u%d" % i)
        assert checked.wait(30)
        assert len(list(t.read(0))) == 40
        _fill(t, n=300, keys=5)
        deadline = time.monotonic() + 30
        while len(list(t.read(0))) == t.end_offset(0):  # until records are gone
            checked.clear()
            _fill(t, n=20, keys=5)  # more rolls, more checks
            assert checked.wait(max(deadline - time.monotonic(), 0.1))
            assert time.monotonic() < deadline
        # only superseded records went: every u-key (never superseded) is still there
        assert len([r for r in t.read(0) if r.key.startswith(b"u")]) == 40


def test_cli_compact_reports_what_it_did(tmp_path, no_background):
    from typer.testing import CliRunner

    from streamlog.cli import app

    with streamlog.open(tmp_path / "s") as log:
        t = log.topic("c", compact=True, segment_bytes=1024)
        _fill(t)
    res = CliRunner().invoke(app, ["compact", str(tmp_path / "s"), "c"])
    assert res.exit_code == 0, res.output
    assert "records removed" in res.output and "rewritten" in res.output
    res = CliRunner().invoke(app, ["compact", str(tmp_path / "s"), "missing"])
    assert res.exit_code != 0


def test_groups_on_a_compacted_topic_count_and_get_what_remains(store, no_background):
    t = store.topic("c", compact=True, segment_bytes=1024)
    g = t.group("g")
    _fill(t, n=200)
    assert g.lag() == 200
    store.compact("c")
    remaining = [r.offset for r in t.read(0)]
    assert g.lag() == len(remaining) < 200
    got = []
    while msgs := g.poll(50, timeout=0):
        got.extend(m.offset for m in msgs)
        g.ack(msgs)
    assert got == remaining and g.lag() == 0


@pytest.mark.parametrize("key_bytes", [0, 1, 16, 17, 600])
def test_keys_of_every_length_compact_alike(store, no_background, key_bytes):
    """Keys up to 16 bytes are their own map key, longer ones a digest: both compact
    the same; the empty key is a key."""
    t = store.topic("c", compact=True, segment_bytes=1024)
    model = {}
    for i in range(200):
        k = (b"%d" % (i % 6)).rjust(key_bytes, b"x")[-key_bytes:] if key_bytes else b""
        if key_bytes == 1:
            k = b"%d" % (i % 6)
        pos = t.append(b"value-%d" % i, key=k)
        model[pos.offset] = (k, b"value-%d" % i)
    store.compact("c")
    recs = _check_against(t, model)
    closed = _closed_end(t)
    newest_closed = _newest({o: kv for o, kv in model.items() if o < closed})
    assert all(newest_closed[r.key][0] == r.offset for r in recs if r.offset < closed)


def test_a_writer_that_never_opened_the_topic_compacts_it_in_the_background(
        tmp_path, monkeypatch):
    import threading

    from streamlog import _limits

    real = compaction.Background.check
    monkeypatch.setattr(compaction.Background, "check", lambda self, log: None)
    with streamlog.open(tmp_path / "s") as log:
        model = _fill(log.topic("c", compact=True, segment_bytes=1024), n=300, keys=5)
    checked = threading.Event()

    def check(self, log):
        real(self, log)
        checked.set()

    monkeypatch.setattr(compaction.Background, "check", check)
    monkeypatch.setattr(_limits, "COMPACTION_CHECK_INTERVAL_S", 0.05)
    with streamlog.open(tmp_path / "s") as log:  # opens no topic handle itself
        assert checked.wait(30)
        t = log.existing_topic("c")
        assert len(list(t.read(0))) < len(model)
        _check_against(t, model)
