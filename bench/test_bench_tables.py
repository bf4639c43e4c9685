"""Tables and compaction beside the stores a Python user would pick for a local cache.

Figures (each round of streamlog preceded by one round of each baseline, bench/conftest.py):

* ``tbl.get`` of a hot key (caught-up index) vs a bare LMDB ``get`` of the same key
  (a read transaction per get, as any reader of a shared LMDB file does), a
  sqlite3 ``SELECT`` by primary key, and ``dbm`` / ``shelve`` lookups;
* ``tbl.put`` vs ``t.append`` of the same records to a compacted topic, and sqlite3
  ``INSERT OR REPLACE`` (one transaction for the run) and ``dbm`` stores;
* ``log.compact`` of a partition vs a raw sequential copy of the same segment files;
* building the table index of a topic of 1,000,000 keys vs a dict built from
  ``read_batch`` of the same topic.
"""

from __future__ import annotations

import dbm
import os
import shelve
import shutil
import sqlite3
import tempfile

import lmdb
import pytest
from conftest import Contender, Figure, Goal, paired_rounds, rate, report, spread

import streamlog
from streamlog.backends.local import table as table_mod
from streamlog.backends.local.storage import compaction, files

GETS = 100_000
PUTS = 100_000
KEYS = 10_000
VALUE = b"v" * 100
BUILD_KEYS = 1_000_000
COMPACT_RECORDS = 400_000
COMPACT_KEYS = 2_000
ROUNDS = 5


@pytest.fixture(autouse=True)
def _no_background_compaction(monkeypatch):
    monkeypatch.setattr(compaction.Background, "check", lambda self, log: None)


def _key(i: int) -> bytes:
    return b"key-%012d" % i


