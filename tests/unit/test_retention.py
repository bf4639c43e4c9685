"""Retention by size and by age removes whole closed segments, oldest first (I7), on roll,
on open and by log.apply_retention(); reads below the start begin at the start."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

import streamlog
from streamlog import OffsetOutOfRange, Retention
from streamlog.backends.local.storage import files

CTX = multiprocessing.get_context("fork")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _segment_files(log, topic="t", partition=0) -> list[int]:
    return files.list_segments(files.partition_dir(log.path, topic, partition))


def _bytes_on_disk(t, partition=0) -> tuple[int, list[dict]]:
    segs = t._parts[partition].segments_info()
    return sum(s["bytes"] for s in segs), segs


def test_retention_by_size_on_roll_I7(store):
    """With max_bytes, each roll removes the oldest closed segments until the partition
    fits (closed segments within the limit; the active one grows until its roll), and no
    more; whole segments only, the start is a segment base, the rest intact."""
    limit = 4096
    t = store.topic("t", segment_bytes=1024, retention=Retention(max_bytes=limit))
    values = [b"value-%04d" % i + b"." * (i % 90) for i in range(400)]
    sizes: dict[int, int] = {}
    start = 0
    removals = 0
    for v in values:
        t.append(v)
        _, segs = _bytes_on_disk(t)
        closed = [s for s in segs if not s["active"]]
        assert sum(s["bytes"] for s in closed) <= limit
        new_start = t.start_offset(0)
        if new_start != start:
            removals += 1
            assert new_start == segs[0]["base_offset"]
            newest_removed = max(b for b in sizes if b < new_start)
            # keeping the newest removed segment would not have fitted: minimal removal
            assert sum(s["bytes"] for s in closed) + sizes[newest_removed] > limit
            start = new_start
        sizes.update({s["base_offset"]: s["bytes"] for s in closed})
    assert removals > 3
    assert _segment_files(store) == [s["base_offset"] for s in t._parts[0].segments_info()]
    assert [r.value for r in t.read(0)] == values[start:]
    assert t.end_offset(0) == len(values)


def test_apply_retention_by_size_counts_the_active_segment(store):
    """log.apply_retention() counts the active segment's bytes too: once it has grown,
    a pass removes the oldest closed segments that no longer fit."""
    t = store.topic("t", segment_bytes=4096, retention=Retention(max_bytes=6000))
    for i in range(70):  # 24 records a segment: the active one now holds 22
        t.append(b"r%03d" % i + b"." * 100)
    total, segs = _bytes_on_disk(t)
    assert total > 6000 and len(segs) == 2
    plan = store.apply_retention(dry_run=True)
    assert [(d["base_offset"], d["end_offset"], d["reason"]) for d in plan] == [
        (segs[0]["base_offset"], segs[1]["base_offset"], "size")]
    assert _bytes_on_disk(t)[0] == total
    assert store.apply_retention() == plan
    assert t.start_offset(0) == segs[1]["base_offset"]
    assert [r.offset for r in t.read(0)] == list(range(segs[1]["base_offset"], 70))


def test_retention_by_age_I7(store):
    """Closed segments whose newest record is older than max_age_s go; younger ones and
    the active segment stay, even when the active one is old."""
    old = _now_ms() - 3_600_000
    t = store.topic("t", segment_bytes=1024, retention=Retention(max_age_s=60))
    for i in range(40):
        t.append(b"old-%03d" % i + b"." * 80, timestamp_ms=old + i)
    old_end = t.end_offset(0)
    for i in range(40):
        t.append(b"new-%03d" % i + b"." * 80)
    start = t.start_offset(0)
    recs = list(t.read(0))
    assert recs[0].offset == start
    # every old record in a segment that also holds young ones is kept; all others went
    assert 0 < start <= old_end
    assert all(r.value.startswith(b"new") for r in recs if r.offset >= old_end)
    assert [r.offset for r in recs] == list(range(start, 80))
    # an old active segment is rolled so that it can go too (Kafka's segment.ms)
    t2 = store.topic("t2", segment_bytes=1024, retention=Retention(max_age_s=60))
    t2.append(b"ancient", timestamp_ms=1)
    gone = store.apply_retention()
    assert [(d["topic"], d["base_offset"], d["end_offset"], d["reason"]) for d in gone] == [
        ("t2", 0, 1, "age")]
    assert list(t2.read(0)) == [] and t2.start_offset(0) == t2.end_offset(0) == 1
    assert t2.append(b"fresh") == (0, 1)


def test_apply_retention_dry_run_then_real(tmp_path):
    """dry_run lists what would go and removes nothing; the real pass removes exactly that."""
    path = tmp_path / "s"
    young = _now_ms() - 400
    with streamlog.open(path) as log:
        t = log.topic("t", partitions=2, segment_bytes=1024,
                      retention=Retention(max_age_s=1))
        for i in range(60):
            t.append(b"x%03d" % i + b"." * 90, timestamp_ms=young)
        before = {p: _segment_files(log, "t", p) for p in range(2)}
        assert log.apply_retention() == []  # young for now
        time.sleep(0.7)
        plan = log.apply_retention(dry_run=True)
        assert {p: _segment_files(log, "t", p) for p in range(2)} == before
        assert plan and {d["reason"] for d in plan} == {"age"}
        for d in plan:
            assert d["topic"] == "t" and d["segment"] == files.segment_name(d["base_offset"])
            assert d["bytes"] > 0 and d["end_offset"] > d["base_offset"]
        done = log.apply_retention()
        assert done == plan
        for p in range(2):
            gone = {d["base_offset"] for d in done if d["partition"] == p}
            # every record was past max_age_s: the active segment was rolled and went
            # too, and a new, empty one follows
            assert _segment_files(log, "t", p) == [b for b in before[p] if b not in gone] + [
                t.end_offset(p)]
            assert t.start_offset(p) == max(d["end_offset"] for d in done if d["partition"] == p)
        assert log.apply_retention() == []


def test_reads_below_the_start(store):
    """After retention, read() below start_offset begins at it, get() below it raises
    OffsetOutOfRange, read_batch() and offset_for_time() stay within the retained range."""
    t = store.topic("t", segment_bytes=1024, retention=Retention(max_bytes=2048))
    for i in range(100):
        t.append(b"v%03d" % i + b"." * 50, timestamp_ms=1000 + i)
    start = t.start_offset(0)
    assert start > 0
    assert next(t.read(0)).offset == start
    assert next(t.read(0, start - 1)).offset == start
    assert [r.offset for r in t.read(0, 0, limit=3)] == [start, start + 1, start + 2]
    with pytest.raises(OffsetOutOfRange):
        t.get(0, start - 1)
    with pytest.raises(IndexError):
        t.get(0, 0)
    assert t.get(0, start).value == b"v%03d" % start + b"." * 50
    batch = t.read_batch(0, 0, 5)
    assert list(batch.offsets) == list(range(start, start + 5))
    assert t.offset_for_time(0, 0) == start
    assert t.offset_for_time(0, 1000 + start + 3) == start + 3


def test_iterator_overtaken_by_retention(store):
    """An iterator whose next records were removed by retention jumps to the new start."""
    t = store.topic("t", segment_bytes=1024, retention=Retention(max_bytes=3000))
    for i in range(30):
        t.append(b"a%03d" % i + b"." * 40)
    it = t.read(0, t.start_offset(0), limit=2)
    first = next(it).offset
    for i in range(300):
        t.append(b"b%03d" % i + b"." * 40)
    start = t.start_offset(0)
    assert start > first + 2
    rest = list(t.read(0, first + 1))
    assert rest[0].offset == start and rest[-1].offset == 329


def _retain_and_die(path, step):
    """Append until a roll applies retention, dying at ``step`` of the first deletion."""
    with streamlog.open(path) as log:
        t = log.topic("t")
        real_rename, real_unlink = os.rename, os.unlink

        def die(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)

        def rename(src, dst, *a, **k):
            if step == "rename" and dst.endswith(files.DELETED_SUFFIX):
                die()
            return real_rename(src, dst, *a, **k)

        def unlink(p, *a, **k):
            if step == "unlink" and str(p).endswith(files.INDEX_SUFFIX):
                die()
            return real_unlink(p, *a, **k)

        os.rename, os.unlink = rename, unlink
        for i in range(200):
            t.append(b"late-%03d" % i + b"." * 100)
    os._exit(3)


@pytest.mark.parametrize("step", ["rename", "unlink"])
@pytest.mark.parametrize("then", ["same boot", "reboot"])
def test_half_done_deletion_recovers_on_reopen_I7(tmp_path, step, then):
    """A process killed in the middle of removing a segment (start_offset already published,
    the file still there or renamed to .deleted): on reopen the start holds, reads begin
    there, the leftovers are gone and appends go on."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        t = log.topic("t", segment_bytes=1024, retention=Retention(max_bytes=2500))
        for i in range(12):
            t.append(b"early-%03d" % i + b"." * 100)
        first_segments = _segment_files(log)
    child = CTX.Process(target=_retain_and_die, args=(path, step))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    pdir = files.partition_dir(path, "t", 0)
    left = os.listdir(pdir)
    if step == "unlink":
        assert any(n.endswith(files.DELETED_SUFFIX) for n in left)
    else:
        assert files.segment_name(first_segments[0]) in left
    if then == "reboot":
        with open(os.path.join(pdir, files.CONTROL_FILE), "r+b") as f:
            f.seek(16)
            f.write(b"\x03" * 16)
    with streamlog.open(path) as log:
        t = log.topic("t")
        start = t.start_offset(0)
        assert start > 0
        recs = list(t.read(0))
        assert recs[0].offset == start
        assert [r.offset for r in recs] == list(range(start, t.end_offset(0)))
        assert log.verify() == []
        names = os.listdir(pdir)
        assert not [n for n in names if n.endswith(files.DELETED_SUFFIX)]
        assert all(b >= start for b in files.list_segments(pdir))
        assert not files.leftovers(pdir)
        end = t.end_offset(0)
        assert t.append(b"after").offset == end


