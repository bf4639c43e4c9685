"""Awaitable waits on the embedded engine's futex words (streamlog.backends.local.watch):
appends in other threads and processes wake awaiting coroutines, thousands of waiters
share one watcher thread, more than 128 words spread over watchers, timeouts and
cancellations leave nothing registered, and no callback of ours blocks the loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import subprocess
import sys
import threading
import time

import pytest

import streamlog
from streamlog import _ext
from streamlog.backends.local import watch
from streamlog.backends.local.log import _NoNotifier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(streamlog.__file__)))


def _notifier(store, name, partitions=1):
    topic = store.topic(name, partitions=partitions)
    return topic, store._notifier_of(name)


async def _registered(n: int, address: int | None = None) -> None:
    """Yield to the loop until ``n`` waiters are registered (on ``address``, or in all)."""
    for _ in range(100_000):
        snap = watch._registry.snapshot()
        got = snap.get(address, 0) if address is not None else sum(snap.values())
        if got >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"only {got} of {n} waiters registered")


def _private_word():
    """A futex word of this process only, with its waiter count after it: the same
    kind of word as a topic's (whose file takes a while to create, 300 times over)."""
    return _ext.Notifier(_ext.Mapping(-1, 8, True, True))


def _assert_nothing_left(*notifiers) -> None:
    """No registration, and (once each watcher has looked again) no waiter counted in
    the shared words."""
    assert watch._registry.snapshot() == {}
    assert watch._registry.settle()
    for n in notifiers:
        assert bytes(memoryview(n.mapping)[4:8]) == b"\0\0\0\0", "a waiter count was left raised"


@pytest.mark.asyncio
async def test_append_in_another_thread_wakes_the_coroutine(store):
    topic, n = _notifier(store, "t")
    seen = n.seq
    task = asyncio.create_task(watch.wait_async(n, seen, 30))
    await _registered(1, n.address)
    assert not task.done()
    await asyncio.to_thread(topic.append, b"x")
    assert await task is True
    assert n.seq != seen
    _assert_nothing_left(n)


@pytest.mark.asyncio
async def test_append_in_another_process_wakes_the_coroutine(store, tmp_path):
    topic, n = _notifier(store, "t")
    part = topic._part(0).ctl  # the partition's own word, in its control block
    seen_topic, seen_part = n.seq, part.notify_seq
    on_topic = asyncio.create_task(watch.wait_async(n, seen_topic, 60))
    on_part = asyncio.create_task(watch.wait_async(part, seen_part, 60))
    await _registered(2)
    code = ("import sys, streamlog; s = streamlog.open(sys.argv[1]); "
            "s.topic('t').append(b'from afar'); s.close()")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, str(tmp_path / "store"), cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT})
    assert await proc.wait() == 0
    assert await on_topic is True
    assert await on_part is True
    assert [r.value for r in topic.read(0)] == [b"from afar"]
    _assert_nothing_left(n)


@pytest.mark.asyncio
async def test_a_word_that_already_moved_returns_at_once(store):
    topic, n = _notifier(store, "t")
    seen = n.seq
    topic.append(b"x")
    assert await watch.wait_async(n, seen, 30) is True
    assert watch._registry.snapshot() == {}


@pytest.mark.asyncio
async def test_timeout_returns_false_and_unregisters(store):
    _, n = _notifier(store, "t")
    assert await watch.wait_async(n, n.seq, 0.05) is False
    assert await watch.wait_async(n, n.seq, 0) is False
    with pytest.raises(ValueError):
        await watch.wait_async(n, n.seq, float("nan"))
    _assert_nothing_left(n)


@pytest.mark.asyncio
async def test_ten_thousand_waiters_share_one_watcher_thread(store):
    topics = [_notifier(store, f"t{i}") for i in range(4)]
    threads_before = threading.active_count()
    watchers_before = len(watch._registry.watchers)
    tasks = []
    for i in range(10_000):
        topic, n = topics[i % 4]
        tasks.append(asyncio.create_task(watch.wait_async(n, n.seq, 60)))
        if i % 500 == 0:
            await asyncio.sleep(0)
    await _registered(10_000)
    snap = watch._registry.snapshot()
    assert sorted(snap.values()) == [2500] * 4
    # one watcher thread at most was added for all of them
    assert len(watch._registry.watchers) <= max(watchers_before, 1)
    assert threading.active_count() <= threads_before + 1
    for topic, _ in topics:
        topic.append(b"wake")
    assert await asyncio.gather(*tasks) == [True] * 10_000
    assert threading.active_count() <= threads_before + 1
    _assert_nothing_left(*(n for _, n in topics))


