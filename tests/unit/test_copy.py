"""Copying embedded stores (``streamlog.copy``, ``streamlog copy``) and the contract members
it uses on the embedded store: ``append_copies``, ``set_start_offset``, ``group_positions``.
The JetStream directions are in tests/jetstream/test_copy.py."""

from __future__ import annotations

import os
import shutil

import pytest
from typer.testing import CliRunner

import streamlog
from streamlog import Record, Retention
from streamlog.cli import app
from tests.jetstream.test_copy import _kill_mid_copy, _records


def _rec(i: int, ts: int = 1000) -> Record:
    return Record("x", 0, i, ts + i, None if i % 3 == 0 else b"k%d" % i, b"v%d" % i,
                  {"h": b"%d" % i} if i % 2 else {})


def test_append_copies_keeps_every_field_and_refuses_another_offset(tmp_path):
    """Records land at the given offsets with their timestamps, keys (None too) and
    headers; a call for an offset that is not the partition's end writes nothing."""
    with streamlog.open(tmp_path / "s") as log:
        t = log.topic("t", partitions=2)
        assert t.append_copies(1, 0, [_rec(i) for i in range(2500)]) == 2500
        got = [(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in t.read(1)]
        assert got == [(i, 1000 + i, _rec(i).key, _rec(i).value, _rec(i).headers)
                       for i in range(2500)]
        with pytest.raises(streamlog.WrongExpectedVersion) as e:
            t.append_copies(1, 10, [_rec(0)])
        assert (e.value.expected, e.value.actual) == (10, 2500)
        with pytest.raises(TypeError):
            t.append_copies(0, 0, [_rec(0), "not a record"])
        with pytest.raises(streamlog.RecordTooLarge):
            t.append_copies(0, 0, [_rec(0), Record("x", 0, 1, 1, None, b"x" * (9 << 20), {})])
        assert t.end_offset(0) == 0 and t.end_offset(1) == 2500


def test_append_copies_splits_timestamps_a_batch_cannot_hold(tmp_path):
    """Records whose timestamps lie years apart (more than one batch's 2**31 ms span)
    are copied with their own timestamps."""
    with streamlog.open(tmp_path / "s") as log:
        t = log.topic("t")
        recs = [Record("x", 0, i, i * 10**11, None, b"v", {}) for i in range(5)]
        t.append_copies(0, 0, recs)
        assert [r.timestamp_ms for r in t.read(0)] == [i * 10**11 for i in range(5)]


def test_set_start_offset_keeps_offsets_across_reopen_and_appends_continue(tmp_path):
    """An empty partition moved to start at 70 reports [70, 70), keeps it after a reopen,
    and its next records get 70, 71, ...; a partition with records is refused."""
    path = tmp_path / "s"
    with streamlog.open(path) as log:
        t = log.topic("t", partitions=2)
        t.set_start_offset(0, 70)
        t.set_start_offset(0, 70)  # idempotent
        assert (t.start_offset(0), t.end_offset(0)) == (70, 70)
        t.append_copies(0, 70, [_rec(0), _rec(1)])
        with pytest.raises(streamlog.StreamlogError, match="cannot start"):
            t.set_start_offset(0, 100)
    with streamlog.open(path) as log:
        t = log.existing_topic("t")
        assert (t.start_offset(0), t.end_offset(0)) == (70, 72)
        assert [r.offset for r in t.read(0)] == [70, 71]
        with pytest.raises(streamlog.OffsetOutOfRange):
            t.get(0, 3)
        assert log.verify() == []


def test_moved_start_survives_recovery_after_a_machine_restart(tmp_path, monkeypatch):
    """A start moved on an empty partition is kept by the recovery that runs after a
    machine restart, also when the empty segment it replaced was not yet removed (a
    crash between the two steps): recovery removes the old segment, not the new one."""
    path = tmp_path / "s"
    with streamlog.open(path) as log:
        log.topic("t").set_start_offset(0, 500)
    pdir = path / "topics" / "t" / "0"
    new = pdir / f"{500:020d}.log"
    shutil.copy(new, pdir / f"{0:020d}.log")  # the old, empty segment left behind
    import streamlog.backends.local.log as local_log

    monkeypatch.setattr(local_log, "boot_id", lambda: b"another-boot-id-0000000000000000")
    with streamlog.open(path) as log:
        t = log.existing_topic("t")
        assert (t.start_offset(0), t.end_offset(0)) == (500, 500)
        assert t.append(b"x").offset == 500
    assert not (pdir / f"{0:020d}.log").exists()
    assert new.exists()


def _make_store(path) -> dict:
    log = streamlog.open(path)
    t = log.topic("orders", partitions=3, retention=Retention(max_age_s=86400 * 365),
                  dedupe_window_s=30)
    for i in range(2000):
        t.append(b"v%d" % i, key=b"k%d" % (i % 41), headers={"n": b"%d" % i})
    g = t.group("billing", max_deliver=4, backoff_s=[0.5])
    assert all(g.ack(g.poll(700, timeout=1)))
    g.poll(30, timeout=1)  # leased, not acknowledged
    ex = t.group("owners", mode="exclusive")
    assert all(ex.ack(ex.poll(50, timeout=1)))
    es = log.event_store("bank")
    for i in range(25):
        es.append(f"s{i % 3}", [b"e%d" % i])
    positions = t.group_positions("billing")
    log.close()
    return positions


def test_copy_between_embedded_stores_keeps_everything_and_reruns_idle(tmp_path):
    """Records, offsets, topic options, group options and positions and event-stream
    versions are copied; a rerun copies nothing; an empty partition stays empty."""
    src, dst = tmp_path / "a", tmp_path / "b"
    positions = _make_store(src)
    res = streamlog.copy(src, dst)
    assert (res.records, res.groups) == (2025, 2)
    assert streamlog.copy(src, dst).records == 0
    with streamlog.open(src, read_only=True) as a, streamlog.open(dst) as b:
        assert a.topics() == b.topics()
        for name in a.topics():
            assert _records(a, name) == _records(b, name)
        ta, tb = a.existing_topic("orders"), b.existing_topic("orders")
        for k in ("partitions", "retention", "dedupe_window_s", "max_record_bytes"):
            assert ta.config[k] == tb.config[k], k
        assert tb.group_positions("billing") == positions
        assert tb.group_positions("owners") == ta.group_positions("owners")
        for g in ("billing", "owners"):
            ca, cb = ta.group_config(g), tb.group_config(g)
            for k in ("mode", "ack_wait_s", "max_deliver", "backoff_s", "dead_letter"):
                assert ca[k] == cb[k], (g, k)
        assert a.event_store("bank").read_all() == b.event_store("bank").read_all()
        assert b.event_store("bank").append("s1", [b"x"], expected_version=7) == 8


def test_copy_of_named_topics_checks_the_source_before_creating_anything(tmp_path):
    """--topics copies only those; a missing one is TopicNotFound, and a missing source
    an error, before the destination directory exists."""
    src = tmp_path / "a"
    _make_store(src)
    with pytest.raises(streamlog.TopicNotFound, match="nope"):
        streamlog.copy(src, tmp_path / "none", topics=["orders", "nope"])
    assert not (tmp_path / "none").exists()
    with pytest.raises(streamlog.StreamlogError):
        streamlog.copy(tmp_path / "missing", tmp_path / "none")
    assert not (tmp_path / "none").exists()
    res = streamlog.copy(src, tmp_path / "b", topics=["bank"])
    assert res.topics == ["bank"]
    with streamlog.open(tmp_path / "b") as b:
        assert b.topics() == ["bank"]
    with pytest.raises(ValueError, match="same store"):
        streamlog.copy(src, src)
    with pytest.raises(TypeError):
        streamlog.copy(src, tmp_path / "c", topics="orders")


def test_copy_killed_mid_way_resumes_without_duplicates(tmp_path):
    """A copy process killed with SIGKILL mid-copy leaves whole batches; the rerun
    continues from the destination's end and the result equals the source."""
    src, dst = str(tmp_path / "a"), str(tmp_path / "b")
    with streamlog.open(src) as log:
        t = log.topic("big", partitions=2)
        for i in range(0, 40_000, 1000):
            t.append_many([b"r%06d" % j for j in range(i, i + 1000)],
                          keys=[b"k%d" % (j % 89) for j in range(i, i + 1000)])

    def landed() -> int:
        if not os.path.exists(os.path.join(dst, "streamlog.json")):
            return 0
        try:
            with streamlog.open(dst, read_only=True) as d:
                if "big" not in d.topics():
                    return 0
                b = d.existing_topic("big")
                return sum(b.end_offset(p) for p in range(2))
        except streamlog.StreamlogError:
            return 0

    _kill_mid_copy(src, dst, landed, 40_000)
    res = streamlog.copy(src, dst)
    assert 0 < res.records < 40_000
    with streamlog.open(src, read_only=True) as a, streamlog.open(dst, read_only=True) as b:
        assert _records(a, "big") == _records(b, "big")
        assert b.verify() == []


def test_cli_copy(tmp_path):
    """`streamlog copy SRC DST` copies and says how much; a rerun says nothing was left;
    a missing source or topic is one line on stderr and exit 1."""
    src = tmp_path / "a"
    _make_store(src)
    runner = CliRunner()
    r = runner.invoke(app, ["copy", str(src), str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert "2 topics" in r.output and "2,025 records" in r.output.replace("2025", "2,025")
    r = runner.invoke(app, ["copy", str(src), str(tmp_path / "b")])
    assert r.exit_code == 0 and "nothing left to copy" in r.output
    r = runner.invoke(app, ["copy", str(tmp_path / "missing"), str(tmp_path / "c")])
    assert r.exit_code == 1 and "no such directory" in r.output
    r = runner.invoke(app, ["copy", str(src), str(tmp_path / "c"), "--topics", "nope"])
    assert r.exit_code == 1 and "nope" in r.output
    assert not (tmp_path / "c").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    r = runner.invoke(app, ["copy", str(src), str(other)])
    assert r.exit_code == 1 and "not a streamlog store" in r.output
    assert sorted(os.listdir(other)) == ["notes.txt"]
    r = runner.invoke(app, ["copy", str(src), str(tmp_path / "d"), "--replicas", "3"])
    assert r.exit_code == 2 and "--replicas" in r.output


def _compacted_store(path) -> None:
    with streamlog.open(path) as log:
        t = log.topic("customers", compact=True, segment_bytes=4096, partitions=2)
        for i in range(1500):
            t.append(b"v%d" % i, key=b"c%d" % (i % 40), timestamp_ms=1_000_000 + i)
        for i in range(0, 40, 5):
            t.append(None, key=b"c%d" % i, timestamp_ms=2_000_000 + i)
        log.compact("customers")  # (background compaction may have run already)
        kept = sum(1 for p in range(2) for _ in t.read(p))
        assert kept < 1508 - 100  # gaps: compaction removed superseded records
        g = t.group("g")
        assert all(g.ack(g.poll(30, timeout=1)))
        g.close()


def test_a_compacted_topic_is_copied_with_its_gaps(tmp_path):
    """A compacted topic keeps its offsets in the copy: the records compaction kept at
    their offsets (tombstones included), the removed offsets as gaps that reads skip and
    `get` reports as compacted away, the same running maximum timestamps, the table view
    and the group positions; a rerun copies nothing."""
    src, dst = tmp_path / "a", tmp_path / "b"
    _compacted_store(src)
    res = streamlog.copy(src, dst)
    assert res.records > 0
    assert streamlog.copy(src, dst).records == 0
    with streamlog.open(src) as a, streamlog.open(dst) as b:
        ta, tb = a.existing_topic("customers"), b.existing_topic("customers")
        assert tb.config["compact"] is True
        assert _records(a, "customers") == _records(b, "customers")
        for p in range(2):
            assert (ta.start_offset(p), ta.end_offset(p)) == (tb.start_offset(p),
                                                              tb.end_offset(p))
            kept = {r.offset for r in ta.read(p)}
            removed = [o for o in range(ta.end_offset(p)) if o not in kept][:20]
            assert removed
            for o in removed:
                with pytest.raises(streamlog.OffsetOutOfRange, match="compacted away"):
                    tb.get(p, o)
            # Reading from the offset for a time gives the same records (the copy cannot
            # see the removed records' timestamps: it may answer the other end of a gap).
            for ts in (0, 1_000_100, 1_000_900, 1_001_499, 2_000_000, 3_000_000):
                first = [next(iter(t.read(p, t.offset_for_time(p, ts), limit=1)), None)
                         for t in (ta, tb)]
                assert first[0] == first[1], ts
        assert ta.group_positions("g") == tb.group_positions("g")
        assert dict(a.table("customers").items()) == dict(b.table("customers").items())
        assert b.verify() == []


def test_append_gap_is_for_compacted_topics_at_their_end(tmp_path):
    """append_gap writes a gap only at the partition's end of a compacted topic."""
    with streamlog.open(tmp_path / "s") as log:
        c = log.topic("c", compact=True)
        assert c.append_gap(0, 0, 5, 100) == 5
        with pytest.raises(streamlog.WrongExpectedVersion):
            c.append_gap(0, 3, 1)
        assert c.append_copies(0, 5, [Record("x", 0, 5, 200, b"k", None, {})]) == 6
        assert [(r.offset, r.value) for r in c.read(0)] == [(5, None)]
        with pytest.raises(ValueError, match="not compacted"):
            log.topic("plain").append_gap(0, 0, 1)


def test_a_rerun_never_takes_a_destination_group_back(tmp_path):
    """Consumers that went further on the destination keep their places when the copy
    runs again; a group that is further on the source moves forward."""
    src, dst = tmp_path / "a", tmp_path / "b"
    with streamlog.open(src) as log:
        t = log.topic("t")
        t.append_many([b"%d" % i for i in range(100)])
        g = t.group("g")
        assert all(g.ack(g.poll(10, timeout=1)))
        g.close()
    streamlog.copy(src, dst)
    with streamlog.open(dst) as d:
        g = d.existing_topic("t").group("g")
        assert all(g.ack(g.poll(30, timeout=1)))
        g.close()
        assert d.existing_topic("t").group_positions("g") == {0: 40}
    streamlog.copy(src, dst)
    with streamlog.open(dst) as d:
        assert d.existing_topic("t").group_positions("g") == {0: 40}
    with streamlog.open(src) as log:
        g = log.existing_topic("t").group("g")
        g.seek(0, 70)
        g.close()
    streamlog.copy(src, dst)
    with streamlog.open(dst) as d:
        assert d.existing_topic("t").group_positions("g") == {0: 70}
