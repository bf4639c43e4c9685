"""The backend contract: what a storage engine offers, in terms of meaning, not mechanism.

The views (queue, pub-sub, rpc, event store; ``streamlog/views``) and the
``streamlog.eventsourcing`` recorders are written against these protocols
only. A backend is a sibling folder of ``streamlog/backends/`` whose store
class satisfies :class:`Store`; the views then run on it unchanged. The
embedded engine (``streamlog.backends.local``) is one; docs/backend.md states
each member's guarantee and names the shared test class that checks it.

Rules every member keeps, on every backend:

* Offsets are dense per partition from 0; a key always maps to the same
  partition (Kafka's murmur2 of the key, modulo the partition count).
* Whatever returned successfully is durable per the store's durability
  setting and visible to every reader of the store, in any process, before
  the call returns (read your own writes).
* Bad arguments raise TypeError/ValueError/RecordTooLarge before anything
  is written; a closed store raises StoreClosed; a deleted topic raises
  TopicNotFound.
* Nothing here needs a blocking caller: each wait has an awaitable twin
  (``Watch.wait_async``), and every other call is short on a store whose
  calls are local.

A backend whose calls go over the network (JetStream) may offer coroutine
twins of them, ``<name>_async`` with the same arguments, results, errors and
guarantees: the ``Awaitable*`` protocols below. A store says with
``awaitable_on_loop()`` whether they may be awaited on the running loop;
``streamlog.aio`` awaits them then, and otherwise runs the calls that wait
for the network in threads. A backend without them (the embedded engine,
whose calls take microseconds) declines by not having ``awaitable_on_loop``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from streamlog._types import GroupReset, Position, Record, RecordBatch, Retention

__all__ = [
    "ANY",
    "AwaitableEventLog",
    "AwaitableGroup",
    "AwaitableMessage",
    "AwaitableReplyBox",
    "AwaitableStore",
    "AwaitableTopic",
    "NO_STREAM",
    "Event",
    "EventLog",
    "Group",
    "Message",
    "NewEvent",
    "NewEventFields",
    "ReplyBox",
    "Store",
    "Topic",
    "TrackingLog",
    "Watch",
]

# expected_version of an event-log append: skip the check (EventStoreDB's -2).
ANY = -2
# expected_version of an event-log append: the stream must not exist yet.
NO_STREAM = -1

Headers = Mapping[str, bytes]
EncodedHeaders = list[tuple[bytes, bytes]]


class Event(NamedTuple):
    """One event of an event store: its stream, version in the stream (from 0),
    position in the store (commit order, from 0), timestamp, value and headers."""

    stream_id: str
    version: int
    position: int
    timestamp_ms: int
    value: bytes
    headers: dict[str, bytes]


# The headers every event record carries, on every backend: its stream id and its version
# in the stream (decimal). Names starting with ``es-`` are reserved for the event store.
STREAM_HEADER = "es-stream"
VERSION_HEADER = "es-version"


def events_from_records(records: Iterator[Record] | Sequence[Record],
                        position: int) -> tuple[list[Event], int]:
    """The events among ``records`` (read in commit order from ``position``), and the
    position after the last record: records without the event headers (tracking
    records) are skipped. Event logs share it so that they decode events alike."""
    out: list[Event] = []
    nxt = position
    for rec in records:
        nxt = rec.offset + 1
        h = rec.headers
        sid = h.pop(STREAM_HEADER, None)
        ver = h.pop(VERSION_HEADER, None)
        if sid is None or ver is None:
            continue
        out.append(_tuple_new(Event, (sid.decode("utf-8", "replace"), int(ver), rec.offset,
                                      rec.timestamp_ms, rec.value, h)))
    return out, nxt


_tuple_new = tuple.__new__


class NewEvent(NamedTuple):
    """An event to commit: its stream (``stream_id`` and its UTF-8 bytes), its value,
    and its own headers, encoded (the event log adds its stream and version headers).

    Event logs read the fields by position, so a plain tuple of the same four
    fields (``NewEventFields``, cheaper to build on a hot path) is accepted too."""

    stream_id: str
    stream_id_bytes: bytes
    value: bytes
    headers: EncodedHeaders | None


# A NewEvent's fields as a plain tuple (every NewEvent is one).
NewEventFields = tuple[str, bytes, bytes, EncodedHeaders | None]


@runtime_checkable
class Watch(Protocol):
    """Wake-ups when something new arrives: the pattern is read ``seq()``, look, then
    ``wait(seen)``; a change after the read always ends the wait, so none is lost."""

    def seq(self) -> int:
        """A counter that moves whenever something new arrives (appends, a ``wake``)."""
        ...

    def wait(self, seen: int, timeout: float) -> bool:
        """Block until ``seq()`` differs from ``seen``, or ``timeout`` seconds pass
        (False). May return True early (spurious wake-ups are allowed)."""
        ...

    async def wait_async(self, seen: int, timeout: float) -> bool:
        """As ``wait``, awaited: no thread is held per waiter, and cancelling it
        leaves nothing behind."""
        ...

    def wake(self) -> None:
        """Move the counter without new data: every waiter looks again."""
        ...


@runtime_checkable
class Message(Protocol):
    """A record delivered to one consumer of a group, with its lease."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp_ms(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> dict[str, bytes]: ...
    @property
    def delivery_count(self) -> int: ...

    def ack(self) -> bool:
        """Done: never delivered to this group again. False if the lease was lost."""
        ...

    def nack(self, delay_s: float = 0, error: str | None = None) -> bool:
        """Deliver again after ``delay_s`` (and the group's backoff); counts toward
        ``max_deliver``, after which the record goes to the dead-letter topic with
        ``error``. False if the lease was lost."""
        ...

    def in_progress(self) -> bool:
        """Extend the lease by the group's ``ack_wait_s`` from now; False if lost."""
        ...

    def defer(self, delay_s: float) -> bool:
        """Hand the record back until ``delay_s`` from now without counting this
        delivery (no ``max_deliver`` use, no backoff): for a record drawn but not
        processed, e.g. leased for a waiter that was cancelled. False if lost."""
        ...


