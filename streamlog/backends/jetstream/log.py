"""A streamlog store on NATS JetStream: ``streamlog.open("nats://host:4222/shop")``.

:class:`JetStreamLog` is the store (``streamlog.api.Store``), one
:class:`~._client.Connection` per handle; :class:`JetStreamTopic` a topic
(``streamlog.api.Topic``). docs/backends.md describes the mapping:

* one stream per topic partition (names in ``_naming``), offset = sequence - 1;
* the record's value is the message payload; timestamp, key and the
  application's headers ride in headers (``_records``);
* the topic's options (partitions, retention, limits, ``uid``...) are JSON
  in the metadata of partition 0's stream, which is created last and deleted
  last: a topic exists exactly while that stream does;
* retention by size and age are the streams' ``max_bytes`` and ``max_age``,
  the dedupe window their ``duplicate_window``;
* ``append_many`` sends each partition's share as one atomic batch;
* every read first asks the stream leader where the stream ends, so a read
  after an append on any handle sees it.

Consumer groups and delayed appends live in ``groups``.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import numpy as np

from streamlog import _ext, _tracing, _validate
from streamlog._limits import (
    COPY_BATCH_RECORDS,
    COPY_BATCHES_IN_FLIGHT,
    COPY_NO_LEADER_WAIT_S,
    DEFAULT_DEDUPE_WINDOW_S,
    DEFAULT_PARTITIONS,
    DEFAULT_SEGMENT_BYTES,
    MAX_PARTITIONS,
    MAX_SEGMENT_BYTES,
    MIN_SEGMENT_BYTES,
    RATE_WINDOW_S,
)
from streamlog._types import (
    GroupReset,
    Position,
    Problem,
    Record,
    RecordBatch,
    Retention,
    now_ms,
    retention_limits,
)
from streamlog.api import STREAM_HEADER
from streamlog.errors import (
    ConfigMismatch,
    OffsetOutOfRange,
    ReadOnlyStore,
    RecordTooLarge,
    StoreClosed,
    StreamlogError,
    TopicNotFound,
    WrongExpectedVersion,
)
from streamlog.views._store import ViewMethods

from . import _naming, _records, groups
from ._client import (
    ATOMIC_BATCH_MAX_MSGS,
    CONNECT_TIMEOUT_S,
    ERR_WRONG_LAST_SEQUENCE,
    H_BATCH_COMMIT,
    H_BATCH_ID,
    H_BATCH_SEQ,
    H_EXPECTED_LAST_SEQ,
    BatchAck,
    Connection,
    JetStreamError,
    NoResponders,
    NotFound,
    OutMsg,
    PubAck,
    StoredMsg,
    StreamState,
    completing,
    parse_url,
)
from .eventlog import JetStreamEventLog, JetStreamTrackingLog
from .replybox import JetStreamReplyBox

__all__ = ["BACKEND", "JetStreamLog", "JetStreamTopic", "open_store"]

_logger = logging.getLogger("streamlog")

T = TypeVar("T")

# Headers whose value names the subject of a copied record, first match first: an
# event's stream, a tracking record's application, a reply's correlation id.
_COPY_SUBJECT_KINDS = {b"es-stream": "e", b"tracking-app": "t",
                       b"streamlog.correlation-id": "r"}

# Bytes the batch and expected-sequence headers add to a copied record at most.
_COPY_DIRECTIVE_BYTES = 200

#: How the backend names itself in messages.
BACKEND = "the JetStream backend"
DURABILITY_MODES = ("always", "interval", "never")
#: Metadata key of partition 0's stream that holds the topic's options (JSON).
META_CONFIG = "streamlog.config"
# The server's error for a stream name in use with another configuration.
ERR_STREAM_NAME_IN_USE = 10058
# The shortest duplicate window nats-server accepts (a window of 0 sends no msg ids).
MIN_DEDUPE_WINDOW_S = 0.1
# The shortest stream max_age nats-server accepts.
MIN_MAX_AGE_S = 0.1
# How long an append keeps trying while a partition's stream has no leader: longer
# than the 4-9 s raft election after a stream leader is lost.
LEADERLESS_WAIT_S = 30.0
# Pause between those attempts.
LEADERLESS_RETRY_S = 0.1
# Records per direct-get request of a range read.
READ_CHUNK = 256
# How often a topic handle in use looks whether its options changed (alter_topic).
CONFIG_REFRESH_S = 1.0
# How long a watch's ephemeral consumers outlive a handle that vanished without closing.
WATCH_INACTIVE_S = 30.0
_NS = 1_000_000_000
# The header a record's subject travels in, as the encoded header name.
_SUBJECT_HEADER_B = _validate.SUBJECT_HEADER.encode()
_tuple_new = tuple.__new__


# --------------------------------------------------------------------------- wake-ups


class _Notifier:
    """A counter bumped on every append to a topic, with threads and coroutines waiting
    for it to move."""

    def __init__(self) -> None:
        self.seq = 0
        self.cond = threading.Condition()
        self.async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = set()
        self.subs: list[Any] = []
        # (stream, deliver subject, consumer name) per partition.
        self.consumers: list[list[str]] = []

    def bump(self) -> None:
        with self.cond:
            self.seq += 1
            self.cond.notify_all()
            waiters = list(self.async_waiters)
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that loop is closed: its waiter is gone
                pass


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class JetStreamWatch:
    """Wake-ups on appends to one topic (``streamlog.api.Watch``).

    Fed by an ephemeral, headers-only push consumer per partition stream that
    delivers each new message once it is stored, so a wake-up always comes
    after the record is readable; appends through the same store handle also
    wake at once.
    """

    def __init__(self, notifier: _Notifier, store: JetStreamLog) -> None:
        self._n = notifier
        self._store = store

    def seq(self) -> int:
        """A counter that moves on every append to the topic (and on ``wake``)."""
        return self._n.seq

    def wait(self, seen: int, timeout: float) -> bool:
        """Block until ``seq()`` differs from ``seen`` (True) or ``timeout`` s pass (False)."""
        n = self._n
        with n.cond:
            return n.cond.wait_for(lambda: n.seq != seen or self._store._closed,
                                   max(0.0, timeout))

    async def wait_async(self, seen: int, timeout: float) -> bool:
        """As ``wait``, awaited on the caller's event loop; holds no thread."""
        n = self._n
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        entry = (loop, fut)
        with n.cond:
            if n.seq != seen or self._store._closed:
                return True
            n.async_waiters.add(entry)
        try:
            await asyncio.wait_for(fut, max(0.0, timeout))
            return True
        except TimeoutError:
            return n.seq != seen
        finally:
            with n.cond:
                n.async_waiters.discard(entry)

    def wake(self) -> None:
        """Move the counter without an append: every waiter looks again."""
        self._n.bump()


# --------------------------------------------------------------------------- topics


