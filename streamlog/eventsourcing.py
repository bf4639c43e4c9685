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

import json
import os
import re
import threading
import time
import weakref
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
from streamlog import backend
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
_KV_NAMESPACE = "eventsourcing"
# Tracking state is checkpointed to LMDB after this many records were read
# past the last checkpoint (it is derived from the logs: a lost checkpoint
# only costs a longer catch-up).
_TRACKING_CHECKPOINT_RECORDS = 1024
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

    def _plan(self, stored_events: Sequence[StoredEvent]) -> tuple[list, dict, dict]:
        """Entries and per-stream expected versions for ``EventStore._commit``.

        IntegrityError (nothing written) for versions that cannot follow the
        stream: duplicates, gaps, or before its first event."""
        entries = []
        streams: dict[str, list] = {}  # stream id -> [id bytes, first version, count]
        sids = self._sids
        topics = self._topics
        for s in stored_events:
            oid = s.originator_id
            sid = sids.get(oid)
            if sid is None:
                sid = _stream_id(oid)
                if len(sids) > backend.EVENT_INDEX_CACHED_STREAMS:
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
        expected: dict[str, tuple[bytes, int]] = {}
        firsts: dict[str, int] = {}
        for sid, (sid_b, start, _) in streams.items():
            first = self._first_version(sid, sid_b)
            if first is None:
                expected[sid] = (sid_b, backend.NO_STREAM)
                firsts[sid] = start
            elif start < first:
                raise IntegrityError(f"stored event {sid!r} version {start} precedes the "
                                     f"aggregate's first version {first}")
            else:
                expected[sid] = (sid_b, start - first - 1)
        return entries, expected, firsts

    def _commit(self, entries: list, expected: dict, firsts: dict,
                first_headers=None) -> int:
        """Write one batch; returns its first position. WrongExpectedVersion -> IntegrityError."""
        try:
            base, _ = self.store._commit(entries, expected, first_headers)
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
            _, records = self.store._stream_records(sid, sid_b, 0, 0, 1)
            if not records:
                return None
            first = int(records[0].headers[VERSION_HEADER])
            if len(self._first) > backend.EVENT_INDEX_CACHED_STREAMS:
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
        bottom, records = self.store._stream_records(sid, sid_b, lo, hi, limit, desc)
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
            entries = []
            expected: dict[str, tuple[bytes, int]] = {}
            seen: dict[str, set[int]] = {}
            for s in stored_events:
                sid = _stream_id(s.originator_id)
                sid_b = sid.encode("utf-8")
                if sid not in seen:
                    bottom, have = self.store._stream_records(sid, sid_b, 0, None, None)
                    seen[sid] = {int(r.headers[VERSION_HEADER]) for r in have}
                    expected[sid] = (sid_b, bottom + len(have) - 1 if have
                                     else backend.NO_STREAM)
                ov = s.originator_version
                if ov in seen[sid]:
                    raise IntegrityError(f"snapshot of {sid!r} at version {ov} already recorded")
                seen[sid].add(ov)
                entries.append((sid, sid_b, bytes(s.state),
                                [(_HB_TOPIC, s.topic.encode("utf-8")),
                                 (_HB_VERSION, b"%d" % ov)]))
            try:
                base, _ = self.store._commit(entries, expected)
            except WrongExpectedVersion:
                continue  # another writer added a snapshot meanwhile: check again
            return list(range(base + 1, base + 1 + len(entries)))
        raise IntegrityError("snapshots kept changing under this insert")

    def select_events(self, originator_id: UUID | str, *, gt: int | None = None,
                      lte: int | None = None, desc: bool = False,
                      limit: int | None = None) -> Sequence[StoredEvent]:
        sid = _stream_id(originator_id)
        _, records = self.store._stream_records(sid, sid.encode("utf-8"), 0, None, None)
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
            want = limit - len(out) if not wanted else backend.EVENT_SUBSCRIBE_BATCH_RECORDS
            if last_position is not None:
                want = min(want, last_position - position + 1)
                if want <= 0:
                    break
            events, nxt = self.store._events_from(position, want)
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
        self._topic = recorder.store._topic
        self._position = gt or 0
        self._buffer: deque[Notification] = deque()

    def stop(self) -> None:
        super().stop()
        try:
            backend.wake_any(self._topic)
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
            seen = self._topic.notify_seq_any()
            batch, nxt = self._recorder._select(self._position, _SUBSCRIBE_BATCH, None,
                                                self._topics)
            if nxt != self._position:
                self._position = nxt
                self._buffer.extend(batch)
                continue
            if self._has_been_stopped:
                raise StopIteration
            self._topic.wait_any(seen, backend.VIEW_POLL_S)