@runtime_checkable
class Group(Protocol):
    """One consumer of a consumer group (modes ``shared``, ``key_shared``, ``exclusive``)."""

    name: str

    def poll(self, max_records: int = 100, timeout: float | None = 1.0) -> Sequence[Message]:
        """Up to ``max_records`` Messages leased to this consumer, waiting up to
        ``timeout`` seconds for the first (None: without end). Records appended with
        ``append_delayed`` are not delivered before their time."""
        ...

    def ack(self, msgs: Sequence[Any]) -> list[bool]:
        """Ack many of this consumer's messages at once (one step where the backend
        can); each answer is that message's ``ack()`` answer."""
        ...

    def nack(self, msgs: Sequence[Any], delay_s: float = 0,
             error: str | None = None) -> list[bool]:
        """Nack many of this consumer's messages at once (see ``Message.nack``)."""
        ...

    def poll_batch(self, max_records: int = 1000, timeout: float | None = 1.0) -> RecordBatch:
        """Up to ``max_records`` records leased as ``poll`` leases them (the same modes,
        subject filter, ``ack_wait_s``, ``max_deliver``, backoff and dead letters), all
        from ONE partition, as numpy columns: a RecordBatch with ``topic``,
        ``partition``, ``offsets`` increasing (not necessarily contiguous) and
        ``delivery_counts`` (1 on a first delivery), no Python object per record.
        Waits up to ``timeout`` like ``poll``; an empty batch on timeout. The values
        are the stored bytes (a serializer does not decode them) and the records'
        headers are not in the batch. Settle it whole with ``ack_batch`` /
        ``nack_batch`` of this handle."""
        ...

    def ack_batch(self, batch: RecordBatch) -> np.ndarray:
        """Ack every record of a ``poll_batch`` result, durable when it returns (as
        ``ack``). A bool array, one entry per record: False where the lease was lost.
        A second ack repeats the first answer; a batch this handle's ``poll_batch``
        did not return is a ValueError, before anything changes."""
        ...

    def nack_batch(self, batch: RecordBatch, delay_s: float = 0,
                   error: str | None = None) -> np.ndarray:
        """Nack every record of a ``poll_batch`` result (see ``Message.nack``); a bool
        array as ``ack_batch`` (all False once the batch was settled)."""
        ...

    def lag(self, partition: int | None = None) -> int:
        """Records not yet acknowledged by the group (in one partition, or all)."""
        ...

    def one_at_a_time(self) -> None:
        """A hint: this consumer polls one record at a time and settles it before its
        next poll. A backend may then lease the next records ahead (with an ``ack``,
        or several in one poll) and hand them out one per poll, and may batch this
        consumer's acks into a later step; what a caller can observe: a record so
        leased and not polled soon after goes back to the group, its delivery not
        counted, and a batched ack a crash catches uncommitted is a redelivery
        (docs/guarantees.md states each backend's rule)."""
        ...

    def ready_for_next(self) -> None:
        """A hint from a one-at-a-time consumer (see ``one_at_a_time``) whose work on the
        message it holds is done and which settles it next (an rpc server between its
        handler and its reply): a backend may ask for the next record now, so that it
        is at hand for the next poll. Nothing a caller can observe changes, except that
        a record so fetched and not polled soon after goes back to the group, its
        delivery not counted."""
        ...

    def dead_letters(self) -> Topic:
        """The group's dead-letter topic."""
        ...

    def close(self) -> None:
        """Leave the group: this consumer's leases go to the others at once."""
        ...