# -------------------------------------------------------------------- get
def test_table_get_hot_key(benchmark, bench_dir):
    root = tempfile.mkdtemp(dir=bench_dir)
    log = streamlog.open(os.path.join(root, "s"))
    tbl = log.table("t")
    for i in range(KEYS):
        tbl.put(_key(i), VALUE)
    hot = _key(KEYS // 2)
    assert tbl.get(hot) == VALUE
    env = lmdb.open(os.path.join(root, "lmdb"), map_size=1 << 30)
    with env.begin(write=True) as txn:
        for i in range(KEYS):
            txn.put(_key(i), VALUE)
    sq = sqlite3.connect(os.path.join(root, "db.sqlite"))
    sq.execute("CREATE TABLE kv(k BLOB PRIMARY KEY, v BLOB)")
    sq.executemany("INSERT INTO kv VALUES (?, ?)", ((_key(i), VALUE) for i in range(KEYS)))
    sq.commit()
    db = dbm.open(os.path.join(root, "dbm"), "c")
    sh = shelve.open(os.path.join(root, "shelve"))
    for i in range(KEYS):
        db[_key(i)] = VALUE
        sh[_key(i).decode()] = VALUE
    hot_s = hot.decode()

    def run_tbl(_):
        get = tbl.get
        for _ in range(GETS):
            get(hot)

    def run_lmdb(_):
        begin = env.begin
        for _ in range(GETS):
            with begin() as txn:
                txn.get(hot)

    def run_sqlite(_):
        ex = sq.execute
        for _ in range(GETS):
            ex("SELECT v FROM kv WHERE k = ?", (hot,)).fetchone()

    def run_dbm(_):
        for _ in range(GETS):
            db[hot]

    def run_shelve(_):
        for _ in range(GETS):
            sh[hot_s]

    base = [Contender("bare LMDB get", run_lmdb), Contender("sqlite3 SELECT", run_sqlite),
            Contender(f"dbm ({dbm.whichdb(os.path.join(root, 'dbm'))})", run_dbm),
            Contender("shelve", run_shelve)]
    target = Contender("tbl.get", run_tbl)
    try:
        times = paired_rounds(benchmark, target, base, rounds=ROUNDS)
    finally:
        log.close()
        env.close()
        sq.close()
        db.close()
        sh.close()
        shutil.rmtree(root, True)
    value = rate(GETS, times[target.name])
    fig = Figure("test_table_get_hot_key", "tbl.get of a hot key", value, "records/s",
                 {b.name: rate(GETS, times[b.name]) for b in base}, rounds=ROUNDS,
                 spread=spread(times[target.name]))
    fig.goals = [Goal("within 2x of a bare LMDB get (>= 0.5x)", fig.ratio("bare LMDB get"),
                      0.5)]
    report(benchmark, fig)


# -------------------------------------------------------------------- put
def test_table_put(benchmark, bench_dir):
    root = tempfile.mkdtemp(dir=bench_dir)
    log = streamlog.open(os.path.join(root, "s"))
    tbl = log.table("t")
    plain = log.topic("appended", compact=True)
    keys = [_key(i % KEYS) for i in range(PUTS)]
    sq = sqlite3.connect(os.path.join(root, "db.sqlite"))
    sq.execute("CREATE TABLE kv(k BLOB PRIMARY KEY, v BLOB)")
    sq.commit()
    db = dbm.open(os.path.join(root, "dbm"), "c")

    def run_tbl(_):
        put = tbl.put
        for k in keys:
            put(k, VALUE)

    def run_append(_):
        append = plain.append
        for k in keys:
            append(VALUE, key=k)

    def run_sqlite(_):
        ex = sq.execute
        for k in keys:
            ex("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, VALUE))
        sq.commit()

    def run_dbm(_):
        for k in keys:
            db[k] = VALUE

    base = [Contender("t.append", run_append), Contender("sqlite3 INSERT OR REPLACE",
                                                          run_sqlite),
            Contender("dbm", run_dbm)]
    target = Contender("tbl.put", run_tbl)
    try:
        times = paired_rounds(benchmark, target, base, rounds=ROUNDS)
    finally:
        log.close()
        sq.close()
        db.close()
        shutil.rmtree(root, True)
    value = rate(PUTS, times[target.name])
    fig = Figure("test_table_put", "tbl.put", value, "records/s",
                 {b.name: rate(PUTS, times[b.name]) for b in base}, rounds=ROUNDS,
                 spread=spread(times[target.name]))
    fig.goals = [Goal("within 1.2x of t.append (>= 0.83x)", fig.ratio("t.append"), 1 / 1.2)]
    report(benchmark, fig)


# ------------------------------------------------------------- compaction
def test_compaction_throughput(benchmark, bench_dir):
    template = tempfile.mkdtemp(dir=bench_dir)
    with streamlog.open(os.path.join(template, "s"), durability="never") as log:
        t = log.topic("c", compact=True, segment_bytes=8 << 20)
        batch = 1000
        for i in range(0, COMPACT_RECORDS, batch):
            t.append_many([VALUE] * batch, keys=[_key((i + j) % COMPACT_KEYS)
                                                 for j in range(batch)])
    pdir = files.partition_dir(os.path.join(template, "s"), "c", 0)
    closed = files.list_segments(pdir)[:-1]
    closed_bytes = sum(os.path.getsize(os.path.join(pdir, files.segment_name(b)))
                       for b in closed)

    def setup():
        d = tempfile.mkdtemp(dir=bench_dir)
        shutil.copytree(os.path.join(template, "s"), os.path.join(d, "s"))
        return d

    def run_compact(d):
        with streamlog.open(os.path.join(d, "s"), durability="never") as log:
            assert log.compact("c").segments_rewritten == len(closed)

    def run_copy(d):
        src = files.partition_dir(os.path.join(d, "s"), "c", 0)
        for b in closed:
            p = os.path.join(src, files.segment_name(b))
            with open(p, "rb") as f, open(p + ".copy", "wb") as g:
                while chunk := f.read(1 << 20):
                    g.write(chunk)
                g.flush()
                os.fdatasync(g.fileno())

    def teardown(d):
        shutil.rmtree(d, True)

    target = Contender("log.compact", run_compact, setup, teardown)
    base = [Contender("raw sequential copy", run_copy, setup, teardown)]
    try:
        times = paired_rounds(benchmark, target, base, rounds=3)
    finally:
        shutil.rmtree(template, True)
    mb = closed_bytes / 1e6
    value = rate(mb, times[target.name])
    fig = Figure("test_compaction_throughput", "compaction (closed segment MB/s)", value,
                 "MB/s", {base[0].name: rate(mb, times[base[0].name])}, rounds=3,
                 spread=spread(times[target.name]),
                 note=f"{COMPACT_RECORDS:,} records of 116 B over {COMPACT_KEYS:,} keys")
    fig.goals = [Goal(">= 0.3x a raw sequential copy", fig.ratio("raw sequential copy"), 0.3)]
    report(benchmark, fig)


# ------------------------------------------------------------------ build
def test_table_build_one_million_keys(benchmark, bench_dir):
    root = tempfile.mkdtemp(dir=bench_dir)
    log = streamlog.open(os.path.join(root, "s"), durability="never")
    t = log.topic("t", compact=True)
    batch = 10_000
    for i in range(0, BUILD_KEYS, batch):
        t.append_many([VALUE] * batch, keys=[_key(i + j) for j in range(batch)])
    tbl = log.table("t")

    def drop(_=None):
        log._meta.write(lambda txn: table_mod.drop_topic(log._meta, txn, "t"))

    def run_build(_):
        assert len(tbl) == BUILD_KEYS

    def run_dict(_):
        out = {}
        off = 0
        while True:
            b = t.read_batch(0, off, 100_000)
            n = len(b.offsets)
            if not n:
                break
            kd, ko, vd, vo = (b.key_data.tobytes(), b.key_offsets, b.value_data.tobytes(),
                              b.value_offsets)
            ko, vo = ko.tolist(), vo.tolist()
            for i in range(n):
                out[kd[ko[i]:ko[i + 1]]] = vd[vo[i]:vo[i + 1]]
            off = int(b.offsets[-1]) + 1
        assert len(out) == BUILD_KEYS

    target = Contender("table index build", run_build, drop)
    base = [Contender("dict from read_batch", run_dict)]
    try:
        times = paired_rounds(benchmark, target, base, rounds=3)
    finally:
        log.close()
        shutil.rmtree(root, True)
    value = rate(BUILD_KEYS, times[target.name])
    fig = Figure("test_table_build_one_million_keys", "table build, 1M keys", value,
                 "records/s", {base[0].name: rate(BUILD_KEYS, times[base[0].name])}, rounds=3,
                 spread=spread(times[target.name]))
    fig.goals = [Goal("within 3x of a dict from read_batch (>= 0.33x)",
                      fig.ratio("dict from read_batch"), 1 / 3)]
    report(benchmark, fig)