# ------------------------------------------------------------- idle topics
def _idle_store(path, partitions=1):
    """A topic whose records are all an hour old and that receives nothing more: its
    only segment is the active one, which no roll will ever close."""
    old = _now_ms() - 3_600_000
    with streamlog.open(path) as log:
        t = log.topic("idle", partitions=partitions, retention=Retention(max_age_s=60))
        for i in range(10):
            t.append(b"old-%d" % i, key=b"k%d" % i, timestamp_ms=old + i)
        log.topic("keep-all").append(b"kept", timestamp_ms=1)  # no policy: never touched
        return [t.end_offset(p) for p in range(partitions)]


def test_idle_topic_expired_active_segment_goes_by_apply_retention(tmp_path):
    """An idle topic's active segment whose records are past max_age_s is rolled and
    removed by log.apply_retention(); a topic without a policy keeps everything."""
    path = tmp_path / "s"
    ends = _idle_store(path, partitions=2)
    with streamlog.open(path, read_only=True) as ro:  # (a writable open would apply it)
        assert ro.apply_retention(dry_run=True) and len(list(ro.existing_topic("idle").read(0)))
    with streamlog.open(path) as log:
        log.apply_retention()  # (the open already did; a second pass finds nothing left)
        t = log.existing_topic("idle")
        for p in range(2):
            assert list(t.read(p)) == []
            assert t.start_offset(p) == t.end_offset(p) == ends[p]
        assert [r.value for r in log.existing_topic("keep-all").read(0)] == [b"kept"]
        assert log.apply_retention() == []
        pos = t.append(b"new", key=b"k0")
        assert pos.offset == ends[pos.partition]  # offsets go on densely after the roll