@runtime_checkable
class Topic(Protocol):
    """A topic of a store: partitions of dense offsets, groups over them."""

    @property
    def name(self) -> str:
        """The topic's name."""
        ...

    @property
    def partitions(self) -> int:
        """The partition count (it only grows: a store may add partitions)."""
        ...

    @property
    def config(self) -> Mapping[str, Any]:
        """The options the topic was created with (``partitions``, ``compact``,
        ``max_record_bytes``, ``uid`` - equal only for the same incarnation of a name)."""
        ...

    def append(self, value: Any, key: Any = None, headers: Any = None,
               timestamp_ms: int | None = None, msg_id: Any = None,
               subject: str | None = None) -> Position:
        """Append one record; with ``msg_id``, a repeat inside the topic's dedupe
        window returns the first append's Position and writes nothing. ``subject``
        (dot-separated tokens) is stored as header ``subject``: groups opened with
        ``subjects=`` filter on it."""
        ...

    def append_many(self, values: Sequence[Any], keys: Sequence[Any] | None = None,
                    headers: Sequence[Any] | None = None) -> list[Position]:
        """Append records; those of one partition land atomically, in order."""
        ...

    def append_batch(self, partition: int, batch: RecordBatch) -> int:
        """Append a RecordBatch's records (columns, no Python object per record) to
        ``partition`` as one atomic batch; returns the first record's offset. The
        batch's keys are stored but do not choose the partition; its records carry
        no headers. Bad input raises before anything is written."""
        ...

    def append_delayed(self, value: Any, deliver_at_ms: int, key: Any = None,
                       headers: Any = None) -> Position:
        """Append a record that no group delivers before ``deliver_at_ms`` (epoch ms).

        Readers see it at once; waiting for its time uses no delivery of any
        group (``max_deliver`` counts only real deliveries)."""
        ...

    def read(self, partition: int, offset: int = 0,
             limit: int | None = None) -> Iterator[Record]:
        """Records from ``offset`` on, in offset order."""
        ...

    def get(self, partition: int, offset: int) -> Record:
        """The record at ``offset`` (OffsetOutOfRange when outside the partition)."""
        ...

    def read_batch(self, partition: int, offset: int, max_records: int) -> RecordBatch:
        """Records from ``offset`` as numpy columns."""
        ...

    def start_offset(self, partition: int) -> int:
        """The first offset still held (retention moves it)."""
        ...

    def end_offset(self, partition: int) -> int:
        """The offset the next append to ``partition`` gets."""
        ...

    def offset_for_time(self, partition: int, timestamp_ms: int) -> int:
        """The first offset whose timestamp is >= ``timestamp_ms`` (end if none)."""
        ...

    def watch(self) -> Watch:
        """Wake-ups on appends to any partition of the topic."""
        ...

    def append_copies(self, partition: int, offset: int, records: Iterable[Any]) -> int:
        """Append copies of ``records`` (objects with ``timestamp_ms``, ``key``, ``value``
        and ``headers``, as ``read`` yields them; all four are kept) to ``partition`` at
        offsets ``offset``, ``offset + 1``, ...; returns the partition's end after them.

        Copying a store uses it: batches of up to 1,000 records, each stored only
        if the partition ends where the batch starts, so a rerun continues where
        the destination ends and never writes a record twice. Otherwise
        WrongExpectedVersion (expected: the batch's offset, actual: the end), and
        the batches before it stay. Every record is checked before anything is
        written."""
        ...

    def append_gap(self, partition: int, offset: int, count: int,
                   timestamp_ms: int = 0) -> int:
        """On a compacted topic: mark ``count`` offsets from ``offset`` as removed by
        compaction (reads skip them; ``get`` says they were compacted away), only if
        the partition ends at ``offset`` (WrongExpectedVersion otherwise); returns the
        new end. ``timestamp_ms`` stands for the removed records' timestamps. A copy
        of a compacted topic keeps its offsets this way. NotImplementedError where
        the backend has no compacted topics."""
        ...

    def set_start_offset(self, partition: int, offset: int) -> None:
        """Make an empty partition start (and end) at ``offset``, so that a copy of a
        partition whose start retention moved keeps its offsets. Idempotent;
        StreamlogError (nothing changed) when the partition holds records or ends
        past ``offset``."""
        ...

    def group_positions(self, name: str) -> dict[int, int]:
        """Group ``name``'s committed position per partition: every record below it is
        done for the group. StreamlogError when there is no such group; opens no
        consumer."""
        ...

    def group(self, name: str, mode: str = "shared", ack_wait_s: float = 30,
              max_deliver: int = 5, backoff_s: Sequence[float] | None = None,
              start: str = "earliest", dead_letter: str | None = None,
              consumer: str | None = None, subjects: Sequence[str] | None = None) -> Group:
        """Create-or-open group ``name`` and join it as one consumer.

        With ``subjects`` (NATS wildcards: ``*`` one token, a last ``>`` the
        rest) the group delivers only records whose subject matches one of
        them; the others count as done for the group without a delivery. The
        filter is a stored option of the group (ConfigMismatch if it differs)."""
        ...

    def group_config(self, name: str) -> dict[str, Any] | None:
        """The stored options of group ``name`` (``mode``, ``ack_wait_s``, ...), or None
        when it does not exist. Opens no consumer."""
        ...

    def groups(self) -> list[str]:
        """Names of the topic's groups, sorted."""
        ...

    def delete_group(self, name: str, force: bool = True) -> None:
        """Delete a group's positions, leases and options (its dead-letter topic stays).

        ``force=False``: GroupActive (nothing deleted) while the group has live
        consumers, StreamlogError when it does not exist; the default deletes
        whatever the group's state, and a missing group is not an error."""
        ...

    def group_consumers(self, name: str) -> list[str]:
        """The live consumers of group ``name``: those that polled within its ``ack_wait_s``
        (a polling consumer beats at least that often) and did not close; sorted.
        StreamlogError when there is no such group."""
        ...

    def reset_group(self, name: str, to: str | int | datetime.datetime,
                    dry_run: bool = False, force: bool = False) -> list[GroupReset]:
        """Move group ``name`` on every partition to ``"earliest"``, ``"latest"``, an offset
        (clamped to each partition's range) or an aware datetime; records before the new
        position count as done, those from it on are delivered (again), and outstanding
        leases are dropped. Returns each partition's old and new position; ``dry_run``
        changes nothing. GroupActive (nothing changed) while the group has live
        consumers unless ``force``; StreamlogError when there is no such group."""
        ...


