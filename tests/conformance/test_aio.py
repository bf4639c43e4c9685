"""The conformance suite through the asyncio API (``streamlog.aio``), on the embedded engine
and on NATS JetStream (where the store is bound to the bridge's loop: the async API awaits
nats-py there, and the suite's sync fall-throughs reach it from their own threads).

Each shared class runs unchanged against a thin synchronous bridge: every call is
the coroutine of ``streamlog.aio`` of the same name, run on one event loop in a
thread of its own (the suite's threads submit to it concurrently), and every
async iterator (``listen``, ``subscribe``) is stepped with ``__anext__`` on that
loop. What the bridge cannot make async (engine members that are not part of
the asyncio API, such as ``event_log`` or ``Watch.wait_async`` itself) falls
through to the sync object beneath.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

import streamlog
import streamlog.aio as sla
from tests.conformance import suite

_LOOP = asyncio.new_event_loop()
_THREAD = threading.Thread(target=_LOOP.run_forever, name="aio-bridge", daemon=True)
_THREAD.start()


def _call(coro: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, _LOOP).result()


def _wrap(x: Any) -> Any:
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    if isinstance(x, AsyncIterator):
        return _SyncIter(x)
    if type(x).__module__ == "streamlog.aio":
        return _Bridge(x)
    return x


async def _on_loop(fn: Any, *a: Any, **k: Any) -> Any:
    out = fn(*a, **k)
    if inspect.isawaitable(out):
        out = await out
    return out


class _Bridge:
    """A sync face on an object of streamlog.aio: calls run on the bridge's loop."""

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_t", target)

    def __getattr__(self, name: str) -> Any:
        t = self._t
        try:
            attr = getattr(t, name)
        except AttributeError:
            sync = getattr(t, "sync", None) or getattr(t, "store", None)
            if sync is None:
                raise
            return getattr(sync, name)
        if not callable(attr):
            return _wrap(attr)

        def call(*a: Any, **k: Any) -> Any:
            a = tuple(v._t if isinstance(v, _Bridge) else v for v in a)
            return _wrap(_call(_on_loop(attr, *a, **k)))

        return call

    def __enter__(self) -> _Bridge:
        return self

    def __exit__(self, *exc: object) -> None:
        _call(self._t.__aexit__(*exc))

    def __eq__(self, other: object) -> bool:
        return self._t == (other._t if isinstance(other, _Bridge) else other)

    def __hash__(self) -> int:
        return hash(self._t)


class _SyncIter(_Bridge):
    """A sync iterator over an async one (``close`` ends it as the sync one does)."""

    def __iter__(self) -> _SyncIter:
        return self

    def __next__(self) -> Any:
        async def step() -> Any:
            try:
                return True, await self._t.__anext__()
            except StopAsyncIteration:
                return False, None

        more, value = _call(step())
        if not more:
            raise StopIteration
        return _wrap(value)

    def close(self) -> None:
        t = self._t
        _call(_on_loop(t.aclose if hasattr(t, "aclose") else t.close))


class Aio(suite.Harness):
    def open_store(self, where):
        return _Bridge(_call(sla.open(where)))


class TestTopic(Aio, suite.TopicContract):
    pass


class TestGroup(Aio, suite.GroupContract):
    pass


class TestKeyShared(Aio, suite.KeySharedContract):
    pass


class TestExclusive(Aio, suite.ExclusiveContract):
    pass


class TestQueue(Aio, suite.QueueContract):
    pass


class TestPubSub(Aio, suite.PubSubContract):
    pass


class TestRpc(Aio, suite.RpcContract):
    pass


class TestEventStore(Aio, suite.EventStoreContract):
    pass


class TestLifecycle(Aio, suite.LifecycleContract):
    pass


# ------------------------------------------------------------------- on JetStream
_numbers = itertools.count(1)


class AioJetStream(Aio):
    """A fresh store name per test on the session's single node, opened with
    ``streamlog.aio.open`` on the bridge's loop (so bound to it: no connection thread)."""

    @pytest.fixture(autouse=True)
    def _nats(self, nats_server):
        self._server_url = nats_server.client_url

    def location(self, tmp_path):
        return f"{self._server_url}/aio{os.getpid()}-{next(_numbers)}"

    def open_store(self, where):
        s = super().open_store(where)
        assert s._t._native  # the async API awaits the backend's coroutines on the loop
        return s


class TestTopicOnJetStream(AioJetStream, suite.TopicContract):
    pass


class TestGroupOnJetStream(AioJetStream, suite.GroupContract):
    pass


class TestKeySharedOnJetStream(AioJetStream, suite.KeySharedContract):
    pass


class TestExclusiveOnJetStream(AioJetStream, suite.ExclusiveContract):
    pass


class TestQueueOnJetStream(AioJetStream, suite.QueueContract):
    def test_compacted_topics_do_not_exist_on_jetstream_yet(self, store):
        """Not applicable as written: JetStream has no compacted topics yet, so the topic a
        view would refuse cannot be made (compact=True raises NotImplementedError)."""
        with pytest.raises(NotImplementedError, match="JetStream"):
            store.topic("cq", compact=True)

    test_views_refuse_a_compacted_topic = None  # replaced by the test above, named for it


class TestPubSubOnJetStream(AioJetStream, suite.PubSubContract):
    pass


class TestRpcOnJetStream(AioJetStream, suite.RpcContract):
    pass


class TestEventStoreOnJetStream(AioJetStream, suite.EventStoreContract):
    pass


class AioJetStreamThreaded(AioJetStream):
    """A JetStream store opened with ``streamlog.open`` (its connection on a thread of its
    own) and wrapped in ``AsyncStore``: not bound to the loop, so every call that waits
    for the network runs in the executor."""

    def open_store(self, where):
        async def wrapped() -> sla.AsyncStore:
            s = await asyncio.to_thread(streamlog.open, where)
            return sla.AsyncStore(s)

        s = _Bridge(_call(wrapped()))
        assert s._t._threaded
        return s


class TestGroupOnJetStreamThreaded(AioJetStreamThreaded, suite.GroupContract):
    pass


class TestQueueOnJetStreamThreaded(AioJetStreamThreaded, suite.QueueContract):
    def test_compacted_topics_do_not_exist_on_jetstream_yet(self, store):
        """As TestQueueOnJetStream's."""
        with pytest.raises(NotImplementedError, match="JetStream"):
            store.topic("cq", compact=True)

    test_views_refuse_a_compacted_topic = None  # replaced by the test above, named for it


class TestRpcOnJetStreamThreaded(AioJetStreamThreaded, suite.RpcContract):
    pass


class TestEventStoreOnJetStreamThreaded(AioJetStreamThreaded, suite.EventStoreContract):
    pass


class TestLifecycleOnJetStream(AioJetStream, suite.LifecycleContract):
    pass


class TestSubjects(Aio, suite.SubjectsContract):
    pass


class TestSerializers(Aio, suite.SerializersContract):
    pass


class TestCloudEvents(Aio, suite.CloudEventsContract):
    pass


class TestSubjectsOnJetStream(AioJetStream, suite.SubjectsContract):
    pass


class TestSerializersOnJetStream(AioJetStream, suite.SerializersContract):
    pass


class TestCloudEventsOnJetStream(AioJetStream, suite.CloudEventsContract):
    pass


class TestBatchPoll(Aio, suite.BatchPollContract):
    pass


class TestBatchPollOnJetStream(AioJetStream, suite.BatchPollContract):
    pass


class TestBatchPollOnJetStreamThreaded(AioJetStreamThreaded, suite.BatchPollContract):
    pass