def test_apply_retention_rolls_an_idle_active_segment(tmp_path):
    """log.apply_retention() on a store opened before the records aged: the active
    segment is rolled under the append lock and its records removed; an empty active
    segment is never rolled."""
    path = tmp_path / "s"
    with streamlog.open(path) as log:
        t = log.topic("idle", retention=Retention(max_age_s=60))
        log.topic("empty", retention=Retention(max_age_s=60))
        assert log.apply_retention() == []
        t.append(b"a", timestamp_ms=_now_ms() - 3_600_000)
        t.append(b"b", timestamp_ms=_now_ms() - 3_600_000)
        before = _segment_files(log, "empty")
        gone = log.apply_retention()
        assert [(d["topic"], d["base_offset"], d["end_offset"]) for d in gone] == [
            ("idle", 0, 2)]
        assert list(t.read(0)) == [] and t.start_offset(0) == 2
        assert _segment_files(log, "idle") == [2]
        assert _segment_files(log, "empty") == before  # empty: not rolled
        assert log.apply_retention() == []
        assert _segment_files(log, "idle") == [2]  # the new, empty one stays


def test_idle_topic_expired_records_go_on_reopen(tmp_path):
    """streamlog.open() (not read-only) applies retention to every topic with a policy."""
    path = tmp_path / "s"
    ends = _idle_store(path)
    with streamlog.open(path) as log:
        t = log.existing_topic("idle")
        assert list(t.read(0)) == [] and t.start_offset(0) == ends[0]
        assert _segment_files(log, "idle") == [ends[0]]