class JetStreamTopic:
    """A topic of a JetStream store (``streamlog.api.Topic``): one stream per partition.

    Thread-safe and cheap; handles of one store share its connection.
    """

    def __init__(self, store: JetStreamLog, name: str, config: dict) -> None:
        self._store = store
        self._conn = store._conn
        self.store_name = store.store_name
        self.name = name
        self.partitions: int = config["partitions"]
        self._config = config
        self._max_record = int(config["max_record_bytes"])
        self._dedupe = float(config["dedupe_window_s"]) > 0
        self._streams = [_naming.stream_name(self.store_name, name, p)
                         for p in range(self.partitions)]
        self._subjects = [_naming.partition_subject(self.store_name, name, p)
                          for p in range(self.partitions)]
        self._rr = itertools.count()
        self._fresh_at = time.monotonic() + CONFIG_REFRESH_S
        tracer = _tracing.tracer()
        if tracer is not None:
            # As on the embedded store: decided when the handle is made; with a tracer
            # provider, appends go through a producer span and carry its context.
            self.append = _tracing.traced_append(  # type: ignore[method-assign]
                tracer, name, self.append)
            self.append_many = _tracing.traced_append_many(  # type: ignore[method-assign]
                tracer, name, self.append_many)
            self.append_async = _tracing.traced_append_async(  # type: ignore[method-assign]
                tracer, name, self.append_async)

    def __repr__(self) -> str:
        return f"JetStreamTopic({self.name!r}, partitions={self.partitions})"

    @property
    def config(self) -> dict[str, Any]:
        """The options the topic was created with (``partitions``, ``retention``,
        ``max_record_bytes``, ``dedupe_window_s``, ``compact``, ``uid``...)."""
        return dict(self._config)

    def stream_name(self, partition: int) -> str:
        """The JetStream stream that holds ``partition``."""
        return self._streams[partition]

    def subject(self, partition: int) -> str:
        """The subject records of ``partition`` are published to."""
        return self._subjects[partition]

    # ------------------------------------------------------------------ helpers
    def _run(self, coro):
        """Run a coroutine on the store's connection; a vanished stream is TopicNotFound."""
        if self._store._closed:
            coro.close()
            raise StoreClosed("the store is closed")
        if self._conn.on_loop():  # it would wait for itself (Connection.run says so too)
            coro.close()
            raise RuntimeError("a sync call of a JetStream store on its own event loop; "
                               "await its *_async twin instead")
        return self._conn.run(self._guarded(coro))

    async def _awaited(self, coro: Coroutine[Any, Any, T]) -> T:
        """``coro`` with the errors of ``_run``, for a caller's task on the store's loop: in
        a task of its own, so that a cancellation of the caller leaves it whole (see
        ``completing``)."""
        return await completing(self._guarded(coro))

    async def _guarded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` with the errors of ``_run``: a vanished stream is TopicNotFound."""
        try:
            return await coro
        except NotFound as e:
            if self._store._closed:
                raise StoreClosed("the store is closed") from None
            raise TopicNotFound(f"topic {self.name!r} does not exist in "
                                f"{self._store.url} ({e.description})") from None
        except TimeoutError:
            # A publish to a subject no stream owns has no responder: a deleted topic.
            if not self._store._closed and await self._store._aread_config(self.name) is None:
                raise TopicNotFound(f"topic {self.name!r} does not exist in "
                                    f"{self._store.url}") from None
            raise

    def _read_run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run the read ``make()`` makes, asking again while the stream has no leader."""
        return self._run(_reading(make))

    async def _areading(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Await the read ``make()`` makes, asking again while the stream has no leader."""
        return await _reading(make)

    def _partition(self, partition) -> int:
        self._store._check()
        return _validate.partition(partition, self.partitions)

    def _state(self, p: int) -> StreamState:
        return self._run(self._astate(p))

    async def _astate(self, p: int) -> StreamState:
        conn, stream = self._conn, self._streams[p]
        return await _reading(lambda: conn.stream_info(stream))

    def _get_message(self, p: int, seq: int) -> Coroutine[Any, Any, StoredMsg]:
        """Read message ``seq`` of partition ``p`` through the stream leader."""
        conn, stream = self._conn, self._streams[p]
        return _reading(lambda: conn.get_message(stream, seq))

    async def _sending(self, p: int, make: Callable[[], Coroutine[Any, Any, Any]],
                       idempotent: bool, failed: BaseException | None = None) -> Any:
        """Await ``make()`` (a publish to partition ``p``), sending it again while the
        stream has no leader: a request nobody received (no responders, a 503) is
        resent; one whose answer did not come in time only when ``idempotent`` (it
        carries a msg id), since it may have been stored. Gives up after
        LEADERLESS_WAIT_S; a deleted stream raises NotFound. ``failed``: the first
        attempt was made elsewhere and raised that (it is judged as if raised here)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LEADERLESS_WAIT_S
        while True:
            try:
                if failed is not None:
                    first, failed = failed, None
                    raise first
                return await make()
            except NoResponders:
                if loop.time() >= deadline:
                    raise
            except TimeoutError:
                if not idempotent or loop.time() >= deadline:
                    raise
            except NotFound:
                raise
            except JetStreamError as e:
                if e.code != 503 or loop.time() >= deadline:
                    raise
            try:  # a deleted topic has no responders either
                await self._conn.stream_info(self._streams[p])
            except NotFound:
                raise
            except (TimeoutError, JetStreamError):
                pass  # no leader to answer yet
            await asyncio.sleep(LEADERLESS_RETRY_S)

    def _partition_of(self, key: bytes | None, msg_id: bytes | None) -> int:
        if time.monotonic() >= self._fresh_at:
            self._look_again()
        n = self.partitions
        if n == 1:
            return 0
        if key is not None:
            return _ext.partition_for_key(key, n)
        if msg_id is not None:
            return _records.partition_for_msg_id(msg_id, n)
        return next(self._rr) % n

    def _publish_subject(self, p: int, hdrs) -> str:
        """The NATS subject a record of partition ``p`` is published to: the partition's,
        or ``<partition subject>.s.<subject>`` when its ``subject`` header holds a
        valid subject (consumers of groups with ``subjects=`` filter on it)."""
        base = self._subjects[p]
        if not hdrs:
            return base
        subj = None
        for n, v in hdrs:  # the last one wins, as in the headers a reader gets
            if n == _SUBJECT_HEADER_B:
                subj = v
        if subj is None:
            return base
        return _naming.message_subject(base, subj)

    def _encode(self, value: bytes, key: bytes | None, hdrs, ts: int,
                msg_id_text: str | None = None) -> dict[str, str]:
        """The record's headers, after checking its size against the topic's and the
        server's limits (RecordTooLarge)."""
        if (len(value) + (len(key) if key is not None else 0) > self._max_record) or hdrs:
            _validate.record_size(key, value, hdrs, self._max_record)
        wire = _records.encode_headers(key, hdrs, ts)
        extra = 0 if msg_id_text is None else len("Nats-Msg-Id") + len(msg_id_text) + 4
        size = _records.wire_size(len(value), wire) + extra
        limit = self._conn.max_payload
        if size > limit:
            raise RecordTooLarge(f"record of {size} bytes as a NATS message (value, key and "
                                 f"headers with streamlog's own) exceeds the server's "
                                 f"max_payload={limit}")
        return wire

    def _record(self, p: int, m: StoredMsg) -> Record:
        h = m.headers
        return Record(self.name, p, m.seq - 1, _records.timestamp_of(h, m.time_ns),
                      _records.decode_key(h), m.data, _records.decode_headers(h))

    def _appended(self) -> None:
        n = self._store._notifiers.get(self.name)
        if n is not None:
            n.bump()

    # ------------------------------------------------------------------ append
    def append(self, value, key=None, headers=None, timestamp_ms: int | None = None,
               msg_id=None, subject: str | None = None) -> Position:
        """Append one record; returns its Position once the stream acknowledged it.

        With ``msg_id``, a repeat inside the topic's dedupe window returns the
        first append's Position and stores nothing (JetStream's ``Nats-Msg-Id``).
        ``subject`` is stored as header ``subject`` and the record is published
        below the partition's subject (``<partition subject>.s.<subject>``), so
        that groups opened with ``subjects=`` filter on the server.
        TypeError/ValueError/RecordTooLarge before anything is sent.
        """
        if self._store._closed:
            raise StoreClosed("the store is closed")
        p, subj, value, wire, mid_text = self._prepare(value, key, headers, timestamp_ms,
                                                       msg_id, subject)
        conn = self._conn
        try:
            # Built on this thread, written by one loop callback, the acknowledgement
            # handed back by the client's reader: no task (Connection.publish_blocking).
            ack = conn.publish_blocking(subj, value, wire, msg_id=mid_text)
        except (NoResponders, TimeoutError, JetStreamError) as e:
            # What _sending sends again (no stream leader yet) is sent again the same
            # way; anything else is raised with the errors of the awaited path.
            ack = self._run(self._sending(
                p, lambda: conn.publish(subj, value, wire, msg_id=mid_text),
                idempotent=mid_text is not None, failed=e))
        if not ack.duplicate:
            self._appended()
        return _tuple_new(Position, (p, ack.seq - 1))

    def _prepare(self, value, key, headers, timestamp_ms: int | None, msg_id,
                 subject: str | None) -> tuple[int, str, bytes, dict[str, str], str | None]:
        """Check and encode one record to append: its partition, NATS subject, value,
        headers and msg id header (TypeError/ValueError/RecordTooLarge, nothing sent)."""
        store = self._store
        store._check_writable(f"append to topic {self.name!r}")
        if type(value) is not bytes:
            value = _value(value)
        if key is not None and type(key) is not bytes:
            key = _validate.key(key)
        if subject is not None:
            headers = _validate.with_subject(headers, subject)
        hdrs = _validate.headers(headers) if headers is not None else None
        ts = now_ms() if timestamp_ms is None else _validate.timestamp(timestamp_ms)
        mid = _validate.msg_id(msg_id)
        mid_text = None if mid is None or not self._dedupe else _records.msg_id_header(mid)
        wire = self._encode(value, key, hdrs, ts, mid_text)
        p = self._partition_of(key, mid)
        return p, self._publish_subject(p, hdrs), value, wire, mid_text

    async def _aappend(self, value, key=None, headers=None, timestamp_ms: int | None = None,
                       msg_id=None, subject: str | None = None) -> Position:
        p, subj, value, wire, mid_text = self._prepare(value, key, headers, timestamp_ms,
                                                       msg_id, subject)
        conn = self._conn
        ack = await self._sending(
            p, lambda: conn.publish(subj, value, wire, msg_id=mid_text),
            idempotent=mid_text is not None)
        if not ack.duplicate:
            self._appended()
        return _tuple_new(Position, (p, ack.seq - 1))

    def append_many(self, values: Sequence, keys: Sequence | None = None,
                    headers: Sequence | None = None) -> list[Position]:
        """Append records: validated as a whole first, then each partition's share as one
        atomic batch (all of it is stored, or none).

        More than 1,000 records for one partition (the server's batch limit)
        is a ValueError before anything is sent.
        """
        return self._run(self._aappend_many(values, keys, headers))

    async def _aappend_many(self, values: Sequence, keys: Sequence | None = None,
                            headers: Sequence | None = None) -> list[Position]:
        self._store._check_writable(f"append to topic {self.name!r}")
        values, keys, headers = _validate.many(values, keys, headers)
        n = len(values)
        if n == 0:
            return []
        vals = [v if type(v) is bytes else _value(v) for v in values]
        ks = [None] * n if keys is None else [
            k if k is None or type(k) is bytes else _validate.key(k) for k in keys]
        hs = [None] * n if headers is None else [_validate.headers(h) for h in headers]
        ts = now_ms()
        wires = [self._encode(vals[i], ks[i], hs[i], ts) for i in range(n)]
        by_part: dict[int, list[int]] = {}
        for i in range(n):
            by_part.setdefault(self._partition_of(ks[i], None), []).append(i)
        for p, idxs in by_part.items():
            if len(idxs) > ATOMIC_BATCH_MAX_MSGS:
                raise ValueError(
                    f"append_many: {len(idxs)} records for partition {p} of topic "
                    f"{self.name!r}; on JetStream one atomic append holds at most "
                    f"{ATOMIC_BATCH_MAX_MSGS} records per partition (the server's batch "
                    f"limit): split the call")
        conn = self._conn
        parts = list(by_part.items())

        async def send() -> list[int]:
            jobs: list[Coroutine[Any, Any, Any]] = []
            for p, idxs in parts:
                batch = [OutMsg(self._publish_subject(p, hs[i]), vals[i], wires[i])
                         for i in idxs]
                jobs.append(self._sending(p, partial(_publish_share, conn, batch),
                                          idempotent=False))
            acks = await asyncio.gather(*jobs)
            return [a.seq if isinstance(a, PubAck) else a.first_seq for a in acks]

        firsts = await send()
        out: list[Position | None] = [None] * n
        for (p, idxs), first in zip(parts, firsts, strict=True):
            for j, i in enumerate(idxs):
                out[i] = _tuple_new(Position, (p, first - 1 + j))
        self._appended()
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ copy
    def _copy_subject(self, p: int, hdrs: list[tuple[bytes, bytes]] | None) -> str:
        """The subject a copied record goes to: an event's, a tracking record's or a
        reply's own (the event log, tracking log and reply box find them by subject),
        else where ``append`` would publish it (see ``_publish_subject``)."""
        base = self._subjects[p]
        if hdrs:
            found = {name: value for name, value in hdrs if name in _COPY_SUBJECT_KINDS}
            # An event that also carries a tracking record's headers is an event.
            for name, kind in _COPY_SUBJECT_KINDS.items():
                if name in found:
                    return _naming.entry_subject(base, kind, found[name])
        return self._publish_subject(p, hdrs)  # a record with a subject: where filters see it

    def _copy_wire(self, value: bytes, key: bytes | None, hdrs, ts: int) -> dict[str, str]:
        """A copied record's headers, after checking its size against the server's
        max_payload (RecordTooLarge); the topic's own limit was checked before. The exact
        size is counted only for a record near the limit."""
        wire = _records.encode_headers(key, hdrs, ts)
        rough = len(value) + 2 * ((len(key) if key is not None else 0) +
                                  sum(len(a) + len(b) for a, b in hdrs or ())) + 64 * len(wire)
        if rough + _COPY_DIRECTIVE_BYTES > self._conn.max_payload or _records.H_HEADERS in wire:
            size = _records.wire_size(len(value), wire) + _COPY_DIRECTIVE_BYTES
            if size > self._conn.max_payload:
                raise RecordTooLarge(
                    f"record of {size} bytes as a NATS message (value, key and headers with "
                    f"streamlog's own) exceeds the server's max_payload="
                    f"{self._conn.max_payload}")
        return wire

    def append_copies(self, partition: int, offset: int, records: Iterable[Any]) -> int:
        """Append copies of ``records`` (as ``read`` yields them: timestamp, key, value and
        headers are kept) to ``partition`` at offsets ``offset``, ``offset + 1``, ...;
        returns the partition's end after them.

        For copying a store: the records go out as atomic batches of up to
        COPY_BATCH_RECORDS, several in flight at once, each carrying the
        stream's expected last sequence, so the server stores a batch only if
        the partition ends where it was meant to start: a rerun after an
        interruption continues where the destination ends and never stores a
        record twice. A partition whose end is not the batch's offset raises
        WrongExpectedVersion (expected: the offset, actual: the end); batches
        before it stay. Every record is checked first (TypeError, ValueError,
        RecordTooLarge), before anything is sent. Events, tracking records and
        replies go to their own subjects, found from their headers.
        """
        p = self._partition(partition)
        offset = _validate.offset(offset)
        self._store._check_writable(f"append to topic {self.name!r}")
        keys, values, hdrs, stamps = _validate.copies(records, False, self._max_record)
        n = len(values)
        if n == 0:
            return offset
        wires = [self._copy_wire(values[i], keys[i], hdrs[i], stamps[i]) for i in range(n)]

        def batches(start: int) -> Iterator[list[OutMsg]]:
            # Built on the connection's loop as room frees up (see publish_batches).
            subject = self._subjects[p]
            for lo in range(start, n, COPY_BATCH_RECORDS):
                hi = min(lo + COPY_BATCH_RECORDS, n)
                # JetStream's sequence is offset + 1: the stream's last sequence is the
                # offset the batch starts at.
                wires[lo][H_EXPECTED_LAST_SEQ] = str(offset + lo)
                yield [OutMsg(subject if not hdrs[i] else self._copy_subject(p, hdrs[i]),
                              values[i], wires[i]) for i in range(lo, hi)]

        conn = self._conn
        start = 0  # the first record not yet known to be stored
        # A stream without a leader (just created on a cluster, or electing after a node
        # loss) answers no batch: send again from the first unanswered one, while the
        # election may last. The expected last sequence makes a resend store nothing twice.
        deadline = time.monotonic() + COPY_NO_LEADER_WAIT_S
        while True:
            answers = self._run(conn.publish_batches(batches(start),
                                                     in_flight=COPY_BATCHES_IN_FLIGHT))
            self._appended()
            resend = None
            for i, a in enumerate(answers):
                lo = start + i * COPY_BATCH_RECORDS
                want = offset + lo
                if isinstance(a, BatchAck):
                    if a.first_seq != want + 1:  # a check that survives -O
                        raise StreamlogError(f"{self.name}/{p}: a copied batch landed at "
                                             f"offset {a.first_seq - 1}, not {want}")
                    continue
                if isinstance(a, NoResponders) and time.monotonic() < deadline and \
                        self._store._read_config(self.name) is not None:
                    resend = lo
                    break
                if isinstance(a, JetStreamError) and a.err_code == ERR_WRONG_LAST_SEQUENCE:
                    raise WrongExpectedVersion(want, self._bounds(p)[1], f"{self.name}/{p}")
                if isinstance(a, NotFound | NoResponders):
                    self._run(_raise(a))  # TopicNotFound for a deleted topic
                raise a if isinstance(a, StreamlogError | TimeoutError | OSError) else \
                    StreamlogError(f"copy to {self.name}/{p}: {a}")
            if resend is None:
                return offset + n
            time.sleep(0.25)
            start = resend

    def append_gap(self, partition: int, offset: int, count: int,
                   timestamp_ms: int = 0) -> int:
        """Compacted topics are not available on JetStream yet: NotImplementedError."""
        raise NotImplementedError(f"compacted topics are not available on {BACKEND} yet")

    def set_start_offset(self, partition: int, offset: int) -> None:
        """Make an empty partition's start and end ``offset``: its first record gets that
        offset (the stream is purged up to sequence ``offset + 1``, which on an empty
        stream sets where numbering continues). For copying a partition whose start
        retention moved, so its offsets are kept. Idempotent; StreamlogError (nothing
        changed) when the partition holds records or its end is past ``offset``."""
        p = self._partition(partition)
        offset = _validate.offset(offset)
        self._store._check_writable(f"change topic {self.name!r}")
        st = self._state(p)
        start, end = (st.first_seq - 1 if st.messages else st.last_seq), st.last_seq
        if start == end == offset:
            return
        if st.messages or end > offset:
            raise StreamlogError(
                f"{self.name}/{p}: cannot start at offset {offset}: the partition holds "
                f"offsets [{start}, {end}) (only an empty partition whose end is at or "
                f"below it can)")
        conn, stream = self._conn, self._streams[p]
        self._run(conn.purge_to(stream, offset + 1))

    def group_positions(self, name: str) -> dict[int, int]:
        """Group ``name``'s committed position on each partition: every record below it is
        done for the group (the consumer's acknowledgement floor; what retention
        removed counts as done). StreamlogError when there is no such group."""
        return groups.committed_positions(self, name)

    def append_batch(self, partition: int, batch: RecordBatch) -> int:
        """Append a RecordBatch's records to ``partition`` as one atomic batch publish
        (all stored, or none); returns the first record's offset.

        Each record becomes one NATS message (key and timestamp in streamlog's
        headers, as ``append`` writes them); the batch's keys do not choose the
        partition. More than 1,000 records (the server's batch limit), an empty
        batch, a null value (no compaction on JetStream) or a record over the
        limits raise before anything is sent.
        """
        return self._run(self._aappend_batch(partition, batch))

    async def _aappend_batch(self, partition: int, batch: RecordBatch) -> int:
        self._store._check_writable(f"append to topic {self.name!r}")
        p = self._partition(partition)
        if not isinstance(batch, RecordBatch):
            raise TypeError(f"batch must be a streamlog.RecordBatch, not {type(batch).__name__}")
        n = len(batch)
        if n == 0:
            raise ValueError("append_batch needs at least one record (the batch is empty)")
        if n > ATOMIC_BATCH_MAX_MSGS:
            raise ValueError(
                f"append_batch: {n} records; on JetStream one atomic append holds at most "
                f"{ATOMIC_BATCH_MAX_MSGS} records (the server's batch limit): split the batch")
        # The same checks of the columns as the embedded store makes (types, bounds,
        # timestamps, null values, sizes), by encoding them once; then one message each.
        _ext.encode_columns(batch.timestamps_ms, batch.value_offsets, batch.value_data,
                            batch.value_null, batch.key_offsets, batch.key_data,
                            batch.key_null, self._max_record, False, False)
        vo, ko = batch.value_offsets.tolist(), batch.key_offsets.tolist()
        vd, kd = batch.value_data.tobytes(), batch.key_data.tobytes()
        knull, stamps = batch.key_null.tolist(), batch.timestamps_ms.tolist()
        vals = [vd[vo[i]:vo[i + 1]] for i in range(n)]
        wires = [self._encode(vals[i], None if knull[i] else kd[ko[i]:ko[i + 1]], None,
                              stamps[i]) for i in range(n)]
        conn, subject = self._conn, self._subjects[p]
        msgs = [OutMsg(subject, vals[i], wires[i]) for i in range(n)]
        ack = await self._sending(p, partial(_publish_share, conn, msgs), idempotent=False)
        self._appended()
        return (ack.seq if isinstance(ack, PubAck) else ack.first_seq) - 1

    def append_delayed(self, value, deliver_at_ms: int, key=None, headers=None) -> Position:
        """Append a record no group delivers before ``deliver_at_ms`` (see ``groups``)."""
        return groups.append_delayed(self, value, deliver_at_ms, key, headers)

    def flush(self) -> None:
        """Nothing to do: every append returned after the server acknowledged it."""
        self._store._check()

    # -------------------------------------------------------------------- read
    def _bounds(self, p: int) -> tuple[int, int]:
        """(start_offset, end_offset) of partition ``p`` as the stream leader has them."""
        return self._run(self._abounds(p))

    async def _abounds(self, p: int) -> tuple[int, int]:
        st = await self._astate(p)
        end = st.last_seq
        start = st.first_seq - 1 if st.messages else end
        return start, end

    def _range(self, p: int, offset: int, count: int, last_seq: int) -> list[StoredMsg]:
        """Up to ``count`` messages from ``offset`` on, never past ``last_seq``."""
        return self._run(self._arange(p, offset, count, last_seq))

    async def _arange(self, p: int, offset: int, count: int, last_seq: int) -> list[StoredMsg]:
        conn, stream = self._conn, self._streams[p]
        msgs = await _reading(lambda: conn.get_range(
            stream, offset + 1, min(count, last_seq - offset), known_last_seq=last_seq))
        return [m for m in msgs if m.seq <= last_seq]

    def read(self, partition: int, offset: int = 0, limit: int | None = None) -> Iterator[Record]:
        """Records of ``partition`` from ``offset`` until the end as it was when the read
        began (or ``limit`` records). An offset below start_offset starts there; one at
        or past the end yields nothing."""
        p = self._partition(partition)
        offset = _validate.offset(offset)
        if limit is not None:
            limit = _validate.positive_int(limit, "limit", minimum=0)
        start, end = self._bounds(p)
        return self._read(p, max(offset, start), end, limit)

    async def _aread(self, partition: int, offset: int = 0,
                     limit: int | None = None) -> list[Record]:
        """``read``, awaited, as a list."""
        p = self._partition(partition)
        offset = _validate.offset(offset)
        if limit is not None:
            limit = _validate.positive_int(limit, "limit", minimum=0)
        start, end = await self._abounds(p)
        return await self._aread_list(p, max(offset, start), end, limit)

    def _read(self, p: int, offset: int, end: int, limit: int | None) -> Iterator[Record]:
        checked = False
        while offset < end and (limit is None or limit > 0):
            msgs, end, checked = self._run(self._aread_chunk(p, offset, end, limit, checked))
            if not msgs:
                return
            for m in msgs:
                yield self._record(p, m)
            if limit is not None:
                limit -= len(msgs)
            offset = msgs[-1].seq

    async def _aread_list(self, p: int, offset: int, end: int,
                          limit: int | None) -> list[Record]:
        """``_read`` as a list, awaited."""
        out: list[Record] = []
        checked = False
        while offset < end and (limit is None or limit > 0):
            msgs, end, checked = await self._aread_chunk(p, offset, end, limit, checked)
            if not msgs:
                break
            out.extend(self._record(p, m) for m in msgs)
            if limit is not None:
                limit -= len(msgs)
            offset = msgs[-1].seq
        return out

    async def _aread_chunk(self, p: int, offset: int, end: int, limit: int | None,
                           checked: bool) -> tuple[list[StoredMsg], int, bool]:
        """One chunk of a read from ``offset``: its messages (none past ``end``), the end
        (moved before a batch still being stored), and whether the end was checked."""
        want = READ_CHUNK if limit is None else min(READ_CHUNK, limit)
        msgs = await self._arange(p, offset, want, end)
        if not msgs:
            return msgs, end, checked
        # The server stores an atomic batch one message at a time: when the end
        # falls inside a batch whose commit is not stored yet, the read ends before
        # that batch, so no reader sees part of one. A batch holds at most
        # ATOMIC_BATCH_MAX_MSGS messages, so only a chunk that reaches that close
        # to the end needs to look at the last message.
        if not checked and msgs[-1].seq > end - ATOMIC_BATCH_MAX_MSGS:
            checked = True
            tail = msgs[-1] if msgs[-1].seq == end else None
            if tail is None:
                try:
                    tail = await self._get_message(p, end)
                except NotFound:  # removed by retention meanwhile
                    tail = None
            if tail is not None:
                end = _committed_end(tail, end)
                msgs = [m for m in msgs if m.seq <= end]
        return msgs, end, checked

    def get(self, partition: int, offset: int) -> Record:
        """The record at ``offset``, read through the stream leader;
        OffsetOutOfRange outside [start_offset, end_offset)."""
        return self._run(self._aget(partition, offset))

    async def _aget(self, partition: int, offset: int) -> Record:
        p = self._partition(partition)
        offset = _validate.offset(offset)
        try:
            m = await self._get_message(p, offset + 1)
        except NotFound:
            start, end = await self._abounds(p)  # TopicNotFound when the stream is gone
            raise OffsetOutOfRange(f"offset {offset} outside [{start}, {end}) of "
                                   f"{self.name}/{p}") from None
        return self._record(p, m)

    def start_offset(self, partition: int) -> int:
        """First offset still held by ``partition`` (retention moves it)."""
        return self._bounds(self._partition(partition))[0]

    def end_offset(self, partition: int) -> int:
        """The offset the next append to ``partition`` gets."""
        return self._bounds(self._partition(partition))[1]

    def offset_for_time(self, partition: int, timestamp_ms: int) -> int:
        """Earliest offset whose timestamp is >= ``timestamp_ms``; end_offset if none.

        A binary search over the partition's sequences by the records'
        timestamps (one read through the leader per step): exact when
        timestamps do not decrease along the partition, as they do for
        appends that take the clock.
        """
        return self._run(self._aoffset_for_time(partition, timestamp_ms))

    async def _aoffset_for_time(self, partition: int, timestamp_ms: int) -> int:
        p = self._partition(partition)
        ts = _validate.timestamp(timestamp_ms)
        start, end = await self._abounds(p)
        lo, hi = start, end  # answer in [lo, hi]
        while lo < hi:
            mid = (lo + hi) // 2
            try:
                m = await self._get_message(p, mid + 1)
            except NotFound:  # removed by retention meanwhile: look later
                lo = mid + 1
                continue
            if _records.timestamp_of(m.headers, m.time_ns) >= ts:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def read_batch(self, partition: int, offset: int, max_records: int) -> RecordBatch:
        """Up to ``max_records`` records from ``offset`` as numpy columns."""
        p = self._partition(partition)
        offset = _validate.offset(offset)
        max_records = _validate.positive_int(max_records, "max_records", minimum=0)
        recs: list[Record] = []
        if max_records:
            start, end = self._bounds(p)
            recs = list(self._read(p, max(offset, start), end, max_records))
        return RecordBatch(self.name, p, _columns(recs))

    def watch(self) -> JetStreamWatch:
        """Wake-ups on appends to any partition of the topic (by any client)."""
        self._store._check()
        return JetStreamWatch(self._store._notifier_of(self), self._store)

    # ----------------------------------------------------------------- awaited
    # The coroutine twins of the calls above (``streamlog.api.AwaitableTopic``): the
    # same code, awaited on the loop of a store opened with ``JetStreamLog.open_async``.
    async def append_async(self, value: Any, key: Any = None, headers: Any = None,
                           timestamp_ms: int | None = None, msg_id: Any = None,
                           subject: str | None = None) -> Position:
        """``append``, awaited: the message is sent whole before the first await
        (Connection.publish_now), so a cancelled caller leaves no append half-done."""
        p, subj, value, wire, mid_text = self._prepare(value, key, headers, timestamp_ms,
                                                       msg_id, subject)
        conn = self._conn
        try:
            ack = await conn.publish_now(subj, value, wire, msg_id=mid_text)
        except (NoResponders, TimeoutError, JetStreamError) as e:
            # As in append: what _sending sends again is sent again, in a task of its
            # own (a cancelled caller leaves it whole); anything else raised as there.
            ack = await self._awaited(self._sending(
                p, lambda: conn.publish(subj, value, wire, msg_id=mid_text),
                idempotent=mid_text is not None, failed=e))
        if not ack.duplicate:
            self._appended()
        return _tuple_new(Position, (p, ack.seq - 1))

    async def append_many_async(self, values: Sequence, keys: Sequence | None = None,
                                headers: Sequence | None = None) -> list[Position]:
        """``append_many``, awaited."""
        return await self._awaited(self._aappend_many(values, keys, headers))

    async def append_batch_async(self, partition: int, batch: RecordBatch) -> int:
        """``append_batch``, awaited."""
        return await self._awaited(self._aappend_batch(partition, batch))

    async def append_delayed_async(self, value: Any, deliver_at_ms: int, key: Any = None,
                                   headers: Any = None) -> Position:
        """``append_delayed``, awaited."""
        self._store._check()
        return await self.append_async(
            value, key=key, headers=_validate.delayed_headers(headers, deliver_at_ms))

    async def read_async(self, partition: int, offset: int = 0,
                         limit: int | None = None) -> list[Record]:
        """``read``, awaited, as a list."""
        return await self._awaited(self._aread(partition, offset, limit))

    async def get_async(self, partition: int, offset: int) -> Record:
        """``get``, awaited."""
        return await self._awaited(self._aget(partition, offset))

    async def read_batch_async(self, partition: int, offset: int,
                               max_records: int) -> RecordBatch:
        """``read_batch``, awaited."""
        p = self._partition(partition)
        offset = _validate.offset(offset)
        max_records = _validate.positive_int(max_records, "max_records", minimum=0)
        recs: list[Record] = []
        if max_records:
            start, end = await self._awaited(self._abounds(p))
            recs = await self._awaited(self._aread_list(p, max(offset, start), end,
                                                        max_records))
        return RecordBatch(self.name, p, _columns(recs))

    async def start_offset_async(self, partition: int) -> int:
        """``start_offset``, awaited."""
        return (await self._awaited(self._abounds(self._partition(partition))))[0]

    async def end_offset_async(self, partition: int) -> int:
        """``end_offset``, awaited."""
        return (await self._awaited(self._abounds(self._partition(partition))))[1]

    async def offset_for_time_async(self, partition: int, timestamp_ms: int) -> int:
        """``offset_for_time``, awaited."""
        return await self._awaited(self._aoffset_for_time(partition, timestamp_ms))

    async def watch_async(self) -> JetStreamWatch:
        """``watch``, awaited (the first watch of a topic creates its consumers)."""
        self._store._check()
        return JetStreamWatch(await self._awaited(self._store._anotifier_of(self)), self._store)

    # ------------------------------------------------------------------ groups
    def group(self, name: str, mode: str = "shared", ack_wait_s: float = 30,
              max_deliver: int = 5, backoff_s: Sequence[float] | None = None,
              start: str = "earliest", dead_letter: str | None = None,
              consumer: str | None = None, subjects: Sequence[str] | None = None):
        """Create-or-open consumer group ``name`` and join it as one consumer.

        With ``subjects`` (NATS wildcards) each partition's consumer filters on
        the server (``filter_subjects``): only records appended with a matching
        ``subject`` are delivered, and lag counts only those."""
        return groups.open_group(self, name, mode=mode, ack_wait_s=ack_wait_s,
                                 max_deliver=max_deliver, backoff_s=backoff_s, start=start,
                                 dead_letter=dead_letter, consumer=consumer,
                                 subjects=subjects)

    def group_config(self, name: str) -> dict[str, Any] | None:
        """The stored options of group ``name``, or None when it does not exist."""
        return groups.group_config(self, name)

    def groups(self) -> list[str]:
        """Names of this topic's consumer groups, sorted."""
        return groups.list_groups(self)

    def delete_group(self, name: str, force: bool = True) -> None:
        """Delete a group's positions, leases and options (its dead-letter topic stays).

        With ``force=False`` it is refused (GroupActive, nothing deleted) while
        the group has live consumers, and a missing group is a StreamlogError;
        the default deletes whatever the group's state, and a missing group is
        not an error.
        """
        if force is True:
            groups.delete_group(self, name)
        elif force is False:
            groups.delete_group_checked(self, name, force=False)
        else:
            raise TypeError(f"force must be a bool, not {type(force).__name__}")

    def group_consumers(self, name: str) -> list[str]:
        """The live consumers of group ``name``: those whose heartbeat (written while they
        poll, at least every ``min(1 s, ack_wait_s / 4)``) is within ``ack_wait_s`` and one
        heartbeat interval, and that did not close. StreamlogError when there is no such
        group."""
        return groups.group_consumers(self, name)

    def reset_group(self, name: str, to: str | int | datetime.datetime,
                    dry_run: bool = False, force: bool = False) -> list[GroupReset]:
        """Move group ``name`` on every partition, as ``kafka-consumer-groups --reset-offsets``.

        ``to`` is ``"earliest"`` (the first retained record), ``"latest"`` (the
        end), an offset (clamped to each partition's [start, end]) or an aware
        ``datetime`` (the first record at or after it). Records before the new
        position count as done, those from it on are delivered (again), with
        fresh delivery counts; outstanding leases are dropped (each partition
        gets a new consumer generation at the new position). Returns a
        ``GroupReset`` per partition (old and new position); with ``dry_run``
        nothing changes. Refused (GroupActive, nothing changed) while the group
        has live consumers unless ``force``; a missing group is a StreamlogError.
        """
        return groups.reset_group(self, name, to, dry_run=dry_run, force=force)

    async def _arefresh(self) -> None:
        """Take the topic's stored options again (``alter_topic`` changed them): a grown
        partition count, a new record limit. Runs on the connection's loop."""
        st = await self._conn.stream_info(self._streams[0])
        config = _config_of(st.config, self.store_name, self.name)
        if config is None or config.get("uid") != self._config.get("uid"):
            return  # deleted, or another incarnation: the next call finds out
        grew = config["partitions"] > self.partitions
        self._take(config)
        if grew:
            await self._store._watch_more(self)

    def _look_again(self) -> None:
        """Ask the servers in the background (not holding up the caller) whether the
        topic's options changed; called at most every CONFIG_REFRESH_S by a handle in
        use, so every handle takes an ``alter_topic`` within about that time."""
        self._fresh_at = time.monotonic() + CONFIG_REFRESH_S

        async def look() -> None:
            try:
                await self._arefresh()
            except Exception:  # noqa: BLE001 - a later call looks again, or fails itself
                pass

        try:
            asyncio.run_coroutine_threadsafe(look(), self._conn.loop)
        except RuntimeError:
            pass  # the connection is closing

    def _take(self, config: dict) -> None:
        n = int(config["partitions"])
        self._config = config
        self._max_record = int(config["max_record_bytes"])
        self._dedupe = float(config["dedupe_window_s"]) > 0
        if n > self.partitions:
            self._streams = self._streams + [_naming.stream_name(self.store_name, self.name, p)
                                             for p in range(self.partitions, n)]
            self._subjects = self._subjects + [
                _naming.partition_subject(self.store_name, self.name, p)
                for p in range(self.partitions, n)]
            self.partitions = n


async def _reading(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Await ``make()`` (a read), asking again while the stream has no leader to answer
    (no responders, a timeout, a 503), for up to LEADERLESS_WAIT_S; reads change
    nothing, so asking again is always safe."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LEADERLESS_WAIT_S
    while True:
        try:
            return await make()
        except NotFound:
            raise
        except TimeoutError:
            if loop.time() >= deadline:
                raise
        except JetStreamError as e:
            if e.code != 503 or loop.time() >= deadline:
                raise
        await asyncio.sleep(LEADERLESS_RETRY_S)


async def _raise(e: BaseException) -> None:
    """Raise ``e`` inside a run on the connection (which translates what it means)."""
    raise e


async def _publish_share(conn: Connection, batch: list[OutMsg]) -> PubAck | BatchAck:
    """One partition's share of an append_many: a plain publish for one record, else
    one atomic batch."""
    if len(batch) == 1:
        m = batch[0]
        return await conn.publish(m.subject, m.payload, m.headers)
    return await conn.publish_batch(batch)


def _value(v: Any) -> bytes:
    """A record value: bytes-like (no tombstones on JetStream: compaction is not here)."""
    out = _validate.value(v, False)
    assert out is not None  # allow_none=False never returns None
    return out


def _committed_end(tail: StoredMsg, end: int) -> int:
    """``end`` (a stream's last sequence, whose message is ``tail``), moved before the
    first message of an atomic batch the server is still storing."""
    h = tail.headers
    if H_BATCH_ID in h and H_BATCH_COMMIT not in h:
        try:
            return end - int(h.get(H_BATCH_SEQ, "1"))
        except ValueError:
            return end
    return end


def _columns(recs: list[Record]) -> dict:
    n = len(recs)
    vlen = np.fromiter((len(r.value or b"") for r in recs), np.int64, n)
    klen = np.fromiter((len(r.key) if r.key is not None else 0 for r in recs), np.int64, n)
    voff = np.zeros(n + 1, np.int64)
    np.cumsum(vlen, out=voff[1:])
    koff = np.zeros(n + 1, np.int64)
    np.cumsum(klen, out=koff[1:])
    return {
        "offsets": np.fromiter((r.offset for r in recs), np.int64, n),
        "timestamps_ms": np.fromiter((r.timestamp_ms for r in recs), np.int64, n),
        "value_offsets": voff,
        "value_data": np.frombuffer(b"".join(r.value or b"" for r in recs), np.uint8).copy(),
        "value_null": np.zeros(n, np.bool_),
        "key_offsets": koff,
        "key_data": np.frombuffer(b"".join(r.key or b"" for r in recs), np.uint8).copy(),
        "key_null": np.fromiter((r.key is None for r in recs), np.bool_, n),
    }


# --------------------------------------------------------------------------- the store


class JetStreamLog(ViewMethods):
    """An open store on NATS JetStream (``streamlog.api.Store``). Thread-safe; share one
    per process.

    ``replicas`` (1-5) is the replication of every stream the store creates;
    ``durability`` is accepted and changes nothing on the wire (the servers'
    ``sync_interval`` decides, see docs/backends.md); ``read_only`` refuses
    every write with ReadOnlyStore; ``nats_options`` go to the NATS client.
    """

    def __init__(self, url: str, *, replicas: int = 1, durability: str = "interval",
                 read_only: bool = False, connect_timeout: float = CONNECT_TIMEOUT_S,
                 nats_options: Mapping[str, Any] | None = None,
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        parsed = parse_url(url)
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            raise TypeError(f"replicas must be an int, not {type(replicas).__name__}")
        if not 1 <= replicas <= 5:
            raise ValueError(f"replicas must be 1 to 5, not {replicas}")
        if not isinstance(durability, str):
            raise TypeError(f"durability must be a str, not {type(durability).__name__}")
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {', '.join(DURABILITY_MODES)}, "
                             f"not {durability!r}")
        if not isinstance(read_only, bool):
            raise TypeError(f"read_only must be a bool, not {type(read_only).__name__}")
        timeout_s = float(_validate.seconds(connect_timeout, "connect_timeout",
                                            allow_zero=False) or CONNECT_TIMEOUT_S)
        if nats_options is not None and not isinstance(nats_options, Mapping):
            raise TypeError(f"nats_options must be a mapping, not {type(nats_options).__name__}")
        self._nurl = parsed
        self.store_name = parsed.store
        self.replicas = replicas
        self.durability = durability
        self.read_only = read_only
        self._closed = False
        self._closers: list[Callable[[], None]] = []
        self._notifiers: dict[str, _Notifier] = {}
        self._event_logs: dict[str, JetStreamEventLog] = {}
        self._reply_boxes: dict[str, JetStreamReplyBox] = {}
        self._lock = threading.Lock()
        options = dict(nats_options or {})
        user_reconnected = options.get("reconnected_cb")

        async def reconnected() -> None:
            if user_reconnected is not None:
                await user_reconnected()
            # Not awaited here: the client waits for this callback before it goes on.
            asyncio.ensure_future(self._rewatch())

        options["reconnected_cb"] = reconnected
        self._conn = Connection(parsed, connect_timeout=timeout_s, nats_options=options,
                                loop=_loop)

    @classmethod
    async def open_async(cls, url: str, **options: Any) -> JetStreamLog:
        """Open a store bound to the running event loop: its connection runs on that loop
        (no thread of its own), so the ``*_async`` members of its topics, groups,
        messages, event logs and reply boxes await nats-py right there. The sync
        members work from other threads while the loop runs (never from the loop
        itself: they would wait for it)."""
        store = cls(url, _loop=asyncio.get_running_loop(), **options)
        await store._conn.connect_async()
        return store

    # ---------------------------------------------------------------- identity
    @property
    def url(self) -> str:
        """The store's URL (password or token shown as ``***``); readable after close."""
        return str(self._nurl)

    def __repr__(self) -> str:
        return f"<streamlog.JetStreamLog {self.url}{' (closed)' if self._closed else ''}>"

    # --------------------------------------------------------------- lifecycle
    def raise_if_closed(self) -> None:
        """StoreClosed if the store was closed."""
        if self._closed:
            raise StoreClosed("the store is closed")

    _check = raise_if_closed

    def awaitable_on_loop(self) -> bool:
        """True when the running event loop is this store's (``open_async``): the
        ``*_async`` members of its handles are awaited there. False otherwise: every
        call then waits for the network, so an asyncio caller runs it in a thread."""
        return self._conn.bound and self._conn.on_loop()

    def _check_writable(self, what: str) -> None:
        self._check()
        if self.read_only:
            raise ReadOnlyStore(f"{self.url} is open read-only: cannot {what}")

    def on_close(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` when the store closes, before its handles stop working."""
        self._closers.append(fn)

    _on_close = on_close

    def __enter__(self) -> JetStreamLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the store (idempotent): its watches stop, the connection closes, and
        every handle into it raises StoreClosed. Nothing on the server changes."""
        if self._closed:
            return
        for fn in reversed(self._closers):
            try:
                fn()
            except Exception:  # noqa: BLE001 - closing must reach every handle
                pass
        self._closers.clear()
        self._closed = True
        with self._lock:
            notifiers = list(self._notifiers.values())
            self._notifiers.clear()
        for n in notifiers:
            n.bump()  # waiters wake and find the store closed
        self._conn.close()  # the server drops the watches' consumers after a while

    # ------------------------------------------------------------------ topics
    def _read_config(self, name: str) -> dict | None:
        return self._conn.run(self._aread_config(name))

    async def _aread_config(self, name: str) -> dict | None:
        try:
            st = await self._conn.stream_info(_naming.stream_name(self.store_name, name, 0))
        except NotFound:
            return None
        return _config_of(st.config, self.store_name, name)

    def _stream_limits(self, cfg: dict) -> dict[str, Any]:
        mb, ma = cfg["retention"] or (None, None)
        window = float(cfg["dedupe_window_s"])
        return {"replicas": self.replicas,
                "max_bytes": -1 if mb is None else int(mb),
                "max_age_s": 0 if ma is None else float(ma),
                # Window 0: msg ids are not sent at all (the server's smallest is 100 ms).
                "duplicate_window_s": max(window, MIN_DEDUPE_WINDOW_S)}

    def _create(self, name: str, requested: dict) -> dict:
        """Create the topic's streams, partition 0 (which holds the options) last; or
        return the options of the topic someone else created meanwhile."""
        cfg: dict[str, Any] = {"partitions": DEFAULT_PARTITIONS, "retention": None,
               "segment_bytes": DEFAULT_SEGMENT_BYTES,
               "max_record_bytes": self._conn.max_payload,
               "dedupe_window_s": float(DEFAULT_DEDUPE_WINDOW_S), "compact": False,
               "created_ms": now_ms(), "uid": uuid.uuid4().hex}
        cfg.update(requested)
        max_age_s = (cfg.get("retention") or (None, None))[1]
        if "dedupe_window_s" not in requested and max_age_s is not None:
            cfg["dedupe_window_s"] = min(cfg["dedupe_window_s"], float(max_age_s))
        limits = self._stream_limits(cfg)
        store = self.store_name
        conn = self._conn
        for p in reversed(range(cfg["partitions"])):
            meta = _naming.stream_metadata(store, name, p)
            if p == 0:
                meta[META_CONFIG] = json.dumps(cfg, sort_keys=True)
            stream = _naming.stream_name(store, name, p)
            subjects = _naming.stream_subjects(store, name, p)
            for attempt in range(2):
                try:
                    conn.run(conn.ensure_stream(stream, subjects, metadata=meta, **limits))
                    break
                except JetStreamError as e:
                    if e.err_code != ERR_STREAM_NAME_IN_USE:
                        raise StreamlogError(f"{self.url}: cannot create topic {name!r}: "
                                             f"{e.description}") from None
                    existing = self._read_config(name)
                    if existing is not None:
                        return existing  # created meanwhile: the caller compares
                    if attempt or p == 0:
                        raise ConfigMismatch(f"topic {name!r} is being created with other "
                                             "options by another client") from None
                    # A partition left by a creation that never finished (no partition
                    # 0, so no topic): it holds nothing of a topic; replace it.
                    try:
                        conn.run(conn.delete_stream(stream))
                    except NotFound:
                        pass
        return cfg

    def topic(self, name: str, partitions: int | None = None, retention: Retention | None = None,
              segment_bytes: int | None = None, max_record_bytes: int | None = None,
              dedupe_window_s: float | None = None, compact: bool | None = None,
              serializer: Any = None, schema_version: int | str | None = None
              ) -> JetStreamTopic:
        """Create or open topic ``name``.

        None means the stored value of an existing topic, or the default for a
        new one (``max_record_bytes``: the server's ``max_payload``); a value
        that differs from the stored one raises ConfigMismatch and changes
        nothing. ``segment_bytes`` is stored and checked but shapes nothing on
        JetStream; ``compact=True`` is NotImplementedError. ``serializer`` and
        ``schema_version`` are options of the handle, as on the embedded store
        (docs/messages.md).
        """
        self._check()
        _validate.name(name, "topic name")
        if serializer is not None or schema_version is not None:
            from streamlog.views import _serde

            stamp = _serde.check(serializer, schema_version)
            raw = self.topic(name, partitions, retention, segment_bytes, max_record_bytes,
                             dedupe_window_s, compact)
            assert stamp is not None  # a serializer or a schema version was given
            return _serde.SerializedTopic(raw, stamp)  # type: ignore[return-value]
        requested: dict[str, Any] = {}
        if partitions is not None:
            requested["partitions"] = _validate.positive_int(partitions, "partitions", 1,
                                                             MAX_PARTITIONS)
        if retention is not None:
            limits = retention_limits(retention)
            if retention.max_age_s is not None and retention.max_age_s < MIN_MAX_AGE_S:
                raise ValueError(f"retention max_age_s={retention.max_age_s:g}: the shortest "
                                 f"max age on JetStream is {MIN_MAX_AGE_S:g} s")
            requested["retention"] = limits
        if segment_bytes is not None:
            requested["segment_bytes"] = _validate.positive_int(
                segment_bytes, "segment_bytes", MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES)
        if max_record_bytes is not None:
            mrb = _validate.positive_int(max_record_bytes, "max_record_bytes", 1)
            if mrb > self._conn.max_payload:
                raise ValueError(f"max_record_bytes={mrb} is larger than the server's "
                                 f"max_payload={self._conn.max_payload}: a NATS message "
                                 "cannot hold such a record")
            requested["max_record_bytes"] = mrb
        if dedupe_window_s is not None:
            window = _validate.seconds(dedupe_window_s, "dedupe_window_s")
            if window is not None and 0 < window < MIN_DEDUPE_WINDOW_S:
                raise ValueError(f"dedupe_window_s={window:g}: the shortest dedupe window on "
                                 f"JetStream is {MIN_DEDUPE_WINDOW_S:g} s (0 turns dedupe off)")
            requested["dedupe_window_s"] = window
        if compact is not None:
            if not isinstance(compact, bool):
                raise TypeError("compact must be a bool")
            if compact:
                raise NotImplementedError(f"compacted topics are not available on {BACKEND} "
                                          "yet (compact=True)")
            requested["compact"] = False
        _validate.dedupe_within_retention(requested.get("dedupe_window_s"),
                                          requested.get("retention"))
        config = self._read_config(name)
        if config is None:
            self._check_writable(f"create topic {name!r}")
            config = self._create(name, requested)
        diffs = [f"{k}={v!r} (stored: {config.get(k)!r})" for k, v in requested.items()
                 if config.get(k) != v]
        if diffs:
            raise ConfigMismatch(f"topic {name!r} exists with other options: {', '.join(diffs)}")
        if "dedupe_window_s" in requested:
            _validate.dedupe_within_retention(config.get("dedupe_window_s"),
                                              config.get("retention"))
        return JetStreamTopic(self, name, config)

    def existing_topic(self, name: str) -> JetStreamTopic:
        """Open a topic that must exist (TopicNotFound otherwise)."""
        self._check()
        _validate.name(name, "topic name")
        config = self._read_config(name)
        if config is None:
            raise TopicNotFound(f"topic {name!r} does not exist in {self.url}")
        return JetStreamTopic(self, name, config)

    def _streams(self) -> list[dict]:
        """Stream infos (config and state) of every stream of this store."""
        out: list[dict] = []
        subject = _naming.store_subjects(self.store_name)
        while True:
            resp = self._conn.run(self._conn.api("STREAM.LIST",
                                                 {"subject": subject, "offset": len(out)}))
            page = resp.get("streams") or []
            out.extend(page)
            if not page or len(out) >= resp.get("total", 0):
                return out

    def topics(self) -> list[str]:
        """Names of every topic of this store (and no other store's), sorted."""
        self._check()
        names = []
        for info in self._streams():
            meta = info["config"].get("metadata") or {}
            if meta.get(_naming.META_STORE) == self.store_name and \
                    meta.get(_naming.META_PARTITION) == "0" and META_CONFIG in meta:
                names.append(meta[_naming.META_TOPIC])
        return sorted(names)

    def delete_topic(self, name: str) -> None:
        """Delete a topic: its groups, then its streams (partition 0, which makes it
        a topic, last). TopicNotFound if missing. Only this store's streams are touched."""
        self._check_writable(f"delete topic {name!r}")
        _validate.name(name, "topic name")
        config = self._read_config(name)
        if config is None:
            raise TopicNotFound(f"topic {name!r} does not exist in {self.url}")
        t = JetStreamTopic(self, name, config)
        for g in groups.list_groups(t):
            groups.delete_group(t, g)
        for p in reversed(range(t.partitions)):
            try:
                self._conn.run(self._conn.delete_stream(t.stream_name(p)))
            except NotFound:
                if p == 0:
                    raise TopicNotFound(f"topic {name!r} does not exist in {self.url}") \
                        from None
        with self._lock:
            n = self._notifiers.pop(name, None)
            self._reply_boxes.pop(name, None)
            self._event_logs.pop(name, None)
        if n is not None:
            n.bump()

    def alter_topic(self, name: str, retention: Retention | None = None,
                    dedupe_window_s: float | None = None, max_record_bytes: int | None = None,
                    partitions: int | None = None) -> JetStreamTopic:
        """Change a topic's stored options; returns a handle with the new ones.

        None leaves an option as it is; ``Retention(None, None)`` removes the
        retention limits. Every argument is checked before anything is written
        (TypeError/ValueError, TopicNotFound); giving nothing to change is a
        ValueError. Retention and the dedupe window are the streams' own
        ``max_bytes``, ``max_age`` and ``duplicate_window``: the servers apply
        them at once, for every client. ``max_record_bytes`` (at most the
        server's ``max_payload``) and a grown partition count are taken by
        handles opened after the change, and by a consumer group's handles
        within a second (they re-read their group's state that often).

        ``partitions`` only grows: the new partitions are new streams. As in
        Kafka, keys then map anew (``murmur2(key) % partitions``), so per-key
        order holds only among records appended after the change; every
        consumer group starts each new partition at offset 0. An event store's
        topic keeps one partition and every record: such a change is refused.
        """
        self._check_writable(f"alter topic {name!r}")
        _validate.name(name, "topic name")
        changes: dict[str, Any] = {}
        if retention is not None:
            mb, ma = retention_limits(retention)
            if ma is not None and ma < MIN_MAX_AGE_S:
                raise ValueError(f"retention max_age_s={ma:g}: the shortest max age on "
                                 f"JetStream is {MIN_MAX_AGE_S:g} s")
            changes["retention"] = None if mb is None and ma is None else [mb, ma]
        if dedupe_window_s is not None:
            window = _validate.seconds(dedupe_window_s, "dedupe_window_s")
            if window is not None and 0 < window < MIN_DEDUPE_WINDOW_S:
                raise ValueError(f"dedupe_window_s={window:g}: the shortest dedupe window on "
                                 f"JetStream is {MIN_DEDUPE_WINDOW_S:g} s (0 turns dedupe off)")
            changes["dedupe_window_s"] = float(window or 0)
        if max_record_bytes is not None:
            mrb = _validate.positive_int(max_record_bytes, "max_record_bytes", 1)
            if mrb > self._conn.max_payload:
                raise ValueError(f"max_record_bytes={mrb} is larger than the server's "
                                 f"max_payload={self._conn.max_payload}: a NATS message "
                                 "cannot hold such a record")
            changes["max_record_bytes"] = mrb
        if partitions is not None:
            changes["partitions"] = _validate.positive_int(partitions, "partitions", 1,
                                                           MAX_PARTITIONS)
        if not changes:
            raise ValueError("nothing to alter: give retention, dedupe_window_s, "
                             "max_record_bytes or partitions")
        config = self._read_config(name)
        if config is None:
            raise TopicNotFound(f"topic {name!r} does not exist in {self.url}")
        # One change at a time: each alter claims the next generation of the options in
        # the group bucket (compare-and-set) before it touches the servers, built on the
        # newest claim, so two alters at once both land (the later on top of the earlier)
        # and an alter that died half-way is finished by the next one.
        try:
            first = self._conn.run(self._conn.stream_info(_naming.stream_name(
                self.store_name, name, 0)))
        except NotFound:
            raise TopicNotFound(f"topic {name!r} was deleted meanwhile") from None
        kv = groups._kv(JetStreamTopic(self, name, config),
                        int(first.config.get("num_replicas") or 1))
        key = f"{_naming.encode_token(name)}.alter"
        while True:
            claim, rev = self._conn.run(kv.get(key))
            base = _newer(config, (claim or {}).get("config"))
            new = self._altered(name, base, changes)
            if self._conn.run(kv.cas(key, {"config": new}, rev)):
                break
            config = self._read_config(name)
            if config is None:
                raise TopicNotFound(f"topic {name!r} was deleted meanwhile")
        old_n = config["partitions"]
        while True:
            self._apply_config(name, old_n, new)
            claim, _ = self._conn.run(kv.get(key))
            latest = _newer(new, (claim or {}).get("config"))
            if latest is new:
                break
            new = latest  # a later alter claimed meanwhile: its options must be the stored ones
        if new["partitions"] > old_n:
            _logger.warning("topic %r grew from %d to %d partitions: keys map to partitions "
                            "anew (murmur2(key) %% %d), so a key's later records may go to "
                            "another partition than its earlier ones and per-key order holds "
                            "only from now on; every group starts the new partitions at "
                            "offset 0", name, old_n, new["partitions"], new["partitions"])
        out = JetStreamTopic(self, name, new)
        if new["partitions"] > old_n:
            self._conn.run(self._watch_more(out))
        return out

    def _altered(self, name: str, config: dict, changes: dict) -> dict:
        """``config`` with ``changes`` applied and the next generation, or the reason it
        cannot be (ValueError)."""
        new = dict(config)
        new.update(changes)
        if new["partitions"] < config["partitions"]:
            raise ValueError(f"topic {name!r} has {config['partitions']} partitions: they only "
                             f"grow, not to {new['partitions']} (records and group positions "
                             "live in the partitions that exist)")
        max_age_s = (new.get("retention") or (None, None))[1]
        if "dedupe_window_s" not in changes and max_age_s is not None and \
                new.get("dedupe_window_s") and new["dedupe_window_s"] > max_age_s:
            # As at creation: a window left as it was follows a retention that got shorter.
            new["dedupe_window_s"] = float(max_age_s)
        _validate.dedupe_within_retention(new.get("dedupe_window_s"), new.get("retention"))
        if new["partitions"] != config["partitions"] or changes.get("retention"):
            if self._is_event_store(name, config):
                what = "partitions" if new["partitions"] != config["partitions"] else "retention"
                raise ValueError(f"topic {name!r} is the event store {name!r}: it keeps one "
                                 f"partition and every record, so its {what} cannot change")
        new["generation"] = int(config.get("generation", 0)) + 1
        return new

    def _apply_config(self, name: str, old_n: int, new: dict) -> None:
        """Make the servers hold options ``new`` (idempotent): the new partitions' streams
        and the other partitions' limits first, then every group's consumers of the
        partitions past ``old_n``, and partition 0's stream last: its metadata holds the
        options, so the topic grows only once all of it exists."""
        limits = self._stream_limits(new)
        try:  # new partitions are replicated as the topic's first one, whatever this handle's
            first = self._conn.run(self._conn.stream_info(_naming.stream_name(
                self.store_name, name, 0)))
            limits["replicas"] = int(first.config.get("num_replicas") or limits["replicas"])
        except NotFound:
            raise TopicNotFound(f"topic {name!r} was deleted meanwhile") from None
        n = new["partitions"]
        for p in range(n - 1, 0, -1):
            self._conn.run(self._put_stream(name, p, limits, None))
        if n > old_n:
            self._conn.run(groups.grow_groups(JetStreamTopic(self, name, new), old_n))
        now = self._read_config(name)
        if now is None or now.get("uid") != new.get("uid"):
            raise TopicNotFound(f"topic {name!r} was deleted meanwhile")
        self._conn.run(self._put_stream(name, 0, limits, json.dumps(new, sort_keys=True)))

    async def _watch_more(self, topic: JetStreamTopic) -> None:
        """The topic grew: this store's watch of it (if any) covers the new partitions
        too, and its waiters look again."""
        n = self._notifiers.get(topic.name)
        if n is None:
            return
        conn = self._conn

        async def on_msg(_msg) -> None:
            n.bump()

        while len(n.consumers) < topic.partitions:
            p = len(n.consumers)
            inbox = conn.nc.new_inbox()
            n.subs.append(await conn.nc.subscribe(inbox, cb=on_msg))
            stream = topic.stream_name(p)
            n.consumers.append([stream, inbox, await _watch_consumer(conn, stream, inbox)])
        n.bump()

    async def _put_stream(self, name: str, p: int, limits: dict[str, Any],
                          config_json: str | None) -> None:
        """Create partition ``p``'s stream with ``limits``, or update an existing one to
        them (and, for partition 0, to the options ``config_json``)."""
        stream = _naming.stream_name(self.store_name, name, p)
        meta = _naming.stream_metadata(self.store_name, name, p)
        if config_json is not None:
            meta[META_CONFIG] = config_json
        while True:
            try:
                cur = (await self._conn.stream_info(stream)).config
                break
            except NotFound:
                subjects = _naming.stream_subjects(self.store_name, name, p)
                try:
                    await self._conn.ensure_stream(stream, subjects, metadata=meta, **limits)
                    return
                except JetStreamError as e:
                    if e.err_code != ERR_STREAM_NAME_IN_USE:
                        raise
                    # another alter created it meanwhile, with its limits: update it
        cfg = dict(cur)
        cfg.update({"max_bytes": limits["max_bytes"],
                    "max_age": int(limits["max_age_s"] * _NS),
                    "duplicate_window": int(limits["duplicate_window_s"] * _NS)})
        cfg["metadata"] = {**(cur.get("metadata") or {}), **meta}
        await self._conn.api(f"STREAM.UPDATE.{stream}", cfg)

    def _is_event_store(self, name: str, config: dict) -> bool:
        """Whether topic ``name`` holds an event store's events (its first record carries
        the event headers): one partition, every record kept."""
        if config["partitions"] != 1:
            return False
        t = JetStreamTopic(self, name, config)
        start = t.start_offset(0)
        if start >= t.end_offset(0):
            return False
        return STREAM_HEADER in t.get(0, start).headers

    # ----------------------------------------------------------------- watches
    def _notifier_of(self, topic: JetStreamTopic) -> _Notifier:
        with self._lock:
            n = self._notifiers.get(topic.name)
        if n is not None:
            return n
        return topic._run(self._anotifier_of(topic))

    async def _anotifier_of(self, topic: JetStreamTopic) -> _Notifier:
        """The topic's notifier, made (with its consumers) on first use. Two callers that
        make one at once both subscribe; the first to finish is kept, the other's
        subscriptions are dropped (its consumers expire with nobody listening)."""
        with self._lock:
            n = self._notifiers.get(topic.name)
        if n is not None:
            return n
        n = _Notifier()
        conn = self._conn

        async def on_msg(_msg) -> None:
            n.bump()

        for p in range(topic.partitions):
            inbox = conn.nc.new_inbox()
            n.subs.append(await conn.nc.subscribe(inbox, cb=on_msg))
            stream = topic.stream_name(p)
            n.consumers.append([stream, inbox, await _watch_consumer(conn, stream, inbox)])
        with self._lock:
            kept = self._notifiers.setdefault(topic.name, n)
        if kept is not n:
            for sub in n.subs:
                await sub.unsubscribe()
        return kept

    async def _rewatch(self) -> None:
        """After a reconnect: create again every watch consumer the server no longer has
        (a restarted server forgets them), then wake every waiter to look again."""
        conn = self._conn
        for _attempt in range(40):  # a restarted server needs a moment for JetStream
            missing = False
            for n in list(self._notifiers.values()):
                for entry in n.consumers:
                    stream, inbox, name = entry
                    try:
                        await conn.consumer_info(stream, name)
                    except NotFound:
                        try:
                            entry[2] = await _watch_consumer(conn, stream, inbox)
                        except NotFound:
                            pass  # the topic is gone: nothing to watch
                        except (JetStreamError, TimeoutError):
                            missing = True
                    except (JetStreamError, TimeoutError):
                        missing = True
                n.bump()
            if not missing or self._closed:
                return
            await asyncio.sleep(0.25)

    # -------------------------------------------------------------- operations
    def stats(self) -> dict:
        """Figures per topic and partition (offsets, records, bytes) and per consumer group
        (lag, leases, dead letters, oldest unacknowledged record) from the servers."""
        self._check()
        out: dict[str, Any] = {"url": self.url, "path": self.url, "topics": {}, "groups": {}}
        for info in self._streams():
            meta = info["config"].get("metadata") or {}
            if meta.get(_naming.META_STORE) != self.store_name:
                continue
            topic = meta.get(_naming.META_TOPIC)
            st = info.get("state", {})
            entry = out["topics"].setdefault(topic, {"partitions": [], "config": None})
            if META_CONFIG in meta:
                entry["config"] = json.loads(meta[META_CONFIG])
            end = st.get("last_seq", 0)
            start = st.get("first_seq", 1) - 1 if st.get("messages") else end
            entry["partitions"].append({
                "partition": int(meta.get(_naming.META_PARTITION, 0)),
                "stream": info["config"]["name"], "start_offset": start, "end_offset": end,
                "records": end - start, "bytes": st.get("bytes", 0),
                "replicas": info["config"].get("num_replicas", 1),
                "leader": (info.get("cluster") or {}).get("leader")})
        for name in list(out["topics"]):
            entry = out["topics"][name]
            if entry["config"] is None:  # a creation or deletion under way: not a topic
                del out["topics"][name]
                continue
            # Streams past the topic's partitions are left by a creator that lost a
            # race with other options: no part of the topic.
            entry["partitions"] = sorted(
                (x for x in entry["partitions"] if x["partition"] < entry["config"]["partitions"]),
                key=lambda x: x["partition"])
        self._conn.run(self._add_append_rates(out))
        self._add_group_figures(out)
        return out

    async def _add_append_rates(self, out: dict) -> None:
        """``append_rate_per_s`` per partition and topic: the records the servers stored
        in the last RATE_WINDOW_S seconds, divided by it (one lookup by time per
        partition: the first message stored since then); None where it cannot be read."""
        since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=RATE_WINDOW_S)
        stamp = since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        async def rate(part: dict) -> None:
            if part["records"] == 0:
                part["append_rate_per_s"] = 0.0
                return
            try:
                resp = await self._conn.api(f"STREAM.MSG.GET.{part['stream']}",
                                            {"start_time": stamp})
                first = int(resp["message"]["seq"]) - 1
                part["append_rate_per_s"] = max(0, part["end_offset"] - first) / RATE_WINDOW_S
            except NotFound:  # nothing stored since then
                part["append_rate_per_s"] = 0.0
            except (JetStreamError, TimeoutError, KeyError, ValueError):
                part["append_rate_per_s"] = None

        parts = [p for e in out["topics"].values() for p in e["partitions"]]
        await asyncio.gather(*(rate(p) for p in parts))
        for entry in out["topics"].values():
            rates = [p["append_rate_per_s"] for p in entry["partitions"]]
            entry["append_rate_per_s"] = sum(r for r in rates if r is not None)

    def _add_group_figures(self, out: dict) -> None:
        """``out["groups"][topic][group]``: each group's figures, in the embedded store's
        shape (``groups.group_figures``); a topic deleted meanwhile is left out."""
        for name, entry in sorted(out["topics"].items()):
            try:
                figures = groups.group_figures(JetStreamTopic(self, name, entry["config"]))
            except (NotFound, TopicNotFound):
                continue
            if figures:
                out["groups"][name] = figures

    def verify(self, progress: Callable[[int, int], None] | None = None) -> list[Problem]:
        """Check, on the servers, that every topic's streams are whole and dense. [] when
        healthy.

        Per partition: the stream exists with the metadata naming its store,
        topic and partition; it owns exactly its subjects; message deletes
        are denied and atomic batches allowed; and its sequences have no
        hole (``messages = last_seq - first_seq + 1``, no deleted message),
        which is what keeps offsets dense. Record contents are the servers'
        to check (their own checksums); ``progress(done, total)`` is called
        per topic.
        """
        self._check()
        names = self.topics()
        problems: list[Problem] = []
        for i, name in enumerate(names):
            config = self._read_config(name)
            if config is None:
                continue
            for p in range(config["partitions"]):
                stream = _naming.stream_name(self.store_name, name, p)
                for reason in self._check_stream(name, p, stream):
                    problems.append(Problem(stream, 0, reason, name, p, "corrupt"))
            if progress is not None:
                progress(i + 1, len(names))
        return problems

    def _check_stream(self, name: str, p: int, stream: str) -> list[str]:
        try:
            resp = self._conn.run(self._conn.api(f"STREAM.INFO.{stream}"))
        except NotFound:
            return [f"stream {stream} of partition {p} is missing"]
        cfg, st = resp["config"], resp.get("state", {})
        out = []
        meta = cfg.get("metadata") or {}
        want = _naming.stream_metadata(self.store_name, name, p)
        if any(meta.get(k) != v for k, v in want.items()):
            out.append(f"stream metadata {({k: meta.get(k) for k in want})} does not name "
                       f"store {self.store_name!r}, topic {name!r}, partition {p}")
        if sorted(cfg.get("subjects") or []) != sorted(
                _naming.stream_subjects(self.store_name, name, p)):
            out.append(f"stream subjects {cfg.get('subjects')} are not the partition's")
        if not cfg.get("deny_delete") or not cfg.get("allow_atomic"):
            out.append("stream allows message deletes or refuses atomic batches")
        msgs, first, last = st.get("messages", 0), st.get("first_seq", 0), st.get("last_seq", 0)
        if st.get("num_deleted") or (msgs and msgs != last - first + 1):
            out.append(f"sequences {first}..{last} hold {msgs} messages "
                       f"({st.get('num_deleted', 0)} deleted): offsets are not dense")
        return out

    # ---------------------------------- views (queue, pubsub, rpc, event_store: ViewMethods)
    def compact(self, topic: str, progress=None):
        """Compaction: not on this backend yet (compacted topics cannot be created here)."""
        self._check()
        raise NotImplementedError(f"compaction is not available on {BACKEND} yet")

    def table(self, name: str):
        """Tables over compacted topics: not on this backend yet."""
        self._check()
        raise NotImplementedError(f"tables are not available on {BACKEND} yet")

    def event_log(self, name: str) -> JetStreamEventLog:
        """The event log behind event store ``name`` (its single-partition topic
        ``name``), one per name and handle (see ``eventlog``)."""
        self._check()
        with self._lock:
            log = self._event_logs.get(name)
        if log is None:
            log = JetStreamEventLog(self, name)
            with self._lock:
                log = self._event_logs.setdefault(name, log)
        return log

    def tracking_log(self, name: str) -> JetStreamTrackingLog:
        """Tracking records of application ``name`` (in the event log ``<name>.events``)."""
        self._check()
        return JetStreamTrackingLog(self, name)

    def reply_box(self, name: str) -> JetStreamReplyBox:
        """The reply box of reply topic ``name`` (see ``replybox``), one per name and
        handle: its reply consumer and wake-ups are shared by every requester here."""
        self._check()
        with self._lock:
            box = self._reply_boxes.get(name)
        if box is None:
            n = _Notifier()
            box = JetStreamReplyBox(self, name, JetStreamWatch(n, self), n.bump)
            with self._lock:
                box = self._reply_boxes.setdefault(name, box)
        return box


