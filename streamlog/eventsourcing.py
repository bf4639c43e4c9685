"""A persistence module for the ``eventsourcing`` library (9.5.x) on streamlog's event store.

Use it by environment, as any of the library's persistence modules::

    PERSISTENCE_MODULE=streamlog.eventsourcing
    STREAMLOG_PATH=/var/lib/myapp/store      # or MYAPP_STREAMLOG_PATH for one app

Settings (read through the library's ``Environment``, so an
``<APPNAME>_``-prefixed variable wins over the plain one):

* ``STREAMLOG_PATH`` (required): the store directory (created if missing).
* ``STREAMLOG_DURABILITY``: ``always`` | ``interval`` (default) | ``never``,
  as ``streamlog.open``.
* ``STREAMLOG_NAME``: the name the application's topics start with
  (default: the application's name, characters outside ``[A-Za-z0-9._-]``
  replaced by ``_``).
* ``ORIGINATOR_ID_TYPE``: ``uuid`` (default; stream ids that are UUIDs come
  back as ``uuid.UUID``) or ``text`` (always ``str``), as the SQLite module.

An application named ``Bank`` uses the event stores ``Bank.events`` (the
application sequence: notification id = position + 1, so ids are 1, 2, 3,
... with no gaps, and the events of one ``insert_events`` call are one batch
with contiguous ids) and ``Bank.snapshots``, and the topic ``Bank.tracking``
(tracking records written without events). One aggregate is one stream; its
stream id is the originator id (``str(uuid)`` for a UUID). Each event's
headers carry the library's ``topic`` and the originator version (``ov``).

Aggregate events must have contiguous originator versions per aggregate (the
library always writes them so); the first one may be any number (usually 1).
A duplicate or out-of-sequence version raises the library's
``IntegrityError`` and nothing of the call is written: the version check is
the event store's expected-version check, made under the log's append lock,
so it holds across threads and processes. Snapshots may have any versions.

A process recorder writes a call's events and its tracking record in one
batch (the tracking record rides in the first event's headers), so both or
neither are stored; a tracking record without events goes to the tracking
topic. Tracking ids per upstream application must increase
(``IntegrityError`` otherwise). ``subscribe()`` is implemented: catch-up,
then live, woken by appends in any process.

Every Factory on the same directory in one process shares one open
``streamlog.Log`` (opened with the first Factory's durability); the last
``close()`` closes it. ``CREATE_TABLE`` is ignored: topics are created on
first use.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    Notification,
    ProcessRecorder,
    Recorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
    WaitInterruptedError,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic

import streamlog
from streamlog import _validate
from streamlog._limits import (
    EVENT_INDEX_CACHED_STREAMS,
    EVENT_SUBSCRIBE_BATCH_RECORDS,
    VIEW_POLL_S,
)
from streamlog.api import NO_STREAM, EventLog, NewEvent, NewEventFields, TrackingLog
from streamlog.errors import StoreClosed, WrongExpectedVersion

__all__ = [
    "Factory",
    "StreamlogAggregateRecorder",
    "StreamlogSnapshotRecorder",
    "StreamlogApplicationRecorder",
    "StreamlogTrackingRecorder",
    "StreamlogProcessRecorder",
    "StreamlogSubscription",
]

TOPIC_HEADER = "topic"
VERSION_HEADER = "ov"
TRACKING_APP_HEADER = "tracking-app"
TRACKING_ID_HEADER = "tracking-id"
_HB_TOPIC = TOPIC_HEADER.encode()
_HB_VERSION = VERSION_HEADER.encode()
_HB_TRACKING_APP = TRACKING_APP_HEADER.encode()
_HB_TRACKING_ID = TRACKING_ID_HEADER.encode()
# Notifications fetched per read of a subscription.
_SUBSCRIBE_BATCH = 500
# TrackingRecorder.wait(interrupt=...): how often the interrupt event is looked at.
_INTERRUPT_CHECK_S = 0.05
_NAME_BAD = re.compile(r"[^A-Za-z0-9._-]")

_new_object = object.__new__


def _stored_event(originator_id, version: int, topic: str, state: bytes) -> StoredEvent:
    """A StoredEvent without the frozen dataclass's per-field __init__ (reads make many):
    the fields go straight into the instance dict, three times cheaper."""
    obj = _new_object(StoredEvent)
    d = obj.__dict__
    d["originator_id"] = originator_id
    d["originator_version"] = version
    d["topic"] = topic
    d["state"] = state
    return obj


def _notification(nid: int, originator_id, version: int, topic: str,
                  state: bytes) -> Notification:
    obj = _new_object(Notification)
    d = obj.__dict__
    d["originator_id"] = originator_id
    d["originator_version"] = version
    d["topic"] = topic
    d["state"] = state
    d["id"] = nid
    return obj


def _stream_id(originator_id) -> str:
    if isinstance(originator_id, UUID):
        return str(originator_id)
    if isinstance(originator_id, str):
        return originator_id
    raise TypeError(f"originator_id must be a UUID or a str, not {type(originator_id).__name__}")


def _sanitize(name: str) -> str:
    """A topic-name-safe form of an application name."""
    out = _NAME_BAD.sub("_", name or "")
    if not out or not out[0].isalnum():
        out = "app" + out
    return out[:180]


# ----------------------------------------------------------------- open stores

_LOGS_LOCK = threading.Lock()
_LOGS: dict[tuple[int, str], list] = {}  # (pid, realpath) -> [Log, number of users]
# Releases not yet applied. An Application's __del__ closes its Factory wherever
# the garbage collector runs it: inside _acquire (an allocation while a store
# opens), or in a thread that _acquire waits for (a store's thread starting). So
# _release never waits for the lock: it queues, and whoever holds the lock next
# applies the queue.
_PENDING: list[streamlog.Log] = []


def _acquire(path: str, durability: str) -> streamlog.Log:
    """The store at ``path``, opened once per process and shared by every Factory."""
    key = (os.getpid(), os.path.realpath(path))
    with _LOGS_LOCK:
        _apply_pending()
        entry = _LOGS.get(key)
        if entry is not None:
            try:
                entry[0].topics()
            except StoreClosed:  # closed by its owner behind our back
                entry = None
        if entry is None:
            entry = _LOGS[key] = [streamlog.open(path, durability=durability), 0]
        entry[1] += 1
        log = entry[0]
    _drain()
    return log


def _release(log: streamlog.Log) -> None:
    _PENDING.append(log)
    _drain()


def _drain() -> None:
    """Apply queued releases if the lock is free now (never waits for it)."""
    while _PENDING and _LOGS_LOCK.acquire(blocking=False):
        try:
            _apply_pending()
        finally:
            _LOGS_LOCK.release()


def _apply_pending() -> None:
    """Apply queued releases (the caller holds _LOGS_LOCK): the last user closes."""
    while _PENDING:
        log = _PENDING.pop()
        for key, entry in list(_LOGS.items()):
            if entry[0] is log:
                entry[1] -= 1
                if entry[1] <= 0:
                    del _LOGS[key]
                    log.close()
                break


# ------------------------------------------------------------------- recorders

class StreamlogRecorder(Recorder):
    """Base of the recorders: the store (an open streamlog Log) and the name their
    event stores and topics start with."""

    def __init__(self, log: streamlog.Log, name: str, *,
                 originator_id_type: str = "uuid") -> None:
        self.log = log
        self.name = name
        self.originator_id_type = originator_id_type

    def _originator_id(self, stream_id: str) -> UUID | str:
        """The originator id of a stream: a UUID when it is one (uuid mode)."""
        if self.originator_id_type == "uuid" and len(stream_id) == 36:
            try:
                return UUID(stream_id)
            except ValueError:
                pass
        return stream_id


class StreamlogAggregateRecorder(StreamlogRecorder, AggregateRecorder):
    """Aggregate events in the event store ``<name>.<purpose>``: one stream per
    aggregate, contiguous originator versions. Thread- and process-safe."""

    def __init__(self, log: streamlog.Log, name: str, *, purpose: str = "events",
                 originator_id_type: str = "uuid") -> None:
        super().__init__(log, name, originator_id_type=originator_id_type)
        self.purpose = purpose
        self.store = log.event_store(f"{name}.{purpose}")
        self._events: EventLog = log.event_log(f"{name}.{purpose}")
        # stream id -> originator version of the stream's first event (it never
        # changes once the stream exists): maps originator versions to versions.
        self._first: dict[str, int] = {}
        self._sids: dict = {}  # originator id -> stream id (str(uuid) costs a format)
        self._topics: dict[str, bytes] = {}  # event topic -> its UTF-8 bytes

    # --------------------------------------------------------------- insert
    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        self._insert(stored_events)
        return None

    def _plan(self, stored_events: Sequence[StoredEvent]
              ) -> tuple[list[NewEventFields], dict[str, int], dict[str, int]]:
        """Events and per-stream expected versions for ``EventLog.commit``.

        IntegrityError (nothing written) for versions that cannot follow the
        stream: duplicates, gaps, or before its first event."""
        entries: list[NewEventFields] = []
        streams: dict[str, list] = {}  # stream id -> [id bytes, first version, count]
        sids = self._sids
        topics = self._topics
        for s in stored_events:
            oid = s.originator_id
            sid = sids.get(oid)
            if sid is None:
                sid = _stream_id(oid)
                if len(sids) > EVENT_INDEX_CACHED_STREAMS:
                    sids.clear()
                sids[oid] = sid
            ov = s.originator_version
            if type(ov) is not int:
                if isinstance(ov, bool) or not isinstance(ov, int):
                    raise TypeError(f"originator_version must be an int, not "
                                    f"{type(ov).__name__}")
                ov = int(ov)
            st = streams.get(sid)
            if st is None:
                sid_b = sid.encode("utf-8")
                streams[sid] = [sid_b, ov, 1]
            else:
                sid_b = st[0]
                if ov != st[1] + st[2]:
                    raise IntegrityError(f"events of {sid!r} in one insert must have "
                                         f"contiguous, increasing versions: version {ov} "
                                         f"after {st[1] + st[2] - 1}")
                st[2] += 1
            topic = s.topic
            topic_b = topics.get(topic)
            if topic_b is None:
                topic_b = topic.encode("utf-8")
                if len(topics) > 4096:  # a cache of the application's event classes
                    topics.clear()
                topics[topic] = topic_b
            state = s.state
            entries.append((sid, sid_b, state if type(state) is bytes else bytes(state),
                            [(_HB_TOPIC, topic_b), (_HB_VERSION, b"%d" % ov)]))
        expected: dict[str, int] = {}
        firsts: dict[str, int] = {}
        for sid, (sid_b, start, _) in streams.items():
            first = self._first_version(sid, sid_b)
            if first is None:
                expected[sid] = NO_STREAM
                firsts[sid] = start
            elif start < first:
                raise IntegrityError(f"stored event {sid!r} version {start} precedes the "
                                     f"aggregate's first version {first}")
            else:
                expected[sid] = start - first - 1
        return entries, expected, firsts

    def _commit(self, entries: list[NewEventFields], expected: dict[str, int],
                firsts: dict[str, int]) -> int:
        """Write one batch; returns its first position. WrongExpectedVersion -> IntegrityError."""
        try:
            base, _ = self._events.commit(entries, expected)
        except WrongExpectedVersion as e:
            raise IntegrityError(f"stored event already recorded or out of sequence: "
                                 f"{e}") from e
        self._first.update(firsts)
        return base

    def _insert(self, stored_events: Sequence[StoredEvent]) -> list[int]:
        if not stored_events:
            return []
        entries, expected, firsts = self._plan(stored_events)
        base = self._commit(entries, expected, firsts)
        return list(range(base + 1, base + 1 + len(entries)))

    def _first_version(self, sid: str, sid_b: bytes) -> int | None:
        first = self._first.get(sid)
        if first is None:
            _, records = self._events.stream_records(sid, 0, 0, 1)
            if not records:
                return None
            first = int(records[0].headers[VERSION_HEADER])
            if len(self._first) > EVENT_INDEX_CACHED_STREAMS:
                self._first.clear()
            self._first[sid] = first
        return first

    # --------------------------------------------------------------- select
    def select_events(self, originator_id: UUID | str, *, gt: int | None = None,
                      lte: int | None = None, desc: bool = False,
                      limit: int | None = None) -> Sequence[StoredEvent]:
        sid = _stream_id(originator_id)
        sid_b = sid.encode("utf-8")
        first = self._first_version(sid, sid_b)
        if first is None or (limit is not None and limit <= 0):
            return []
        lo = 0 if gt is None else max(0, gt + 1 - first)
        hi = None
        if lte is not None:
            hi = lte - first
            if hi < lo:
                return []
        bottom, records = self._events.stream_records(sid, lo, hi, limit, desc)
        out = []
        append = out.append
        v = first + bottom
        for r in records:  # StoredEvents straight from the records: no Event in between
            append(_stored_event(originator_id, v, r.headers[TOPIC_HEADER].decode(), r.value))
            v += 1
        if desc:
            out.reverse()
        return out


class StreamlogSnapshotRecorder(StreamlogAggregateRecorder):
    """Snapshots in ``<name>.snapshots``: any versions, in any order (a snapshot of
    an earlier version may come later). Each aggregate's snapshots are one
    stream; a duplicate version raises IntegrityError."""

    def _insert(self, stored_events: Sequence[StoredEvent]) -> list[int]:
        if not stored_events:
            return []
        for _ in range(100):
            entries: list[NewEventFields] = []
            expected: dict[str, int] = {}
            seen: dict[str, set[int]] = {}
            for s in stored_events:
                sid = _stream_id(s.originator_id)
                sid_b = sid.encode("utf-8")
                if sid not in seen:
                    bottom, have = self._events.stream_records(sid, 0, None, None)
                    seen[sid] = {int(r.headers[VERSION_HEADER]) for r in have}
                    expected[sid] = bottom + len(have) - 1 if have else NO_STREAM
                ov = s.originator_version
                if ov in seen[sid]:
                    raise IntegrityError(f"snapshot of {sid!r} at version {ov} already recorded")
                seen[sid].add(ov)
                entries.append(NewEvent(sid, sid_b, bytes(s.state),
                                        [(_HB_TOPIC, s.topic.encode("utf-8")),
                                         (_HB_VERSION, b"%d" % ov)]))
            try:
                base, _ = self._events.commit(entries, expected)
            except WrongExpectedVersion:
                continue  # another writer added a snapshot meanwhile: check again
            return list(range(base + 1, base + 1 + len(entries)))
        raise IntegrityError("snapshots kept changing under this insert")

    def select_events(self, originator_id: UUID | str, *, gt: int | None = None,
                      lte: int | None = None, desc: bool = False,
                      limit: int | None = None) -> Sequence[StoredEvent]:
        sid = _stream_id(originator_id)
        _, records = self._events.stream_records(sid, 0, None, None)
        rows = []
        for r in records:
            ov = int(r.headers[VERSION_HEADER])
            if (gt is None or ov > gt) and (lte is None or ov <= lte):
                rows.append((ov, r))
        rows.sort(key=lambda row: row[0], reverse=desc)
        if limit is not None:
            rows = rows[:max(limit, 0)]
        return [_stored_event(originator_id, ov, r.headers[TOPIC_HEADER].decode(), r.value)
                for ov, r in rows]


class StreamlogApplicationRecorder(StreamlogAggregateRecorder, ApplicationRecorder):
    """The application sequence: events in ``<name>.events``, notification id =
    position + 1 (1, 2, 3, ... dense; one insert = contiguous ids)."""

    def __init__(self, log: streamlog.Log, name: str, *,
                 originator_id_type: str = "uuid") -> None:
        super().__init__(log, name, purpose="events", originator_id_type=originator_id_type)

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        return self._insert(stored_events)

    def select_notifications(self, start: int | None, limit: int, stop: int | None = None,
                             topics: Sequence[str] = (), *,
                             inclusive_of_start: bool = True) -> Sequence[Notification]:
        if start is None:
            position = 0
        else:
            position = max(start if inclusive_of_start else start + 1, 1) - 1
        return self._select(position, limit, None if stop is None else stop - 1, topics)[0]

    def _select(self, position: int, limit: int, last_position: int | None,
                topics: Sequence[str]) -> tuple[list[Notification], int]:
        """Notifications from ``position`` (up to ``last_position``), and the position
        after the last record looked at."""
        out: list[Notification] = []
        wanted = set(topics)
        while len(out) < limit:
            want = limit - len(out) if not wanted else EVENT_SUBSCRIBE_BATCH_RECORDS
            if last_position is not None:
                want = min(want, last_position - position + 1)
                if want <= 0:
                    break
            events, nxt = self._events.events(position, want)
            for e in events:
                topic = e.headers[TOPIC_HEADER].decode()
                if wanted and topic not in wanted:
                    continue
                out.append(_notification(e.position + 1, self._originator_id(e.stream_id),
                                         int(e.headers[VERSION_HEADER]), topic, e.value))
                if len(out) == limit:
                    nxt = e.position + 1
                    break
            if nxt == position:
                break
            position = nxt
        return out, position

    def max_notification_id(self) -> int | None:
        return self.store.end_position() or None

    def subscribe(self, gt: int | None = None,
                  topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        return StreamlogSubscription(self, gt=gt, topics=topics)


class StreamlogSubscription(Subscription[StreamlogApplicationRecorder]):
    """Notifications after ``gt``: those recorded already, then each new one as any
    process records it (it sleeps on the events topic's wake-up word). ``stop()``
    from any thread ends it at once."""

    def __init__(self, recorder: StreamlogApplicationRecorder, gt: int | None = None,
                 topics: Sequence[str] = ()) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._watch = recorder._events.watch()
        self._position = gt or 0
        self._buffer: deque[Notification] = deque()

    def stop(self) -> None:
        super().stop()
        try:
            self._watch.wake()
        except (StoreClosed, OSError, streamlog.StreamlogError):
            pass

    def __next__(self) -> Notification:
        while True:
            if self._has_been_stopped:
                raise StopIteration
            if self._buffer:
                n = self._buffer.popleft()
                self._last_notification_id = n.id
                return n
            seen = self._watch.seq()
            batch, nxt = self._recorder._select(self._position, _SUBSCRIBE_BATCH, None,
                                                self._topics)
            if nxt != self._position:
                self._position = nxt
                self._buffer.extend(batch)
                continue
            if self._has_been_stopped:
                raise StopIteration
            self._watch.wait(seen, VIEW_POLL_S)


class StreamlogTrackingRecorder(StreamlogRecorder, TrackingRecorder):
    """Tracking records of ``<name>``: in the topic ``<name>.tracking`` and, for a
    process recorder, in the first event of each batch of ``<name>.events``.
    Notification ids per upstream application must increase. Thread- and
    process-safe."""

    def __init__(self, log: streamlog.Log, name: str, *,
                 originator_id_type: str = "uuid") -> None:
        super().__init__(log, name, originator_id_type=originator_id_type)
        self._tracking: TrackingLog = log.tracking_log(name)

    @staticmethod
    def _tracking_error(tracking: Tracking, e: WrongExpectedVersion) -> IntegrityError:
        return IntegrityError(f"tracking notification id {tracking.notification_id} of "
                              f"{tracking.application_name!r} is not greater than the "
                              f"recorded {e.actual}")

    def insert_tracking(self, tracking: Tracking, *, headers=None) -> None:
        """Record ``tracking`` (IntegrityError unless its id is above the recorded one).

        ``headers`` (a mapping of str to bytes or str) are stored on the same
        record: a view can keep small state there, written atomically with
        the tracking position (tests/eventsourcing/test_projection.py counts
        events that way).
        """
        extra = _validate.headers(headers) or []
        for name, _ in extra:
            if name in (_HB_TRACKING_APP, _HB_TRACKING_ID):
                raise ValueError(f"header name {name.decode()!r} is reserved for tracking")
        try:
            self._tracking.record(tracking.application_name, tracking.notification_id, extra)
        except WrongExpectedVersion as e:
            raise self._tracking_error(tracking, e) from None

    def max_tracking_id(self, application_name: str) -> int | None:
        return self._tracking.max_id(application_name)

    def wait(self, application_name: str, notification_id: int | None, timeout: float = 1.0,
             interrupt: threading.Event | None = None) -> None:
        """Block until ``notification_id`` of ``application_name`` is tracked.

        As the library's ``TrackingRecorder.wait`` (TimeoutError after
        ``timeout``, WaitInterruptedError once ``interrupt`` is set), but it
        sleeps on the tracking topic's wake-up word, which every tracking
        write bumps, instead of polling with back-off.
        """
        deadline = time.monotonic() + timeout
        watch = self._tracking.watch()
        while True:
            seen = watch.seq()
            if self.has_tracking_id(application_name, notification_id):
                return
            if interrupt is not None and interrupt.is_set():
                raise WaitInterruptedError
            remaining = deadline - time.monotonic()
            if remaining < 0:
                raise TimeoutError(f"Timed out waiting for notification {notification_id} "
                                   f"from application '{application_name}' to be processed")
            slice_s = VIEW_POLL_S if interrupt is None else _INTERRUPT_CHECK_S
            watch.wait(seen, min(remaining, slice_s) + 0.001)


class StreamlogProcessRecorder(StreamlogTrackingRecorder, StreamlogApplicationRecorder,
                               ProcessRecorder):
    """An application recorder whose inserts may carry a tracking record, written in
    the same batch as the events (both or neither)."""

    def __init__(self, log: streamlog.Log, name: str, *,
                 originator_id_type: str = "uuid") -> None:
        super().__init__(log, name, originator_id_type=originator_id_type)

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        tracking: Tracking | None = kwargs.get("tracking")
        if tracking is None:
            return self._insert(stored_events)
        if not stored_events:
            self.insert_tracking(tracking)
            return []
        entries, expected, firsts = self._plan(stored_events)
        app, nid = tracking.application_name, tracking.notification_id
        try:
            # Both checks and the commit happen under one decision of the tracking
            # log: no other tracking record can be written until these events are.
            base = self._tracking.commit_with(self._events, app, nid, entries, expected)
        except WrongExpectedVersion as e:
            if e.stream_id == app and e.expected == nid and e.stream_id not in expected:
                raise self._tracking_error(tracking, e) from None
            raise IntegrityError(f"stored event already recorded or out of sequence: "
                                 f"{e}") from e
        self._first.update(firsts)
        return list(range(base + 1, base + 1 + len(entries)))


# --------------------------------------------------------------------- factory

class Factory(InfrastructureFactory[StreamlogTrackingRecorder]):
    """Builds the recorders of one application over a streamlog store directory.

    Thread-safe, as are the recorders it makes; processes each make their own.
    """

    STREAMLOG_PATH = "STREAMLOG_PATH"
    STREAMLOG_DURABILITY = "STREAMLOG_DURABILITY"
    STREAMLOG_NAME = "STREAMLOG_NAME"
    ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"

    aggregate_recorder_class = StreamlogAggregateRecorder
    snapshot_recorder_class = StreamlogSnapshotRecorder
    application_recorder_class = StreamlogApplicationRecorder
    tracking_recorder_class = StreamlogTrackingRecorder
    process_recorder_class = StreamlogProcessRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        path = self.env.get(self.STREAMLOG_PATH)
        if not path:
            raise OSError("streamlog store directory not found in environment with keys: "
                          f"{', '.join(self.env.create_keys(self.STREAMLOG_PATH))}")
        durability = (self.env.get(self.STREAMLOG_DURABILITY) or "interval").strip().lower()
        if durability not in ("always", "interval", "never"):
            raise OSError(f"invalid {self.STREAMLOG_DURABILITY} {durability!r}: use always, "
                          "interval or never")
        id_type = (self.env.get(self.ORIGINATOR_ID_TYPE) or "uuid").strip().lower()
        if id_type not in ("uuid", "text"):
            raise OSError(f"invalid {self.ORIGINATOR_ID_TYPE} {id_type!r}: use uuid or text")
        self.originator_id_type = id_type
        self.store_name = _sanitize(self.env.get(self.STREAMLOG_NAME) or self.env.name
                                    or "eventsourcing")
        self.log = _acquire(path, durability)
        self._released = False

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        cls = self.snapshot_recorder_class if purpose == "snapshots" else \
            self.aggregate_recorder_class
        return cls(self.log, self.store_name, purpose=_sanitize(purpose),
                   originator_id_type=self.originator_id_type)

    def application_recorder(self) -> ApplicationRecorder:
        topic = self.env.get(self.APPLICATION_RECORDER_TOPIC)
        cls = resolve_topic(topic) if topic else self.application_recorder_class
        assert issubclass(cls, StreamlogApplicationRecorder)
        return cls(self.log, self.store_name, originator_id_type=self.originator_id_type)

    def tracking_recorder(self, tracking_recorder_class:
                          type[StreamlogTrackingRecorder] | None = None
                          ) -> StreamlogTrackingRecorder:
        cls = tracking_recorder_class
        if cls is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            cls = resolve_topic(topic) if topic else self.tracking_recorder_class
        assert issubclass(cls, StreamlogTrackingRecorder)
        return cls(self.log, self.store_name, originator_id_type=self.originator_id_type)

    def process_recorder(self) -> ProcessRecorder:
        topic = self.env.get(self.PROCESS_RECORDER_TOPIC)
        cls = resolve_topic(topic) if topic else self.process_recorder_class
        assert issubclass(cls, StreamlogProcessRecorder)
        return cls(self.log, self.store_name, originator_id_type=self.originator_id_type)

    def close(self) -> None:
        """Release the shared store (closed when its last Factory closes)."""
        if not self._released:
            self._released = True
            _release(self.log)
