"""The conformance suite through the asyncio API (``streamlog.aio``) on the embedded engine.

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
import threading
from collections.abc import AsyncIterator
from typing import Any

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


class TestSubjects(Aio, suite.SubjectsContract):
    pass


class TestSerializers(Aio, suite.SerializersContract):
    pass


class TestCloudEvents(Aio, suite.CloudEventsContract):
    pass
