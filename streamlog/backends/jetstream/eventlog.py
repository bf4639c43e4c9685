"""Event logs and tracking records on JetStream: ``JetStreamEventLog``, ``JetStreamTrackingLog``.

An event log named like its event store (``bank``) is the single-partition
topic ``bank``: one stream, so one commit order, and an event's *position*
is its offset (stream sequence - 1). Each event is one message on the
subject of its event stream below the partition's subject
(``<partition subject>.e.<stream id token>``, see ``_naming.entry_subject``),
with the headers ``es-stream`` and ``es-version`` beside its own, as on the
embedded store (a plain ``read`` of the topic shows the same records).

Expected versions are checked by the server: the first message of each
event stream in a commit carries ``Nats-Expected-Last-Subject-Sequence``,
the sequence of that stream's last message (0: none yet). A commit of
several messages is one atomic batch, so the server stores all of it or
nothing, and of two commits racing on the same version of a stream exactly
one is stored. Before sending, each stream's last message (its version and
sequence) comes from this process's cache or, through the stream leader,
from a get-last-by-subject; a rejected commit reads them again: a stream
whose version is not the expected one is WrongExpectedVersion (with the
version read back), otherwise the cache was stale and the commit is sent
again. An append with ANY expects the last sequence it read too, so versions
stay dense when ANY appenders race: the loser reads again and retries.

Tracking records of application ``name`` are messages of the event log
``<name>.events`` on the subject ``<partition subject>.t.<application
token>`` (headers ``tracking-app``, ``tracking-id``), each written with the
expected last sequence of that subject after checking its id is above the
last one: ids only grow, and two writers of one id never both succeed. A
tracking record written with events goes first in the events' atomic batch
(both or neither). Tracking records take positions of the event log that
are not events: ``events`` skips them, as it skips any record without the
``es-*`` headers.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from streamlog._types import Record, now_ms
from streamlog.api import (
    ANY,
    NO_STREAM,
    STREAM_HEADER,
    VERSION_HEADER,
    EncodedHeaders,
    Event,
    EventLog,
    NewEventFields,
    Watch,
    events_from_records,
)
from streamlog.errors import StreamlogError, WrongExpectedVersion

from . import _naming, _records
from ._client import (
    ATOMIC_BATCH_MAX_MSGS,
    H_EXPECTED_LAST_SUBJECT_SEQ,
    JetStreamError,
    NotFound,
    OutMsg,
    StoredMsg,
)

__all__ = ["JetStreamEventLog", "JetStreamTrackingLog"]

TRACKING_APP_HEADER = "tracking-app"
TRACKING_ID_HEADER = "tracking-id"
_HB_STREAM = STREAM_HEADER.encode()
_HB_VERSION = VERSION_HEADER.encode()
_HB_TRACKING_APP = TRACKING_APP_HEADER.encode()
_HB_TRACKING_ID = TRACKING_ID_HEADER.encode()
# How often a commit is sent again after the server rejected a stale expectation
# (the cache was stale, or an ANY append lost a race) before giving up.
COMMIT_ATTEMPTS = 200
# Messages per filtered direct get of a stream read.
STREAM_READ_CHUNK = 256
_tuple_new = tuple.__new__


# (version, sequence) of an event stream without events.
_NONE = (NO_STREAM, 0)


class JetStreamEventLog:
    """The event log behind event store ``name`` on JetStream (``streamlog.api.EventLog``).

    One per (store handle, name); thread-safe; any number of processes may
    commit to and read one log at once (the server decides every conflict).
    """

    def __init__(self, store: Any, name: str) -> None:
        self._store = store
        self.name = name
        self._topic = store.topic(name, partitions=1)
        if self._topic.partitions != 1:
            raise StreamlogError(f"event store {name!r} needs a single-partition topic; "
                                 f"topic {name!r} has {self._topic.partitions}")
        self._conn = store._conn
        self._stream = self._topic.stream_name(0)
        self._psubject = self._topic.subject(0)
        self._lock = threading.Lock()
        self._heads: dict[str, tuple[int, int]] = {}  # stream id -> (version, seq)

    def __repr__(self) -> str:
        return f"JetStreamEventLog({self.name!r})"

    # -------------------------------------------------------------- subjects
    def subject_of(self, stream_id: str) -> str:
        """The subject of the events of ``stream_id``."""
        return _naming.entry_subject(self._psubject, "e", stream_id.encode("utf-8"))

    def tracking_subject(self, application: str) -> str:
        """The subject of the tracking records of ``application``."""
        return _naming.entry_subject(self._psubject, "t", application.encode("utf-8"))

    # ----------------------------------------------------------------- reads
    def _last_msg(self, subject: str) -> StoredMsg | None:
        return self._topic._run(self._alast_msg(subject))

    async def _alast_msg(self, subject: str) -> StoredMsg | None:
        conn, stream = self._conn, self._stream
        m: StoredMsg | None = await self._topic._areading(
            lambda: conn.get_last_message(stream, subject))
        return m

    def _read_head(self, stream_id: str) -> tuple[int, int]:
        """(version, seq) of the stream's last event through the leader; cached."""
        return self._topic._run(self._aread_head(stream_id))

    async def _aread_head(self, stream_id: str) -> tuple[int, int]:
        m = await self._alast_msg(self.subject_of(stream_id))
        head = _NONE if m is None else (_version_of(m), m.seq)
        with self._lock:
            self._heads[stream_id] = head
        return head

    def last_version(self, stream_id: str) -> int:
        """The version of the stream's last event, NO_STREAM (-1) for an unknown stream."""
        return self._topic._run(self._alast_version(stream_id))

    async def _alast_version(self, stream_id: str) -> int:
        self._store._check()
        return (await self._aread_head(stream_id))[0]

    # ---------------------------------------------------------------- commit
    def commit(self, events: Sequence[NewEventFields], expected: Mapping[str, int],
               first_headers: EncodedHeaders | None = None) -> tuple[int, dict[str, int]]:
        """Append ``events`` in one atomic step after the server checked each stream's
        expected version; returns the first position and each stream's new last
        version. WrongExpectedVersion (nothing written) on the first failed check."""
        return self._commit(events, expected, first_headers, None)

    def _commit(self, events: Sequence[NewEventFields], expected: Mapping[str, int],
                first_headers: EncodedHeaders | None,
                tracking: tuple[str, int] | None) -> tuple[int, dict[str, int]]:
        """``commit``, with (application, notification id) of a tracking record sent
        first in the same batch when ``tracking`` is given."""
        return self._topic._run(self._acommit(events, expected, first_headers, tracking))

    async def _acommit(self, events: Sequence[NewEventFields], expected: Mapping[str, int],
                       first_headers: EncodedHeaders | None,
                       tracking: tuple[str, int] | None) -> tuple[int, dict[str, int]]:
        store = self._store
        store._check_writable(f"commit to event store {self.name!r}")
        entries = list(events)
        if not entries:
            raise ValueError("a commit needs at least one event")
        n_msgs = len(entries) + (tracking is not None)
        if n_msgs > ATOMIC_BATCH_MAX_MSGS:
            raise ValueError(f"a commit holds at most {ATOMIC_BATCH_MAX_MSGS} events on "
                             f"JetStream (the server's atomic batch limit), got {n_msgs}")
        sids: list[str] = []
        for e in entries:
            if e[0] not in sids:
                sids.append(e[0])
        for sid in sids:
            if sid not in expected:
                raise ValueError(f"no expected version given for stream {sid!r}")
        subjects = {sid: self.subject_of(sid) for sid in sids}
        extra = list(first_headers) if first_headers else None
        ts = now_ms()
        topic = self._topic
        # Size checks before anything is sent (versions take at most 20 digits).
        for i, e in enumerate(entries):
            topic._encode(e[2], None, _event_headers(e, 10 ** 19, extra if i == 0 else None), ts)
        t_subject = None if tracking is None else self.tracking_subject(tracking[0])
        with self._lock:
            heads = {sid: self._heads.get(sid) for sid in sids}
        fresh: set[str] = set()
        t_head: tuple[int, int] | None = None
        for _attempt in range(COMMIT_ATTEMPTS):
            # Each stream's last (version, seq): cached, else read through the leader.
            for sid in sids:
                h = heads[sid]
                exp = expected[sid]
                if h is None or (exp != ANY and h[0] != exp and sid not in fresh):
                    h = heads[sid] = await self._aread_head(sid)
                    fresh.add(sid)
                if exp != ANY and h[0] != exp:
                    raise WrongExpectedVersion(exp, h[0], sid)
            if tracking is not None:
                if t_head is None:
                    t_head = await _atracking_head(self, t_subject)  # type: ignore[arg-type]
                app, nid = tracking
                if t_head[0] is not None and t_head[0] >= nid:
                    raise WrongExpectedVersion(nid, t_head[0], app)
            msgs: list[OutMsg] = []
            if tracking is not None:
                msgs.append(OutMsg(t_subject, b"", _tracking_wire(  # type: ignore[arg-type]
                    topic, tracking[0], tracking[1], None, ts, t_head[1])))  # type: ignore[index]
            nxt = {sid: heads[sid][0] + 1 for sid in sids}  # type: ignore[index]
            seen: set[str] = set()
            for i, e in enumerate(entries):
                sid = e[0]
                v = nxt[sid]
                nxt[sid] = v + 1
                wire = topic._encode(e[2], None, _event_headers(e, v, extra if i == 0 else None),
                                     ts)
                if sid not in seen:
                    seen.add(sid)
                    wire[H_EXPECTED_LAST_SUBJECT_SEQ] = str(heads[sid][1])  # type: ignore[index]
                msgs.append(OutMsg(subjects[sid], e[2], wire))
            try:
                first_seq, last_seq = await self._asend(msgs)
            except JetStreamError as err:
                if not _rejected_expectation(err):
                    raise
                # Someone else committed first (or the cache was stale): read again.
                heads = {sid: None for sid in sids}
                fresh.clear()
                t_head = None
                continue
            # The versions of each stream's messages, from their sequences.
            versions: dict[str, int] = {}
            with self._lock:
                seq = first_seq + (tracking is not None)
                for e in entries:
                    sid = e[0]
                    v = versions[sid] = versions.get(sid, heads[sid][0]) + 1  # type: ignore[index]
                    self._heads[sid] = (v, seq)
                    seq += 1
            topic._appended()
            return first_seq - 1 + (tracking is not None), versions
        raise StreamlogError(f"event store {self.name!r}: commit rejected {COMMIT_ATTEMPTS} "
                             f"times by racing commits; giving up")

    def _send(self, msgs: list[OutMsg]) -> tuple[int, int]:
        """Publish ``msgs`` (one plain publish, else one atomic batch); their first and
        last sequence."""
        return self._topic._run(self._asend(msgs))

    async def _asend(self, msgs: list[OutMsg]) -> tuple[int, int]:
        conn, topic = self._conn, self._topic
        if len(msgs) == 1:
            m = msgs[0]
            ack = await topic._sending(
                0, lambda: conn.publish(m.subject, m.payload, m.headers), idempotent=False)
            return ack.seq, ack.seq
        back = await topic._sending(0, lambda: conn.publish_batch(msgs), idempotent=False)
        return back.first_seq, back.last_seq

    # ----------------------------------------------------------------- reads
    def stream_records(self, stream_id: str, lo: int, hi: int | None, limit: int | None,
                       backwards: bool = False) -> tuple[int, list[Record]]:
        """The records of versions lo..hi of a stream (hi None: its last), at most
        ``limit`` (the newest ones when ``backwards``), oldest first, their ``es-*``
        headers removed; and the version of the first."""
        return self._stream_read(stream_id, lo, hi, limit, backwards, False)

    def stream_events(self, stream_id: str, lo: int, hi: int | None, limit: int | None,
                      backwards: bool = False) -> list[Event]:
        """As ``stream_records``, the events themselves (oldest first)."""
        return self._stream_read(stream_id, lo, hi, limit, backwards, True)[1]

    def _stream_read(self, sid: str, lo: int, hi: int | None, limit: int | None, newest: bool,
                as_events: bool) -> tuple[int, list[Any]]:
        return self._topic._run(self._astream_read(sid, lo, hi, limit, newest, as_events))

    async def _astream_read(self, sid: str, lo: int, hi: int | None, limit: int | None,
                            newest: bool, as_events: bool) -> tuple[int, list[Any]]:
        self._store._check()
        last, last_seq = await self._aread_head(sid)
        top = last if hi is None else min(hi, last)
        if top < lo or limit == 0:
            return lo, []
        bottom = max(lo, 0)
        if limit is not None:
            if newest:
                bottom = max(bottom, top - limit + 1)
            else:
                top = min(top, bottom + limit - 1)
        subject = self.subject_of(sid)
        start_seq = 1
        if bottom >= STREAM_READ_CHUNK:
            # Far into the stream: find where version ``bottom`` is (a binary search
            # over sequences) rather than fetch every earlier event of the stream.
            start_seq = await self._aseek_version(subject, bottom, last_seq)
        msgs = await self._asubject_msgs(subject, top + 1 - (bottom if start_seq > 1 else 0),
                                         last_seq, start_seq)
        out: list[Any] = []
        topic = self._topic
        for m in msgs:
            v = _version_of(m)
            if v < bottom:
                continue
            if v > top:
                break
            rec = topic._record(0, m)
            h = rec.headers
            got = h.pop(STREAM_HEADER, None)
            h.pop(VERSION_HEADER, None)
            if got is not None and got.decode("utf-8", "replace") != sid:
                continue  # a hashed subject shared with another stream id (never seen)
            if as_events:
                out.append(_tuple_new(Event, (sid, v, rec.offset, rec.timestamp_ms,
                                              rec.value, h)))
            else:
                out.append(rec)
        return bottom, out

    async def _aseek_version(self, subject: str, version: int, last_seq: int) -> int:
        """The lowest sequence whose first message on ``subject`` at or after it has a
        version of at least ``version``: where reading ``version`` on starts.

        A binary search over the stream's sequences, each step one get of the next
        message on the subject through the leader: versions grow with sequences
        along a subject, and a step that lands on an earlier version moves the
        lower bound past that message. About log2(``last_seq``) gets, each of one
        message, whatever retention removed from the front.
        """
        conn, stream, topic = self._conn, self._stream, self._topic
        lo, hi = 1, last_seq
        while lo < hi:
            mid = (lo + hi) // 2
            m = await topic._areading(lambda s=mid: _next_on(conn, stream, s, subject))
            if m is None or _version_of(m) >= version:
                hi = mid
            else:
                lo = m.seq + 1
        return lo

    def _subject_msgs(self, subject: str, count: int, last_seq: int,
                      start_seq: int = 1) -> list[StoredMsg]:
        """The first ``count`` messages on ``subject`` from sequence ``start_seq`` (none
        past ``last_seq``), by filtered direct gets; what a lagging replica did not have
        yet is read through the leader."""
        return self._topic._run(self._asubject_msgs(subject, count, last_seq, start_seq))

    async def _asubject_msgs(self, subject: str, count: int, last_seq: int,
                             start_seq: int = 1) -> list[StoredMsg]:
        conn, stream = self._conn, self._stream
        out: list[StoredMsg] = []
        seq = start_seq
        while len(out) < count and seq <= last_seq:
            want = min(STREAM_READ_CHUNK, count - len(out))
            start = seq
            got = await self._topic._areading(lambda s=start, w=want: conn.get_range(
                stream, s, w, next_by_subj=subject))
            got = [m for m in got if m.seq <= last_seq]
            if not got:
                # A lagging replica (or nothing left): ask the leader for the next one.
                m = await self._topic._areading(lambda s=start: _next_on(conn, stream, s, subject))
                if m is None:
                    break
                if m.seq > last_seq:
                    break
                got = [m]
            out.extend(got)
            seq = got[-1].seq + 1
        return out[:count]

    def events(self, position: int, max_events: int) -> tuple[list[Event], int]:
        """Events of up to ``max_events`` records from ``position``, and the position
        after them. Records that are not events (no ``es-*`` headers) are skipped."""
        return events_from_records(self._topic.read(0, position, max_events), position)

    async def _aevents(self, position: int, max_events: int) -> tuple[list[Event], int]:
        return events_from_records(await self._topic._aread(0, position, max_events), position)

    def end_position(self) -> int:
        """The position after the last event (records after it that are not events,
        such as tracking records, do not count)."""
        return self._topic._run(self._aend_position())

    async def _aend_position(self) -> int:
        self._store._check()
        m = await self._alast_msg(f"{self._psubject}.e.>")
        return 0 if m is None else m.seq

    def watch(self) -> Watch:
        """Wake-ups on every commit (the topic's watch)."""
        w: Watch = self._topic.watch()
        return w

    # ----------------------------------------------------------------- awaited
    # The coroutine twins (``streamlog.api.AwaitableEventLog``), for a store bound to
    # the running loop.
    async def commit_async(self, events: Sequence[NewEventFields], expected: Mapping[str, int],
                           first_headers: EncodedHeaders | None = None
                           ) -> tuple[int, dict[str, int]]:
        """``commit``, awaited."""
        return await self._topic._awaited(self._acommit(events, expected, first_headers, None))

    async def last_version_async(self, stream_id: str) -> int:
        """``last_version``, awaited."""
        return await self._topic._awaited(self._alast_version(stream_id))

    async def stream_events_async(self, stream_id: str, lo: int, hi: int | None,
                                  limit: int | None, backwards: bool = False) -> list[Event]:
        """``stream_events``, awaited."""
        got = await self._topic._awaited(self._astream_read(stream_id, lo, hi, limit,
                                                            backwards, True))
        events: list[Event] = got[1]
        return events

    async def events_async(self, position: int, max_events: int) -> tuple[list[Event], int]:
        """``events``, awaited."""
        return await self._topic._awaited(self._aevents(position, max_events))

    async def end_position_async(self) -> int:
        """``end_position``, awaited."""
        return await self._topic._awaited(self._aend_position())

    async def watch_async(self) -> Watch:
        """``watch``, awaited."""
        w: Watch = await self._topic.watch_async()
        return w


