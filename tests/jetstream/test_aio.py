"""streamlog.aio on JetStream: the store is bound to the caller's loop (nats-py runs there,
no connection thread), ten thousand waiters on one loop share one pull per partition
with a bounded thread count, cancellation at any point leaves nothing leased, no
streamlog call blocks the loop, closing ends the waits."""

from __future__ import annotations

import asyncio
import logging
import random
import threading

import pytest

import streamlog
import streamlog.aio as sla
from streamlog import api
from streamlog.backends.jetstream import groups as js_groups
from streamlog.errors import StoreClosed
from tests.unit.test_aio import _Detector, _until


def _live(g: sla.AsyncGroup) -> int:
    """Polls queued for the group handle's pump and not yet answered."""
    return sum(not w.fut.done() for w in g._waiters)


async def _waiting_pulls(log: sla.AsyncStore, q: sla.AsyncQueue) -> int:
    """Pull requests the server holds for the queue's group, over its partitions."""
    t = q.sync.topic
    g = q._group
    assert g is not None
    cfg = g.sync._cfg  # type: ignore[attr-defined]
    conn = log.store._conn  # type: ignore[attr-defined]
    total = 0
    for p in range(t.partitions):
        name = js_groups.consumer_name(q.group_name, cfg["parts"][p][0])
        total += (await conn.consumer_info(t.stream_name(p), name)).num_waiting
    return total


@pytest.mark.asyncio
async def test_the_store_is_bound_to_the_loop_with_no_connection_thread(js_url):
    """aio.open on nats:// awaits nats-py on the caller's loop: the backend offers the
    coroutine twins, the store says they may be awaited here, and no thread runs a
    connection (the sync store's own connection thread is absent)."""
    async with await sla.open(js_url) as log:
        assert log._native and isinstance(log.store, api.AwaitableStore)
        assert log.store.awaitable_on_loop()
        t = await log.topic("t", partitions=2)
        assert isinstance(t.sync, api.AwaitableTopic)
        await t.append(b"x", key=b"k")
        g = await t.group("g")
        (m,) = await g.poll(1, timeout=5)
        assert isinstance(g.sync, api.AwaitableGroup) and isinstance(m.sync, api.AwaitableMessage)
        assert await m.ack()
        assert not [th for th in threading.enumerate() if th.name.startswith("streamlog-nats")]
        # the sync API of the same store works from another thread while the loop runs
        assert await asyncio.to_thread(lambda: t.sync.end_offset(t.sync.append(b"y").partition))
    # a sync store opened in a thread cannot be awaited on this loop: it is not bound
    sync_store = await asyncio.to_thread(streamlog.open, js_url)
    try:
        assert not sync_store.awaitable_on_loop()
        wrapped = sla.AsyncStore(sync_store)
        assert not wrapped._native and wrapped._threaded
        t2 = await wrapped.topic("t")
        assert (await t2.append(b"z", key=b"k")).offset >= 0  # in the executor
        assert len(await t2.read(0, limit=10)) + len(await t2.read(1, limit=10)) == 3
    finally:
        await asyncio.to_thread(sync_store.close)


@pytest.mark.asyncio
async def test_ten_thousand_queue_gets_share_one_pull_with_bounded_threads(js_url):
    """10,000 q.get() waiters on one loop: one pump polls for all of them, so the server
    holds at most one waiting pull per partition (a consumer allows 512), and no thread
    is added per waiter."""
    async with await sla.open(js_url) as log:
        await log.topic("jobs", partitions=2)
        q = await log.queue("jobs")
        await q.put(b"warm")
        m = await q.get(timeout=5)
        assert m is not None and await m.ack()
        threads_before = threading.active_count()
        n = 10_000
        tasks = [asyncio.create_task(q.get(timeout=120)) for _ in range(n)]
        assert q._group is not None
        await _until(lambda: _live(q._group) == n)
        await asyncio.sleep(0.3)  # the pump's pulls reach the server
        assert 1 <= await _waiting_pulls(log, q) <= 2
        assert threading.active_count() <= threads_before
        for i in range(0, n, 1000):
            await q.topic.append_many([b"%d" % j for j in range(i, i + 1000)])
        got = await asyncio.gather(*tasks)
        assert threading.active_count() <= threads_before
        assert sorted(m.value for m in got) == sorted(b"%d" % i for i in range(n))
        assert all(m.delivery_count == 1 for m in got)
        assert all(await q._group.ack(got))
        assert await q.lag() == 0


