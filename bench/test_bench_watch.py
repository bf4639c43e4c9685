"""Wake-up latency of an awaiting coroutine (the watcher thread's futex_waitv and a hop to
the loop) against a thread blocked in the topic's own futex wait, in the same run.

Each round takes one sample of each, interleaved: the waiter is asleep (its waiter
count is raised in the word) before this thread stamps the time and appends one
record; the waiter stamps the time when it runs again. The floor beside them is the
cheapest thread-to-loop hand-off asyncio has (``call_soon_threadsafe`` resolving a
future a coroutine awaits), which any wake-up of a loop from outside pays.
"""

from __future__ import annotations

import asyncio
import queue
import statistics
import threading
import time

from conftest import Figure, Goal, report, spread

import streamlog
from streamlog.backends.local import watch

SAMPLES = 400


def _counted(n) -> bool:
    """The word's waiter count is raised: someone sleeps on it."""
    return bytes(memoryview(n.mapping)[4:8]) != b"\0\0\0\0"


def _until(cond) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("the waiter did not go to sleep")
        time.sleep(0)


def _measure(path: str) -> dict[str, list[float]]:
    log = streamlog.open(path)
    topic = log.topic("w")
    n = log._notifier_of("w")
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    sync_in: queue.SimpleQueue = queue.SimpleQueue()
    sync_out: queue.SimpleQueue = queue.SimpleQueue()

    def sync_waiter() -> None:
        while (seen := sync_in.get()) is not None:
            topic.wait_any(seen, 10)
            sync_out.put(time.perf_counter_ns())

    sync_thread = threading.Thread(target=sync_waiter, daemon=True)
    sync_thread.start()

    async def async_wait(seen: int) -> int:
        await watch.wait_async(n, seen, 10)
        return time.perf_counter_ns()

    async def handoff(ready: threading.Event, box: list) -> int:
        fut = loop.create_future()
        box.append(fut)
        ready.set()
        await fut
        return time.perf_counter_ns()

    out: dict[str, list[float]] = {"async": [], "sync": [], "floor": []}
    try:
        for _ in range(SAMPLES):
            # a thread blocked in Topic.wait_any (alone: the watcher stops sleeping on
            # the word once it has looked at its table again)
            watch._registry.settle()
            seen = n.seq
            sync_in.put(seen)
            _until(lambda: _counted(n))
            t0 = time.perf_counter_ns()
            topic.append(b"x")
            out["sync"].append((sync_out.get() - t0) / 1000)
            time.sleep(0.001)

            # a coroutine awaiting wait_async (the watcher thread sleeps for it)
            seen = n.seq
            cf = asyncio.run_coroutine_threadsafe(async_wait(seen), loop)
            _until(lambda: watch._registry.snapshot())
            watch._registry.settle()
            _until(lambda: _counted(n))
            t0 = time.perf_counter_ns()
            topic.append(b"x")
            out["async"].append((cf.result(10) - t0) / 1000)
            time.sleep(0.001)

            # the floor: a future resolved from this thread with call_soon_threadsafe
            ready, box = threading.Event(), []
            cf = asyncio.run_coroutine_threadsafe(handoff(ready, box), loop)
            ready.wait()
            t0 = time.perf_counter_ns()
            loop.call_soon_threadsafe(box[0].set_result, None)
            out["floor"].append((cf.result(10) - t0) / 1000)
            time.sleep(0.001)
    finally:
        sync_in.put(None)
        sync_thread.join()
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join()
        loop.close()
        log.close()
    return out


def test_append_to_awaiting_coroutine_latency(benchmark, bench_dir):
    """append -> a coroutine awaiting the topic's word runs again: p50 vs a blocked thread."""
    result = {}

    def run():
        result["v"] = _measure(f"{bench_dir}/watch")

    benchmark.pedantic(run, rounds=1, iterations=1)
    v = result["v"]
    p50 = {k: statistics.median(x) for k, x in v.items()}
    fig = Figure("test_append_to_awaiting_coroutine_latency",
                 "append -> awaiting coroutine wake-up, p50", p50["async"], "us",
                 {"append -> blocked wait_any thread p50": p50["sync"],
                  "call_soon_threadsafe hand-off p50 (floor)": p50["floor"]},
                 rounds=len(v["async"]), spread=spread(v["async"]))
    ratio = fig.ratio("append -> blocked wait_any thread p50")
    fig.goals = [Goal("<= 1.5x the blocked thread's wake-up", ratio, 1.5,
                      higher_is_better=False)]
    report(benchmark, fig)