async def _next_on(conn: Any, stream: str, seq: int, subject: str) -> StoredMsg | None:
    """The first message at or after ``seq`` on ``subject`` through the leader, or None."""
    try:
        m: StoredMsg = await conn.get_message(stream, seq, next_by_subj=subject)
    except NotFound:
        return None
    return m


def _version_of(m: StoredMsg) -> int:
    h = _records.decode_headers(m.headers)
    raw = h.get(VERSION_HEADER)
    if raw is None:
        raise StreamlogError(f"message {m.seq} on {m.subject} has no {VERSION_HEADER} header")
    return int(raw)


def _event_headers(e: NewEventFields, version: int,
                   extra: EncodedHeaders | None) -> EncodedHeaders:
    h: EncodedHeaders = [(_HB_STREAM, e[1]), (_HB_VERSION, b"%d" % version)]
    if e[3]:
        h.extend(e[3])
    if extra:
        h.extend(extra)
    return h


def _rejected_expectation(err: JetStreamError) -> bool:
    """Whether the server refused a publish or batch because an expected last
    sequence did not hold (nothing was stored)."""
    return err.err_code == 10071 or "wrong last sequence" in (err.description or "")


def _tracking_head(log: JetStreamEventLog, subject: str) -> tuple[int | None, int]:
    """(highest notification id or None, sequence of its record or 0) of a tracking
    subject, through the leader."""
    return log._topic._run(_atracking_head(log, subject))