@pytest.mark.asyncio
async def test_a_cancelled_poll_hands_its_records_back(js_url, monkeypatch):
    """A waiter cancelled while the pull that leases its records is under way: the pull
    finishes, and its records go back at once, their delivery not counted."""
    async with await sla.open(js_url) as log:
        t = await log.topic("t", partitions=1)
        g = await t.group("g", ack_wait_s=60, max_deliver=2)
        real = g.sync.poll_async
        started = asyncio.Event()

        async def slow_poll(n, timeout):
            started.set()
            await asyncio.sleep(0.2)  # the records are leased after the waiter is gone
            return await real(n, timeout)

        monkeypatch.setattr(g.sync, "poll_async", slow_poll)
        await t.append_many([b"a", b"b", b"c"])
        task = asyncio.create_task(g.poll(5, timeout=30))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        monkeypatch.undo()
        other = await t.group("g")
        ms = await other.poll(10, timeout=5)
        while len(ms) < 3:
            more = await other.poll(10, timeout=5)
            assert more, [m.value for m in ms]
            ms += more
        assert sorted((m.value, m.delivery_count) for m in ms) == [(b"a", 1), (b"b", 1),
                                                                   (b"c", 1)]


@pytest.mark.asyncio
async def test_cancellation_at_random_points_leaves_nothing_leased(js_url):
    """Workers cancelled or timed out at random points while they get and ack: nothing is
    delivered twice, and what is left goes to a fresh consumer at once, undelivered."""
    rng = random.Random(1234)
    async with await sla.open(js_url) as log:
        q = await log.queue("work", ack_wait_s=60, max_deliver=100)
        done: list[bytes] = []
        total = 200

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
                    await asyncio.sleep(rng.random() / 200)

        prod = asyncio.create_task(producer())
        cancelled = 0
        for _ in range(30):
            workers = [asyncio.create_task(worker()) for _ in range(rng.randint(1, 20))]
            for w in workers:
                if rng.random() < 0.5:
                    asyncio.get_running_loop().call_later(rng.random() / 50, w.cancel)
            try:
                async with asyncio.timeout(rng.random() / 20):
                    await asyncio.gather(*workers, return_exceptions=True)
            except TimeoutError:
                pass
            for w in workers:
                w.cancel()
            results = await asyncio.gather(*workers, return_exceptions=True)
            cancelled += sum(isinstance(r, asyncio.CancelledError) for r in results)
        assert cancelled > 30
        await prod
        # the hand-backs of cancelled waits are tasks of the loop: let them run
        await asyncio.sleep(0.5)
        assert len(done) == len(set(done))  # nothing delivered twice
        other = await q.topic.group(q.group_name)
        rest: list[sla.AsyncMessage] = []
        want = set(b"%d" % i for i in range(total)) - set(done)
        while len(rest) < len(want):
            got = await other.poll(total, timeout=5)
            assert got, f"{len(rest)} of {len(want)}"
            rest += got
        assert sorted(m.value for m in rest) == sorted(want)
        assert all(m.delivery_count == 1 for m in rest)


