"""The JetStream store against raw nats-py on the same server: what the store's API costs.

Starts a real nats-server (one node, or ``--cluster`` for three with R3
streams) and measures, in interleaved rounds so machine load moves every
figure alike, each store operation beside the raw client doing the same
work on its own event loop:

* ``Topic.append`` of 100 B (its acknowledgement awaited) vs ``js.publish``;
* ``Topic.append_many`` of 1,000 x 100 B (one atomic batch) vs a raw atomic
  batch (``nc.publish`` x 999 with ``Nats-Batch-*`` headers, commit as a
  request);
* ``Topic.read`` of every record of a 5,000-record partition (leader's
  stream info, then batch direct gets, records decoded) vs raw batch direct
  gets of the same messages.

Figures are medians; ratios are store / raw per round, then the median.
Run: ``python bench/jetstream_store.py [--cluster] [--rounds 5]``
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

import streamlog
from streamlog.backends.jetstream.server import JetStreamCluster, NatsServer

PAYLOAD = b"x" * 100
BATCH = 1000
READ_RECORDS = 5000
READ_CHUNK = 256


async def raw_appends(js, subject: str, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        await js.publish(subject, PAYLOAD)
    return time.perf_counter() - t


async def raw_batch(nc, subject: str) -> float:
    batch_id = uuid.uuid4().hex
    t = time.perf_counter()
    for i in range(1, BATCH):
        await nc.publish(subject, PAYLOAD,
                         headers={"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i)})
    reply = await nc.request(subject, PAYLOAD, timeout=10, headers={
        "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(BATCH), "Nats-Batch-Commit": "1"})
    assert json.loads(reply.data).get("count") == BATCH
    return time.perf_counter() - t


async def raw_read(nc, stream: str, n: int) -> float:
    t = time.perf_counter()
    seq, got = 1, 0
    while got < n:
        inbox = nc.new_inbox()
        done = asyncio.get_running_loop().create_future()
        box: list = []

        async def cb(msg, box=box, done=done):
            if msg.headers and msg.headers.get("Status"):
                if not done.done():
                    done.set_result(None)
            else:
                box.append(msg)

        sub = await nc.subscribe(inbox, cb=cb)
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}",
                         json.dumps({"seq": seq, "batch": READ_CHUNK}).encode(), reply=inbox)
        await done
        await sub.unsubscribe()
        got += len(box)
        seq += len(box)
    return time.perf_counter() - t


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cluster", action="store_true", help="3 nodes, R3 streams")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--appends", type=int, default=1000, help="per round")
    ap.add_argument("--batches", type=int, default=5, help="per round")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="streamlog-js-store-bench-")
    if args.cluster:
        servers = JetStreamCluster(tmp).start()
        url, replicas = servers.url, 3
    else:
        servers = NatsServer.start_single(tmp)
        url, replicas = servers.client_url, 1
    store = streamlog.open(f"{url}/bench", replicas=replicas)
    t_raw, t_api = store.topic("raw"), store.topic("api")
    t_read = store.topic("read")
    for _ in range(READ_RECORDS // BATCH):
        t_read.append_many([PAYLOAD] * BATCH)

    loop = asyncio.new_event_loop()
    nc = loop.run_until_complete(nats.connect(url.split(",")[0]))
    js = nc.jetstream()
    subj = t_raw.subject(0)

    rows: dict[str, list[tuple[float, float]]] = {"append": [], "append_many": [], "read": []}
    loop.run_until_complete(raw_appends(js, subj, 100))  # warm both paths up
    for _ in range(100):
        t_api.append(PAYLOAD)
    for _ in range(args.rounds):
        raw = loop.run_until_complete(raw_appends(js, subj, args.appends))
        api = timed(lambda: [t_api.append(PAYLOAD) for _ in range(args.appends)])
        rows["append"].append((args.appends / raw, args.appends / api))
        for _ in range(args.batches):
            raw = loop.run_until_complete(raw_batch(nc, subj))
            api = timed(lambda: t_api.append_many([PAYLOAD] * BATCH))
            rows["append_many"].append((BATCH / raw, BATCH / api))
        raw = loop.run_until_complete(raw_read(nc, t_read.stream_name(0), READ_RECORDS))
        api = timed(lambda: sum(1 for _ in t_read.read(0)))
        rows["read"].append((READ_RECORDS / raw, READ_RECORDS / api))

    loop.run_until_complete(nc.close())
    loop.close()
    store.close()
    servers.stop()

    topo = "3 nodes, R3" if args.cluster else "1 node, R1"
    print(f"nats-server, {topo}; 100 B records; {args.rounds} interleaved rounds")
    print(f"{'operation':<14}{'raw rec/s':>12}{'store rec/s':>14}{'store/raw':>11}")
    for name, pairs in rows.items():
        raw = statistics.median(r for r, _ in pairs)
        api = statistics.median(a for _, a in pairs)
        ratio = statistics.median(a / r for r, a in pairs)
        print(f"{name:<14}{raw:>12.0f}{api:>14.0f}{ratio:>10.2f}x")


if __name__ == "__main__":
    main()
