"""Storage engine throughput and latency: appends, reads and durable appends, beside baselines.

Workload: 100-byte values with 16-byte keys on one partition. Every round of
streamlog is preceded by one round of each baseline over the same records
(bench/conftest.py pairs them), and figures are medians of those rounds.
Baselines: a raw ``os.write`` of the same key + value bytes in 1 MiB chunks;
a no-op Python call per record; LMDB (8-byte big-endian integer keys,
``append=True``, ``sync=False``: one write transaction for a run of
per-record puts, one ``putmulti`` transaction per batch); stdlib sqlite3
(WAL, ``synchronous=NORMAL``: one transaction for a run of per-record
inserts, one ``executemany`` transaction per batch).
"""

from __future__ import annotations

import gc
import os
import shutil
import sqlite3
import statistics
import tempfile
import threading
from contextlib import ExitStack

import lmdb
import numpy as np
import pytest
from conftest import (
    KEY_BYTES,
    RECORD_BYTES,
    VALUE_BYTES,
    Contender,
    Figure,
    Goal,
    Workload,
    paired_rounds,
    rate,
    report,
    spread,
)

import streamlog
import streamlog._types
from streamlog.backends.local import codec as _codec

APPEND_COUNT = 200_000  # records per round of the append benchmarks (~30 MB)
BATCH = 1_000  # records per append_many / putmulti / executemany call
READ_COUNT = 500_000  # records in the stores the read benchmarks walk
READ_BATCH = 100_000  # max_records per read_batch call
ROUNDS = 7
SQL_INSERT = "INSERT INTO log(key, value) VALUES (?, ?)"


# ------------------------------------------------------ long-lived stores
# Append rounds go on appending to one store per contender, as a long-running
# producer does: the log rolls into new segments (whose pages are faulted in
# as they are first written), LMDB's B-tree and sqlite's table grow, the raw
# file grows. Nothing of one round is cleaned before the next.
def _scratch(bench_dir: str) -> str:
    return tempfile.mkdtemp(dir=bench_dir)


def open_store(stack: ExitStack, bench_dir: str, durability: str):
    """A store with topic "bench", closed and removed when ``stack`` closes."""
    path = _scratch(bench_dir)
    stack.callback(shutil.rmtree, path, ignore_errors=True)
    log = streamlog.open(path, durability=durability)
    stack.callback(log.close)
    return log.topic("bench")


def open_lmdb(stack: ExitStack, bench_dir: str):
    """An LMDB environment, fsync off (as streamlog's "never" and "interval" appends)."""
    path = _scratch(bench_dir)
    stack.callback(shutil.rmtree, path, ignore_errors=True)
    env = lmdb.open(path, map_size=4 << 30, sync=False, metasync=False)
    stack.callback(env.close)
    return env


def open_sqlite(stack: ExitStack, bench_dir: str):
    """A sqlite3 database: WAL, synchronous=NORMAL, explicit transactions."""
    path = _scratch(bench_dir)
    stack.callback(shutil.rmtree, path, ignore_errors=True)
    con = sqlite3.connect(os.path.join(path, "bench.db"), isolation_level=None)
    stack.callback(con.close)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, key BLOB, value BLOB)")
    return con


