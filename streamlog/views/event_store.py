"""The event store view: versioned event streams with expected-version appends.

``log.event_store("bank")`` keeps every stream of the store in one commit
order: an event's *position* is dense from 0 across the store, and a
stream's versions are dense from 0. On the embedded store the events are
the records of the single-partition topic named like the store (``bank``);
each record's headers carry its stream id (``es-stream``) and its version
in the stream (``es-version``, decimal); user headers ride beside them
(names starting with ``es-`` are reserved).

One ``append`` is one commit of the store's event log: all events of a call
or none, contiguous positions, and of two appenders racing on the same
expected version (threads or processes) exactly one wins. Reads of a stream
use the event log's stream index: no scan of the log.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from streamlog import _tracing, _validate
from streamlog._limits import (
    EVENT_STREAM_ID_MAX_BYTES,
    EVENT_SUBSCRIBE_BATCH_RECORDS,
    VIEW_POLL_S,
)
from streamlog.api import (
    ANY,
    NO_STREAM,
    EncodedHeaders,
    Event,
    EventLog,
    NewEventFields,
    Store,
)
from streamlog.errors import ConfigMismatch, StoreClosed, StreamlogError
from streamlog.views import _serde

__all__ = ["EventStore", "Subscription", "Event", "ANY", "NO_STREAM"]

RESERVED_HEADER_PREFIX = "es-"

def _stream_id(value: Any) -> tuple[str, bytes]:
    """A stream id: a non-empty str of at most EVENT_STREAM_ID_MAX_BYTES UTF-8 bytes."""
    if not isinstance(value, str):
        raise TypeError(f"stream_id must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError("stream_id must not be empty")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"stream_id {value[:40]!r} is not valid Unicode: {e}") from None
    if len(raw) > EVENT_STREAM_ID_MAX_BYTES:
        raise ValueError(f"stream_id {value[:40]!r}... is {len(raw)} bytes long (UTF-8); at "
                         f"most {EVENT_STREAM_ID_MAX_BYTES} are allowed")
    return value, raw


def _int_arg(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, not {value}")
    return int(value)


def _expected_version(value: Any) -> int:
    if type(value) is int and value >= ANY:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected_version must be an int (a version, NO_STREAM or ANY), "
                        f"not {type(value).__name__}")
    if value < ANY:
        raise ValueError(f"expected_version must be a version >= 0, NO_STREAM (-1) or ANY "
                         f"(-2), not {value}")
    return int(value)


def _user_headers(h: Any) -> EncodedHeaders | None:
    """An event's headers, encoded; names starting with ``es-`` are reserved."""
    if type(h) is dict:  # the common case, checked inline (it is per event)
        out = []
        for name, value in h.items():
            if type(name) is not str or len(name) > 16384:
                break
            if type(value) is bytes:
                pass
            elif type(value) is str:
                value = value.encode("utf-8")
            else:
                break
            if name.startswith(RESERVED_HEADER_PREFIX):
                raise ValueError(f"header name {name!r} is reserved: names starting with "
                                 f"{RESERVED_HEADER_PREFIX!r} belong to the event store")
            out.append((name.encode("utf-8"), value))
        else:
            return out or None
    hdrs = _validate.headers(h)
    if not hdrs:
        return None
    for name, _ in hdrs:
        if name.startswith(b"es-"):
            raise ValueError(f"header name {name.decode()!r} is reserved: names starting with "
                             f"{RESERVED_HEADER_PREFIX!r} belong to the event store")
    return hdrs


def _value(v: Any) -> bytes:
    """An event value: bytes-like, not None (TypeError otherwise)."""
    if v is None:
        raise TypeError("value must be bytes-like, not None")
    out = _validate.value(v, False)
    assert out is not None
    return out


def _events(events: Any, sid: str, sid_b: bytes) -> list[NewEventFields]:
    """The events of one append to stream ``sid``: bytes-like values or (value,
    headers) pairs, as NewEvent fields (plain tuples: this is per event)."""
    if type(events) is not list and type(events) is not tuple and (
            isinstance(events, str | bytes | bytearray | memoryview | Mapping)
            or not isinstance(events, Iterable)):
        raise TypeError("events must be a list of bytes-like values or (value, headers) pairs, "
                        f"not {type(events).__name__}")
    out: list[NewEventFields] = []
    append = out.append
    last_h: Any = None  # one headers object shared by many events: check it once
    last_enc: EncodedHeaders | None = None
    for ev in events:
        t = type(ev)
        if t is bytes:
            append((sid, sid_b, ev, None))
        elif t is tuple or t is list or isinstance(ev, tuple | list):
            if len(ev) != 2:
                raise TypeError(f"an event pair must be (value, headers), not a "
                                f"{len(ev)}-item {type(ev).__name__}")
            value, headers = ev
            if type(value) is not bytes:
                value = _value(value)
            if headers is None:
                append((sid, sid_b, value, None))
            elif headers is last_h:
                append((sid, sid_b, value, last_enc))
            else:
                last_h, last_enc = headers, _user_headers(headers)
                append((sid, sid_b, value, last_enc))
        else:
            append((sid, sid_b, _value(ev), None))
    if not out:
        raise ValueError("events must not be empty: an append writes at least one event")
    return out


