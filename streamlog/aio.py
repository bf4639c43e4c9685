"""The asyncio API: ``streamlog.aio.open(url)`` and coroutine twins of every call that can wait.

Every call of the sync API that can wait (on a lock, the disk or the
network) has a coroutine of the same name and arguments here, with the
same results, errors and guarantees. It is written against the backend
contract (``streamlog.api``) only, so it runs on every backend.

How it stays off the event loop's back:

* A wait (``poll``, ``Queue.get``, ``Subscription.listen``, ``Rpc.request``,
  ``EventStore.subscribe``, ``AsyncWatch.wait``) is a loop of: read the
  watch's counter, try without waiting, ``await Watch.wait_async`` (no
  thread per waiter: on the embedded store one watcher thread per process
  sleeps on every watched futex word at once). It looks again at least every
  ``WAIT_SLICE_S`` for what no append announces (an expired lease, a delayed
  record coming due).
* Many coroutines polling one group handle share one *pump*: a single task
  polls on their behalf and hands the records out in arrival order, so ten
  thousand waiters cost one poll per wake-up, not ten thousand.
* Short calls (an append, an ack, a small read) run inline: they take
  microseconds. Work that can take long (opening or creating a topic,
  deleting one, a read without a small ``limit``, and every write of a store
  opened with ``durability="always"``, which fsyncs) runs in a small bounded
  executor of the store (``max_workers``, 4 by default).
* On JetStream (``nats://``) the store is bound to the caller's loop: its
  NATS connection runs there, and the calls that go over the network are
  awaited on it through the backend's coroutine twins
  (``streamlog.api.Awaitable*``), with no thread. A group handle's polls are
  one pull at a time for all its waiters (a consumer allows 512 waiting
  pulls). Rare calls (creating topics and groups) run in the executor.

Cancellation (``asyncio.timeout``, ``Task.cancel``) leaves nothing half-done:
a wait cancelled after records were leased for it hands them back at once
with ``Message.defer(0)`` (no delivery counted); an append, ack or commit
cancelled while it runs in the executor completes whole (it is never
half-written), the caller just does not learn its result, as after a
network timeout; use ``msg_id`` to make a retry safe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import math
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from streamlog import _tracing, _validate, api
from streamlog._limits import EVENT_SUBSCRIBE_BATCH_RECORDS, RPC_SERVER_POLL_S
from streamlog._types import Position, Record, RecordBatch, Retention, now_ms
from streamlog.errors import RecordTooLarge, RequestTimeout, StoreClosed, TopicNotFound
from streamlog.views import event_store as _es
from streamlog.views import pubsub as _pubsub
from streamlog.views import queue as _queue
from streamlog.views import rpc as _rpc

__all__ = [
    "AsyncEventStore",
    "AsyncEventSubscription",
    "AsyncGroup",
    "AsyncMessage",
    "AsyncPubSub",
    "AsyncQueue",
    "AsyncRpc",
    "AsyncServer",
    "AsyncStore",
    "AsyncSubscription",
    "AsyncTopic",
    "AsyncWatch",
    "WAIT_SLICE_S",
    "open",
]

T = TypeVar("T")

# A waiting coroutine looks again at least this often: expired leases and delayed
# records coming due move no watch counter.
WAIT_SLICE_S = 0.1
# Reads of at most this many records run inline; larger or unbounded ones in the executor.
INLINE_READ_RECORDS = 1000
# Records one pump poll leases at most (for all the waiters it serves).
PUMP_MAX_RECORDS = 1000
DEFAULT_MAX_WORKERS = 4
# Appends of a topic with an empty partition that go to the executor (the first append
# to a partition creates its segment file) before its appends run inline regardless.
COLD_APPENDS = 64
# On a store bound to the loop (JetStream), how long one pull of a group's pump waits
# at most before it looks at its waiters again (their wants, their timeouts).
NATIVE_PULL_S = 1.0


async def open(url: Any, *, max_workers: int = DEFAULT_MAX_WORKERS,  # noqa: A001
               **options: Any) -> AsyncStore:
    """Open a store for asyncio: a directory (or ``file://`` URL) for the embedded
    engine, ``nats://...`` for JetStream; ``options`` as ``streamlog.open``.

    Opening runs in the store's executor (it may create files and recover).
    Use the result with ``async with`` or ``await store.close()``.
    """
    if isinstance(max_workers, bool) or not isinstance(max_workers, int):
        raise TypeError(f"max_workers must be an int, not {type(max_workers).__name__}")
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, not {max_workers}")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="streamlog-aio")
    loop = asyncio.get_running_loop()
    try:
        store = await _open_bound(url, **options)
        if store is None:
            store = await loop.run_in_executor(pool, functools.partial(_open_sync, url,
                                                                       **options))
    except BaseException:
        pool.shutdown(wait=False)
        raise
    return AsyncStore(store, pool)


async def _open_bound(url: Any, **options: Any) -> api.Store | None:
    """A store bound to the running loop (JetStream), or None (the embedded engine)."""
    from streamlog.backends import open_store_async

    return await open_store_async(url, **options)  # type: ignore[no-any-return]


def _open_sync(url: Any, **options: Any) -> api.Store:
    """``streamlog.open``: a directory or ``file://`` URL, or ``nats://``/``tls://``."""
    from streamlog.backends import open_store

    return open_store(url, **options)  # type: ignore[no-any-return]


class AsyncStore:
    """An open store for asyncio (``await streamlog.aio.open(url)``).

    One event loop uses it at a time (the loop that opened it, or any single
    loop after; on JetStream the loop that opened it: its connection runs there).
    ``store`` is the sync store beneath, shared with threads (on JetStream, from
    threads other than the loop's while the loop runs).

    Three ways to run a call: the embedded engine's short calls inline; a store
    bound to this loop (``streamlog.api.AwaitableStore``, JetStream opened here)
    through its awaited twins; a store whose calls wait for the network on a loop
    of its own (JetStream opened with ``streamlog.open``) in the executor.
    """

    def __init__(self, store: api.Store, executor: concurrent.futures.Executor | None = None,
                 slow_writes: bool | None = None) -> None:
        """Wrap an open sync store. ``executor`` runs the long disk work (default: a
        pool of DEFAULT_MAX_WORKERS threads); ``slow_writes`` sends every write to it
        (default: when the store fsyncs each write, ``durability="always"``)."""
        aw = getattr(store, "awaitable_on_loop", None)
        # native: the backend's coroutine twins are awaited here (a store bound to this
        # loop). threaded: its calls wait for the network on a loop of its own, so
        # every one runs in the executor. Neither: the embedded engine (inline).
        self._native = bool(aw is not None and aw())
        self._threaded = aw is not None and not self._native
        if slow_writes is None:
            slow_writes = getattr(store, "durability", None) == "always" and not self._native
        self._slow_writes = slow_writes or self._threaded
        self._groups: weakref.WeakSet[AsyncGroup] = weakref.WeakSet()
        self.store = store
        self._pool = executor or concurrent.futures.ThreadPoolExecutor(
            DEFAULT_MAX_WORKERS, thread_name_prefix="streamlog-aio")
        self._warm: set[str] = set()  # topics whose appends run inline
        self._cold: dict[str, int] = {}  # appends sent to the executor, per cold topic
        self._closed = False

    def __repr__(self) -> str:
        return f"AsyncStore({self.store.url!r})"

    @property
    def url(self) -> str:
        return self.store.url

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------- plumbing
    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` in the executor. A cancelled caller stops waiting; ``fn`` still runs
        to its end (nothing is left half-done)."""
        if self._closed:
            raise StoreClosed(f"store {self.store.url} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def _sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A short call of the sync API: inline on the embedded engine, in the executor
        on a store whose calls wait for the network."""
        if self._native or self._threaded:
            return await self._run(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    async def _write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A short write: inline, unless every write fsyncs (``durability="always"``)."""
        if self._slow_writes:
            return await self._run(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    async def _append(self, topic: api.Topic, fn: Callable[..., T], *args: Any,
                      **kwargs: Any) -> T:
        """A write that appends to ``topic``: inline, unless every write fsyncs or a
        partition of the topic is still empty (its first append creates and maps the
        segment file: milliseconds of disk work)."""
        if self._slow_writes or not self._is_warm(topic):
            return await self._run(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    def _is_warm(self, topic: api.Topic) -> bool:
        """Every partition holds a record, or this store has sent COLD_APPENDS appends
        of the topic to the executor already (a partition its keys never reach must not
        keep every append off the loop)."""
        name = topic.name
        if name in self._warm:
            return True
        cold = self._cold.get(name, 0)
        if cold >= COLD_APPENDS or all(topic.end_offset(p) > 0
                                       for p in range(topic.partitions)):
            self._warm.add(name)
            self._cold.pop(name, None)
            return True
        self._cold[name] = cold + 1
        return False

    async def close(self) -> None:
        """Close the store (idempotent): every group handle's leases go back, waits end
        with StoreClosed."""
        if self._closed:
            return
        if self._native:  # their pulls end and their leases go back first, on this loop
            await asyncio.gather(*(g.close() for g in list(self._groups)),
                                 return_exceptions=True)
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._pool, self.store.close)
        finally:
            self._pool.shutdown(wait=False)

    # --------------------------------------------------------------- topics
    async def topic(self, name: str, partitions: int | None = None,
                    retention: Retention | None = None, segment_bytes: int | None = None,
                    max_record_bytes: int | None = None, dedupe_window_s: float | None = None,
                    compact: bool | None = None, serializer: Any = None,
                    schema_version: int | str | None = None) -> AsyncTopic:
        """Create-or-open topic ``name`` (as ``Store.topic``), in the executor; with
        ``serializer``/``schema_version`` the handle encodes and decodes values."""
        extra: dict[str, Any] = {}
        if serializer is not None or schema_version is not None:
            extra = {"serializer": serializer, "schema_version": schema_version}
        t = await self._run(self._watched, self.store.topic, name, partitions=partitions,
                            retention=retention, segment_bytes=segment_bytes,
                            max_record_bytes=max_record_bytes,
                            dedupe_window_s=dedupe_window_s, compact=compact, **extra)
        return AsyncTopic(self, t)

    async def existing_topic(self, name: str) -> AsyncTopic:
        """Open topic ``name``; TopicNotFound if it does not exist."""
        return AsyncTopic(self, await self._run(self._watched, self.store.existing_topic, name))

    def _watched(self, open_topic: Callable[..., api.Topic], *args: Any,
                 **kwargs: Any) -> api.Topic:
        """``open_topic(...)``, and on JetStream the topic's watch made beside it (in the
        executor): ``AsyncTopic.watch()`` then needs no network call on the loop."""
        t = open_topic(*args, **kwargs)
        if self._native:
            t.watch()
        return t

    async def topics(self) -> list[str]:
        """Names of every topic, sorted."""
        return await self._run(self.store.topics)

    async def delete_topic(self, name: str) -> None:
        """Delete a topic with its groups."""
        self._warm.discard(name)
        self._cold.pop(name, None)
        await self._run(self.store.delete_topic, name)

    async def alter_topic(self, name: str, retention: Retention | None = None,
                          dedupe_window_s: float | None = None,
                          max_record_bytes: int | None = None,
                          partitions: int | None = None) -> AsyncTopic:
        """Change a topic's stored options (as ``Store.alter_topic``), in the executor."""
        t = await self._run(self.store.alter_topic, name, retention=retention,
                            dedupe_window_s=dedupe_window_s,
                            max_record_bytes=max_record_bytes, partitions=partitions)
        return AsyncTopic(self, t)

    async def stats(self) -> dict[str, Any]:
        """The store's figures (as ``Store.stats``), in the executor."""
        return await self._run(self.store.stats)

    # ---------------------------------------------------------------- views
    async def queue(self, name: str, ack_wait_s: float = 30, max_deliver: int = 5,
                    serializer: Any = None,
                    schema_version: int | str | None = None) -> AsyncQueue:
        """The point-to-point queue ``name`` (see the sync ``log.queue``)."""
        self.store.raise_if_closed()
        q = await self._run(_queue.Queue, self.store, name, ack_wait_s=ack_wait_s,
                            max_deliver=max_deliver, serializer=serializer,
                            schema_version=schema_version)
        return AsyncQueue(self, q, ack_wait_s, max_deliver)

    async def pubsub(self, name: str, serializer: Any = None,
                     schema_version: int | str | None = None) -> AsyncPubSub:
        """The pub-sub view ``name``."""
        self.store.raise_if_closed()
        return AsyncPubSub(self, await self._run(_pubsub.PubSub, self.store, name,
                                                 serializer=serializer,
                                                 schema_version=schema_version))

    async def rpc(self, name: str) -> AsyncRpc:
        """The request-reply view ``name``."""
        self.store.raise_if_closed()
        rpc = await self._run(_rpc.Rpc, self.store, name)
        return AsyncRpc(self, rpc, await self._run(self.store.reply_box, rpc.reply_topic_name))

    async def event_store(self, name: str) -> AsyncEventStore:
        """The event store ``name``."""
        self.store.raise_if_closed()
        es = await self._run(_es.EventStore, self.store, name)
        return AsyncEventStore(self, es, await self._run(self.store.topic, name))


class AsyncWatch:
    """Wake-ups on a topic (``await t.watch()``): ``seq()``, ``await wait(seen, timeout)``,
    and ``async for seq in watch`` (each time the counter moves)."""

    def __init__(self, watch: api.Watch | None, make: Callable[[], Any] | None = None) -> None:
        """``watch``, or (on a store bound to the loop, when the topic has no watch yet)
        ``make``, a coroutine function that makes it on the first wait."""
        self.sync = watch
        self._make = make

    def seq(self) -> int:
        # -1 before the watch exists: never a real counter, so the first wait returns
        # at once and the caller looks again (a spurious wake-up, never a lost one).
        return -1 if self.sync is None else self.sync.seq()

    async def _watch(self) -> api.Watch:
        if self.sync is None:
            assert self._make is not None
            self.sync = await self._make()
        return self.sync

    async def wait(self, seen: int, timeout: float) -> bool:
        """Until ``seq()`` differs from ``seen`` (True) or ``timeout`` passes (False)."""
        if self.sync is None:
            await self._watch()
            return True
        return await self.sync.wait_async(seen, timeout)

    def wake(self) -> None:
        if self.sync is not None:
            self.sync.wake()

    async def __aiter__(self) -> AsyncIterator[int]:
        w = await self._watch()
        seen = w.seq()
        while True:
            await w.wait_async(seen, 3600.0)
            now = w.seq()
            if now != seen:
                seen = now
                yield now


class AsyncTopic:
    """A topic for asyncio: the sync Topic's calls as coroutines."""

    def __init__(self, astore: AsyncStore, topic: api.Topic) -> None:
        self._as = astore
        self.sync = topic
        # The coroutine twins, on a store bound to the loop (else None).
        self._aw: Any = topic if astore._native else None

    def __repr__(self) -> str:
        return f"AsyncTopic({self.sync.name!r})"

    @property
    def name(self) -> str:
        return self.sync.name

    @property
    def partitions(self) -> int:
        return self.sync.partitions

    @property
    def config(self) -> Any:
        return self.sync.config

    async def append(self, value: Any, key: Any = None, headers: Any = None,
                     timestamp_ms: int | None = None, msg_id: Any = None,
                     subject: str | None = None) -> Position:
        """Append one record (see ``Topic.append``; ``subject`` for subject filters)."""
        if self._aw is not None:
            return await self._aw.append_async(value, key=key, headers=headers,  # type: ignore[no-any-return]
                                               timestamp_ms=timestamp_ms, msg_id=msg_id,
                                               subject=subject)
        if subject is not None:
            return await self._as._append(self.sync, self.sync.append, value, key=key,
                                          headers=headers, timestamp_ms=timestamp_ms,
                                          msg_id=msg_id, subject=subject)
        return await self._as._append(self.sync, self.sync.append, value, key=key,
                                      headers=headers, timestamp_ms=timestamp_ms, msg_id=msg_id)

    async def append_many(self, values: Sequence[Any], keys: Sequence[Any] | None = None,
                          headers: Sequence[Any] | None = None) -> list[Position]:
        """Append records; large batches run in the executor."""
        if self._aw is not None:
            return await self._aw.append_many_async(values, keys=keys,  # type: ignore[no-any-return]
                                                    headers=headers)
        if hasattr(values, "__len__") and len(values) > INLINE_READ_RECORDS:
            return await self._as._run(self.sync.append_many, values, keys=keys, headers=headers)
        return await self._as._append(self.sync, self.sync.append_many, values, keys=keys,
                                      headers=headers)

    async def append_batch(self, partition: int, batch: RecordBatch) -> int:
        """Append a RecordBatch as one atomic batch; large batches run in the executor."""
        if self._aw is not None:
            return await self._aw.append_batch_async(partition, batch)  # type: ignore[no-any-return]
        if len(batch) > INLINE_READ_RECORDS:
            return await self._as._run(self.sync.append_batch, partition, batch)
        return await self._as._append(self.sync, self.sync.append_batch, partition, batch)

    async def append_delayed(self, value: Any, deliver_at_ms: int, key: Any = None,
                             headers: Any = None) -> Position:
        if self._aw is not None:
            return await self._aw.append_delayed_async(  # type: ignore[no-any-return]
                value, deliver_at_ms, key=key, headers=headers)
        return await self._as._append(self.sync, self.sync.append_delayed, value, deliver_at_ms,
                                      key=key, headers=headers)

    async def read(self, partition: int, offset: int = 0,
                   limit: int | None = None) -> list[Record]:
        """Records from ``offset`` on, as a list (a ``limit`` above 1000, or none: in
        the executor; on JetStream awaited in chunks)."""
        if self._aw is not None:
            return await self._aw.read_async(partition, offset, limit)  # type: ignore[no-any-return]
        if limit is not None and isinstance(limit, int) and 0 <= limit <= INLINE_READ_RECORDS \
                and not self._as._threaded:
            return list(self.sync.read(partition, offset, limit))
        return await self._as._run(lambda: list(self.sync.read(partition, offset, limit)))

    async def get(self, partition: int, offset: int) -> Record:
        if self._aw is not None:
            return await self._aw.get_async(partition, offset)  # type: ignore[no-any-return]
        return await self._as._sync(self.sync.get, partition, offset)

    async def read_batch(self, partition: int, offset: int, max_records: int) -> RecordBatch:
        if self._aw is not None:
            return await self._aw.read_batch_async(  # type: ignore[no-any-return]
                partition, offset, max_records)
        if isinstance(max_records, int) and max_records <= INLINE_READ_RECORDS:
            return await self._as._sync(self.sync.read_batch, partition, offset, max_records)
        return await self._as._run(self.sync.read_batch, partition, offset, max_records)

    async def start_offset(self, partition: int) -> int:
        if self._aw is not None:
            return await self._aw.start_offset_async(partition)  # type: ignore[no-any-return]
        return await self._as._sync(self.sync.start_offset, partition)

    async def end_offset(self, partition: int) -> int:
        if self._aw is not None:
            return await self._aw.end_offset_async(partition)  # type: ignore[no-any-return]
        return await self._as._sync(self.sync.end_offset, partition)

    async def offset_for_time(self, partition: int, timestamp_ms: int) -> int:
        if self._aw is not None:
            return await self._aw.offset_for_time_async(  # type: ignore[no-any-return]
                partition, timestamp_ms)
        return await self._as._sync(self.sync.offset_for_time, partition, timestamp_ms)

    def watch(self) -> AsyncWatch:
        """Wake-ups on appends to the topic (made on the first wait when the topic has
        no watch yet on a JetStream store: creating one is a network call)."""
        if self._aw is not None:
            try:  # the topic's watch exists (AsyncStore.topic made it): no network call
                return AsyncWatch(self.sync.watch())
            except RuntimeError:  # it would be one: made on the first wait instead
                return AsyncWatch(None, self._aw.watch_async)
        if self._as._threaded:
            return AsyncWatch(None, lambda: self._as._run(self.sync.watch))
        return AsyncWatch(self.sync.watch())

    async def group(self, name: str, mode: str = "shared", ack_wait_s: float = 30,
                    max_deliver: int = 5, backoff_s: Sequence[float] | None = None,
                    start: str = "earliest", dead_letter: str | None = None,
                    consumer: str | None = None,
                    subjects: Sequence[str] | None = None) -> AsyncGroup:
        """Create-or-open group ``name`` and join it as one consumer (in the executor);
        ``subjects`` filters by subject (see ``Topic.group``)."""
        t = self.sync
        extra: dict[str, Any] = {} if subjects is None else {"subjects": subjects}

        def make() -> tuple[api.Group, api.Watch | None]:
            g = t.group(name, mode=mode, ack_wait_s=ack_wait_s, max_deliver=max_deliver,
                        backoff_s=backoff_s, start=start, dead_letter=dead_letter,
                        consumer=consumer, **extra)
            return g, t.watch() if self._as._threaded else None

        g, watch = await self._as._run(make)
        if watch is None and not self._as._native:
            watch = t.watch()  # the embedded engine's: no network, made inline as ever
        return AsyncGroup(self._as, watch, g)

    async def group_config(self, name: str) -> dict[str, Any] | None:
        return await self._as._sync(self.sync.group_config, name)

    async def groups(self) -> list[str]:
        return await self._as._sync(self.sync.groups)

    async def delete_group(self, name: str, force: bool = True) -> None:
        """Delete a group (as ``Topic.delete_group``; ``force=False`` refuses a live one)."""
        await self._as._run(self.sync.delete_group, name, force=force)

    async def group_consumers(self, name: str) -> list[str]:
        """The live consumers of group ``name`` (as ``Topic.group_consumers``)."""
        return await self._as._run(self.sync.group_consumers, name)

    async def reset_group(self, name: str, to: Any, dry_run: bool = False,
                          force: bool = False) -> list[Any]:
        """Move group ``name`` on every partition (as ``Topic.reset_group``)."""
        return await self._as._run(self.sync.reset_group, name, to, dry_run=dry_run,
                                   force=force)


class AsyncMessage:
    """A delivered record with coroutine ``ack``/``nack``/``in_progress``/``defer``;
    ``sync`` is the group Message beneath."""

    __slots__ = ("_as", "sync")

    def __init__(self, astore: AsyncStore, m: api.Message) -> None:
        self._as = astore
        self.sync = m

    def __repr__(self) -> str:
        m = self.sync
        return f"AsyncMessage({m.topic!r}, {m.partition}, {m.offset})"

    @property
    def topic(self) -> str:
        return self.sync.topic

    @property
    def partition(self) -> int:
        return self.sync.partition

    @property
    def offset(self) -> int:
        return self.sync.offset

    @property
    def timestamp_ms(self) -> int:
        return self.sync.timestamp_ms

    @property
    def key(self) -> bytes | None:
        return self.sync.key

    @property
    def value(self) -> bytes | None:
        return self.sync.value

    @property
    def headers(self) -> dict[str, bytes]:
        return self.sync.headers

    @property
    def delivery_count(self) -> int:
        return self.sync.delivery_count

    async def ack(self) -> bool:
        if self._as._native:
            return await self.sync.ack_async()  # type: ignore[attr-defined, no-any-return]
        return await self._as._write(self.sync.ack)

    async def nack(self, delay_s: float = 0, error: str | None = None) -> bool:
        if self._as._native:
            return await self.sync.nack_async(delay_s, error)  # type: ignore[attr-defined, no-any-return]
        return await self._as._write(self.sync.nack, delay_s, error)

    async def in_progress(self) -> bool:
        if self._as._native:
            return await self.sync.in_progress_async()  # type: ignore[attr-defined, no-any-return]
        return await self._as._write(self.sync.in_progress)

    async def defer(self, delay_s: float) -> bool:
        if self._as._native:
            return await self.sync.defer_async(delay_s)  # type: ignore[attr-defined, no-any-return]
        return await self._as._write(self.sync.defer, delay_s)


def _hand_back(astore: AsyncStore, msgs: Sequence[api.Message]) -> None:
    """Records leased for nobody: back to the group at once, their delivery not counted.
    On a store bound to the loop the hand-back is a task of the loop; on one whose calls
    wait for the network elsewhere, a job of the executor."""
    if not msgs:
        return
    if astore._native:
        asyncio.get_running_loop().create_task(_ahand_back(msgs))
        return
    if astore._threaded:
        asyncio.get_running_loop().run_in_executor(astore._pool, _defer_all, msgs)
        return
    _defer_all(msgs)


def _defer_all(msgs: Sequence[api.Message]) -> None:
    for m in msgs:
        try:
            m.defer(0)
        except (StoreClosed, TopicNotFound):
            return  # the leases go with the closed handle


async def _ahand_back(msgs: Sequence[Any]) -> None:
    for m in msgs:
        try:
            await m.defer_async(0)
        except (StoreClosed, TopicNotFound):
            return
        except Exception:  # noqa: BLE001 - a lost connection: the lease runs out instead
            return


class _Waiter:
    __slots__ = ("fut", "want")

    def __init__(self, fut: asyncio.Future[list[api.Message]], want: int) -> None:
        self.fut = fut
        self.want = want


class AsyncGroup:
    """One consumer of a group, for asyncio. Any number of tasks of one loop may
    ``poll`` it at once: one pump task polls for all of them, in arrival order."""

    def __init__(self, astore: AsyncStore, watch: api.Watch | None, group: api.Group) -> None:
        """``watch``: the topic's (None on a store bound to the loop: its group's own
        pulls wait there)."""
        self._as = astore
        self.sync = group
        self.name = group.name
        self._watch: Any = watch
        self._waiters: deque[_Waiter] = deque()
        self._pump_task: asyncio.Task[None] | None = None
        self._direct = False  # a poll is waiting for itself (see _poll_direct)
        self._closed = False
        self._native = astore._native
        self._pull: asyncio.Future[Any] | None = None  # native: the poll under way
        astore._groups.add(self)

    def __repr__(self) -> str:
        return f"AsyncGroup({self.name!r})"

    def _wrap(self, msgs: Sequence[api.Message]) -> list[AsyncMessage]:
        return [AsyncMessage(self._as, m) for m in msgs]

    async def _try(self, n: int) -> list[api.Message]:
        """One poll without waiting; its records are never lost to a cancellation."""
        if not self._as._slow_writes:
            return list(self.sync.poll(max_records=n, timeout=0))
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._as._pool, functools.partial(
            self.sync.poll, max_records=n, timeout=0))
        try:
            return list(await asyncio.shield(fut))
        except asyncio.CancelledError:
            fut.add_done_callback(self._hand_back_done)
            raise

    def _hand_back_done(self, fut: asyncio.Future[Any]) -> None:
        """A poll finished for a caller that was cancelled: what it leased goes back."""
        if not fut.cancelled() and fut.exception() is None:
            _hand_back(self._as, fut.result())

    async def poll(self, max_records: int = 100,
                   timeout: float | None = 1.0) -> list[AsyncMessage]:
        """Up to ``max_records`` messages, waiting up to ``timeout`` seconds for the first
        ([] then; None: no end). Cancelled, it leaves nothing leased."""
        if self._closed:
            raise StoreClosed(f"group handle of {self.name!r} is closed")
        max_records = _validate.positive_int(max_records, "max_records", 1)
        if timeout is not None:
            timeout = _validate.seconds(timeout, "timeout", allow_inf=True)
        waiters = self._waiters
        while waiters and waiters[0].fut.done():  # timed out or cancelled: gone
            waiters.popleft()
        if self._native:
            if timeout == 0 and not waiters:
                if self._pull is not None and not self._pull.done():
                    # A pull of the pump is out: what is there goes to its waiters.
                    await asyncio.sleep(0)
                    return []
                return self._wrap(await self._pull_once(max_records, 0))
        elif not waiters:
            if not self._direct:
                return await self._poll_direct(max_records, timeout)
            got = await self._try(max_records)  # nobody queued ahead: one look inline
            if got or timeout == 0:
                return self._wrap(got)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[api.Message]] = loop.create_future()
        self._waiters.append(_Waiter(fut, max_records))
        if self._pump_task is None:
            self._pump_task = loop.create_task(self._npump() if self._native else self._pump())
        timer = None
        if timeout is not None and timeout != float("inf"):
            timer = loop.call_later(timeout, _expire, fut)
        try:
            return self._wrap(await fut)
        except asyncio.CancelledError:
            # Leased for us after all (the result came in the same loop turn as the
            # cancellation): hand the records back, their delivery not counted.
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                _hand_back(self._as, fut.result())
            raise
        finally:
            if timer is not None:
                timer.cancel()

    async def _poll_direct(self, max_records: int,
                           timeout: float | None) -> list[AsyncMessage]:
        """The one waiter that polls for itself (no hop through the pump): the common
        case of one consumer task per group handle. Others that come meanwhile queue
        for the pump."""
        self._direct = True
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                seen = self._watch.seq()
                got = await self._try(max_records)
                if got:
                    return self._wrap(got)
                wait = WAIT_SLICE_S
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return []
                    wait = min(wait, remaining)
                await self._watch.wait_async(seen, wait)
                if self._closed:
                    raise StoreClosed(f"group handle of {self.name!r} is closed")
        finally:
            self._direct = False

    async def _pull_once(self, n: int, timeout: float) -> list[api.Message]:
        """One poll of the group handle's own (a store bound to the loop): awaited
        pulls, one at a time per handle. A caller cancelled meanwhile leaves the poll
        to finish, and what it leased goes back at once, its delivery not counted."""
        prev = self._pull
        if prev is not None and not prev.done():
            await asyncio.wait({prev})
        fut = asyncio.ensure_future(self.sync.poll_async(n, timeout))  # type: ignore[attr-defined]
        self._pull = fut
        try:
            return list(await asyncio.shield(fut))
        except asyncio.CancelledError:
            fut.add_done_callback(self._hand_back_done)
            raise

    def _wanted(self) -> int:
        """Records the waiting pollers want (at most PUMP_MAX_RECORDS); 0 when none wait."""
        waiters = self._waiters
        while waiters and waiters[0].fut.done():
            waiters.popleft()
        want = 0
        for w in waiters:
            if not w.fut.done():
                want += w.want
                if want >= PUMP_MAX_RECORDS:
                    return PUMP_MAX_RECORDS
        return want

    def _hand_out(self, got: list[Any]) -> None:
        """Hand ``got`` to the waiters in arrival order; what none takes goes back."""
        waiters = self._waiters
        i = 0
        while i < len(got) and waiters:
            w = waiters.popleft()
            if w.fut.done():
                continue
            w.fut.set_result(got[i:i + w.want])
            i += w.want
        if i < len(got):
            _hand_back(self._as, got[i:])

    def _fail_waiters(self, e: BaseException) -> None:
        err = e if isinstance(e, Exception) else StoreClosed(f"group {self.name!r} closed")
        for w in self._waiters:
            if not w.fut.done():
                w.fut.set_exception(err)
        self._waiters.clear()

    async def _npump(self) -> None:
        """The pump of a store bound to the loop: the group's own pulls wait for
        records (no watch), for every waiter at once."""
        try:
            while want := self._wanted():
                self._hand_out(await self._pull_once(want, NATIVE_PULL_S))
        except BaseException as e:
            self._fail_waiters(e)
            if not isinstance(e, Exception):
                raise
        finally:
            self._pump_task = None

    async def _pump(self) -> None:
        try:
            while want := self._wanted():
                seen = self._watch.seq()
                got = await self._try(want)
                if got:
                    self._hand_out(got)
                    continue
                await self._watch.wait_async(seen, WAIT_SLICE_S)
        except BaseException as e:
            self._fail_waiters(e)
            if not isinstance(e, Exception):
                raise
        finally:
            self._pump_task = None

    async def ack(self, msgs: Sequence[AsyncMessage]) -> list[bool]:
        """Ack many messages at once (see ``Group.ack``)."""
        if self._native:
            return await self.sync.ack_async([m.sync for m in msgs])  # type: ignore[attr-defined, no-any-return]
        return await self._as._write(self.sync.ack, [m.sync for m in msgs])

    async def nack(self, msgs: Sequence[AsyncMessage], delay_s: float = 0,
                   error: str | None = None) -> list[bool]:
        """Nack many messages at once (see ``Message.nack``)."""
        if self._native:
            return await self.sync.nack_async(  # type: ignore[attr-defined, no-any-return]
                [m.sync for m in msgs], delay_s, error)
        return await self._as._write(self.sync.nack, [m.sync for m in msgs], delay_s, error)

    async def poll_batch(self, max_records: int = 1000,
                         timeout: float | None = 1.0) -> RecordBatch:
        """Up to ``max_records`` records of one partition as a leased RecordBatch (see
        ``Group.poll_batch``), waiting up to ``timeout`` seconds (an empty batch then;
        None: no end). Not through the pump that serves ``poll``: a columnar consumer
        polls for itself. Cancelled, it leaves nothing leased."""
        if self._closed:
            raise StoreClosed(f"group handle of {self.name!r} is closed")
        max_records = _validate.positive_int(max_records, "max_records", 1)
        if timeout is not None:
            timeout = _validate.seconds(timeout, "timeout", allow_inf=True)
        if self._native:  # (cancelled, the group's own poll hands back what it leased)
            return await self.sync.poll_batch_async(  # type: ignore[attr-defined, no-any-return]
                max_records, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            seen = self._watch.seq()
            if self._as._slow_writes:
                loop = asyncio.get_running_loop()
                got = await self._batch_shielded(loop.run_in_executor(
                    self._as._pool, functools.partial(self.sync.poll_batch, max_records, 0)))
            else:
                got = self.sync.poll_batch(max_records, 0)
            if len(got):
                return got
            wait = WAIT_SLICE_S
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return got
                wait = min(wait, remaining)
            await self._watch.wait_async(seen, wait)
            if self._closed:
                raise StoreClosed(f"group handle of {self.name!r} is closed")

    async def _batch_shielded(self, fut: asyncio.Future[Any]) -> RecordBatch:
        """A poll_batch under way elsewhere, awaited; cancelled, the caller stops waiting
        and what the poll leases goes back at once, its delivery not counted."""
        try:
            return await asyncio.shield(fut)  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            fut.add_done_callback(self._hand_back_batch_done)
            raise

    def _hand_back_batch_done(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None or not len(fut.result()):
            return
        # back to the group, its delivery not counted (as a poll's hand-back)
        defer = self.sync._defer_batch  # type: ignore[attr-defined]
        asyncio.get_running_loop().run_in_executor(self._as._pool, _defer_batch, defer,
                                                   fut.result())

    async def ack_batch(self, batch: RecordBatch) -> np.ndarray:
        """Ack a ``poll_batch`` result (see ``Group.ack_batch``)."""
        if self._native:
            return await self.sync.ack_batch_async(batch)  # type: ignore[attr-defined, no-any-return]
        return await self._as._write(self.sync.ack_batch, batch)

    async def nack_batch(self, batch: RecordBatch, delay_s: float = 0,
                         error: str | None = None) -> np.ndarray:
        """Nack a ``poll_batch`` result (see ``Group.nack_batch``)."""
        if self._native:
            return await self.sync.nack_batch_async(  # type: ignore[attr-defined, no-any-return]
                batch, delay_s, error)
        return await self._as._write(self.sync.nack_batch, batch, delay_s, error)

    async def lag(self, partition: int | None = None) -> int:
        if self._native:
            return await self.sync.lag_async(partition)  # type: ignore[attr-defined, no-any-return]
        return await self._as._sync(self.sync.lag, partition)

    async def dead_letters(self) -> AsyncTopic:
        return AsyncTopic(self._as, await self._as._sync(self.sync.dead_letters))

    def one_at_a_time(self) -> None:
        self.sync.one_at_a_time()

    def ready_for_next(self) -> None:
        self.sync.ready_for_next()

    async def close(self) -> None:
        """Leave the group: leases go to the others at once; waiting polls raise
        StoreClosed."""
        if self._closed:
            return
        self._closed = True
        task = self._pump_task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for w in self._waiters:
            if not w.fut.done():
                w.fut.set_exception(StoreClosed(f"group handle of {self.name!r} is closed"))
        self._waiters.clear()
        pull = self._pull
        if pull is not None and not pull.done():
            await asyncio.wait({pull})  # its records go back with the handle's leases
        try:
            if self._native:
                await self.sync.close_async()  # type: ignore[attr-defined]
                return
            if self._as._threaded:
                await self._as._run(self.sync.close)
                return
            self.sync.close()
            if self._direct:
                self._watch.wake()  # the poll waiting for itself looks again and sees it
        except (StoreClosed, TopicNotFound):
            pass


def _defer_batch(defer: Callable[[RecordBatch], Any], batch: RecordBatch) -> None:
    try:
        defer(batch)
    except (StoreClosed, TopicNotFound):
        pass  # the leases go with the closed handle


def _expire(fut: asyncio.Future[list[api.Message]]) -> None:
    if not fut.done():
        fut.set_result([])


# ---------------------------------------------------------------------- views
class AsyncQueue:
    """A point-to-point queue for asyncio: ``put``, ``get``, ``lag``, ``dead_letters``.

    The tasks calling ``get`` on one handle share one consumer of the queue's
    group (one pump polls for all of them)."""

    def __init__(self, astore: AsyncStore, queue: _queue.Queue, ack_wait_s: float,
                 max_deliver: int) -> None:
        self._as = astore
        self.sync = queue
        self.name = queue.name
        self.group_name = queue.group_name
        self.dead_letter_topic = queue.dead_letter_topic
        self._options: dict[str, Any] = dict(mode="shared", ack_wait_s=ack_wait_s,
                                             max_deliver=max_deliver,
                                             dead_letter=queue.dead_letter_topic)
        self._group: AsyncGroup | None = None
        self._opening: asyncio.Future[AsyncGroup] | None = None

    def __repr__(self) -> str:
        return f"AsyncQueue({self.name!r})"

    @property
    def topic(self) -> AsyncTopic:
        return AsyncTopic(self._as, self.sync.topic)

    async def _consumer(self) -> AsyncGroup:
        if self._group is not None:
            return self._group
        if self._opening is None:
            self._opening = asyncio.ensure_future(
                AsyncTopic(self._as, self.sync.topic).group(self.group_name, **self._options))
        g = await asyncio.shield(self._opening)
        self._group = g
        return g

    async def put(self, value: Any, key: Any = None, headers: Any = None,
                  delay_s: float = 0, subject: str | None = None) -> Position:
        """Append a message (see ``Queue.put``)."""
        if self._as._native:
            self._as.store.raise_if_closed()
            delay = _validate.seconds(delay_s, "delay_s") or 0.0
            t: Any = self.sync.topic
            if subject is not None:
                headers = _validate.with_subject(headers, subject)
            if delay > 0:
                return await t.append_delayed_async(  # type: ignore[no-any-return]
                    value, now_ms() + math.ceil(delay * 1000), key=key, headers=headers)
            return await t.append_async(value, key=key, headers=headers)  # type: ignore[no-any-return]
        return await self._as._append(self.sync.topic, self.sync.put, value, key=key,
                                      headers=headers, delay_s=delay_s, subject=subject)

    async def get(self, timeout: float | None = 1.0) -> AsyncMessage | None:
        """The next message, or None after ``timeout`` seconds (None: no end)."""
        self._as.store.raise_if_closed()
        if timeout is not None:
            timeout = _validate.seconds(timeout, "timeout", allow_inf=True)
        g = await self._consumer()
        msgs = await g.poll(max_records=1, timeout=timeout)
        return msgs[0] if msgs else None

    async def lag(self) -> int:
        if self._as._native:
            self._as.store.raise_if_closed()
            return await (await self._consumer()).lag()
        return await self._as._sync(self.sync.lag)

    async def dead_letters(self) -> AsyncTopic:
        return AsyncTopic(self._as, await self._as._sync(self.sync.dead_letters))

    async def close(self) -> None:
        """Close this handle's consumer: its unacked messages go to others now."""
        if self._group is not None:
            await self._group.close()
        await self._as._sync(self.sync.close)


class AsyncPubSub:
    """A fan-out view for asyncio: ``publish``, ``subscribe``."""

    def __init__(self, astore: AsyncStore, ps: _pubsub.PubSub) -> None:
        self._as = astore
        self.sync = ps
        self.name = ps.name

    def __repr__(self) -> str:
        return f"AsyncPubSub({self.name!r})"

    async def publish(self, value: Any, key: Any = None, headers: Any = None,
                      subject: str | None = None) -> Position:
        if self._as._native:
            self._as.store.raise_if_closed()
            t: Any = self.sync.topic
            return await t.append_async(value, key=key, headers=headers,  # type: ignore[no-any-return]
                                        subject=subject)
        return await self._as._append(self.sync.topic, self.sync.publish, value, key=key,
                                      headers=headers, subject=subject)

    async def subscribe(self, name: str, start: str = "earliest", ack_wait_s: float = 30,
                        max_deliver: int = 5,
                        subjects: Sequence[str] | None = None) -> AsyncSubscription:
        """The durable subscription ``name`` (created on first use, resumed after);
        ``subjects`` keeps only messages whose subject matches (see ``PubSub.subscribe``)."""
        sub = await self._as._run(self.sync.subscribe, name, start=start,
                                  ack_wait_s=ack_wait_s, max_deliver=max_deliver,
                                  subjects=subjects)
        g = await AsyncTopic(self._as, self.sync.topic).group(
            name, mode="shared", ack_wait_s=ack_wait_s, max_deliver=max_deliver, start=start,
            dead_letter=sub.dead_letter_topic, subjects=subjects)
        return AsyncSubscription(self._as, sub, g)

    async def subscriptions(self) -> list[str]:
        return await self._as._sync(self.sync.subscriptions)

    async def unsubscribe(self, name: str) -> None:
        await self._as._run(self.sync.unsubscribe, name)


class AsyncSubscription:
    """A durable subscription for asyncio: ``async for m in sub.listen()``; ``async with``
    closes it (its unacked messages go to other consumers at once)."""

    def __init__(self, astore: AsyncStore, sub: _pubsub.Subscription, group: AsyncGroup) -> None:
        self._as = astore
        self.sync = sub
        self.name = sub.name
        self._group = group

    def __repr__(self) -> str:
        return f"AsyncSubscription({self.sync.pubsub.name!r}, {self.name!r})"

    def listen(self, timeout: float | None = 1.0,
               auto_ack: bool = True) -> AsyncIterator[AsyncMessage]:
        """Messages as they come; ends after ``timeout`` seconds with none (None: never).
        With ``auto_ack`` a message is acked when the loop asks for the next one."""
        self._as.store.raise_if_closed()
        if timeout is not None:
            timeout = _validate.seconds(timeout, "timeout", allow_inf=True)
        if not isinstance(auto_ack, bool):
            raise TypeError(f"auto_ack must be a bool, not {type(auto_ack).__name__}")
        return self._listen(timeout, auto_ack)

    async def _listen(self, timeout: float | None,
                      auto_ack: bool) -> AsyncIterator[AsyncMessage]:
        g = self._group
        while True:
            msgs = await g.poll(max_records=1, timeout=timeout)
            if not msgs:
                return
            m = msgs[0]
            yield m
            if auto_ack:
                await m.ack()

    async def lag(self) -> int:
        return await self._group.lag()

    async def dead_letters(self) -> AsyncTopic:
        return await self._group.dead_letters()

    async def close(self) -> None:
        await self._group.close()
        await self._as._sync(self.sync.close)

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncRpc:
    """A request-reply view for asyncio: ``await request(...)``, ``await serve(handler)``."""

    def __init__(self, astore: AsyncStore, rpc: _rpc.Rpc, box: api.ReplyBox) -> None:
        self._as = astore
        self.sync = rpc
        self.name = rpc.name
        self._box = box
        self._watch = box.watch()
        self._abox: Any = box if astore._native else None

    def __repr__(self) -> str:
        return f"AsyncRpc({self.name!r})"

    async def __aenter__(self) -> AsyncRpc:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def request(self, value: Any, timeout: float = 1.0, headers: Any = None) -> bytes:
        """Send ``value`` to a server and return its reply (see ``Rpc.request``):
        RequestTimeout, RemoteError as there. Cancelled, the request is dropped by the
        servers at its deadline."""
        self._as.store.raise_if_closed()
        timeout = _validate.seconds(timeout, "timeout", allow_zero=False) or 0.0
        if headers is not None and not hasattr(headers, "items"):
            raise TypeError(f"headers must be a mapping of str to bytes, not "
                            f"{type(headers).__name__}")
        deadline = time.monotonic() + timeout
        deadline_ms = now_ms() + max(1, int(timeout * 1000))
        corr = _rpc._new_correlation_id(deadline_ms)
        hdrs = dict(headers) if headers else {}
        hdrs[_rpc.REPLY_TO] = self.sync.reply_topic_name
        hdrs[_rpc.CORRELATION_ID] = corr
        hdrs[_rpc.DEADLINE_MS] = b"%d" % deadline_ms
        box, watch, abox = self._box, self._watch, self._abox
        box.open(corr)
        try:
            seen = watch.seq()
            if abox is not None:
                requests: Any = self.sync.requests
                await requests.append_async(value, headers=hdrs)
            else:
                await self._as._append(self.sync.requests, self.sync.requests.append, value,
                                       headers=hdrs)
            while True:
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    await watch.wait_async(seen, remaining)
                seen = watch.seq()
                if abox is not None:
                    reply = await abox.take_async(corr)
                else:
                    reply = await self._as._sync(box.take, corr)
                if reply is not None:
                    return _rpc._unpack(reply)
                if deadline - time.monotonic() <= 0:
                    raise RequestTimeout(f"no reply on rpc {self.name!r} within {timeout} s "
                                         f"(correlation id {corr.decode()})")
        finally:
            box.close(corr)

    async def serve(self, handler: Callable[[AsyncMessage], Any], workers: int = 1,
                    ack_wait_s: float = 30, max_deliver: int = 5) -> AsyncServer:
        """Start ``workers`` tasks answering requests with ``handler(message)``, a function
        or a coroutine function returning bytes-like (an exception goes back as
        RemoteError). Returns the running AsyncServer (``await stop()``, or ``async with``).
        """
        self._as.store.raise_if_closed()
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise TypeError(f"workers must be an int, not {type(workers).__name__}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, not {workers}")
        t = AsyncTopic(self._as, self.sync.requests)
        groups = [await t.group(self.sync.server_group, mode="shared", ack_wait_s=ack_wait_s,
                                max_deliver=max_deliver, dead_letter=self.sync.dead_letter_topic)
                  for _ in range(workers)]
        for g in groups:
            g.one_at_a_time()  # as the sync server: the ack may lease the next request
        return AsyncServer(self, handler, groups)


class AsyncServer:
    """Tasks answering an rpc's requests; ``await stop()`` ends them (each finishes
    the request in hand) and hands their leases back."""

    def __init__(self, rpc: AsyncRpc, handler: Callable[[AsyncMessage], Any],
                 groups: list[AsyncGroup]) -> None:
        self.rpc = rpc
        self.handler = handler
        self.served = 0
        self.expired = 0
        self._groups = groups
        self._busy = [False] * len(groups)
        self._stopping = False
        self._tasks = [asyncio.get_running_loop().create_task(self._work(i))
                       for i in range(len(groups))]

    def __repr__(self) -> str:
        return f"AsyncServer({self.rpc.name!r}, workers={len(self._tasks)})"

    async def __aenter__(self) -> AsyncServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return not self._stopping and any(not t.done() for t in self._tasks)

    async def stop(self) -> None:
        """Stop the workers and release their leases (idempotent)."""
        self._stopping = True
        for i, t in enumerate(self._tasks):
            if not self._busy[i]:
                t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for g in self._groups:
            await g.close()

    async def _work(self, i: int) -> None:
        g = self._groups[i]
        try:
            while not self._stopping:
                for m in await g.poll(max_records=1, timeout=RPC_SERVER_POLL_S * 10):
                    self._busy[i] = True
                    try:
                        await self._handle(m, g)
                    finally:
                        self._busy[i] = False
        except (StoreClosed, TopicNotFound):
            return

    async def _handle(self, m: AsyncMessage, group: AsyncGroup) -> None:
        hdrs = m.headers
        raw_deadline = hdrs.get(_rpc.DEADLINE_MS)
        if raw_deadline is not None:
            try:
                deadline_ms: int | None = int(raw_deadline)
            except ValueError:
                deadline_ms = None
            if deadline_ms is not None and now_ms() >= deadline_ms:
                await m.ack()
                self.expired += 1
                return
        err: str | None = None
        try:
            out = self.handler(m)
            if inspect.isawaitable(out):
                out = await out
            if isinstance(out, bytes):
                value = out
            elif isinstance(out, bytearray | memoryview):
                value = bytes(out)
            else:
                raise TypeError(f"rpc handler must return bytes-like, not {type(out).__name__}")
        except Exception as e:  # noqa: BLE001 - the requester gets it as RemoteError
            value, err = _rpc._describe(e)
        corr = hdrs.get(_rpc.CORRELATION_ID)
        reply_to = hdrs.get(_rpc.REPLY_TO)
        group.ready_for_next()  # the handler is done: the next request may come now
        if corr is not None and reply_to is not None:
            try:
                await self._reply(reply_to.decode("utf-8", "replace"), corr, value, err)
            except TopicNotFound:
                pass
            except StoreClosed:
                raise
            except Exception as e:  # noqa: BLE001 - e.g. a full disk: hand it back
                await m.nack(error=f"reply failed: {type(e).__name__}: {e}")
                return
            else:
                self.served += 1
        await m.ack()

    async def _reply(self, reply_to: str, corr: bytes, value: bytes, err: str | None) -> None:
        rpc = self.rpc
        if reply_to == rpc.sync.reply_topic_name:
            box = rpc._box
        else:
            try:
                box = await rpc._as._run(rpc._as.store.reply_box, reply_to)
            except (TopicNotFound, ValueError, TypeError):
                return
        if rpc._as._native:
            abox: Any = box
            try:
                await abox.put_async(corr, value, err)
            except RecordTooLarge as e:
                value, err = _rpc._describe(e)
                await abox.put_async(corr, value[:1024], err)
            return
        try:
            await rpc._as._append(rpc.sync.replies, box.put, corr, value, err)
        except RecordTooLarge as e:
            value, err = _rpc._describe(e)
            await rpc._as._append(rpc.sync.replies, box.put, corr, value[:1024], err)


class AsyncEventStore:
    """An event store for asyncio: ``append``, ``read``, ``read_all``, ``subscribe``."""

    def __init__(self, astore: AsyncStore, es: _es.EventStore, topic: api.Topic) -> None:
        self._as = astore
        self.sync = es
        self._topic = topic
        self.name = es.name
        # The event log's coroutine twins, on a store bound to the loop (else None).
        self._alog: Any = es._events if astore._native else None

    def __repr__(self) -> str:
        return f"AsyncEventStore({self.name!r})"

    async def append(self, stream_id: str, events: Any, expected_version: int = api.ANY) -> int:
        """Append ``events`` to a stream (see ``EventStore.append``)."""
        if self._alog is not None:
            self._as.store.raise_if_closed()
            sid, sid_b = _es._stream_id(stream_id)
            expected = _es._expected_version(expected_version)
            tracer = _tracing.tracer()
            if tracer is not None and type(events) in (list, tuple):
                # As the sync view: one producer span per commit, in every event.
                with _tracing.producer_span(tracer, self.name, len(events)):
                    items = _es._events(_es._traced_events(events), sid, sid_b)
                    versions = (await self._alog.commit_async(items, {sid: expected}))[1]
                    return versions[sid]  # type: ignore[no-any-return]
            items = _es._events(events, sid, sid_b)
            versions = (await self._alog.commit_async(items, {sid: expected}))[1]
            return versions[sid]  # type: ignore[no-any-return]
        if isinstance(events, list | tuple) and len(events) <= INLINE_READ_RECORDS:
            return await self._as._append(self._topic, self.sync.append, stream_id, events,
                                          expected_version)
        return await self._as._run(self.sync.append, stream_id, events, expected_version)

    async def read(self, stream_id: str, from_version: int = 0, limit: int | None = None,
                   backwards: bool = False) -> list[api.Event]:
        if self._alog is not None:
            self._as.store.raise_if_closed()
            sid, _ = _es._stream_id(stream_id)
            lo = _es._int_arg(from_version, "from_version", 0)
            if limit is not None:
                limit = _es._int_arg(limit, "limit", 0)
            if not isinstance(backwards, bool):
                raise TypeError(f"backwards must be a bool, not {type(backwards).__name__}")
            events: list[api.Event] = await self._alog.stream_events_async(
                sid, lo, None, limit, backwards)
            if backwards:
                events.reverse()
            return events
        if isinstance(limit, int) and 0 <= limit <= INLINE_READ_RECORDS \
                and not self._as._threaded:
            return self.sync.read(stream_id, from_version, limit, backwards)
        return await self._as._run(self.sync.read, stream_id, from_version, limit, backwards)

    async def read_all(self, from_position: int = 0,
                       limit: int | None = None) -> list[api.Event]:
        if self._alog is not None:
            self._as.store.raise_if_closed()
            position = _es._int_arg(from_position, "from_position", 0)
            if limit is not None:
                limit = _es._int_arg(limit, "limit", 0)
            out: list[api.Event] = []
            while limit is None or len(out) < limit:
                want = EVENT_SUBSCRIBE_BATCH_RECORDS * 8
                if limit is not None:
                    want = min(want, limit - len(out))
                events, nxt = await self._alog.events_async(position, want)
                out.extend(events)
                if nxt == position:
                    break
                position = nxt
            return out
        if isinstance(limit, int) and 0 <= limit <= INLINE_READ_RECORDS \
                and not self._as._threaded:
            return self.sync.read_all(from_position, limit)
        return await self._as._run(self.sync.read_all, from_position, limit)

    async def last_version(self, stream_id: str) -> int:
        if self._alog is not None:
            self._as.store.raise_if_closed()
            sid, _ = _es._stream_id(stream_id)
            return await self._alog.last_version_async(sid)  # type: ignore[no-any-return]
        return await self._as._sync(self.sync.last_version, stream_id)

    async def end_position(self) -> int:
        if self._alog is not None:
            self._as.store.raise_if_closed()
            return await self._alog.end_position_async()  # type: ignore[no-any-return]
        return await self._as._sync(self.sync.end_position)

    def subscribe(self, from_position: int = 0, *,
                  timeout: float | None = None) -> AsyncEventSubscription:
        """Events from ``from_position``: catch-up, then live; ``async for`` over it,
        ``close()`` or ``async with`` ends it; ``timeout`` ends it after that long
        without a new event."""
        self._as.store.raise_if_closed()
        position = _es._int_arg(from_position, "from_position", 0)
        timeout = _validate.seconds(timeout, "timeout", allow_inf=True, allow_none=True)
        return AsyncEventSubscription(self, position, timeout)


class AsyncEventSubscription:
    """An async iterator over a store's events: catch-up, then live."""

    def __init__(self, es: AsyncEventStore, position: int, timeout: float | None) -> None:
        self._es = es
        self._log = es.sync._events
        self._watch: Any = None  # made on the first wait (on JetStream a network call)
        self._position = position
        self._timeout = timeout
        self._buffer: deque[api.Event] = deque()
        self._closed = False

    @property
    def position(self) -> int:
        return self._buffer[0].position if self._buffer else self._position

    def __aiter__(self) -> AsyncEventSubscription:
        return self

    async def __anext__(self) -> api.Event:
        self._es._as.store.raise_if_closed()
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._buffer:
                return self._buffer.popleft()
            if self._watch is None:
                if self._es._alog is not None:
                    self._watch = await self._es._alog.watch_async()
                else:
                    self._watch = await self._es._as._sync(self._log.watch)
                continue
            seen = self._watch.seq()
            if self._es._alog is not None:
                events, nxt = await self._es._alog.events_async(
                    self._position, EVENT_SUBSCRIBE_BATCH_RECORDS)
            else:
                events, nxt = await self._es._as._sync(
                    self._log.events, self._position, EVENT_SUBSCRIBE_BATCH_RECORDS)
            if nxt != self._position:
                self._position = nxt
                self._buffer.extend(events)
                continue
            wait = 3600.0
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StopAsyncIteration
                wait = min(wait, remaining)
            await self._watch.wait_async(seen, wait)

    def close(self) -> None:
        """End the iteration (idempotent); a waiting ``__anext__`` returns at once."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        if self._watch is None:
            return
        try:
            self._watch.wake()
        except (StoreClosed, OSError):
            pass

    async def __aenter__(self) -> AsyncEventSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