def write_contender(stack: ExitStack, bench_dir: str, chunks: list[bytes]) -> Contender:
    """Raw ``os.write`` of the same key + value bytes, 1 MiB at a time, to a growing file."""
    path = _scratch(bench_dir)
    stack.callback(shutil.rmtree, path, ignore_errors=True)
    fd = os.open(os.path.join(path, "raw"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    stack.callback(os.close, fd)

    def run(_):
        write = os.write
        for c in chunks:
            write(fd, c)

    return Contender("os.write 1 MiB chunks", run)


def lmdb_keys(start: list[int], count: int):
    """A setup giving each round the next ``count`` integer keys (append=True needs them
    ascending across rounds); built outside the timed region."""

    def setup():
        first = start[0]
        start[0] += count
        return [i.to_bytes(8, "big") for i in range(first, first + count)]

    return setup


def _noop(v, key=None):
    pass


# --------------------------------------------------------- per-record append
@pytest.mark.benchmark(group="append")
@pytest.mark.parametrize("durability", ["never", "interval"])
def test_append_per_record(benchmark, workload: Workload, bench_dir, durability):
    """Per-record ``Topic.append(value, key=key)`` beside a no-op call, LMDB, sqlite, os.write."""
    n = APPEND_COUNT
    keys, values = workload.keys[:n], workload.values[:n]
    lvalues = workload.lmdb_values[:n]
    with ExitStack() as stack:
        topic = open_store(stack, bench_dir, durability)
        env = open_lmdb(stack, bench_dir)
        con = open_sqlite(stack, bench_dir)

        def streamlog_run(_):
            before = topic.end_offset(0)
            append = topic.append
            for k, v in zip(keys, values, strict=True):
                append(v, key=k)
            assert topic.end_offset(0) == before + n

        def noop_run(_):
            f = _noop
            for k, v in zip(keys, values, strict=True):
                f(v, key=k)

        def lmdb_run(lkeys):
            with env.begin(write=True) as txn:
                put = txn.put
                for k, v in zip(lkeys, lvalues, strict=True):
                    put(k, v, append=True)

        def sqlite_run(_):
            ex = con.execute
            ex("BEGIN")
            for k, v in zip(keys, values, strict=True):
                ex(SQL_INSERT, (k, v))
            ex("COMMIT")

        baselines = [
            Contender("no-op Python call", noop_run),
            Contender("lmdb put, one txn", lmdb_run, lmdb_keys([0], n)),
            Contender("sqlite insert, one txn", sqlite_run),
            write_contender(stack, bench_dir, workload.chunks(n)),
        ]
        times = paired_rounds(benchmark, Contender("streamlog", streamlog_run), baselines,
                              ROUNDS)
    fig = Figure(benchmark.name, f"append per record, durability={durability}",
                 rate(n, times["streamlog"]), "records/s",
                 {b.name: rate(n, times[b.name]) for b in baselines},
                 rounds=len(times["streamlog"]), spread=spread(times["streamlog"]),
                 note=f"{n:,} records per round into one long-lived store per contender "
                      "(segments roll as in steady state)")
    fig.goals = [Goal(">= 1,500,000 records/s", fig.value, 1_500_000),
                 Goal(">= 1.4x lmdb put, one txn", fig.ratio("lmdb put, one txn"), 1.4)]
    if durability == "never":
        fig.goals.append(Goal(">= 2.5x lmdb put, one txn", fig.ratio("lmdb put, one txn"), 2.5))
    report(benchmark, fig)


# ------------------------------------------------------------- append_many
@pytest.mark.benchmark(group="append_many")
@pytest.mark.parametrize("variant", ["never", "interval", "never-gc-off"])
def test_append_many_batches(benchmark, workload: Workload, bench_dir, variant):
    """``append_many`` in batches of 1,000 beside os.write, LMDB putmulti and sqlite executemany."""
    durability, gc_off = variant.removesuffix("-gc-off"), variant.endswith("-gc-off")
    n = APPEND_COUNT
    batches = [(workload.values[i:i + BATCH], workload.keys[i:i + BATCH])
               for i in range(0, n, BATCH)]
    sql_batches = [list(zip(k, v, strict=True)) for v, k in batches]
    lvalues = workload.lmdb_values[:n]
    next_keys = lmdb_keys([0], n)

    def lmdb_setup():
        lkeys = next_keys()
        return [list(zip(lkeys[i:i + BATCH], lvalues[i:i + BATCH], strict=True))
                for i in range(0, n, BATCH)]

    with ExitStack() as stack:
        topic = open_store(stack, bench_dir, durability)
        env = open_lmdb(stack, bench_dir)
        con = open_sqlite(stack, bench_dir)

        def streamlog_run(_):
            before = topic.end_offset(0)
            append_many = topic.append_many
            if gc_off:
                gc.disable()
            try:
                for values, keys in batches:
                    append_many(values, keys)
            finally:
                gc.enable()
            assert topic.end_offset(0) == before + n

        def lmdb_run(lmdb_batches):
            for items in lmdb_batches:
                with env.begin(write=True) as txn:
                    txn.cursor().putmulti(items, append=True)

        def sqlite_run(_):
            ex, exm = con.execute, con.executemany
            for rows in sql_batches:
                ex("BEGIN")
                exm(SQL_INSERT, rows)
                ex("COMMIT")

        baselines = [
            write_contender(stack, bench_dir, workload.chunks(n)),
            Contender("lmdb putmulti, txn per batch", lmdb_run, lmdb_setup),
            Contender("sqlite executemany, txn per batch", sqlite_run),
        ]
        times = paired_rounds(benchmark, Contender("streamlog", streamlog_run), baselines,
                              ROUNDS)
    payload_mb = n * RECORD_BYTES / 1e6  # key + value bytes, the same for every contender
    fig = Figure(benchmark.name, f"append_many x{BATCH}, durability={durability}"
                 + (", gc off (diagnostic)" if gc_off else ""),
                 rate(payload_mb, times["streamlog"]), "MB/s",
                 {b.name: rate(payload_mb, times[b.name]) for b in baselines},
                 rounds=len(times["streamlog"]), spread=spread(times["streamlog"]),
                 note=f"MB/s of key + value payload ({RECORD_BYTES} B per record); "
                      f"{rate(n, times['streamlog']) / 1e6:.2f} M records/s; long-lived stores"
                      + ("; diagnostic, no goals: the cyclic GC off around the streamlog loop "
                         "only (what untracked Positions would give)" if gc_off else ""))
    if not gc_off:
        fig.goals = [Goal(">= 70% of os.write bandwidth", fig.ratio("os.write 1 MiB chunks"),
                          0.7),
                     Goal(">= 1.2x lmdb putmulti", fig.ratio("lmdb putmulti, txn per batch"),
                          1.2)]
    report(benchmark, fig)


# ------------------------------------------------------------ append_batch
def column_batches(workload: Workload, n: int, size: int) -> list[streamlog.RecordBatch]:
    """The first ``n`` records as RecordBatches of ``size`` (fixed-width key and value rows),
    built outside the timed region."""
    keys = np.frombuffer(b"".join(workload.keys[:n]), np.uint8).reshape(n, KEY_BYTES)
    values = np.frombuffer(b"".join(workload.values[:n]), np.uint8).reshape(n, VALUE_BYTES)
    ts = streamlog._types.now_ms()
    return [streamlog.RecordBatch.from_arrays(values[i:i + size], keys=keys[i:i + size],
                                              timestamps_ms=ts)
            for i in range(0, n, size)]


@pytest.mark.benchmark(group="append_batch")
@pytest.mark.parametrize("variant", ["never", "interval", "never-built-in-loop"])
def test_append_batch(benchmark, workload: Workload, bench_dir, variant):
    """``append_batch`` of RecordBatches of 1,000 records beside os.write of the same bytes;
    ``-built-in-loop``: ``from_arrays`` (which encodes the batch) inside the timed region."""
    n = APPEND_COUNT
    durability, built_in_loop = variant.removesuffix("-built-in-loop"), \
        variant.endswith("-built-in-loop")
    batches = column_batches(workload, n, BATCH)
    keys = np.frombuffer(b"".join(workload.keys[:n]), np.uint8).reshape(n, KEY_BYTES)
    values = np.frombuffer(b"".join(workload.values[:n]), np.uint8).reshape(n, VALUE_BYTES)
    with ExitStack() as stack:
        topic = open_store(stack, bench_dir, durability)
        env = open_lmdb(stack, bench_dir)
        lvalues = workload.lmdb_values[:n]
        next_keys = lmdb_keys([0], n)

        def lmdb_setup():
            lkeys = next_keys()
            return [list(zip(lkeys[i:i + BATCH], lvalues[i:i + BATCH], strict=True))
                    for i in range(0, n, BATCH)]

        def streamlog_run(_):
            before = topic.end_offset(0)
            append_batch = topic.append_batch
            if built_in_loop:
                ts = streamlog._types.now_ms()
                from_arrays = streamlog.RecordBatch.from_arrays
                for i in range(0, n, BATCH):
                    append_batch(0, from_arrays(values[i:i + BATCH], keys=keys[i:i + BATCH],
                                                timestamps_ms=ts))
            else:
                for b in batches:
                    append_batch(0, b)
            assert topic.end_offset(0) == before + n

        def lmdb_run(lmdb_batches):
            for items in lmdb_batches:
                with env.begin(write=True) as txn:
                    txn.cursor().putmulti(items, append=True)

        baselines = [write_contender(stack, bench_dir, workload.chunks(n)),
                     Contender("lmdb putmulti, txn per batch", lmdb_run, lmdb_setup)]
        times = paired_rounds(benchmark, Contender("streamlog", streamlog_run), baselines,
                              ROUNDS)
    payload_mb = n * RECORD_BYTES / 1e6
    fig = Figure(benchmark.name, f"append_batch x{BATCH}, durability={durability}"
                 + (", from_arrays in the loop" if built_in_loop else ""),
                 rate(payload_mb, times["streamlog"]), "MB/s",
                 {b.name: rate(payload_mb, times[b.name]) for b in baselines},
                 rounds=len(times["streamlog"]), spread=spread(times["streamlog"]),
                 note=f"MB/s of key + value payload; "
                      f"{rate(n, times['streamlog']) / 1e6:.2f} M records/s; RecordBatches "
                      + ("built by from_arrays (a copy of the rows and the encoding) inside "
                         "the timed region" if built_in_loop else
                         "built by from_arrays (which encodes them) outside the timed region")
                      + "; long-lived stores")
    if not built_in_loop:
        fig.goals = [Goal(">= 90% of os.write bandwidth", fig.ratio("os.write 1 MiB chunks"),
                          0.9)]
    report(benchmark, fig)


TRANSFORM_COUNT = 200_000  # records each round reads (and, in the loop, transforms and appends)
TRANSFORM_BATCH = 10_000  # records per read_batch / append_batch call of the loop


@pytest.mark.benchmark(group="append_batch")
def test_batch_transform_loop(benchmark, read_stores, bench_dir):
    """read_batch -> numpy transform -> append_batch, beside the same read_batch loop alone."""
    n, size = TRANSFORM_COUNT, TRANSFORM_BATCH
    src = read_stores["kept"].topic("bench")
    with ExitStack() as stack:
        out = open_store(stack, bench_dir, "never")

        def read_only(_):
            count = 0
            for off in range(0, n, size):
                count += len(src.read_batch(0, off, size))
            assert count == n

        def loop(_):
            before = out.end_offset(0)
            for off in range(0, n, size):
                b = src.read_batch(0, off, size)
                rows = b.value_data.reshape(len(b), VALUE_BYTES)
                # the transform: every value's first 8 bytes as a little-endian counter + 1
                head = rows[:, :8].copy().view("<u8") + np.uint64(1)
                new = np.concatenate((head.view(np.uint8).reshape(len(b), 8), rows[:, 8:]), 1)
                out.append_batch(0, streamlog.RecordBatch.from_arrays(
                    new, keys=b.key_data.reshape(len(b), KEY_BYTES),
                    timestamps_ms=b.timestamps_ms))
            assert out.end_offset(0) == before + n

        read_only(None)  # every CRC of the kept handle checked before the first round
        times = paired_rounds(benchmark, Contender("streamlog", loop),
                              [Contender("read_batch alone", read_only)], ROUNDS)
    fig = Figure(benchmark.name, f"read_batch -> numpy -> append_batch x{size}",
                 rate(n, times["streamlog"]), "records/s",
                 {"read_batch alone": rate(n, times["read_batch alone"])},
                 rounds=len(times["streamlog"]), spread=spread(times["streamlog"]),
                 note="the transform adds 1 to each value's first 8 bytes (as a uint64) "
                      "and keeps keys and timestamps; durability=never; CRCs of the source "
                      "already checked (the kept handle)")
    fig.goals = [Goal(">= 0.5x read_batch alone", fig.ratio("read_batch alone"), 0.5)]
    report(benchmark, fig)


# ------------------------------------------------------------------- reads
@pytest.fixture(scope="module")
def read_stores(workload: Workload, bench_dir):
    """READ_COUNT records in: a store written in batches of 1,000, one written a record
    at a time, an LMDB environment and a sqlite3 database (same keys and values)."""
    n = READ_COUNT
    out = {}
    for layout in ("batched", "single"):
        path = os.path.join(bench_dir, f"read-{layout}")
        with streamlog.open(path, durability="never") as log:
            t = log.topic("bench")
            if layout == "batched":
                for i in range(0, n, BATCH):
                    t.append_many(workload.values[i:i + BATCH], workload.keys[i:i + BATCH])
            else:
                for k, v in zip(workload.keys[:n], workload.values[:n], strict=True):
                    t.append(v, key=k)
            assert t.end_offset(0) == n
        out[layout] = path
    env = lmdb.open(os.path.join(bench_dir, "read-lmdb"), map_size=1 << 30, sync=False)
    with env.begin(write=True) as txn:
        txn.cursor().putmulti(zip(workload.lmdb_keys[:n], workload.lmdb_values[:n],
                                  strict=True), append=True)
    out["lmdb"] = env
    con = sqlite3.connect(os.path.join(bench_dir, "read.db"), isolation_level=None,
                          check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, key BLOB, value BLOB)")
    con.execute("BEGIN")
    con.executemany(SQL_INSERT, zip(workload.keys[:n], workload.values[:n], strict=True))
    con.execute("COMMIT")
    out["sqlite"] = con
    out["payload"] = b"".join(workload.lmdb_values[:n])
    # A handle kept open across rounds: after its first pass every CRC is checked.
    out["kept"] = streamlog.open(out["batched"])
    yield out
    out["kept"].close()
    env.close()
    con.close()


def _lmdb_walk(env) -> None:
    count = 0
    with env.begin() as txn:
        for _k, _v in txn.cursor():
            count += 1
    assert count == READ_COUNT


def _sqlite_walk(con) -> None:
    count = 0
    for _k, _v in con.execute("SELECT key, value FROM log ORDER BY id"):
        count += 1
    assert count == READ_COUNT


READ_VARIANTS = {
    # name: (store layout, fresh handle per round?)
    "batched": ("batched", True),
    "single-record-batches": ("single", True),
    "batched-reread": ("batched", False),
    "batched-gc-off": ("batched", True),
}
READ_NOTES = {
    "batched": "written by append_many x1000; a fresh store handle per round, so every "
               "batch's CRC is checked",
    "single-record-batches": "written one append per record (a batch per record); fresh "
                             "handle per round, CRCs checked",
    "batched-reread": "the same handle every round: CRCs were checked by its first pass",
    "batched-gc-off": "diagnostic, no goals: as 'batched' with the cyclic GC off around the "
                      "streamlog loop only (what untracking Record objects would give)",
}


def reader_contender(stores: dict, variant: str, run) -> Contender:
    layout, fresh = READ_VARIANTS[variant]
    if variant.endswith("-gc-off"):
        inner = run

        def run(topic):
            gc.disable()
            try:
                inner(topic)
            finally:
                gc.enable()

    def setup():
        log = streamlog.open(stores[layout]) if fresh else stores["kept"]
        return log, log.topic("bench")

    def teardown(state):
        if fresh:
            state[0].close()

    return Contender("streamlog", lambda state: run(state[1]), setup, teardown)


@pytest.mark.benchmark(group="read")
@pytest.mark.parametrize("variant", list(READ_VARIANTS))
def test_read_sequential(benchmark, read_stores, variant):
    """``Topic.read`` (one Record object per record) beside an LMDB cursor walk and sqlite."""

    def run(topic):
        count = 0
        for _r in topic.read(0):
            count += 1
        assert count == READ_COUNT

    env, con = read_stores["lmdb"], read_stores["sqlite"]
    baselines = [Contender("lmdb cursor walk", lambda _: _lmdb_walk(env)),
                 Contender("sqlite SELECT walk", lambda _: _sqlite_walk(con))]
    times = paired_rounds(benchmark, reader_contender(read_stores, variant, run), baselines,
                          ROUNDS)
    fig = Figure(benchmark.name, f"read, {variant}", rate(READ_COUNT, times["streamlog"]),
                 "records/s", {b.name: rate(READ_COUNT, times[b.name]) for b in baselines},
                 rounds=len(times["streamlog"]), spread=spread(times["streamlog"]),
                 note=READ_NOTES[variant])
    if not variant.endswith("-gc-off"):
        fig.goals = [Goal(">= 4,000,000 records/s", fig.value, 4_000_000),
                     Goal("not slower than lmdb cursor walk", fig.ratio("lmdb cursor walk"),
                          1.0),
                     Goal(">= 2x lmdb cursor walk", fig.ratio("lmdb cursor walk"), 2.0)]
    report(benchmark, fig)


@pytest.mark.benchmark(group="read_batch")
@pytest.mark.parametrize("variant", [v for v in READ_VARIANTS if not v.endswith("-gc-off")])
def test_read_batch(benchmark, read_stores, variant):
    """``Topic.read_batch`` (numpy columns) beside an LMDB cursor walk and a plain copy."""

    def run(topic):
        offset, count = 0, 0
        while True:
            batch = topic.read_batch(0, offset, READ_BATCH)
            if not len(batch):
                break
            count += len(batch)
            offset = int(batch.offsets[-1]) + 1
        assert count == READ_COUNT

    env, payload = read_stores["lmdb"], read_stores["payload"]
    src = np.frombuffer(payload, np.uint8)
    reused = np.empty_like(src)
    baselines = [Contender("lmdb cursor walk", lambda _: _lmdb_walk(env)),
                 Contender("copy of the key + value bytes", lambda _: bytearray(payload)),
                 Contender("copy into reused memory", lambda _: np.copyto(reused, src))]
    times = paired_rounds(benchmark, reader_contender(read_stores, variant, run), baselines,
                          ROUNDS)
    fig = Figure(benchmark.name, f"read_batch x{READ_BATCH}, {variant}",
                 rate(READ_COUNT, times["streamlog"]), "records/s",
                 {b.name: rate(READ_COUNT, times[b.name]) for b in baselines},
                 rounds=len(times["streamlog"]), spread=spread(times["streamlog"]),
                 note=READ_NOTES[variant])
    fig.goals = [Goal(">= 30,000,000 records/s", fig.value, 30_000_000),
                 Goal("within 1.5x of a plain copy (>= 0.67x its rate)",
                      fig.ratio("copy of the key + value bytes"), 1 / 1.5),
                 Goal("within 1.5x of a copy into reused memory (>= 0.67x)",
                      fig.ratio("copy into reused memory"), 1 / 1.5)]
    report(benchmark, fig)


# ------------------------------------------------------- "always" durability
def _record_bytes_on_disk(key: bytes, value: bytes) -> int:
    """Bytes one per-record append writes: a batch of one record (docs/format.md)."""
    return _codec.HEADER_SIZE + _codec.RECORD_HEADER_SIZE + len(key) + len(value)


@pytest.mark.benchmark(group="always")
def test_always_append_latency(benchmark, workload: Workload, bench_dir):
    """p50 latency of one ``durability="always"`` append beside a raw write + fdatasync of
    the same size: appended to a growing file, and written into preallocated space."""
    key, value = workload.keys[0], workload.values[0]
    size = _record_bytes_on_disk(key, value)
    raw = os.urandom(size)
    rounds = 1_000
    path = _scratch(bench_dir)
    log = streamlog.open(os.path.join(path, "store"), durability="always")
    topic = log.topic("bench")
    grow = os.open(os.path.join(path, "grow"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    pre = os.open(os.path.join(path, "pre"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.posix_fallocate(pre, 0, (rounds + 100) * size)
    os.fsync(pre)
    pre_pos = [0]

    def grow_run(_):
        os.write(grow, raw)
        os.fdatasync(grow)

    def pre_run(_):
        os.pwrite(pre, raw, pre_pos[0])
        pre_pos[0] += size
        os.fdatasync(pre)

    grown = f"os.write {size} B + fdatasync (file grows)"
    baselines = [Contender(grown, grow_run),
                 Contender(f"os.pwrite {size} B + fdatasync (preallocated)", pre_run)]
    try:
        target = Contender("streamlog", lambda _: topic.append(value, key=key))
        times = paired_rounds(benchmark, target, baselines, rounds, warmup_rounds=20)
    finally:
        os.close(grow)
        os.close(pre)
        log.close()
        shutil.rmtree(path, ignore_errors=True)
    us = {name: [t * 1e6 for t in ts] for name, ts in times.items()}
    p99 = {name: statistics.quantiles(ts, n=100)[98] if len(ts) > 1 else ts[0]
           for name, ts in us.items()}
    fig = Figure(benchmark.name, "always: one append, p50 latency",
                 statistics.median(us["streamlog"]), "us",
                 {b.name: statistics.median(us[b.name]) for b in baselines},
                 rounds=len(us["streamlog"]), spread=spread(us["streamlog"]),
                 note=f"{size} B written per append; p99 " + ", ".join(
                     f"{name}: {v:.0f} us" for name, v in p99.items()))
    benchmark.extra_info["p99_us"] = p99
    fig.goals = [Goal("p50 within 1.3x of os.write + fdatasync", fig.ratio(grown), 1.3,
                      higher_is_better=False)]
    report(benchmark, fig)


@pytest.mark.benchmark(group="always")
def test_always_group_commit(benchmark, workload: Workload, bench_dir):
    """8 threads appending with ``durability="always"`` beside one thread (group commit)."""
    threads_n, per_thread, single = 8, 250, 500
    key, value = workload.keys[0], workload.values[0]
    with ExitStack() as stack:
        one = open_store(stack, bench_dir, "always")
        many = open_store(stack, bench_dir, "always")

        def single_run(_):
            append = one.append
            for _ in range(single):
                append(value, key=key)

        def worker(go: threading.Event):
            go.wait()
            append = many.append
            for _ in range(per_thread):
                append(value, key=key)

        part = many._parts[0]
        per_sync: list[float] = []  # appends served by each fsync, per round

        def setup_threads():
            go = threading.Event()
            threads = [threading.Thread(target=worker, args=(go,)) for _ in range(threads_n)]
            for th in threads:
                th.start()
            return go, threads, many.end_offset(0), part._commit.syncs

        def run_threads(state):
            go, threads, _, _ = state
            go.set()
            for th in threads:
                th.join()

        def teardown_threads(state):
            go, threads, before, syncs = state
            run_threads(state)  # a no-op unless the round was interrupted
            assert many.end_offset(0) == before + threads_n * per_thread
            done = (part._commit.syncs - syncs) & 0xFFFFFFFF
            per_sync.append(threads_n * per_thread / max(done, 1))

        target = Contender("streamlog", run_threads, setup_threads, teardown_threads)
        baselines = [Contender("1 thread, always", single_run)]
        times = paired_rounds(benchmark, target, baselines, ROUNDS)
    fig = Figure(benchmark.name, f"always: {threads_n} appending threads",
                 rate(threads_n * per_thread, times["streamlog"]), "appends/s",
                 {"1 thread, always": rate(single, times["1 thread, always"])},
                 rounds=len(times["streamlog"]), spread=spread(times["streamlog"]))
    fig.goals = [Goal(">= 5x one thread (group commit)", fig.ratio("1 thread, always"), 5.0)]
    report(benchmark, fig)
    served = statistics.median(per_sync[-len(times["streamlog"]):])
    syncs = Figure(benchmark.name, f"always: {threads_n} threads, appends served per fsync",
                   served, "appends", rounds=len(per_sync),
                   spread=(max(per_sync) - min(per_sync)) / served if served else 0.0,
                   note="median over rounds of (appends / fsyncs made), counted by the "
                        "partition's group commit; 8 = every thread served by each sync")
    syncs.goals = [Goal(">= 7 of 8 appenders served by each fsync", served, 7.0)]
    report(benchmark, syncs)