@runtime_checkable
class EventLog(Protocol):
    """Versioned event streams in one commit order: an event store's engine.

    Positions are dense from 0 in commit order; a stream's versions are dense
    from 0. A commit is all or nothing: every event of it lands at
    contiguous positions, or none does; two commits racing on the same
    expected version of a stream, in any threads or processes, never both land.
    """

    name: str

    def commit(self, events: Sequence[NewEventFields], expected: Mapping[str, int],
               first_headers: EncodedHeaders | None = None) -> tuple[int, dict[str, int]]:
        """Append ``events`` (of one or more streams) in one commit; returns the
        position of the first, and per stream of the commit the version of its
        last event now (an append with ANY learns its versions only here).

        ``expected`` holds, per stream of the commit, the version its last event
        must have now (NO_STREAM: none; ANY: no check). WrongExpectedVersion names
        the first stream that differs, and nothing is written. ``first_headers``
        ride on the first event (a tracking record committed with the events).
        """
        ...

    def last_version(self, stream_id: str) -> int:
        """The version of the stream's last event, NO_STREAM (-1) when it has none."""
        ...

    def stream_records(self, stream_id: str, lo: int, hi: int | None, limit: int | None,
                       backwards: bool = False) -> tuple[int, list[Record]]:
        """The records of versions ``lo`` to ``hi`` (inclusive; None: the last) of a
        stream, at most ``limit`` (from the top when ``backwards``); returns the
        version of the first record returned, and the records in version order."""
        ...

    def stream_events(self, stream_id: str, lo: int, hi: int | None, limit: int | None,
                      backwards: bool = False) -> list[Event]:
        """As ``stream_records``, the events themselves, in version order (the read
        path of the event store view: no record is made on the way)."""
        ...

    def events(self, position: int, max_events: int) -> tuple[list[Event], int]:
        """Events from ``position`` in commit order, at most ``max_events``; returns
        them and the position after the last one looked at."""
        ...

    def end_position(self) -> int:
        """The position the next event gets."""
        ...

    def watch(self) -> Watch:
        """Wake-ups on every commit."""
        ...