async def _watch_consumer(conn: Connection, stream: str, inbox: str) -> str:
    """Create a watch's consumer on ``stream`` delivering to ``inbox``; its name."""
    resp = await conn.api(f"CONSUMER.CREATE.{stream}", {
        "stream_name": stream,
        "config": {"deliver_subject": inbox, "deliver_policy": "new",
                   "ack_policy": "none", "headers_only": True,
                   "mem_storage": True, "num_replicas": 1,
                   "inactive_threshold": int(WATCH_INACTIVE_S * _NS)}})
    return str(resp["name"])


def _newer(config: dict, claimed: dict | None) -> dict:
    """The newer of a topic's stored options and those an alter claimed (same
    incarnation, a later generation), for the next alter to build on."""
    if claimed is not None and claimed.get("uid") == config.get("uid") and \
            int(claimed.get("generation", 0)) > int(config.get("generation", 0)):
        return claimed
    return config


def _config_of(stream_config: Mapping[str, Any], store: str, topic: str) -> dict | None:
    """The topic options kept in partition 0's stream metadata (None: not a topic of
    this store)."""
    meta = stream_config.get("metadata") or {}
    raw = meta.get(META_CONFIG)
    if raw is None or meta.get(_naming.META_STORE) != store or \
            meta.get(_naming.META_TOPIC) != topic:
        return None
    return json.loads(raw)


def open_store(url: str, **options: Any) -> JetStreamLog:
    """Open the store named by a ``nats://`` or ``tls://`` URL (``streamlog.open``).

    Options: ``replicas`` (1-5), ``durability``, ``read_only``,
    ``connect_timeout`` (seconds), ``nats_options``. A malformed URL is a
    ValueError; a server that cannot be reached, lacks JetStream or is too old
    is a StreamlogError naming the URL; nothing is created on open.
    """
    return JetStreamLog(url, **options)