def _traced_events(events: list[Any] | tuple[Any, ...]) -> list[Any]:
    """The events with the current trace context added to each one's headers."""
    ctx = _tracing.inject(None)
    out: list[Any] = []
    for ev in events:
        if isinstance(ev, tuple | list):
            if len(ev) == 2 and (ev[1] is None or isinstance(ev[1], Mapping)):
                out.append((ev[0], {**ev[1], **ctx} if ev[1] else ctx))
            else:
                out.append(ev)  # malformed: _events says why
        else:
            out.append((ev, ctx))
    return out


def _stamped(stamp: _serde.Stamp, events: Any) -> list[Any]:
    """The events of an append by a handle with a serializer, encoded: a value, or a
    ``(value, headers)`` tuple (only a tuple: a list is a value), each with the
    handle's ``content-type`` / ``schema-version`` headers."""
    if isinstance(events, str | bytes | bytearray | memoryview | Mapping) or \
            not isinstance(events, Iterable):
        raise TypeError("events must be a list of values or (value, headers) tuples, "
                        f"not {type(events).__name__}")
    out: list[Any] = []
    for ev in events:
        if type(ev) is tuple:
            if len(ev) != 2:
                raise TypeError(f"an event pair must be (value, headers), not a "
                                f"{len(ev)}-item tuple")
            value, headers = ev
        else:
            value, headers = ev, None
        if value is None:
            raise TypeError("an event's value must not be None")
        out.append((stamp.value(value), stamp.headers(headers)))
    return out


class EventStore:
    """An event-sourcing view: streams of versioned events in one commit order.

    Thread-safe: a handle may be shared by threads; any number of processes may
    append to and read the same store at once.
    """

    def __init__(self, log: Store, name: str, serializer: Any = None,
                 schema_version: int | str | None = None) -> None:
        _validate.name(name, "event store name")
        self._stamp = _serde.check(serializer, schema_version)
        topic = log.topic(name, partitions=1)
        cfg = topic.config
        retention = cfg.get("retention") or (None, None)
        if cfg.get("compact") or any(x is not None for x in retention):
            raise ConfigMismatch(f"topic {name!r} has retention or compaction; the event store "
                                 f"{name!r} needs a topic that keeps every event")
        self._log = log
        self.name = name
        self._events: EventLog = log.event_log(name)

    def __repr__(self) -> str:
        return f"EventStore({self.name!r})"

    # ---------------------------------------------------------------- append
    def append(self, stream_id: str, events: Any, expected_version: int = ANY) -> int:
        """Append ``events`` to stream ``stream_id``; returns the stream's new last version.

        ``events`` is a non-empty list of bytes-like values or ``(value, headers)``
        pairs (with a serializer: values it encodes, or ``(value, headers)``
        tuples; a list is then a value, not a pair). ``expected_version`` is
        the version of the stream's last event,
        NO_STREAM for a stream that must not exist yet, or ANY. All events of
        the call are written (one batch, contiguous positions and versions) or
        none: WrongExpectedVersion(expected, actual) when the check fails.
        Bad input raises TypeError/ValueError/RecordTooLarge before any write.
        """
        self._log.raise_if_closed()
        sid, sid_b = _stream_id(stream_id)
        expected = _expected_version(expected_version)
        if self._stamp is not None:
            events = _stamped(self._stamp, events)
        tracer = _tracing.tracer()
        if tracer is not None and type(events) in (list, tuple):
            # One producer span per commit; every event carries its context.
            with _tracing.producer_span(tracer, self.name, len(events)):
                items = _events(_traced_events(events), sid, sid_b)
                return self._events.commit(items, {sid: expected})[1][sid]
        items = _events(events, sid, sid_b)
        return self._events.commit(items, {sid: expected})[1][sid]

    def _decoded(self, events: list[Event]) -> list[Event]:
        """``events`` with values decoded by the handle's serializer (if it has one)."""
        stamp = self._stamp
        if stamp is None or stamp.codec is None:
            return events
        return [e._replace(value=stamp.decode(e.value, self.name, 0, e.position))
                for e in events]

    # ------------------------------------------------------------------ read
    def read(self, stream_id: str, from_version: int = 0, limit: int | None = None,
             backwards: bool = False) -> list[Event]:
        """Events of one stream with version >= ``from_version``, oldest first.

        ``limit`` caps how many; ``backwards=True`` returns the same events
        newest first, so ``limit`` keeps the newest (``read(s, backwards=True,
        limit=1)`` is the last event). [] for an unknown stream. Uses the
        stream index: no scan of the log.
        """
        self._log.raise_if_closed()
        sid, _ = _stream_id(stream_id)
        lo = _int_arg(from_version, "from_version", 0)
        if limit is not None:
            limit = _int_arg(limit, "limit", 0)
        if not isinstance(backwards, bool):
            raise TypeError(f"backwards must be a bool, not {type(backwards).__name__}")
        events = self._events.stream_events(sid, lo, None, limit, backwards)
        if backwards:
            events.reverse()
        return self._decoded(events)

    def last_version(self, stream_id: str) -> int:
        """The version of the stream's last event, NO_STREAM (-1) for an unknown stream."""
        self._log.raise_if_closed()
        sid, _ = _stream_id(stream_id)
        return self._events.last_version(sid)

    def read_all(self, from_position: int = 0, limit: int | None = None) -> list[Event]:
        """Every event of every stream from ``from_position`` in commit order (at most
        ``limit``). Positions are dense from 0."""
        self._log.raise_if_closed()
        position = _int_arg(from_position, "from_position", 0)
        if limit is not None:
            limit = _int_arg(limit, "limit", 0)
        self._log.raise_if_closed()
        out: list[Event] = []
        while limit is None or len(out) < limit:
            want = EVENT_SUBSCRIBE_BATCH_RECORDS * 8
            if limit is not None:
                want = min(want, limit - len(out))
            events, nxt = self._events.events(position, want)
            out.extend(self._decoded(events))
            if nxt == position:
                break
            position = nxt
        return out

    def end_position(self) -> int:
        """The position the next committed event will get (the number of records)."""
        self._log.raise_if_closed()
        return self._events.end_position()

    # ------------------------------------------------------------- subscribe
    def subscribe(self, from_position: int = 0, *, timeout: float | None = None) -> Subscription:
        """Events from ``from_position`` in commit order: first those already stored
        (catch-up), then each new one as it is committed, in any process (live).

        Iterate it; ``close()`` (from any thread) ends the iteration. With
        ``timeout`` (seconds), the iteration also ends after that long without
        a new event. Usable as a context manager.
        """
        self._log.raise_if_closed()
        position = _int_arg(from_position, "from_position", 0)
        timeout = _validate.seconds(timeout, "timeout", allow_inf=True, allow_none=True)
        self._log.raise_if_closed()
        return Subscription(self, position, timeout)


