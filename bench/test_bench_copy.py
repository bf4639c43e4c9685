"""`streamlog.copy` from the embedded store to JetStream against raw atomic-batch publishing
of the same records, in the same rounds, on one real nats-server (one node, R1).

The source is an embedded store of RECORDS records (16-byte keys, 100-byte
values) on PARTITIONS partitions. Each round copies it to a fresh store on the
server (topic creation, reading the source, publishing, the group positions:
all of `copy` is timed), preceded by the baseline: nats-py publishing the same
values, each with its key and timestamp as headers, as atomic batches of 1,000
to a fresh stream, each batch's commit acknowledged before the next batch
(`bench/jetstream_baselines.py`'s raw atomic batch). Streams are made and
deleted outside the timed region. Goal: copy >= 0.7x the raw batches.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import tempfile
import uuid

import nats
import pytest
from conftest import Contender, Figure, Goal, paired_rounds, rate, report, spread

import streamlog
from streamlog.backends.jetstream._client import Connection
from streamlog.backends.jetstream.server import NatsServer

RECORDS = 60_000
PARTITIONS = 2
BATCH = 1000
ROUNDS = 3
_stores = itertools.count()


@pytest.fixture(scope="module")
def server():
    base = tempfile.mkdtemp(prefix="streamlog-copy-bench-")
    srv = NatsServer.start_single(base)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def source(bench_dir):
    """The embedded store copied in every round, with the keys and values per partition
    that the raw baseline publishes."""
    path = os.path.join(bench_dir, "copy-src")
    keys = [os.urandom(16) for _ in range(RECORDS)]
    values = [os.urandom(100) for _ in range(RECORDS)]
    with streamlog.open(path) as log:
        t = log.topic("orders", partitions=PARTITIONS)
        for i in range(0, RECORDS, BATCH):
            t.append_many(values[i:i + BATCH], keys=keys[i:i + BATCH])
        parts = [[(r.key, r.value, r.timestamp_ms) for r in t.read(p)]
                 for p in range(PARTITIONS)]
    assert sum(map(len, parts)) == RECORDS
    return path, parts


async def _raw_batches(nc, subject: str, records: list[tuple]) -> None:
    """The baseline: atomic batches of BATCH records, each committed and acknowledged
    before the next (nc.publish for all but the commit, which is a request)."""
    for i in range(0, len(records), BATCH):
        chunk = records[i:i + BATCH]
        bid = uuid.uuid4().hex
        for j, (k, v, ts) in enumerate(chunk[:-1], 1):
            await nc.publish(subject, v, headers={
                "Nats-Batch-Id": bid, "Nats-Batch-Sequence": str(j), "k": k.hex(),
                "ts": str(ts)})
        k, v, ts = chunk[-1]
        reply = await nc.request(subject, v, timeout=10, headers={
            "Nats-Batch-Id": bid, "Nats-Batch-Sequence": str(len(chunk)),
            "Nats-Batch-Commit": "1", "k": k.hex(), "ts": str(ts)})
        ack = json.loads(reply.data)
        assert ack.get("count") == len(chunk), ack


def test_copy_embedded_to_jetstream_vs_raw_atomic_batches(benchmark, server, source):
    """Records/s of `streamlog.copy` embedded -> JetStream vs raw atomic batches."""
    path, parts = source
    url = server.client_url
    conn = Connection(f"{url}/rawbench")
    loop = asyncio.new_event_loop()
    nc = loop.run_until_complete(nats.connect(url))

    def raw_setup():
        n = next(_stores)
        names = []
        for p in range(PARTITIONS):
            name = f"RAW{n}_{p}"
            conn.run(conn.api("STREAM.CREATE." + name, {
                "name": name, "subjects": [f"raw.{n}.{p}"], "storage": "file",
                "allow_atomic": True, "num_replicas": 1}))
            names.append(name)
        return n, names

    def raw_run(state):
        n, _ = state

        async def all_parts():
            for p in range(PARTITIONS):
                await _raw_batches(nc, f"raw.{n}.{p}", parts[p])

        loop.run_until_complete(all_parts())

    def raw_teardown(state):
        for name in state[1]:
            conn.run(conn.delete_stream(name))

    def copy_setup():
        return f"{url}/copybench{next(_stores)}"

    def copy_run(dst):
        res = streamlog.copy(path, dst)
        assert res.records == RECORDS

    def copy_teardown(dst):
        with streamlog.open(dst) as log:
            for name in log.topics():
                log.delete_topic(name)

    try:
        times = paired_rounds(benchmark, Contender("copy", copy_run, copy_setup, copy_teardown),
                              [Contender("raw atomic batches", raw_run, raw_setup,
                                         raw_teardown)], rounds=ROUNDS)
    finally:
        loop.run_until_complete(nc.close())
        loop.close()
        conn.close()
    value = rate(RECORDS, times["copy"])
    raw = rate(RECORDS, times["raw atomic batches"])
    report(benchmark, Figure(
        test="test_copy_embedded_to_jetstream_vs_raw_atomic_batches",
        label=f"copy embedded -> JetStream, {RECORDS:,} x 116 B on {PARTITIONS} partitions",
        value=value, unit="records/s", baselines={"raw atomic batches": raw},
        goals=[Goal("copy >= 0.7x raw atomic batches", value / raw, 0.7)],
        rounds=len(times["copy"]), spread=spread(times["copy"]),
        note=f"raw spread {spread(times['raw atomic batches']):.2f}"))