class _TrackingState:
    """This process's knowledge of the tracking records of ``<name>``: the maximum
    notification id per upstream application, read from the tracking topic and
    from the tracking headers of the events topic, checkpointed to LMDB.

    Thread-safe through ``lock``. Decisions that depend on it are made under the
    tracking topic's append lock.
    """

    def __init__(self, log: streamlog.Log, name: str) -> None:
        self.t_topic = log.topic(f"{name}.tracking", partitions=1)
        self.e_topic = log.event_store(f"{name}.events")._topic
        self.kv = log.kv(_KV_NAMESPACE)
        self.key = name.encode() + b"\0tracking"
        self.uids = [backend.topic_config(self.t_topic).get("uid"),
                     backend.topic_config(self.e_topic).get("uid")]
        self.lock = threading.Lock()
        self.maxes: dict[str, int] = {}
        self.t_end = 0
        self.e_end = 0
        self.loaded = False
        self.unsaved = 0

    def sync(self, t_end: int | None = None) -> None:
        """Read the tracking records appended since the last sync. Caller holds lock."""
        if t_end is None:
            t_end = self.t_topic.end_offset(0)
        e_end = self.e_topic.end_offset(0)
        if not self.loaded:
            self._load(t_end, e_end)
        if t_end < self.t_end or e_end < self.e_end:  # a log lost its tail: read again
            self.maxes, self.t_end, self.e_end = {}, 0, 0
        self.unsaved += self._read(self.t_topic, self.t_end, t_end)
        self.t_end = t_end
        self.unsaved += self._read(self.e_topic, self.e_end, e_end)
        self.e_end = e_end
        if self.unsaved >= _TRACKING_CHECKPOINT_RECORDS:
            self._save()

    def _read(self, topic, start: int, end: int) -> int:
        if end <= start:
            return 0
        maxes = self.maxes
        for rec in topic.read(0, start, end - start):
            h = rec.headers
            app = h.get(TRACKING_APP_HEADER)
            if app is not None:
                app_s = app.decode("utf-8")
                nid = int(h[TRACKING_ID_HEADER])
                if maxes.get(app_s, -1) < nid:
                    maxes[app_s] = nid
        return end - start

    def _load(self, t_end: int, e_end: int) -> None:
        self.loaded = True
        raw = self.kv.get(self.key)
        if raw is None:
            return
        try:
            cp = json.loads(raw)
            if cp["uids"] == self.uids and cp["t"] <= t_end and cp["e"] <= e_end:
                self.maxes = {str(k): int(v) for k, v in cp["max"].items()}
                self.t_end, self.e_end = int(cp["t"]), int(cp["e"])
        except (ValueError, KeyError, TypeError):
            pass  # a checkpoint we cannot use: read the logs from the start

    def _save(self) -> None:
        cp = {"uids": self.uids, "t": self.t_end, "e": self.e_end, "max": self.maxes}
        raw = json.dumps(cp, separators=(",", ":")).encode()
        key = self.key

        def fn(tx):
            cur = tx.get(key)
            if cur is not None:
                try:
                    old = json.loads(cur)
                    if old.get("uids") == cp["uids"] and \
                            (old["t"] > cp["t"] or old["e"] > cp["e"]):
                        return  # a fresher checkpoint is there already
                except (ValueError, KeyError, TypeError):
                    pass
            tx.put(key, raw)

        self.kv.transact(fn)
        self.unsaved = 0


def _drop_checkpoint(tx, topic: str) -> None:
    """Topic deletion hook: the tracking checkpoint goes with its tracking topic."""
    if topic.endswith(".tracking"):
        tx.delete(topic[:-len(".tracking")].encode() + b"\0tracking")


backend.on_topic_deleted(_KV_NAMESPACE, _drop_checkpoint)

_TRACKING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TRACKING_LOCK = threading.Lock()


def _tracking_state(log: streamlog.Log, name: str) -> _TrackingState:
    with _TRACKING_LOCK:
        per_log = _TRACKING.get(log)
        if per_log is None:
            per_log = _TRACKING[log] = {}
        state = per_log.get(name)
        if state is None:
            state = per_log[name] = _TrackingState(log, name)
        return state