@runtime_checkable
class TrackingLog(Protocol):
    """Tracking records of an event-processing application: per upstream
    application, the highest notification id processed, which only grows.

    A tracking record is written alone (``record``) or atomically with the
    events it produced (``commit_with``): both or neither.
    """

    name: str

    def record(self, application: str, notification_id: int,
               headers: EncodedHeaders | None = None) -> None:
        """Record ``notification_id`` of ``application`` (with ``headers`` on the
        record). WrongExpectedVersion (expected: the id, actual: the recorded one)
        unless it is above the recorded one; nothing is written then."""
        ...

    def commit_with(self, events: EventLog, application: str, notification_id: int,
                    new_events: Sequence[NewEventFields], expected: Mapping[str, int]) -> int:
        """Commit ``new_events`` to ``events`` and the tracking record in one step
        (both or neither); returns the first event's position. WrongExpectedVersion
        from either check, and nothing is written."""
        ...

    def max_id(self, application: str) -> int | None:
        """The highest recorded notification id of ``application``, or None."""
        ...

    def watch(self) -> Watch:
        """Wake-ups on every tracking record, alone or with events."""
        ...


@runtime_checkable
class ReplyBox(Protocol):
    """Replies of a request-reply view, by correlation id: a server ``put``s, the
    requester waits for and ``take``s its own, never scanning others'."""

    name: str

    def open(self, correlation_id: bytes) -> None:
        """Announce that a requester waits for ``correlation_id`` (before sending)."""
        ...

    def put(self, correlation_id: bytes, value: bytes, error: str | None) -> None:
        """Deliver a reply (``error``: the handler's exception type name, or None).
        Durable unless the requester waits in this process and takes it directly."""
        ...

    def take(self, correlation_id: bytes) -> tuple[bytes, str | None] | None:
        """The reply for ``correlation_id`` if it has come (and forget it), else None."""
        ...

    def close(self, correlation_id: bytes) -> None:
        """The requester stops waiting (reply taken or timed out)."""
        ...

    def watch(self) -> Watch:
        """Wake-ups on every reply put."""
        ...


