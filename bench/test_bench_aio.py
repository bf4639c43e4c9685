"""The asyncio API against the sync one, in the same run, on both backends: group
consumption throughput (``poll(100)`` + ``ack`` of the batch) and append -> consumer
latency, each with the floor beside it (an ``asyncio.Queue`` hand-over in one process:
what any asyncio consumer pays, with no storage at all). On JetStream the sync store has
its connection thread and the async one is bound to the measuring loop (nats-py awaited
there); both talk to one single-node server started for the module.

Rounds are interleaved (sync, async, floor, in an order that rotates), on one
long-lived store, so that machine load moves every side of a ratio together.
"""

from __future__ import annotations

import asyncio
import queue
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
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


# --------------------------------------------------------------------- JetStream
JS_RECORDS = 5_000
JS_SAMPLES = 150


@pytest.fixture(scope="module")
def js_server():
    """One single-node JetStream server for this module's JetStream figures."""
    from streamlog.backends.jetstream.server import NatsServer

    with tempfile.TemporaryDirectory(prefix="streamlog-bench-nats-") as tmp:
        server = NatsServer.start_single(Path(tmp) / "nats")
        try:
            yield server
        finally:
            server.stop()


def _js_throughput(url: str, rounds: int) -> dict[str, list[float]]:
    """Round times (s) of draining JS_RECORDS records with poll(100)+ack: the sync API
    (its connection thread), the async API (bound to this loop), and the floor."""
    log = streamlog.open(url)
    t = log.topic("t", partitions=1)
    for _ in range(0, JS_RECORDS, 1000):
        t.append_many([b"x" * 100] * 1000)
    loop = asyncio.new_event_loop()
    alog = loop.run_until_complete(sla.open(url))
    atopic = loop.run_until_complete(alog.topic("t"))
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
        assert n == JS_RECORDS
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
        loop.run_until_complete(g.close())
        assert n == JS_RECORDS
        return took

    def floor_round(r: int) -> float:
        async def handover() -> None:
            q: asyncio.Queue = asyncio.Queue()
            for _ in range(JS_RECORDS // BATCH):
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
        loop.run_until_complete(alog.close())
        loop.close()
        log.close()
    return out


def test_async_poll_ack_throughput_on_jetstream(benchmark, js_server):
    """poll(100) + ack of the batch until a JetStream topic of 5,000 records is drained."""
    result = {}

    def run():
        result["v"] = _js_throughput(f"{js_server.client_url}/aiothroughput", rounds=5)

    benchmark.pedantic(run, rounds=1, iterations=1)
    times = result["v"]
    fig = Figure("test_async_poll_ack_throughput_on_jetstream",
                 "JetStream: async poll(100)+ack", rate(JS_RECORDS, times["async"]),
                 "records/s",
                 {"JetStream: sync poll(100)+ack": rate(JS_RECORDS, times["sync"]),
                  "asyncio.Queue hand-over (floor)": rate(JS_RECORDS, times["floor"])},
                 rounds=len(times["async"]), spread=spread(times["async"]))
    fig.goals = [Goal(">= 0.8x the sync throughput",
                      fig.ratio("JetStream: sync poll(100)+ack"), 0.8)]
    report(benchmark, fig)


def _js_latency(url: str) -> dict[str, list[float]]:
    """append (sync store, this thread) -> the consumer's poll returns: a thread blocked
    in the sync poll, a coroutine awaiting the async poll on a loop in a thread, and the
    floor (an asyncio.Queue item put from this thread)."""
    log = streamlog.open(url)
    t = log.topic("lat", partitions=1)
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()

    def on_loop(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    alog = on_loop(sla.open(url))
    ag = on_loop(on_loop(alog.topic("lat")).group("async"))
    sg = t.group("sync")
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

    async def settle_async_copy() -> None:
        await ag.ack(await ag.poll(10, timeout=0.5))

    out: dict[str, list[float]] = {"sync": [], "async": [], "floor": []}
    try:
        for _ in range(JS_SAMPLES):
            sync_in.put(True)
            time.sleep(0.005)  # the consumer's pull is parked at the server
            t0 = time.perf_counter_ns()
            t.append(b"x")
            out["sync"].append((sync_out.get() - t0) / 1000)
            on_loop(settle_async_copy())  # the async group's copy of the record
            time.sleep(0.001)

            cf = asyncio.run_coroutine_threadsafe(async_consume(), loop)
            time.sleep(0.005)
            t0 = time.perf_counter_ns()
            t.append(b"x")
            out["async"].append((cf.result(10) - t0) / 1000)
            sg.ack(sg.poll(10, timeout=0.5))
            time.sleep(0.001)

            q: asyncio.Queue = asyncio.Queue()
            ready = threading.Event()
            cf = asyncio.run_coroutine_threadsafe(floor_consume(q, ready), loop)
            ready.wait()
            time.sleep(0.0005)
            t0 = time.perf_counter_ns()
            loop.call_soon_threadsafe(q.put_nowait, b"x")
            out["floor"].append((cf.result(10) - t0) / 1000)
            time.sleep(0.001)
    finally:
        sync_in.put(None)
        th.join()
        on_loop(alog.close())
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join()
        loop.close()
        log.close()
    return out


def test_append_to_async_poll_latency_on_jetstream(benchmark, js_server):
    """append -> a coroutine awaiting AsyncGroup.poll returns, on JetStream: p50 vs a
    thread in the sync poll."""
    result = {}

    def run():
        result["v"] = _js_latency(f"{js_server.client_url}/aiolatency")

    benchmark.pedantic(run, rounds=1, iterations=1)
    v = result["v"]
    p50 = {k: statistics.median(x) for k, x in v.items()}
    fig = Figure("test_append_to_async_poll_latency_on_jetstream",
                 "JetStream: append -> async poll returns, p50", p50["async"], "us",
                 {"JetStream: append -> sync poll returns p50": p50["sync"],
                  "asyncio.Queue hand-over p50 (floor)": p50["floor"]},
                 rounds=len(v["async"]), spread=spread(v["async"]))
    fig.goals = [Goal("<= 1.5x the sync poll's latency",
                      fig.ratio("JetStream: append -> sync poll returns p50"), 1.5,
                      higher_is_better=False)]
    report(benchmark, fig)
