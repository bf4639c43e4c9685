"""Raw JetStream baselines on this machine: acknowledged publish latency and atomic batches.

Starts a real nats-server (one node, or ``--cluster`` for three with R3 streams)
and measures, in interleaved rounds so machine load moves every figure alike:

* ``js.publish`` of 100 B with its acknowledgement awaited (nats-py's own
  call, on its own event loop): p50 / p99 in µs;
* the same publish through the store's client facade (``Connection.publish``
  run from a calling thread): p50 / p99, and the ratio to raw;
* one atomic batch of 1,000 x 100 B, raw (``nc.publish`` x 999 with
  ``Nats-Batch-*`` headers, the commit as a request): records/s;
* the same batch through ``Connection.publish_batch``: records/s and ratio.

Run: ``python bench/jetstream_baselines.py [--cluster] [--rounds 5] [--sync-always]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid

import nats

from streamlog.backends.jetstream._client import Connection, OutMsg
from streamlog.backends.jetstream.server import JetStreamCluster, NatsServer

PAYLOAD = b"x" * 100
BATCH = 1000


async def raw_publish_latencies(js, subject: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await js.publish(subject, PAYLOAD)
        out.append(time.perf_counter() - t)
    return out


async def raw_atomic_batch(nc, subject: str) -> float:
    batch_id = uuid.uuid4().hex
    t = time.perf_counter()
    for i in range(1, BATCH):
        await nc.publish(subject, PAYLOAD,
                         headers={"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i)})
    reply = await nc.request(subject, PAYLOAD, timeout=10, headers={
        "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(BATCH), "Nats-Batch-Commit": "1"})
    elapsed = time.perf_counter() - t
    ack = json.loads(reply.data)
    assert ack.get("count") == BATCH, ack
    return elapsed


def facade_publish_latencies(conn: Connection, subject: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        conn.run(conn.publish(subject, PAYLOAD))
        out.append(time.perf_counter() - t)
    return out


def facade_atomic_batch(conn: Connection, subject: str) -> float:
    msgs = [OutMsg(subject, PAYLOAD)] * BATCH
    t = time.perf_counter()
    ack = conn.run(conn.publish_batch(msgs))
    elapsed = time.perf_counter() - t
    assert ack.count == BATCH
    return elapsed


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cluster", action="store_true", help="3 nodes, R3 streams")
    ap.add_argument("--sync-always", action="store_true", help="servers fsync every write")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--publishes", type=int, default=2000, help="per round")
    ap.add_argument("--batches", type=int, default=10, help="per round")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="streamlog-js-bench-")
    if args.cluster:
        servers = JetStreamCluster(tmp, sync_always=args.sync_always).start()
        url, replicas = servers.url, 3
    else:
        servers = NatsServer.start_single(tmp, sync_always=args.sync_always)
        url, replicas = servers.client_url, 1
    conn = Connection(f"{url}/bench")
    subj_raw, subj_fac = "bench.raw", "bench.facade"
    for name, subj in (("RAW", subj_raw), ("FACADE", subj_fac)):
        conn.run(conn.ensure_stream(name, [subj], replicas=replicas))

    loop = asyncio.new_event_loop()
    nc = loop.run_until_complete(nats.connect(url.split(",")[0]))
    js = nc.jetstream()

    raw_lat, fac_lat, raw_batch, fac_batch = [], [], [], []
    p50s = []
    # Warm up both paths once.
    loop.run_until_complete(raw_publish_latencies(js, subj_raw, 200))
    facade_publish_latencies(conn, subj_fac, 200)
    for _ in range(args.rounds):
        r = loop.run_until_complete(raw_publish_latencies(js, subj_raw, args.publishes))
        f = facade_publish_latencies(conn, subj_fac, args.publishes)
        raw_lat += r
        fac_lat += f
        p50s.append(statistics.median(f) / statistics.median(r))
        for _ in range(args.batches):
            raw_batch.append(loop.run_until_complete(raw_atomic_batch(nc, subj_raw)))
            fac_batch.append(facade_atomic_batch(conn, subj_fac))

    loop.run_until_complete(nc.close())
    loop.close()
    conn.close()
    servers.stop()

    us = 1e6
    topo = "3 nodes, R3" if args.cluster else "1 node, R1"
    sync = "sync_interval: always" if args.sync_always else "default sync"
    print(f"nats-server, {topo}, {sync}; 100 B records; {args.rounds} interleaved rounds")
    print(f"raw js.publish ack        p50 {statistics.median(raw_lat) * us:7.0f} µs   "
          f"p99 {pct(raw_lat, .99) * us:7.0f} µs   (n={len(raw_lat)})")
    print(f"facade Connection.publish p50 {statistics.median(fac_lat) * us:7.0f} µs   "
          f"p99 {pct(fac_lat, .99) * us:7.0f} µs   "
          f"ratio facade/raw p50 {statistics.median(p50s):.2f}x")
    rb, fb = statistics.median(raw_batch), statistics.median(fac_batch)
    print(f"raw atomic batch of {BATCH}    {BATCH / rb:9.0f} records/s  ({rb * 1e3:.1f} ms/batch, "
          f"n={len(raw_batch)})")
    print(f"facade publish_batch({BATCH}) {BATCH / fb:9.0f} records/s  ({fb * 1e3:.1f} ms/batch)"
          f"  ratio facade/raw {rb / fb:.2f}x")


if __name__ == "__main__":
    main()