@runtime_checkable
class Store(Protocol):
    """An open store: topics, and the engines the views need beside them."""

    @property
    def url(self) -> str:
        """Where the store lives, as a URL (``file:///abs/dir``, ``nats://...``); equal
        for every handle on one store."""
        ...

    def raise_if_closed(self) -> None:
        """StoreClosed if the store was closed (views check before their arguments)."""
        ...

    def topic(self, name: str, partitions: int | None = None,
              retention: Retention | None = None, segment_bytes: int | None = None,
              max_record_bytes: int | None = None, dedupe_window_s: float | None = None,
              compact: bool | None = None) -> Topic:
        """Create-or-open topic ``name``; an option left None means the stored value (or
        the default for a new topic); ConfigMismatch if it exists with other options."""
        ...

    def existing_topic(self, name: str) -> Topic:
        """Open topic ``name``; TopicNotFound if it does not exist."""
        ...

    def topics(self) -> list[str]:
        """Names of every topic, sorted."""
        ...

    def delete_topic(self, name: str) -> None:
        """Delete a topic with its groups and every index the store keeps for it."""
        ...

    def alter_topic(self, name: str, retention: Retention | None = None,
                    dedupe_window_s: float | None = None, max_record_bytes: int | None = None,
                    partitions: int | None = None) -> Topic:
        """Change a topic's stored options (None: as it is); returns a handle with the new
        ones. Checked before anything is written; nothing to change is a ValueError.
        Partitions only grow (keys then map anew; every group starts a new partition at
        its first record); an event store's topic keeps one partition and every record."""
        ...

    def stats(self) -> dict[str, Any]:
        """Figures of the store: ``topics`` (per partition: offsets, records, bytes) and
        ``groups`` (``[topic][group]``: lag, pending leases, dead letters, live
        consumers, the oldest unacknowledged record's age, and the same per partition)."""
        ...

    def event_log(self, name: str) -> EventLog:
        """The event log behind event store ``name`` (its topic is ``name``)."""
        ...

    def tracking_log(self, name: str) -> TrackingLog:
        """The tracking records of application ``name``."""
        ...

    def reply_box(self, name: str) -> ReplyBox:
        """The reply box of reply topic ``name``."""
        ...

    def close(self) -> None:
        """Close the store (idempotent): its group handles leave their groups (leases go
        back at once), waits end, and every later call raises StoreClosed."""
        ...

    def on_close(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` when the store closes, before its handles stop working."""
        ...


# ------------------------------------------------------------------ awaited twins
@runtime_checkable
class AwaitableMessage(Protocol):
    """A Message whose settling can be awaited (see the module's docstring)."""

    async def ack_async(self) -> bool: ...
    async def nack_async(self, delay_s: float = 0, error: str | None = None) -> bool: ...
    async def in_progress_async(self) -> bool: ...
    async def defer_async(self, delay_s: float) -> bool: ...


@runtime_checkable
class AwaitableGroup(Protocol):
    """A Group whose calls can be awaited. ``poll_async`` cancelled while it waits
    leases nothing."""

    async def poll_async(self, max_records: int = 100,
                         timeout: float | None = 1.0) -> Sequence[Message]: ...
    async def ack_async(self, msgs: Sequence[Any]) -> list[bool]: ...
    async def nack_async(self, msgs: Sequence[Any], delay_s: float = 0,
                         error: str | None = None) -> list[bool]: ...
    async def poll_batch_async(self, max_records: int = 1000,
                               timeout: float | None = 1.0) -> RecordBatch: ...
    async def ack_batch_async(self, batch: RecordBatch) -> np.ndarray: ...
    async def nack_batch_async(self, batch: RecordBatch, delay_s: float = 0,
                               error: str | None = None) -> np.ndarray: ...
    async def lag_async(self, partition: int | None = None) -> int: ...
    async def close_async(self) -> None: ...


@runtime_checkable
class AwaitableTopic(Protocol):
    """A Topic whose calls can be awaited (``read_async`` returns a list)."""

    async def append_async(self, value: Any, key: Any = None, headers: Any = None,
                           timestamp_ms: int | None = None, msg_id: Any = None,
                           subject: str | None = None) -> Position: ...
    async def append_many_async(self, values: Sequence[Any], keys: Sequence[Any] | None = None,
                                headers: Sequence[Any] | None = None) -> list[Position]: ...
    async def append_batch_async(self, partition: int, batch: RecordBatch) -> int: ...
    async def append_delayed_async(self, value: Any, deliver_at_ms: int, key: Any = None,
                                   headers: Any = None) -> Position: ...
    async def read_async(self, partition: int, offset: int = 0,
                         limit: int | None = None) -> list[Record]: ...
    async def get_async(self, partition: int, offset: int) -> Record: ...
    async def read_batch_async(self, partition: int, offset: int,
                               max_records: int) -> RecordBatch: ...
    async def start_offset_async(self, partition: int) -> int: ...
    async def end_offset_async(self, partition: int) -> int: ...
    async def offset_for_time_async(self, partition: int, timestamp_ms: int) -> int: ...
    async def watch_async(self) -> Watch: ...


@runtime_checkable
class AwaitableEventLog(Protocol):
    """An EventLog whose calls can be awaited."""

    async def commit_async(self, events: Sequence[NewEventFields], expected: Mapping[str, int],
                           first_headers: EncodedHeaders | None = None
                           ) -> tuple[int, dict[str, int]]: ...
    async def last_version_async(self, stream_id: str) -> int: ...
    async def stream_events_async(self, stream_id: str, lo: int, hi: int | None,
                                  limit: int | None, backwards: bool = False
                                  ) -> list[Event]: ...
    async def events_async(self, position: int, max_events: int
                           ) -> tuple[list[Event], int]: ...
    async def end_position_async(self) -> int: ...
    async def watch_async(self) -> Watch: ...


@runtime_checkable
class AwaitableReplyBox(Protocol):
    """A ReplyBox whose network calls can be awaited (``open``/``close`` stay plain:
    they are local)."""

    async def take_async(self, correlation_id: bytes) -> tuple[bytes, str | None] | None: ...
    async def put_async(self, correlation_id: bytes, value: bytes, error: str | None) -> None: ...


@runtime_checkable
class AwaitableStore(Protocol):
    """A store whose handles have the awaited twins above."""

    def awaitable_on_loop(self) -> bool:
        """True when the twins may be awaited on the running event loop (the store is
        bound to it); False when the store's calls wait for the network on a loop of
        its own: run them in a thread."""
        ...
