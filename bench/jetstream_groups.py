"""Consumer groups on JetStream against a raw pull consumer on the same server.

Starts a real nats-server (one node) and measures, in interleaved rounds so
machine load moves both figures alike, a group's ``poll(100)`` + ``ack`` of
the batch beside nats-py doing the same on its own event loop: a durable
pull consumer's ``fetch(100)`` and an ``ack()`` of each message. Each round
drains 5,000 records of 100 B with a fresh group and a fresh raw consumer.

Figures are medians; the ratio is group / raw per round, then the median.
Run: ``python bench/jetstream_groups.py [--rounds 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's streamlog

from streamlog.backends.jetstream.server import NatsServer  # noqa: E402

RECORDS = 5000
BATCH = 100


def open_store(url: str):
    try:  # the JetStream store, where this build has it; else the tests' stand-in topic
        from streamlog.backends.jetstream.log import open_store as real
    except ImportError:
        from tests.jetstream.standin import StandInStore

        return StandInStore(url)
    return real(url)


async def raw_drain(url: str, stream: str, name: str) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_consumer(stream, durable_name=name, ack_policy="explicit",
                          max_ack_pending=20_000)
    sub = await js.pull_subscribe_bind(name, stream)
    t = time.perf_counter()
    n = 0
    while n < RECORDS:
        msgs = await sub.fetch(BATCH, timeout=5)
        for m in msgs:
            await m.ack()
        n += len(msgs)
    await nc.flush()
    elapsed = time.perf_counter() - t
    await nc.close()
    return elapsed


def group_drain(topic, name: str) -> float:
    g = topic.group(name)
    t = time.perf_counter()
    n = 0
    while n < RECORDS:
        ms = g.poll(BATCH, timeout=5)
        g.ack(ms)
        n += len(ms)
    elapsed = time.perf_counter() - t
    g.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer.start_single(Path(tmp) / "nats")
        try:
            store = open_store(f"{server.client_url}/bench")
            topic = store.topic("groups")
            for _ in range(RECORDS // 1000):
                topic.append_many([b"x" * 100] * 1000)
            stream = topic.stream_name(0)
            pairs = []
            for r in range(args.rounds):
                raw = asyncio.run(raw_drain(server.client_url, stream, f"raw{r}"))
                grp = group_drain(topic, f"g{r}")
                pairs.append((RECORDS / raw, RECORDS / grp))
            store.close()
        finally:
            server.stop()
    raw = statistics.median(r for r, _ in pairs)
    grp = statistics.median(g for _, g in pairs)
    ratio = statistics.median(g / r for r, g in pairs)
    print(f"{'operation':<22}{'raw rec/s':>12}{'group rec/s':>14}{'group/raw':>11}")
    print(f"{'poll(100) + ack':<22}{raw:>12.0f}{grp:>14.0f}{ratio:>10.2f}x")


if __name__ == "__main__":
    main()