@pytest.mark.asyncio
async def test_more_words_than_one_syscall_takes(store):
    topic, n = _notifier(store, "t", partitions=2)
    ctls = [topic._part(p).ctl for p in (0, 1)]
    words = [_private_word() for _ in range(297)]
    seen = [w.seq for w in words] + [n.seq] + [c.notify_seq for c in ctls]
    wake = [w.notify for w in words] + [lambda: topic.append(b"x")] + [c.notify for c in ctls]
    words += [n, *ctls]
    tasks = [asyncio.create_task(watch.wait_async(w, s, 60))
             for w, s in zip(words, seen, strict=True)]
    await _registered(300)
    assert len(watch._registry.snapshot()) == 300
    assert len(watch._registry.watchers) == 3  # 127 words per thread
    # wake half of them, on every watcher, in an order that is not registration order
    order = list(range(300))
    random.Random(7).shuffle(order)
    order.remove(297)
    order.insert(0, 297)  # the topic's word (an append) is among them
    for i in order[:150]:
        wake[i]()
    woken = await asyncio.gather(*(tasks[i] for i in order[:150]))
    assert woken == [True] * 150
    assert not any(tasks[i].done() for i in order[150:])
    assert len(watch._registry.snapshot()) == 150
    for i in order[150:]:
        tasks[i].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    _assert_nothing_left(*(w for w in words if isinstance(w, _ext.Notifier)))


@pytest.mark.asyncio
async def test_cancellation_at_random_points_leaves_nothing(store):
    pairs = [_notifier(store, f"c{i}") for i in range(5)]
    rng = random.Random(11)
    for _round in range(20):
        tasks = []
        for _ in range(200):
            topic, n = rng.choice(pairs)
            tasks.append(asyncio.create_task(watch.wait_async(n, n.seq, 60)))
        # cancel some before they ever ran, some while registered, some racing a wake-up
        for t in rng.sample(tasks, 50):
            t.cancel()
        await asyncio.sleep(0)
        for t in rng.sample(tasks, 50):
            t.cancel()
        rng.choice(pairs)[0].append(b"x")
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(r is True or isinstance(r, asyncio.CancelledError) for r in results)
        assert watch._registry.snapshot() == {}
    _assert_nothing_left(*(n for _, n in pairs))


@pytest.mark.asyncio
async def test_waiters_on_two_loops_are_resolved_on_their_own_loops(store):
    topic, n = _notifier(store, "t")
    seen = n.seq
    other_ready = threading.Event()
    other_result: list[object] = []

    def other_loop() -> None:
        async def main() -> None:
            me = asyncio.get_running_loop()
            fut = asyncio.ensure_future(watch.wait_async(n, seen, 60))
            await asyncio.sleep(0)
            other_ready.set()
            other_result.append(await fut)
            other_result.append(asyncio.get_running_loop() is me)
        asyncio.run(main())

    t = threading.Thread(target=other_loop)
    t.start()
    mine = asyncio.create_task(watch.wait_async(n, seen, 60))
    await asyncio.to_thread(other_ready.wait)
    await _registered(2, n.address)
    topic.append(b"x")
    assert await mine is True
    await asyncio.to_thread(t.join)
    assert other_result == [True, True]
    _assert_nothing_left(n)


@pytest.mark.asyncio
async def test_read_only_store_waits_without_counting_itself(tmp_path):
    rw = streamlog.open(tmp_path / "s")
    topic = rw.topic("t")
    topic.append(b"first")
    ro = streamlog.open(tmp_path / "s", read_only=True)
    try:
        n = ro._notifier_of("t")
        assert not n.mapping.writable
        task = asyncio.create_task(watch.wait_async(n, n.seq, 60))
        await _registered(1, n.address)
        topic.append(b"second")  # no waiter counted: found by the 50 ms look
        assert await task is True
        assert watch._registry.snapshot() == {}
        # a topic without a wake-up file yet: the read-only open's stand-in times out
        missing = _NoNotifier()
        assert await watch.wait_async(missing, missing.seq, 0.01) is False
    finally:
        ro.close()
        rw.close()


@pytest.mark.asyncio
async def test_closing_the_store_wakes_its_waiters(tmp_path):
    store = streamlog.open(tmp_path / "s")
    _, n = _notifier(store, "t")
    task = asyncio.create_task(watch.wait_async(n, n.seq, 60))
    await _registered(1, n.address)
    store.close()
    assert await task is True
    assert watch._registry.snapshot() == {}