def test_periodic_check_removes_an_idle_topics_records(tmp_path, monkeypatch):
    """A process that keeps the store open applies retention every
    RETENTION_CHECK_INTERVAL_S: an expired active segment's records go with no append."""
    import threading

    from streamlog import _limits
    from streamlog.backends.local.log import Log

    monkeypatch.setattr(_limits, "RETENTION_CHECK_INTERVAL_S", 0.05)
    checked = threading.Event()
    removed: list = []
    real = Log._retain_idle

    def spy(self):
        out = real(self)
        if threading.current_thread().name == "streamlog-retention":
            removed.extend(out)
            if out:
                checked.set()
        return out

    monkeypatch.setattr(Log, "_retain_idle", spy)
    path = tmp_path / "s"
    with streamlog.open(path) as log:
        t = log.topic("idle", retention=Retention(max_age_s=60))
        t.append(b"a", timestamp_ms=_now_ms() - 3_600_000)
        t.append(b"b", timestamp_ms=_now_ms() - 3_600_000)
        assert [r.value for r in t.read(0)] == [b"a", b"b"]
        assert checked.wait(30), "the background check never removed the records"
        assert [(d["base_offset"], d["end_offset"], d["reason"]) for d in removed] == [
            (0, 2, "age")]
        assert list(t.read(0)) == [] and t.start_offset(0) == 2


def test_the_check_thread_stops_on_close(tmp_path, monkeypatch):
    """Closing the store stops its retention thread (daemon, one per Log)."""
    import threading

    from streamlog import _limits

    monkeypatch.setattr(_limits, "RETENTION_CHECK_INTERVAL_S", 0.01)
    log = streamlog.open(tmp_path / "s")
    thread = log._retainer
    assert thread is not None and thread.daemon and thread.is_alive()
    log.close()
    assert not thread.is_alive()
    assert "streamlog-retention" not in [th.name for th in threading.enumerate()
                                         if th is thread]
    with streamlog.open(tmp_path / "s", read_only=True) as ro:
        assert ro._retainer is None  # a read-only open never applies retention


def test_read_only_open_removes_nothing(tmp_path):
    """A read-only open applies no retention and refuses apply_retention (but answers a
    dry run): every file stays."""
    path = tmp_path / "s"
    ends = _idle_store(path)
    pdir = files.partition_dir(str(path), "idle", 0)
    names = sorted(os.listdir(pdir))
    with streamlog.open(path, read_only=True) as log:
        t = log.existing_topic("idle")
        assert len(list(t.read(0))) == ends[0]
        plan = log.apply_retention(dry_run=True)
        assert [(d["topic"], d["base_offset"], d["end_offset"]) for d in plan] == [
            ("idle", 0, ends[0])]
        with pytest.raises(streamlog.ReadOnlyStore):
            log.apply_retention()
        assert len(list(t.read(0))) == ends[0]
    assert sorted(os.listdir(pdir)) == names