class Subscription:
    """An iterator over a store's events: catch-up, then live.

    One consumer iterates it; ``close()`` may come from any thread and wakes
    a waiting iteration at once. It sleeps on the event log's watch between
    commits (no polling).
    """

    def __init__(self, store: EventStore, position: int, timeout: float | None) -> None:
        self._store = store
        self._events = store._events
        self._watch = store._events.watch()
        self._position = position
        self._timeout = timeout
        self._buffer: deque[Event] = deque()
        self._closed = False
        self._tracer = _tracing.tracer()
        self._span: _tracing.Processing | None = None

    @property
    def position(self) -> int:
        """The position of the next event this subscription will read from the store."""
        return self._buffer[0].position if self._buffer else self._position

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        if self._span is not None:  # the caller is done with the previous event
            self._span.end()
            self._span = None
        event = self._next()
        if self._tracer is not None:
            # A process span from the event's delivery until the next one is asked for.
            self._span = _tracing.Processing(
                self._tracer, self._store.name, "subscribe", event.headers, 0,
                event.position, {"messaging.streamlog.stream_id": event.stream_id,
                                 "messaging.streamlog.version": event.version})
        return event

    def _next(self) -> Event:
        # a closed store hands out nothing, not even buffered events
        self._store._log.raise_if_closed()
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            if self._closed:
                raise StopIteration
            if self._buffer:
                return self._buffer.popleft()
            seen = self._watch.seq()
            events, nxt = self._events.events(self._position, EVENT_SUBSCRIBE_BATCH_RECORDS)
            if nxt != self._position:
                self._position = nxt
                self._buffer.extend(self._store._decoded(events))
                continue
            wait = VIEW_POLL_S
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StopIteration
                wait = min(wait, remaining)
            if self._closed:
                raise StopIteration
            self._watch.wait(seen, wait)

    def close(self) -> None:
        """End the iteration (idempotent); a waiting ``next()`` returns at once."""
        if self._closed:
            return
        self._closed = True
        span, self._span = self._span, None
        if span is not None:
            span.end()
        self._buffer.clear()
        try:
            self._watch.wake()
        except (StoreClosed, StreamlogError, OSError):
            pass

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
