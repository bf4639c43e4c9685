"""Request-reply and event-store appends on JetStream against core NATS and raw nats-py.

Starts a real nats-server (one node) and measures, in interleaved rounds so
machine load moves every figure alike:

* ``rpc.request`` round trips (100 B, an echo handler served by
  ``rpc.serve`` in the same process and on the same store handle, so the
  reply is handed over in memory, as on the embedded store)
  against core NATS
  request-reply (``nc.request`` to an echo subscription on a second
  connection, both on one event loop: the floor of a NATS round trip);
* ``EventStore.append`` of one event with an expected version (the server
  checks it) against a raw ``js.publish`` with
  ``Nats-Expected-Last-Subject-Sequence``.

Figures are per-call p50 over all measured calls; ratios are store / raw p50
per round, then the median. Run: ``python bench/jetstream_rpc.py [--rounds 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

import nats

import streamlog
from streamlog.backends.jetstream.server import NatsServer

PAYLOAD = os.urandom(100)


async def raw_request_latencies(nc_req, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await nc_req.request("bench.echo", PAYLOAD, timeout=5)
        out.append(time.perf_counter() - t)
    return out


async def raw_append_latencies(js, subject: str, n: int, last: list[int]) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        ack = await js.publish(subject, PAYLOAD, headers={
            "Nats-Expected-Last-Subject-Sequence": str(last[0])})
        out.append(time.perf_counter() - t)
        last[0] = ack.seq
    return out


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=300, help="per round")
    args = ap.parse_args()

    servers = NatsServer.start_single(tempfile.mkdtemp(prefix="streamlog-js-rpc-bench-"))
    url = servers.client_url
    store = streamlog.open(f"{url}/bench")
    rpc = store.rpc("echo")
    es = store.event_store("bank")
    raw_topic = store.topic("rawes")

    loop = asyncio.new_event_loop()
    nc_srv = loop.run_until_complete(nats.connect(url))
    nc_req = loop.run_until_complete(nats.connect(url))
    js = nc_req.jetstream()

    async def echo(msg):
        await msg.respond(msg.data)

    loop.run_until_complete(nc_srv.subscribe("bench.echo", cb=echo))
    loop.run_until_complete(nc_srv.flush())
    raw_subject = raw_topic.subject(0) + ".e.raw"
    last = [0]
    rows: dict[str, list[tuple[float, float]]] = {"rpc round trip": [], "event append": []}
    version = -1
    with rpc.serve(lambda m: m.value):
        for _ in range(50):  # warm both paths up
            rpc.request(PAYLOAD, timeout=5)
        loop.run_until_complete(raw_request_latencies(nc_req, 50))
        for _ in range(args.rounds):
            raw = loop.run_until_complete(raw_request_latencies(nc_req, args.requests))
            api = []
            for _ in range(args.requests):
                t = time.perf_counter()
                rpc.request(PAYLOAD, timeout=5)
                api.append(time.perf_counter() - t)
            rows["rpc round trip"].append((p50(raw), p50(api)))
            raw = loop.run_until_complete(raw_append_latencies(js, raw_subject, args.requests,
                                                               last))
            api = []
            for _ in range(args.requests):
                t = time.perf_counter()
                version = es.append("acc", [PAYLOAD], expected_version=version)
                api.append(time.perf_counter() - t)
            rows["event append"].append((p50(raw), p50(api)))

    loop.run_until_complete(nc_srv.close())
    loop.run_until_complete(nc_req.close())
    loop.close()
    store.close()
    servers.stop()

    print(f"nats-server, 1 node, R1; 100 B; {args.rounds} interleaved rounds of "
          f"{args.requests} calls")
    print(f"{'operation':<16}{'raw p50 us':>12}{'store p50 us':>14}{'store/raw':>11}")
    for name, pairs in rows.items():
        raw = statistics.median(r for r, _ in pairs) * 1e6
        api = statistics.median(a for _, a in pairs) * 1e6
        ratio = statistics.median(a / r for r, a in pairs)
        print(f"{name:<16}{raw:>12.0f}{api:>14.0f}{ratio:>10.2f}x")


if __name__ == "__main__":
    main()