@pytest.mark.asyncio
async def test_closing_the_store_ends_waiting_gets(js_url):
    log = await sla.open(js_url)
    q = await log.queue("q")
    tasks = [asyncio.create_task(q.get(timeout=60)) for _ in range(50)]
    await asyncio.sleep(0)
    await _until(lambda: q._group is not None and _live(q._group) == 50)
    await log.close()
    for r in await asyncio.gather(*tasks, return_exceptions=True):
        assert isinstance(r, StoreClosed)
    with pytest.raises(StoreClosed):
        await log.topic("x")


@pytest.mark.asyncio
async def test_no_streamlog_call_blocks_the_loop_on_jetstream(js_url, monkeypatch, caplog):
    """asyncio's debug mode with slow_callback_duration = 5 ms around the queue, pub-sub,
    rpc and event-store waits, appends, acks and reads on JetStream: no loop step that
    holds a streamlog call is on the CPU for more than 5 ms (or blocked for 50)."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    log = await sla.open(js_url)
    try:
        q = await log.queue("jobs")
        ps = await log.pubsub("feed")
        rpc = await log.rpc("svc")
        es = await log.event_store("ev")
        t = await log.topic("made-before", partitions=4)
        with _Detector(asyncio.get_running_loop(), monkeypatch) as d:
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
            for make in [lambda: consumer(5)] * 10 + [lambda: listener(50),
                                                      lambda: subscriber(50)]:
                waits.append(asyncio.create_task(make()))
                await asyncio.sleep(0)
            for i in range(50):
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
                    assert await t.end_offset(0) >= 0
            await asyncio.gather(*waits)
            await server.stop()
            await sub.close()
    finally:
        await log.close()
    assert d.blocked() == [], d.blocked()


@pytest.mark.asyncio
async def test_async_appends_and_polls_are_traced_on_jetstream(js_url):
    """With a tracer provider set, an append through the asyncio API on JetStream starts
    a producer span and carries its context; the awaited poll's receive span links to it,
    as the sync API's do."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tests.unit.test_tracing import _reset_globals

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_globals()
    trace.set_tracer_provider(provider)
    try:
        async with await sla.open(js_url) as log:
            t = await log.topic("traced", partitions=1)
            await t.append(b"x", key=b"k")
            g = await t.group("g")
            (m,) = await g.poll(1, timeout=5)
            assert "traceparent" in m.headers
        spans = exporter.get_finished_spans()
        producer = [s for s in spans if s.kind == trace.SpanKind.PRODUCER]
        consumer = [s for s in spans if s.kind == trace.SpanKind.CONSUMER]
        assert len(producer) == 1 and consumer
        assert any(link.context.span_id == producer[0].context.span_id
                   for s in consumer for link in s.links)
    finally:
        provider.shutdown()
        _reset_globals()


@pytest.mark.asyncio
async def test_the_web_service_example_runs_on_jetstream(js_url):
    """docs/asyncio.md's web-service shape (an endpoint that enqueues, a background
    consumer) on a nats:// store: 20 concurrent requests, every order handled once."""
    import json

    async def create_order(log: sla.AsyncStore, body: dict) -> dict:
        q = await log.queue("orders")
        pos = await q.put(json.dumps(body).encode(), key=body["customer"])
        return {"status": "queued", "partition": pos.partition, "offset": pos.offset}

    async def order_worker(log: sla.AsyncStore, handled: asyncio.Queue) -> None:
        q = await log.queue("orders")
        while True:
            m = await q.get(timeout=None)
            order = json.loads(m.value)
            await m.ack()
            handled.put_nowait(order["id"])

    async with await sla.open(js_url) as log:
        handled: asyncio.Queue = asyncio.Queue()
        worker = asyncio.create_task(order_worker(log, handled))
        replies = await asyncio.gather(*(create_order(log, {"id": i, "customer": f"c{i % 3}"})
                                         for i in range(20)))
        assert all(r["status"] == "queued" for r in replies)
        done = sorted([await asyncio.wait_for(handled.get(), 30) for _ in range(20)])
        assert done == list(range(20))
        assert await (await log.queue("orders")).lag() == 0
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