def _cpu_wait_ns() -> int:
    """Nanoseconds the calling thread and the watcher threads have spent runnable but
    waiting for a CPU (the kernel's schedstat run delay)."""
    total = 0
    tids = ["thread-self"] + [f"self/task/{w.thread.native_id}"
                              for w in list(watch._registry.watchers)]
    for tid in tids:
        try:
            with open(f"/proc/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except FileNotFoundError:  # a watcher that just ended
            pass
    return total


class _GcClock:
    """Seconds spent in the cyclic garbage collector (a pause of the whole process,
    whatever code it interrupts)."""

    def __init__(self) -> None:
        self.total = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._start


def _owner(handle: asyncio.Handle) -> str:
    """Whose code a loop callback runs: its function, or the coroutine of a task step."""
    cb = handle._callback  # type: ignore[attr-defined]
    task = getattr(cb, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        return f"task {getattr(coro, '__qualname__', coro)}"
    return f"{getattr(cb, '__module__', '')}.{getattr(cb, '__qualname__', cb)}"


@pytest.mark.asyncio
async def test_no_streamlog_callback_blocks_the_loop(store, tmp_path, caplog, monkeypatch):
    """asyncio's debug mode reports every loop callback that takes longer than 5 ms
    (wall time). None of those may be streamlog's own (the resolutions of waiters, the
    timeouts) for its own work: on a shared machine a callback's wall time also holds
    waits for a CPU, for the GIL held by another thread of the process, and pauses of
    the garbage collector, so what is asserted is (1) the callback's time on the CPU
    stays under 5 ms (its work is bounded: the chunking) and (2) its wall time, less
    the waits for a CPU the kernel reports and the collector's pauses, stays far
    below any wait's length (it never sleeps: a blocking wait or sync inside it would
    show as tens of milliseconds or more)."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.005
    caplog.set_level(logging.WARNING, logger="asyncio")
    # (owner, wall s, wall less the waits for a CPU and the collector's pauses s, CPU s)
    held: list[tuple[str, float, float, float]] = []
    run = asyncio.events.Handle._run
    gc_clock = _GcClock()

    def timed_run(handle: asyncio.Handle) -> None:
        t0, w0, g0, c0 = loop.time(), _cpu_wait_ns(), gc_clock.total, time.thread_time()
        run(handle)
        wall = loop.time() - t0
        if wall > loop.slow_callback_duration:
            excused = (_cpu_wait_ns() - w0) / 1e9 + gc_clock.total - g0
            held.append((_owner(handle), wall, wall - excused, time.thread_time() - c0))

    monkeypatch.setattr(asyncio.events.Handle, "_run", timed_run)
    gc.callbacks.append(gc_clock)
    # Another thread of the test process that holds the GIL (a store's background
    # threads, left-overs of other tests) keeps the loop thread waiting up to the
    # switch interval per hand-over, 5 ms by default: shorter here, so that what
    # is measured is streamlog's callbacks, not the GIL's schedule.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        topics = [_notifier(store, f"b{i}") for i in range(10)]
        words = [n for _, n in topics] + [_private_word() for _ in range(140)]

        async def _waiter(i: int) -> bool:
            w = words[i % 150]
            return await watch.wait_async(w, w.seq, 60 if i % 7 else 0.01)

        tasks = []
        for i in range(3000):
            tasks.append(asyncio.create_task(_waiter(i)))
            if i % 20 == 0:
                await asyncio.sleep(0)
        await _registered(3000 - 3000 // 7 - 1)
        code = ("import sys, streamlog; s = streamlog.open(sys.argv[1]); "
                "[s.topic(f'b{i}').append(b'x') for i in range(10)]; s.close()")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, str(tmp_path / "store"), cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT})
        for w in words[10:]:
            w.notify()
        assert await proc.wait() == 0
        results = await asyncio.gather(*tasks)
        assert all(r is True for i, r in enumerate(results) if i % 7)
    finally:
        sys.setswitchinterval(switch)
        gc.callbacks.remove(gc_clock)
        monkeypatch.undo()
        loop.set_debug(False)
    reported = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Executing")]
    assert len(reported) >= len(held) > 0 or not held  # the same callbacks asyncio reports
    # streamlog's own loop callbacks; a registration runs inside the waiting task's
    # step, together with the caller's code and asyncio's debug bookkeeping
    ours = [h for h in held if h[0].startswith("streamlog.")]
    assert [h for h in ours if h[3] > 0.005] == []  # on the CPU
    assert [h for h in ours if h[2] > 0.05] == []  # asleep
    _assert_nothing_left(*words)


def test_a_forked_child_starts_with_an_empty_table(store):
    _, n = _notifier(store, "t")

    async def main() -> None:
        task = asyncio.create_task(watch.wait_async(n, n.seq, 60))
        await _registered(1)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            os._exit(0 if watch._registry.snapshot() == {} and not watch._registry.watchers
                     else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    _assert_nothing_left(n)


def test_fallback_without_futex_waitv(tmp_path):
    """A kernel without futex_waitv: one thread per watched word, same results."""
    code = r"""
import asyncio, sys, threading, streamlog
from streamlog.backends.local import watch
from streamlog.backends.local.log import _NoNotifier
assert watch._registry.fallback
s = streamlog.open(sys.argv[1])
pairs = [(s.topic(f"f{i}"), s._notifier_of(f"f{i}")) for i in range(3)]
async def main():
    tasks = [asyncio.create_task(watch.wait_async(n, n.seq, 60))
             for _ in range(50) for _, n in pairs]
    while sum(watch._registry.snapshot().values()) < 150:
        await asyncio.sleep(0)
    assert len(watch._registry.watchers) == 3
    assert await watch.wait_async(pairs[0][1], pairs[0][1].seq, 0.05) is False
    for t, _ in pairs:
        await asyncio.to_thread(t.append, b"x")
    assert await asyncio.gather(*tasks) == [True] * 150
    assert watch._registry.snapshot() == {}
asyncio.run(main())
s.close()
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT, "STREAMLOG_NO_FUTEX_WAITV": "1"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
