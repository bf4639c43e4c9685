"""The asyncio API against the sync one, in the same run: group consumption throughput
(``poll(100)`` + ``ack`` of the batch) and append -> consumer latency, each with the
floor beside it (an ``asyncio.Queue`` hand-over in one process: what any asyncio
consumer pays, with no storage at all).

Rounds are interleaved (sync, async, floor, in an order that rotates), on one
long-lived store, so that machine load moves every side of a ratio together.
"""

from __future__ import annotations

import asyncio
import queue
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import Figure, Goal, rate, report, spread

import streamlog
import streamlog.aio as sla
from streamlog.backends.local import watch

RECORDS = 20_000
BATCH = 100
SAMPLES = 300


def _throughput(path: str, rounds: int) -> dict[str, list[float]]:
    """Round times (s) of draining RECORDS records with poll(100)+ack, sync and async,
    and of the floor; the order within a round rotates, so that none is always first
    (the first drain after a round's set-up is measurably slower on a shared disk)."""
    log = streamlog.open(path)
    t = log.topic("t", partitions=1)
    t.append_many([b"x" * 100] * RECORDS)
    loop = asyncio.new_event_loop()
    pool = ThreadPoolExecutor(2)
    atopic = sla.AsyncTopic(sla.AsyncStore(log, pool), t)
    perf = time.perf_counter

    def sync_round(r: int) -> float:
        g = t.group(f"s{r}")
        t0 = perf()
        n = 0
        while ms := g.poll(BATCH, timeout=0):
            g.ack(ms)
            n += len(ms)
        took = perf() - t0
        g.close()
        assert n == RECORDS
        return took

    def async_round(r: int) -> float:
        g = loop.run_until_complete(atopic.group(f"a{r}"))

        async def drain() -> int:
            n = 0
            while ms := await g.poll(BATCH, timeout=0):
                await g.ack(ms)
                n += len(ms)
            return n

        t0 = perf()
        n = loop.run_until_complete(drain())
        took = perf() - t0
        g.sync.close()
        assert n == RECORDS
        return took

    def floor_round(r: int) -> float:
        async def handover() -> None:
            q: asyncio.Queue = asyncio.Queue()
            for _ in range(RECORDS // BATCH):
                for _ in range(BATCH):
                    q.put_nowait(b"x")
                for _ in range(BATCH):
                    await q.get()

        t0 = perf()
        loop.run_until_complete(handover())
        return perf() - t0

    sides = [("sync", sync_round), ("async", async_round), ("floor", floor_round)]
    out: dict[str, list[float]] = {name: [] for name, _ in sides}
    try:
        for r in range(rounds + 1):  # round 0 warms up
            for name, fn in sides[r % 3:] + sides[:r % 3]:
                took = fn(r)
                if r:
                    out[name].append(took)
    finally:
        loop.close()
        pool.shutdown()
        log.close()
    return out


def test_async_poll_ack_throughput(benchmark, bench_dir):
    """poll(100) + ack of the batch until a topic of 20,000 records is drained."""
    result = {}

    def run():
        result["v"] = _throughput(f"{bench_dir}/aio-throughput", rounds=9)

    benchmark.pedantic(run, rounds=1, iterations=1)
    times = result["v"]
    fig = Figure("test_async_poll_ack_throughput", "async poll(100)+ack", rate(RECORDS,
                 times["async"]), "records/s",
                 {"sync poll(100)+ack": rate(RECORDS, times["sync"]),
                  "asyncio.Queue hand-over (floor)": rate(RECORDS, times["floor"])},
                 rounds=len(times["async"]), spread=spread(times["async"]))
    fig.goals = [Goal(">= 0.8x the sync throughput", fig.ratio("sync poll(100)+ack"), 0.8)]
    report(benchmark, fig)


def _counted(n) -> bool:
    return bytes(memoryview(n.mapping)[4:8]) != b"\0\0\0\0"


def _until(cond) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("the consumer did not go to sleep")
        time.sleep(0)


def _latency(path: str) -> dict[str, list[float]]:
    log = streamlog.open(path)
    t = log.topic("lat", partitions=1)
    t.append(b"warm")
    n = log._notifier_of("lat")
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()

    astore = sla.AsyncStore(log, ThreadPoolExecutor(2))

    async def _open() -> sla.AsyncGroup:
        ag = await (await astore.topic("lat")).group("async")
        (m,) = await ag.poll(1, timeout=1)
        await m.ack()
        return ag

    ag = asyncio.run_coroutine_threadsafe(_open(), loop).result()
    sg = t.group("sync")
    sg.ack(sg.poll(1, timeout=1))
    sync_in: queue.SimpleQueue = queue.SimpleQueue()
    sync_out: queue.SimpleQueue = queue.SimpleQueue()

    def sync_consumer() -> None:
        while sync_in.get() is not None:
            (m,) = sg.poll(1, timeout=10)
            sync_out.put(time.perf_counter_ns())
            m.ack()

    th = threading.Thread(target=sync_consumer, daemon=True)
    th.start()

    async def async_consume() -> int:
        (m,) = await ag.poll(1, timeout=10)
        stamp = time.perf_counter_ns()
        await m.ack()
        return stamp

    async def floor_consume(q: asyncio.Queue, ready: threading.Event) -> int:
        ready.set()
        await q.get()
        return time.perf_counter_ns()

    out: dict[str, list[float]] = {"sync": [], "async": [], "floor": []}
    try:
        for _ in range(SAMPLES):
            # a thread blocked in Group.poll: the other group's consumer is idle
            watch._registry.settle()
            sync_in.put(True)
            _until(lambda: _counted(n))
            t0 = time.perf_counter_ns()
            t.append(b"x")
            out["sync"].append((sync_out.get() - t0) / 1000)
            ag.sync.ack(ag.sync.poll(10, timeout=0))  # the async group's copy: settled
            time.sleep(0.001)

            # a coroutine awaiting AsyncGroup.poll (its pump awaits the topic's word)
            cf = asyncio.run_coroutine_threadsafe(async_consume(), loop)
            _until(lambda: watch._registry.snapshot())
            watch._registry.settle()
            _until(lambda: _counted(n))
            t0 = time.perf_counter_ns()
            t.append(b"x")
            out["async"].append((cf.result(10) - t0) / 1000)
            sg.ack(sg.poll(10, timeout=0))
            time.sleep(0.001)

            # the floor: an asyncio.Queue item put from this thread
            q: asyncio.Queue = asyncio.Queue()
            ready = threading.Event()
            cf = asyncio.run_coroutine_threadsafe(floor_consume(q, ready), loop)
            ready.wait()
            time.sleep(0.0005)  # the consumer is parked in q.get()
            t0 = time.perf_counter_ns()
            loop.call_soon_threadsafe(q.put_nowait, b"x")
            out["floor"].append((cf.result(10) - t0) / 1000)
            time.sleep(0.001)
    finally:
        sync_in.put(None)
        th.join()
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join()
        loop.close()
        log.close()
    return out


def test_append_to_async_poll_latency(benchmark, bench_dir):
    """append -> a coroutine awaiting AsyncGroup.poll returns: p50 vs a thread in poll."""
    result = {}

    def run():
        result["v"] = _latency(f"{bench_dir}/aio-latency")

    benchmark.pedantic(run, rounds=1, iterations=1)
    v = result["v"]
    p50 = {k: statistics.median(x) for k, x in v.items()}
    fig = Figure("test_append_to_async_poll_latency", "append -> async poll returns, p50",
                 p50["async"], "us",
                 {"append -> sync poll returns p50": p50["sync"],
                  "asyncio.Queue hand-over p50 (floor)": p50["floor"]},
                 rounds=len(v["async"]), spread=spread(v["async"]))
    fig.goals = [Goal("<= 1.5x the sync poll's latency",
                      fig.ratio("append -> sync poll returns p50"), 1.5,
                      higher_is_better=False)]
    report(benchmark, fig)
