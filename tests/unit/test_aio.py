"""streamlog.aio on the embedded engine: ten thousand waiters on one loop with a bounded
thread count, cancellation at any point leaves nothing leased, no streamlog call blocks
the loop, slow writes go to the executor, closing ends the waits."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import sys
import threading
import time

import pytest

import streamlog.aio as sla
from streamlog.errors import RemoteError, RequestTimeout, StoreClosed
from tests.unit.test_watch_async import _cpu_wait_ns, _GcClock, _owner


async def _until(cond, rounds: int = 200_000) -> None:
    """Yield to the loop until ``cond()`` holds (a barrier, not a sleep)."""
    for _ in range(rounds):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def _live(g: sla.AsyncGroup) -> int:
    """Polls waiting on ``g``: queued for its pump, and the one polling for itself."""
    return sum(not w.fut.done() for w in g._waiters) + g._direct


@pytest.mark.asyncio
async def test_ten_thousand_queue_gets_on_one_loop_with_bounded_threads(tmp_path):
    async with await sla.open(tmp_path / "s") as log:
        q = await log.queue("jobs")
        await q.put(b"warm")
        (await q.get(timeout=1)).sync.ack()  # the consumer and the executor exist now
        threads_before = threading.active_count()
        tasks = [asyncio.create_task(q.get(timeout=60)) for _ in range(10_000)]
        await _until(lambda: q._group is not None and _live(q._group) == 10_000)
        # one pump task for all of them; at most the watcher thread was added
        assert threading.active_count() <= threads_before + 1
        await q.topic.append_many([b"%d" % i for i in range(10_000)])
        got = await asyncio.gather(*tasks)
        assert threading.active_count() <= threads_before + 1
        assert sorted(m.value for m in got) == sorted(b"%d" % i for i in range(10_000))
        assert all(m.delivery_count == 1 for m in got)
        assert all(await q._group.ack(got))
        assert await q.lag() == 0


class _CancelOnResult(asyncio.Future):
    """A poll's future that cancels its task the moment a result is set: the records
    were leased for the waiter, which is cancelled before it could take them."""

    task: asyncio.Task | None = None

    def set_result(self, result):
        super().set_result(result)
        if isinstance(result, list) and result and self.task is not None:
            self.task.cancel()


@pytest.mark.asyncio
@pytest.mark.parametrize("when", ["after_the_result", "before_the_hand_out"])
async def test_a_poll_cancelled_after_its_lease_hands_the_records_back(tmp_path, monkeypatch,
                                                                        when):
    async with await sla.open(tmp_path / "s") as log:
        t = await log.topic("t", partitions=1)
        g = await t.group("g", ack_wait_s=30, max_deliver=2)
        g._direct = True  # as if another poll waited for itself: this one queues for the pump
        task = asyncio.create_task(g.poll(5, timeout=30))
        loop = asyncio.get_running_loop()
        futs: list[_CancelOnResult] = []
        if when == "after_the_result":
            def create_future():
                f = _CancelOnResult(loop=loop)
                f.task = task
                futs.append(f)
                return f
            monkeypatch.setattr(loop, "create_future", create_future)
        else:
            real_try = sla.AsyncGroup._try

            async def try_then_cancel(self, n):
                got = await real_try(self, n)
                if got:
                    task.cancel()  # the waiter goes while its records are in the pump's hand
                return got
            monkeypatch.setattr(sla.AsyncGroup, "_try", try_then_cancel)
        await _until(lambda: len(g._waiters) == 1)
        if when == "after_the_result":
            monkeypatch.undo()  # the poll's own future is made: no other one is touched
            assert len(futs) == 1
        await t.append_many([b"a", b"b", b"c"])
        with pytest.raises(asyncio.CancelledError):
            await task
        monkeypatch.undo()
        g._direct = False
        assert when != "after_the_result" or futs[0].result()  # set before the cancel
        # nothing leased: another consumer gets every record at once, none counted twice
        other = await t.group("g")
        ms = await other.poll(10, timeout=0)
        assert [(m.value, m.delivery_count) for m in ms] == [(b"a", 1), (b"b", 1), (b"c", 1)]
        assert await g.lag() == 3


@pytest.mark.asyncio
async def test_cancellation_at_random_points_leaves_nothing_leased(tmp_path):
    rng = random.Random(1234)
    async with await sla.open(tmp_path / "s") as log:
        q = await log.queue("work", ack_wait_s=60, max_deliver=100)
        done: list[bytes] = []
        total = 400

        async def worker() -> None:
            while True:
                m = await q.get(timeout=30)
                if m is not None:
                    done.append(m.value)
                    await m.ack()

        async def producer() -> None:
            for i in range(total):
                await q.put(b"%d" % i)
                if i % 7 == 0:
                    await asyncio.sleep(rng.random() / 500)

        prod = asyncio.create_task(producer())
        cancelled = 0
        for _ in range(60):
            workers = [asyncio.create_task(worker()) for _ in range(rng.randint(1, 30))]
            for w in workers:  # each runs into a cancellation or a timeout at a random point
                if rng.random() < 0.5:
                    asyncio.get_running_loop().call_later(rng.random() / 200, w.cancel)
            try:
                async with asyncio.timeout(rng.random() / 100):
                    await asyncio.gather(*workers, return_exceptions=True)
            except TimeoutError:
                pass
            for w in workers:
                w.cancel()
            results = await asyncio.gather(*workers, return_exceptions=True)
            cancelled += sum(isinstance(r, asyncio.CancelledError) for r in results)
        assert cancelled > 60
        await prod
        assert len(done) == len(set(done))  # nothing delivered twice
        # nothing leased: a fresh consumer takes every remaining message at once,
        # each on its first delivery (a cancelled wait counts none)
        rest = await (await q.topic.group(q.group_name)).poll(total, timeout=0)
        assert sorted(m.value for m in rest) == sorted(
            set(b"%d" % i for i in range(total)) - set(done))
        assert all(m.delivery_count == 1 for m in rest)
        assert await q.lag() == total - len(done)


@pytest.mark.asyncio
async def test_durability_always_writes_in_the_executor(tmp_path):
    async with await sla.open(tmp_path / "s", durability="always", max_workers=2) as log:
        seen: list[str] = []
        t = await log.topic("t", partitions=2)
        real = t.sync.append

        def spy(*a, **k):
            seen.append(threading.current_thread().name)
            return real(*a, **k)

        t.sync.append = spy  # type: ignore[method-assign]
        await t.append(b"x", key="k")
        assert seen and seen[0].startswith("streamlog-aio")
        g = await t.group("g")
        (m,) = await g.poll(1, timeout=1)
        assert await m.ack() and await g.lag() == 0
        assert len([th for th in threading.enumerate()
                    if th.name.startswith("streamlog-aio")]) <= 2


@pytest.mark.asyncio
async def test_first_appends_to_empty_partitions_go_to_the_executor(tmp_path):
    async with await sla.open(tmp_path / "s") as log:
        t = await log.topic("fresh", partitions=2)
        where: list[str] = []
        real = t.sync.append

        def spy(*a, **k):
            where.append(threading.current_thread().name)
            return real(*a, **k)

        t.sync.append = spy  # type: ignore[method-assign]
        p0 = await t.append(b"a", key=b"k")
        assert where[-1].startswith("streamlog-aio")  # creates a segment: off the loop
        for i in range(100):  # until the other partition holds a record too
            if (await t.append(b"probe", key=b"%d" % i)).partition != p0.partition:
                break
        await t.append(b"b", key=b"k")
        assert where[-1] == threading.current_thread().name  # both hold records: inline
        assert [r.value for r in await t.read(p0.partition)][0] == b"a"


@pytest.mark.asyncio
async def test_closing_the_store_ends_waiting_gets(tmp_path):
    log = await sla.open(tmp_path / "s")
    q = await log.queue("q")
    tasks = [asyncio.create_task(q.get(timeout=60)) for _ in range(50)]
    await _until(lambda: q._group is not None and _live(q._group) == 50)
    await log.close()
    for r in await asyncio.gather(*tasks, return_exceptions=True):
        assert isinstance(r, StoreClosed)
    with pytest.raises(StoreClosed):
        await log.topic("x")


@pytest.mark.asyncio
async def test_rpc_coroutine_handler_errors_and_timeout(tmp_path):
    async with await sla.open(tmp_path / "s") as log:
        rpc = await log.rpc("calc")

        async def handler(m):
            await asyncio.sleep(0)
            if m.value == b"boom":
                raise ValueError("no")
            return m.value.upper()

        with pytest.raises(RequestTimeout):
            await rpc.request(b"nobody", timeout=0.05)
        async with await rpc.serve(handler, workers=3) as server:
            replies = await asyncio.gather(*(rpc.request(b"r%d" % i, timeout=10)
                                             for i in range(100)))
            assert replies == [b"R%d" % i for i in range(100)]
            with pytest.raises(RemoteError) as exc:
                await rpc.request(b"boom", timeout=10)
            assert exc.value.type_name == "ValueError"
            await _until(lambda: server.expired >= 1)  # the timed-out one is dropped
        assert not server.running


@pytest.mark.asyncio
async def test_event_store_subscribe_and_watch_iterators(tmp_path):
    async with await sla.open(tmp_path / "s") as log:
        es = await log.event_store("bank")
        await es.append("a", [b"0", b"1"])
        got = []
        async with es.subscribe(0) as sub:
            async def late():
                await es.append("b", [b"2"])
            async for ev in sub:
                got.append(ev.value)
                if len(got) == 2:
                    asyncio.get_running_loop().call_soon(asyncio.ensure_future, late())
                if len(got) == 3:
                    break
        assert got == [b"0", b"1", b"2"]
        assert [e.value for e in await es.read_all()] == got
        t = await log.topic("w")
        ticks = []

        async def watch():
            async for seq in t.watch():
                ticks.append(seq)
                return

        w = asyncio.create_task(watch())
        await asyncio.sleep(0)
        await t.append(b"x")
        await asyncio.wait_for(w, 30)
        assert len(ticks) == 1


# --------------------------------------------------------- the loop-blocking detector
def _where(handle: asyncio.Handle) -> str:
    """A loop callback's owner, and for a task step the line it stopped at."""
    task = getattr(handle._callback, "__self__", None)  # type: ignore[attr-defined]
    frame = getattr(task.get_coro(), "cr_frame", None) if isinstance(task, asyncio.Task) else None
    return _owner(handle) + (f":{frame.f_lineno}" if frame is not None else "")