class StreamlogTrackingRecorder(StreamlogRecorder, TrackingRecorder):
    """Tracking records of ``<name>``: in the topic ``<name>.tracking`` and, for a
    process recorder, in the first event of each batch of ``<name>.events``.
    Notification ids per upstream application must increase. Thread- and
    process-safe."""

    def __init__(self, log: streamlog.Log, name: str, *,
                 originator_id_type: str = "uuid") -> None:
        super().__init__(log, name, originator_id_type=originator_id_type)
        self._tracking = _tracking_state(log, name)

    def _tracking_check(self, tracking: Tracking, t_end: int) -> IntegrityError | None:
        st = self._tracking
        with st.lock:
            st.sync(t_end)
            current = st.maxes.get(tracking.application_name)
        if current is not None and current >= tracking.notification_id:
            return IntegrityError(f"tracking notification id {tracking.notification_id} of "
                                  f"{tracking.application_name!r} is not greater than the "
                                  f"recorded {current}")
        return None

    @staticmethod
    def _tracking_headers(tracking: Tracking) -> list[tuple[bytes, bytes]]:
        return [(_HB_TRACKING_APP, tracking.application_name.encode("utf-8")),
                (_HB_TRACKING_ID, b"%d" % tracking.notification_id)]

    def insert_tracking(self, tracking: Tracking, *, headers=None) -> None:
        """Record ``tracking`` (IntegrityError unless its id is above the recorded one).

        ``headers`` (a mapping of str to bytes or str) are stored on the same
        record: a view can keep small state there, written atomically with
        the tracking position (tests/eventsourcing/test_projection.py counts
        events that way).
        """
        topic = self._tracking.t_topic
        extra = backend.validate_headers(headers) or []
        for name, _ in extra:
            if name in (_HB_TRACKING_APP, _HB_TRACKING_ID):
                raise ValueError(f"header name {name.decode()!r} is reserved for tracking")

        def build(end: int):
            err = self._tracking_check(tracking, end)
            if err is not None:
                return None, 0, 0, err
            ts = backend.now_ms()
            data = backend.encode_batch(None, [b""], [self._tracking_headers(tracking) + extra],
                                        [ts])
            return data, 1, ts, None

        base, result = topic.append_with(0, build)
        if base < 0:
            raise result

    def max_tracking_id(self, application_name: str) -> int | None:
        st = self._tracking
        with st.lock:
            st.sync()
            return st.maxes.get(application_name)

    def wait(self, application_name: str, notification_id: int | None, timeout: float = 1.0,
             interrupt: threading.Event | None = None) -> None:
        """Block until ``notification_id`` of ``application_name`` is tracked.

        As the library's ``TrackingRecorder.wait`` (TimeoutError after
        ``timeout``, WaitInterruptedError once ``interrupt`` is set), but it
        sleeps on the tracking topic's wake-up word, which every tracking
        write bumps, instead of polling with back-off.
        """
        deadline = time.monotonic() + timeout
        topic = self._tracking.t_topic
        while True:
            seen = topic.notify_seq_any()
            if self.has_tracking_id(application_name, notification_id):
                return
            if interrupt is not None and interrupt.is_set():
                raise WaitInterruptedError
            remaining = deadline - time.monotonic()
            if remaining < 0:
                raise TimeoutError(f"Timed out waiting for notification {notification_id} "
                                   f"from application '{application_name}' to be processed")
            slice_s = backend.VIEW_POLL_S if interrupt is None else _INTERRUPT_CHECK_S
            topic.wait_any(seen, min(remaining, slice_s) + 0.001)


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

        def build(end: int):
            # Under the tracking topic's append lock: no other tracking record can
            # be written until the events (and their tracking headers) are.
            err = self._tracking_check(tracking, end)
            if err is not None:
                return None, 0, 0, err
            try:
                return None, 0, 0, self._commit(entries, expected, firsts,
                                                self._tracking_headers(tracking))
            except IntegrityError as e:
                return None, 0, 0, e

        _, result = self._tracking.t_topic.append_with(0, build)
        if isinstance(result, BaseException):
            raise result
        # The tracking record went to the events topic: wake the tracking waiters.
        try:
            backend.wake_any(self._tracking.t_topic)
        except (StoreClosed, OSError):
            pass
        return list(range(result + 1, result + 1 + len(entries)))


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
