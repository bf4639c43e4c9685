"""Tables: a compacted topic as key -> newest value, over a shared LMDB index that every
read brings up to date; watch() is a catch-up followed by live changes."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest

import streamlog
from streamlog import ConfigMismatch, Position, TableChange, WrongExpectedVersion

CTX = multiprocessing.get_context("fork")


def test_table_basics(store):
    tbl = store.table("customers")
    assert store.existing_topic("customers").config["compact"] is True
    p1 = tbl.put("c-1", b'{"name": "Ann"}')
    assert isinstance(p1, Position)
    tbl.put(b"c-2", b"Bob")
    assert tbl.get("c-1") == b'{"name": "Ann"}' and tbl["c-2"] == b"Bob"
    assert "c-1" in tbl and b"c-3" not in tbl and len(tbl) == 2
    assert tbl.get("c-3") is None and tbl.get("c-3", b"dflt") == b"dflt"
    with pytest.raises(KeyError):
        tbl["c-3"]
    tbl.delete("c-1")
    assert "c-1" not in tbl and len(tbl) == 1
    assert tbl.keys() == [b"c-2"] and tbl.items() == [(b"c-2", b"Bob")]
    tbl.delete("never-there")  # a tombstone for a missing key changes nothing
    assert len(tbl) == 1


def test_update_is_compare_and_set(store):
    tbl = store.table("t")
    with pytest.raises(WrongExpectedVersion) as e:
        tbl.update("k", b"v", expected_offset=0)
    assert (e.value.expected, e.value.actual) == (0, None)
    pos = tbl.update("k", b"v1", expected_offset=None)  # None: only if absent
    pos2 = tbl.update("k", b"v2", expected_offset=pos.offset)
    assert tbl["k"] == b"v2" and pos2.offset > pos.offset
    with pytest.raises(WrongExpectedVersion) as e:
        tbl.update("k", b"v3", expected_offset=pos.offset)
    assert (e.value.expected, e.value.actual) == (pos.offset, pos2.offset)
    assert tbl["k"] == b"v2"
    with pytest.raises(TypeError, match="expected_offset"):
        tbl.update("k", b"v3")


def test_bad_input_is_refused_before_writing(store):
    tbl = store.table("t")
    for call in (lambda: tbl.put(None, b"v"), lambda: tbl.put("k", None),
                 lambda: tbl.put("k", "str"), lambda: tbl.put(1, b"v"),
                 lambda: tbl.delete(None)):
        with pytest.raises(TypeError):
            call()
    with pytest.raises(ValueError):
        store.table("bad name")
    store.topic("plain")
    with pytest.raises(ConfigMismatch):
        store.table("plain")
    assert store.existing_topic("t").end_offset(0) == 0


def _put_many(path, n, conn):
    with streamlog.open(path) as log:
        tbl = log.table("t")
        for i in range(n):
            tbl.put(b"k%d" % (i % 7), b"v%d" % i)
        conn.send(tbl.position(b"k0").offset)
    os._exit(0)


def test_a_get_sees_every_append_another_process_made(store):
    tbl = store.table("t")
    assert len(tbl) == 0
    r, w = CTX.Pipe(duplex=False)
    child = CTX.Process(target=_put_many, args=(store.path, 50, w))
    child.start()
    off = r.recv()
    child.join(30)
    assert tbl.position(b"k0").offset == off
    assert tbl[b"k0"] == b"v49" and len(tbl) == 7


def test_watch_catch_up_then_live(store):
    tbl = store.table("t")
    tbl.put("a", b"1")
    tbl.put("b", b"2")
    tbl.put("a", b"3")
    w = tbl.watch(timeout_s=10)
    first = [next(w), next(w)]
    assert [(c.key, c.value) for c in first] == [(b"a", b"3"), (b"b", b"2")]
    assert all(isinstance(c, TableChange) for c in first)
    got = []
    arrived = threading.Event()

    def consume():
        got.append(next(w))
        got.append(next(w))
        arrived.set()

    th = threading.Thread(target=consume)
    th.start()
    pos = tbl.put("c", b"4")
    tbl.delete("a")
    assert arrived.wait(10)
    th.join()
    assert got[0] == TableChange(b"c", b"4", pos)
    assert (got[1].key, got[1].value) == (b"a", None)
    # from an offset: every record from there on
    changes = list(tbl.watch(from_offset=0, timeout_s=0.2))
    assert [(c.key, c.value) for c in changes] == [
        (b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"c", b"4"), (b"a", None)]


def test_index_is_rebuilt_identical_and_survives_compaction(tmp_path):
    with streamlog.open(tmp_path / "s") as log:
        log.topic("t", compact=True, segment_bytes=1024)
        tbl = log.table("t")
        for i in range(400):
            tbl.put(b"k%d" % (i % 25), b"v%d" % i)
            if i % 9 == 0:
                tbl.delete(b"k%d" % (i % 5))
        before = tbl.items()
        log.compact("t")
        assert tbl.items() == before
        from streamlog.backends.local import table as table_mod

        log._meta.write(lambda txn: table_mod.drop_topic(log._meta, txn, "t"))
        assert tbl.items() == before and len(tbl) == len(before)
    with streamlog.open(tmp_path / "s", read_only=True) as log:
        assert log.table("t").items() == before
    # a read-only store reads what its index lacks from the topic (it writes nothing)
    with streamlog.open(tmp_path / "s") as log:
        t = log.existing_topic("t")
        t.append(b"new", key=b"k1")
        t.append(None, key=b"k2")
        t.append(b"fresh", key=b"zz")
    want = dict(before)
    want.update({b"k1": b"new", b"zz": b"fresh"})
    want.pop(b"k2", None)
    with streamlog.open(tmp_path / "s", read_only=True) as log:
        tbl = log.table("t")
        assert tbl.items() == sorted(want.items()) and len(tbl) == len(want)
        assert tbl[b"k1"] == b"new" and b"k2" not in tbl and tbl.get(b"zz") == b"fresh"


def test_an_index_that_slept_past_delete_retention_never_keeps_a_dropped_key(tmp_path,
                                                                              monkeypatch):
    """A tombstone that compaction dropped before the index saw it: the index, last
    caught up more than delete_retention_s ago, is rebuilt, so the key is gone."""
    import time

    from streamlog.backends.local import table as table_mod
    from streamlog.backends.local.storage import compaction, files

    monkeypatch.setattr(compaction.Background, "check", lambda self, log: None)
    with streamlog.open(tmp_path / "s") as log:
        t = log.topic("t", compact=True, segment_bytes=1024, delete_retention_s=60)
        tbl = log.table("t")
        tbl.put("gone", b"old value")
        assert tbl["gone"] == b"old value"  # the index has seen it
        long_ago = int(time.time() * 1000) - 3_600_000
        t.append(None, key=b"gone", timestamp_ms=long_ago)
        for i in range(60):
            t.append(b"x" * 30, key=b"k%d" % (i % 3), timestamp_ms=long_ago)
        pdir = files.partition_dir(log.path, "t", 0)
        for b in files.list_segments(pdir)[:-1]:
            os.utime(os.path.join(pdir, files.segment_name(b)),
                     (long_ago / 1000, long_ago / 1000))
        log.compact("t")
        assert all(r.key != b"gone" for r in t.read(0))  # value and tombstone both gone
        # the index was last caught up "an hour ago"
        mark = tbl._hwm_key(0)
        db = log._meta.db("table")
        with log._meta.read() as txn:
            off, _ = table_mod._HWM.unpack(txn.get(mark, db=db))
        log._meta.write(lambda txn: txn.put(mark, table_mod._HWM.pack(off, long_ago), db=db))
        assert "gone" not in tbl and tbl.get("gone") is None
        assert sorted(tbl.keys()) == [b"k0", b"k1", b"k2"]


def _delete_topic(path, conn):
    with streamlog.open(path) as log:
        log.delete_topic("t")
    conn.send(True)
    os._exit(0)


def test_a_table_whose_topic_another_process_deleted_says_so(store):
    tbl = store.table("t")
    tbl.put("k", b"v")
    assert tbl.get("k") == b"v"  # remembered by this handle now
    r, w = CTX.Pipe(duplex=False)
    child = CTX.Process(target=_delete_topic, args=(store.path, w))
    child.start()
    assert r.recv()
    child.join(30)
    with pytest.raises(streamlog.TopicNotFound):
        tbl.get("k")