class _Detector:
    """asyncio's debug mode with ``slow_callback_duration = 5 ms``, plus what a loaded
    shared machine needs to tell a blocking call from a descheduled thread: per slow
    callback, its CPU time and its wall time less the waits for a CPU the kernel
    reports and the collector's pauses (as in test_watch_async)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, monkeypatch) -> None:
        self.loop = loop
        self.held: list[tuple[str, float, float, float]] = []
        self._mp = monkeypatch
        self._gc = _GcClock()

    def __enter__(self) -> _Detector:
        loop, held, gc_clock = self.loop, self.held, self._gc
        loop.set_debug(True)
        loop.slow_callback_duration = 0.005
        run = asyncio.events.Handle._run

        def timed_run(handle: asyncio.Handle) -> None:
            t0, w0, g0, c0 = loop.time(), _cpu_wait_ns(), gc_clock.total, time.thread_time()
            run(handle)
            wall = loop.time() - t0
            if wall > loop.slow_callback_duration:
                paused = gc_clock.total - g0
                excused = (_cpu_wait_ns() - w0) / 1e9 + paused
                held.append((_where(handle), wall, wall - excused,
                             time.thread_time() - c0 - paused))

        self._mp.setattr(asyncio.events.Handle, "_run", timed_run)
        gc.callbacks.append(gc_clock)
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setswitchinterval(self._switch)
        gc.callbacks.remove(self._gc)
        self._mp.undo()
        self.loop.set_debug(False)

    def blocked(self) -> list[tuple[str, float, float, float]]:
        """Callbacks that were on the CPU over 5 ms, or asleep (blocked) over 50 ms (the
        collector's pauses not counted: they stop the whole process, whatever runs)."""
        return [h for h in self.held if h[3] > 0.005 or h[2] > 0.05]


@pytest.mark.asyncio
async def test_the_detector_catches_a_blocking_call(tmp_path, monkeypatch):
    with _Detector(asyncio.get_running_loop(), monkeypatch) as d:
        async def blocks():
            time.sleep(0.08)  # what a sync wait inside a coroutine would do
        await asyncio.create_task(blocks())
    assert [h[0] for h in d.blocked()] == ["task test_the_detector_catches_a_blocking_call."
                                           "<locals>.blocks"]


@pytest.mark.asyncio
async def test_no_streamlog_call_blocks_the_loop(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="asyncio")
    log = await sla.open(tmp_path / "s")
    try:
        # first openings (files, indexes) before the measured part: they run in the
        # executor anyway, this only keeps the import of lazy modules out of it
        q = await log.queue("jobs")
        ps = await log.pubsub("feed")
        rpc = await log.rpc("svc")
        es = await log.event_store("ev")
        with _Detector(asyncio.get_running_loop(), monkeypatch) as d:
            t = await log.topic("made-now", partitions=4)  # creation: in the executor
            server = await rpc.serve(lambda m: m.value, workers=2)
            sub = await ps.subscribe("s")

            async def consumer(n: int) -> None:
                for _ in range(n):
                    m = await q.get(timeout=30)
                    assert m is not None
                    await m.ack()

            async def listener(n: int) -> None:
                got = 0
                async for _ in sub.listen(timeout=30):
                    got += 1
                    if got == n:
                        return

            async def subscriber(n: int) -> None:
                got = 0
                async for _ in es.subscribe(0, timeout=30):
                    got += 1
                    if got == n:
                        return

            waits = []
            for make in [lambda: consumer(10)] * 20 + [lambda: listener(200),
                                                       lambda: subscriber(200)]:
                waits.append(asyncio.create_task(make()))
                await asyncio.sleep(0)  # (debug mode records each new task's stack: slow)
            for i in range(200):
                # one streamlog call per step of this task, so that a slow step is
                # that call's (a coroutine that runs inline yields nowhere itself)
                await q.put(b"%d" % i)
                await asyncio.sleep(0)
                await ps.publish(b"%d" % i)
                await asyncio.sleep(0)
                await es.append(f"s{i % 5}", [b"e"])
                await asyncio.sleep(0)
                await t.append(b"x", key=b"%d" % i)
                await asyncio.sleep(0)
                if i % 10 == 0:
                    assert await rpc.request(b"ping", timeout=30) == b"ping"
                    assert len(await t.read(0, limit=50)) <= 50
            await asyncio.gather(*waits)
            await server.stop()
            await sub.close()
    finally:
        await log.close()
    assert d.blocked() == [], d.blocked()


@pytest.mark.asyncio
async def test_closing_a_group_ends_its_polls_and_hands_leases_back(tmp_path):
    async with await sla.open(tmp_path / "s") as log:
        t = await log.topic("t", partitions=1)
        g = await t.group("g")
        polls = [asyncio.create_task(g.poll(1, timeout=60)) for _ in range(5)]
        await _until(lambda: _live(g) == 5)  # one polling for itself, four queued
        await g.close()
        for r in await asyncio.gather(*polls, return_exceptions=True):
            assert isinstance(r, StoreClosed)
        await t.append(b"x")
        other = await t.group("g")
        (m,) = await other.poll(1, timeout=5)
        assert (m.value, m.delivery_count) == (b"x", 1)


@pytest.mark.asyncio
async def test_a_cancelled_request_is_not_served_after_its_deadline(tmp_path):
    async with await sla.open(tmp_path / "s") as log:
        rpc = await log.rpc("svc")
        req = asyncio.create_task(rpc.request(b"late", timeout=0.05))
        reqs = rpc.sync.requests
        await _until(lambda: sum(reqs.end_offset(p) for p in range(reqs.partitions)) == 1)
        req.cancel()
        with pytest.raises(asyncio.CancelledError):
            await req
        await asyncio.sleep(0.1)  # past the request's deadline (what is tested, not a barrier)
        served: list[bytes] = []

        def handler(m):
            served.append(m.value)
            return b"ok"

        async with await rpc.serve(handler) as server:
            assert await rpc.request(b"now", timeout=10) == b"ok"
            await _until(lambda: server.expired == 1, rounds=10_000_000)
        assert served == [b"now"]


@pytest.mark.asyncio
async def test_listen_acks_as_it_moves_on_and_close_hands_back_the_last(tmp_path):
    async with await sla.open(tmp_path / "s") as log:
        ps = await log.pubsub("feed")
        for i in range(3):
            await ps.publish(b"%d" % i)
        async with await ps.subscribe("a", ack_wait_s=60) as sub:
            async for m in sub.listen(timeout=5):
                if m.value == b"1":
                    break  # 0 was acked when the loop asked for 1; 1 stays unacked
        again = await ps.subscribe("a")
        got = [m.value async for m in again.listen(timeout=0.2)]
        assert got == [b"1", b"2"]  # 1 came back at once: the handle was closed
        assert await again.lag() == 0


@pytest.mark.asyncio
async def test_a_poll_batch_cancelled_in_the_executor_hands_its_lease_back(tmp_path):
    """On a store whose writes go to the executor (durability "always"), a poll_batch
    cancelled while its poll runs there leaves nothing leased: the batch it got goes
    back at once, its deliveries not counted."""
    async with await sla.open(tmp_path / "s", durability="always") as log:
        assert log._slow_writes
        t = await log.topic("t", partitions=1)
        await t.append_many([b"a", b"b"])
        g = await t.group("g")
        real = g.sync.poll_batch
        leased = threading.Event()

        def slow(max_records, timeout):
            b = real(max_records, timeout)
            leased.set()
            time.sleep(0.2)  # the caller is cancelled meanwhile
            return b

        g.sync.poll_batch = slow
        task = asyncio.create_task(g.poll_batch(10, timeout=5))
        await _until(leased.is_set)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        other = await t.group("g")
        b = await other.poll_batch(10, timeout=5)
        assert b.offsets.tolist() == [0, 1] and b.delivery_counts.tolist() == [1, 1]
        assert (await other.ack_batch(b)).all()