async def _atracking_head(log: JetStreamEventLog, subject: str) -> tuple[int | None, int]:
    m = await log._alast_msg(subject)
    if m is None:
        return None, 0
    return int(_records.decode_headers(m.headers)[TRACKING_ID_HEADER]), m.seq


def _tracking_wire(topic: Any, application: str, notification_id: int,
                   headers: EncodedHeaders | None, ts: int, expect_seq: int) -> dict[str, str]:
    h: EncodedHeaders = [(_HB_TRACKING_APP, application.encode("utf-8")),
                         (_HB_TRACKING_ID, b"%d" % notification_id)]
    if headers:
        h.extend(headers)
    wire: dict[str, str] = topic._encode(b"", None, h, ts)
    wire[H_EXPECTED_LAST_SUBJECT_SEQ] = str(expect_seq)
    return wire


class JetStreamTrackingLog:
    """The tracking records of application ``name`` on JetStream
    (``streamlog.api.TrackingLog``): messages of the event log ``<name>.events``,
    one subject per upstream application. Thread- and process-safe."""

    def __init__(self, store: Any, name: str) -> None:
        self._store = store
        self.name = name
        self._events: JetStreamEventLog = store.event_log(f"{name}.events")

    def __repr__(self) -> str:
        return f"JetStreamTrackingLog({self.name!r})"

    def record(self, application: str, notification_id: int,
               headers: EncodedHeaders | None = None) -> None:
        """Record ``notification_id`` of ``application`` (``headers`` on the same record).

        WrongExpectedVersion(notification_id, recorded, application) unless it
        is above the recorded one; nothing is written then."""
        store = self._store
        store._check_writable(f"tracking record of {self.name!r}")
        extra = list(headers) if headers else []
        for hname, _ in extra:
            if hname in (_HB_TRACKING_APP, _HB_TRACKING_ID):
                raise ValueError(f"header name {hname.decode()!r} is reserved for tracking")
        ev = self._events
        topic, conn = ev._topic, ev._conn
        subject = ev.tracking_subject(application)
        ts = now_ms()
        for _attempt in range(COMMIT_ATTEMPTS):
            current, seq = _tracking_head(ev, subject)
            if current is not None and current >= notification_id:
                raise WrongExpectedVersion(notification_id, current, application)
            wire = _tracking_wire(topic, application, notification_id, extra, ts, seq)
            try:
                topic._run(topic._sending(0, lambda w=wire: conn.publish(subject, b"", w),
                                          idempotent=False))
            except JetStreamError as err:
                if _rejected_expectation(err):
                    continue  # another record came first: check against it
                raise
            topic._appended()
            return
        raise StreamlogError(f"tracking log {self.name!r}: record rejected {COMMIT_ATTEMPTS} "
                             f"times by racing writers; giving up")

    def commit_with(self, events: EventLog, application: str, notification_id: int,
                    new_events: Sequence[NewEventFields], expected: Mapping[str, int]) -> int:
        """Commit ``new_events`` with the tracking record in one atomic batch (both or
        neither); returns the first event's position. WrongExpectedVersion from
        either check, nothing written. ``events`` must be the event log
        ``<name>.events`` of this store (the batch is one stream's)."""
        ev = self._events
        if getattr(events, "name", None) != ev.name or not isinstance(events, JetStreamEventLog):
            raise ValueError(f"tracking log {self.name!r} commits with the event log "
                             f"{ev.name!r} of its store only, got {events!r}")
        base, _ = events._commit(new_events, expected, None, (application, notification_id))
        return base

    def max_id(self, application: str) -> int | None:
        """The highest recorded notification id of ``application``, or None."""
        self._store._check()
        ev = self._events
        return _tracking_head(ev, ev.tracking_subject(application))[0]

    def watch(self) -> Watch:
        """Wake-ups on every tracking record, alone or with events."""
        return self._events.watch()
