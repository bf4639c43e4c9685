"""The public Log and Topic: open a directory, create topics, append and read records."""

from __future__ import annotations

import datetime
import itertools
import json
import logging
import os
import pathlib
import shutil
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from streamlog import _ext, _limits, _tracing, _validate
from streamlog._limits import (
    COPY_BATCH_BYTES,
    COPY_BATCH_RECORDS,
    DEFAULT_DEDUPE_WINDOW_S,
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_PARTITIONS,
    DEFAULT_SEGMENT_BYTES,
    MAX_MAX_RECORD_BYTES,
    MAX_PARTITIONS,
    MAX_SEGMENT_BYTES,
    MIN_SEGMENT_BYTES,
    RATE_WINDOW_S,
    SYNC_INTERVAL_S,
)
from streamlog._types import (
    CompactionResult,
    Position,
    Problem,
    Record,
    RecordBatch,
    Retention,
    View,
    empty_columns,
    now_ms,
    retention_limits,
)
from streamlog.backends.local import codec as _codec
from streamlog.backends.local import dedupe, eventlog, groups, replybox, table, tracking
from streamlog.backends.local import watch as _watch
from streamlog.backends.local.storage import compaction, files
from streamlog.backends.local.storage.meta import Meta, Tx
from streamlog.backends.local.storage.partition import Partition, boot_id, open_notifier
from streamlog.errors import (
    ConfigMismatch,
    CorruptionError,
    OffsetOutOfRange,
    ReadOnlyStore,
    RecordTooLarge,
    StoreClosed,
    StreamlogError,
    TopicNotFound,
    WrongExpectedVersion,
)
from streamlog.views._store import ViewMethods

if TYPE_CHECKING:
    from streamlog.backends.local.replybox import LocalReplyBox

DURABILITY_MODES = ("always", "interval", "never")
_TOPICS_DB = "topics"
_OPS_DB = "ops"  # operational counters (retention runs per topic)
_logger = logging.getLogger("streamlog")
_tuple_new = tuple.__new__
# Timestamps of one record batch lie within this span (its records store 32-bit deltas).
_MAX_BATCH_SPAN_MS = 1 << 31


class Topic:
    """A handle on one topic: append, read, and the topic's consumer groups.

    Thread-safe and cheap; every handle of one Log shares the partitions.
    """

    def __init__(self, log: Log, name: str, config: dict) -> None:
        self._log = log
        self.name = name
        self._rr = itertools.count()
        self._encode_record = _codec.encode_record
        self._pfk = _codec.partition_for_key
        self._appender: _ext.Appender | None = None
        log._partitions_of(name, config)  # first: it opens the wake-up file afresh if needed
        self._notifier = log._notifier_of(name)
        seen = self._notifier.config_word
        if seen != config.get("generation", 0) & 0xFFFFFFFF:
            # The options changed since the caller read them, or their change is not
            # published yet, or its publication was lost with a process that died in
            # between: read them again, after the counter, and publish what we read unless
            # a newer change did meanwhile (the other processes then take it too).
            config = log._topic_config(name) or config
            gen = config.get("generation", 0) & 0xFFFFFFFF
            if gen != seen and not log.read_only and \
                    self._notifier.swap_config_word(seen, gen):
                seen = gen
                self._notifier.notify()
        self._load(config, seen)
        tracer = _tracing.tracer()
        if tracer is not None:
            # Tracing is decided when the handle is made: without a tracer provider the
            # append stays the bare C fast path, with one it goes through a producer span.
            self.append = _tracing.traced_append(  # type: ignore[method-assign]
                tracer, name, self.append)
            self.append_many = _tracing.traced_append_many(  # type: ignore[method-assign]
                tracer, name, self.append_many)

    def _load(self, config: dict, seen: int) -> None:
        """Take ``config`` (read after the configuration counter was ``seen``) as this handle's
        options: partitions, limits, and the fast path built on them."""
        log = self._log
        parts = log._partitions_of(self.name, config)
        # The partitions before their count: another thread may be picking one meanwhile.
        self._parts: list[Partition] = parts
        self._n = config["partitions"]
        self._config = config
        self._max_record = config["max_record_bytes"]
        self._allow_none = bool(config["compact"])
        self._seen = seen
        sync = None
        if log.durability == "always":
            sync = lambda p, end: parts[p].sync_to(end)  # noqa: E731
        if _codec.NATIVE and not log.read_only:
            # The C fast path takes the common call; anything it does not handle
            # (validation, headers, msg_id, a full segment, options another process
            # changed) comes back to Python.
            writers = [p.writer for p in parts]
            if self._appender is not None:  # changed options: in place, so that a bound
                self._appender.reconfigure(writers, self._max_record, sync, seen)  # append
                self._appender.need_key = self._allow_none  # a caller keeps stays fast
            else:
                appender = _ext.Appender(writers, self._max_record, self._append_slow,
                                         self._write_slow, sync, Position)
                appender.need_key = self._allow_none  # compacted: every record needs a key
                appender.watch(self._notifier, seen)
                self._appender = appender
                # instance attribute: skips one call layer
                self.append = appender.append  # type: ignore[method-assign]
        for p in parts:
            p.compacted_topic = self._allow_none
        if self._allow_none and not log.read_only:
            bg = compaction.Background.ensure(log)
            for p in parts:
                p.compacted = True
                p.on_roll = bg.wake

    def _refresh(self) -> None:
        """Take the topic's stored options again if any process changed them since this
        handle read them (``Log.alter_topic``): one load of a shared word when they did not."""
        word = self._notifier.config_word
        if word == self._seen:
            return
        self._log._check()
        with self._log._parts_lock:
            word = self._notifier.config_word
            if word == self._seen:
                return
            config = self._log._topic_config(self.name)
            if config is None:
                raise TopicNotFound(f"topic {self.name!r} does not exist in {self._log.path}")
            self._load(config, word)

    @property
    def partitions(self) -> int:
        """Number of partitions (it only grows: see ``Log.alter_topic``)."""
        self._refresh()
        return self._n

    @property
    def config(self) -> dict:
        """The topic's stored options (as of the last change any process made)."""
        self._refresh()
        return self._config

    def __repr__(self) -> str:
        return f"Topic({self.name!r}, partitions={self._n})"

    # ---------------------------------------------------------------- append
    def _partition_of(self, key: bytes | None) -> int:
        n = self._n
        if n == 1:
            return 0
        if key is None:
            return next(self._rr) % n
        return self._pfk(key, n)

    def append(self, value, key=None, headers=None, timestamp_ms: int | None = None,
               msg_id=None, subject: str | None = None) -> Position:
        """Append one record; returns its Position once the bytes are in the OS.

        Raises TypeError/ValueError/RecordTooLarge before writing anything.
        With ``msg_id``, a repeat inside the topic's dedupe window returns the
        first append's position and writes nothing. ``subject`` (dot-separated
        tokens, e.g. ``"orders.eu.created"``) is stored as header ``subject``;
        groups opened with ``subjects=`` deliver only records whose subject matches.
        """
        return self._append_slow(value, key, headers, timestamp_ms, msg_id, subject)

    def _write_slow(self, p: int, data: bytes, count: int, max_ts: int) -> int:
        return self._parts[p]._append_slow(data, count, max_ts)

    def _append_slow(self, value, key, headers, timestamp_ms, msg_id,
                     subject=None) -> Position:
        if self._log._closed:
            raise StoreClosed("the store is closed")
        if self._log.read_only:
            raise self._log._read_only_error(f"append to topic {self.name!r}")
        self._refresh()
        if subject is not None:
            headers = _validate.with_subject(headers, subject)
        if type(value) is not bytes:
            value = _validate.value(value, self._allow_none)
        if key is not None and type(key) is not bytes:
            key = _validate.key(key)
        elif key is None and self._allow_none:
            raise ValueError(f"topic {self.name!r} is compacted: every record needs a key")
        hdrs = _validate.headers(headers) if headers is not None else None
        ts = now_ms() if timestamp_ms is None else _validate.timestamp(timestamp_ms)
        if msg_id is not None:
            mid = _validate.msg_id(msg_id)
            assert mid is not None  # msg_id was not None
            return self._log._dedupe_append(self, value, key, hdrs, ts, mid)
        if (len(value) if value is not None else 0) + (len(key) if key is not None else 0) \
                > self._max_record or hdrs:
            _validate.record_size(key, value, hdrs, self._max_record)
        p = self._partition_of(key)
        off = self._parts[p].append(self._encode_record(key, value, hdrs, ts), 1, ts)
        return _tuple_new(Position, (p, off))

    def _append_encoded(self, p: int, data: bytes, count: int, max_ts: int) -> int:
        """Append a batch the caller encoded (views and dedupe use it); returns its base."""
        return self._parts[p].append(data, count, max_ts)

    def append_with(self, partition: int, build: Callable) -> tuple[int, Any]:
        """Append under the partition's append lock what ``build(end_offset)`` returns.

        For conditional appends (expected versions, dedupe): see
        ``Partition.append_with``. ``build`` gets the partition's end offset
        and returns ``(encoded_batch | None, count, max_timestamp_ms, result)``.
        """
        part = self._part(partition)
        if self._log.read_only:
            raise self._log._read_only_error(f"append to topic {self.name!r}")
        return part.append_with(build)

    def wait(self, partition: int, seen: int, timeout: float) -> bool:
        """Block until an append to ``partition`` bumps its notify sequence past ``seen``.

        Returns False on timeout. ``notify_seq(partition)`` gives ``seen``;
        read it before checking for records so no wake-up is lost.
        """
        return self._part(partition).wait(seen, timeout)

    def notify_seq_any(self) -> int:
        """The topic-wide append counter: bumped by an append to any partition."""
        self._log._check()
        return self._log._notifier_of(self.name).seq

    def wait_any(self, seen: int, timeout: float) -> bool:
        """Block until an append to any partition moves ``notify_seq_any()`` past ``seen``."""
        self._log._check()
        return self._log._notifier_of(self.name).wait(seen, timeout)

    def notify_seq(self, partition: int) -> int:
        """The partition's append counter (a futex word in its shared control block)."""
        return self._part(partition).notify_seq

    def watch(self) -> _TopicWatch:
        """Wake-ups on appends to any partition of the topic (its shared wake-up word)."""
        self._log._check()
        return _TopicWatch(self._log, self.name)

    def append_delayed(self, value, deliver_at_ms: int, key=None, headers=None) -> Position:
        """Append a record that no group delivers before ``deliver_at_ms`` (epoch ms).

        The due time travels in the record, as header ``streamlog.deliver-at-ms``;
        readers see the record at once. A group that draws it early hands it back
        until then without counting a delivery, so a delay never uses up
        ``max_deliver``. Raises TypeError/ValueError/RecordTooLarge before writing.
        """
        self._log._check()
        hdrs = _validate.delayed_headers(headers, deliver_at_ms)
        return self.append(value, key=key, headers=hdrs)

    def append_many(self, values: Sequence, keys: Sequence | None = None,
                    headers: Sequence | None = None) -> list[Position]:
        """Append many records: validated as a whole first, then one batch per partition.

        Atomic per partition: each partition's share is a single batch, so it
        is all there or (after a crash mid-write) none of it is.
        """
        if self._log._closed:
            raise StoreClosed("the store is closed")
        if self._log.read_only:
            raise self._log._read_only_error(f"append to topic {self.name!r}")
        self._refresh()
        if headers is None and self._appender is not None:
            # One C pass validates and encodes the common shape (lists of bytes).
            ts = now_ms()
            data = self._appender.encode_many(values, keys, ts)
            if data is not None:
                base = self._parts[0].append(data, len(values), ts)
                return self._appender.positions(0, base, len(values))
        values, keys, headers = _validate.many(values, keys, headers)
        n = len(values)
        if n == 0:
            return []
        vals = [v if type(v) is bytes else _validate.value(v, self._allow_none) for v in values]
        ks = None
        if keys is not None:
            ks = [k if k is None or type(k) is bytes else _validate.key(k) for k in keys]
        if self._allow_none and (ks is None or any(k is None for k in ks)):
            raise ValueError(f"topic {self.name!r} is compacted: every record needs a key")
        hs = None
        if headers is not None:
            hs = [_validate.headers(h) for h in headers]
        limit = self._max_record
        for i in range(n):
            v = vals[i]
            k = ks[i] if ks else None
            size = (len(v) if v is not None else 0) + (len(k) if k else 0)
            if size > limit or (hs and hs[i]):
                _validate.record_size(ks[i] if ks else None, v, hs[i] if hs else None, limit)
        ts = now_ms()
        if self._n == 1:
            groups = {0: list(range(n))}
        else:
            groups = {}
            for i in range(n):
                groups.setdefault(self._partition_of(ks[i] if ks else None), []).append(i)
        out: list[Position | None] = [None] * n
        # Encode every partition's batch before writing any (validation is complete).
        batches = []
        for p, idxs in groups.items():
            data = _codec.encode_batch(
                None if ks is None else [ks[i] for i in idxs],
                [vals[i] for i in idxs],
                None if hs is None else [hs[i] for i in idxs],
                [ts] * len(idxs),
            )
            if len(data) > self._parts[p].segment_bytes and len(data) > MAX_SEGMENT_BYTES:
                raise ValueError("append_many batch is too large for one segment")
            batches.append((p, idxs, data))
        for p, idxs, data in batches:
            base = self._parts[p].append(data, len(idxs), ts)
            for j, i in enumerate(idxs):
                out[i] = _tuple_new(Position, (p, base + j))
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ copy
    def append_copies(self, partition: int, offset: int, records: Iterable[Any]) -> int:
        """Append copies of ``records`` (as ``read`` yields them: timestamp, key, value and
        headers are kept) to ``partition`` at offsets ``offset``, ``offset + 1``, ...;
        returns the partition's end after them.

        For copying a store: each batch (up to COPY_BATCH_RECORDS records) is
        written under the partition's append lock only if the partition's end is
        the offset it was meant for, so a rerun after an interruption continues
        where the destination ends and never writes a record twice. A partition
        whose end is not ``offset`` raises WrongExpectedVersion (expected: the
        offset, actual: the end) with nothing of that batch written; batches
        before it stay. Every record is checked first (TypeError, ValueError,
        RecordTooLarge), before anything is written.
        """
        part = self._part(partition)
        offset = _validate.offset(offset)
        if self._log.read_only:
            raise self._log._read_only_error(f"append to topic {self.name!r}")
        self._refresh()
        keys, values, hdrs, stamps = _validate.copies(records, self._allow_none,
                                                      self._max_record)
        n = len(values)
        i = 0
        while i < n:
            j, size = i, 0
            lo = hi = stamps[i]
            # A batch: up to COPY_BATCH_RECORDS records and COPY_BATCH_BYTES bytes,
            # whose timestamps lie within the 2**31 ms one batch can hold.
            while j < n and j - i < COPY_BATCH_RECORDS and \
                    (j == i or size < COPY_BATCH_BYTES) and \
                    max(hi, stamps[j]) - min(lo, stamps[j]) < _MAX_BATCH_SPAN_MS:
                v, k = values[j], keys[j]
                size += (len(v) if v is not None else 0) + (len(k) if k is not None else 0)
                lo, hi = min(lo, stamps[j]), max(hi, stamps[j])
                j += 1
            data = _codec.encode_batch(keys[i:j], values[i:j], hdrs[i:j], stamps[i:j])
            want, count = offset + i, j - i

            def build(end: int, data=data, want=want, count=count, hi=hi):
                if end != want:
                    return None, 0, 0, end
                return data, count, hi, end

            base, end = part.append_with(build)
            if base < 0:
                raise WrongExpectedVersion(want, end, f"{self.name}/{partition}")
            i = j
        return offset + n

    def append_gap(self, partition: int, offset: int, count: int,
                   timestamp_ms: int = 0) -> int:
        """On a compacted topic: mark ``count`` offsets from ``offset`` as removed by
        compaction (a gap batch, docs/format.md), only if the partition ends at
        ``offset``; returns the new end. For copying a compacted topic with its
        offsets. ``timestamp_ms`` stands for the removed records' timestamps (a
        copy passes the timestamp of the record before the gap, so the running
        maximum timestamp, and so ``offset_for_time``, stays the source's).
        WrongExpectedVersion (nothing written) when the partition ends elsewhere;
        ValueError on a topic that is not compacted."""
        part = self._part(partition)
        offset = _validate.offset(offset)
        count = _validate.positive_int(count, "count", minimum=1)
        ts = _validate.timestamp(timestamp_ms)
        if self._log.read_only:
            raise self._log._read_only_error(f"append to topic {self.name!r}")
        self._refresh()
        if not self._allow_none:
            raise ValueError(f"topic {self.name!r} is not compacted: its offsets have no gaps")
        files.upgrade_format(self._log.path)  # gap batches are format 2

        def build(end: int):
            if end != offset:
                return None, 0, 0, end
            return _codec.encode_gap(offset, count, ts, ts), count, ts, end

        base, end = part.append_with(build)
        if base < 0:
            raise WrongExpectedVersion(offset, end, f"{self.name}/{partition}")
        return offset + count

    def set_start_offset(self, partition: int, offset: int) -> None:
        """Make an empty partition's start and end ``offset``: its first record gets that
        offset. For copying a partition whose start retention moved, so its offsets
        are kept. Idempotent; StreamlogError (nothing changed) when the partition
        holds records or its end is past ``offset``."""
        part = self._part(partition)
        offset = _validate.offset(offset)
        if self._log.read_only:
            raise self._log._read_only_error(f"change topic {self.name!r}")
        part.start_empty_at(offset)

    def group_positions(self, name: str) -> dict[int, int]:
        """Group ``name``'s committed position on each partition: every record below it is
        done for the group (acked, dead-lettered, skipped by a seek, or removed by
        retention). StreamlogError when there is no such group. Opens no consumer."""
        return groups.committed_positions(self, name)

    def append_batch(self, partition: int, batch: RecordBatch) -> int:
        """Append the records of ``batch`` (columns, as ``read_batch`` returns them or
        ``RecordBatch.from_arrays`` builds them) to ``partition`` as one batch.

        Atomic: after a crash all of it is there or none. Returns the offset of
        its first record (the others follow densely). The columns are encoded
        into the on-disk batch in one C pass, with no Python object per record;
        the batch's own offsets, topic and partition are ignored, its keys are
        kept but do not choose the partition, and its records carry no headers.
        TypeError/ValueError/RecordTooLarge (an empty batch, a tombstone on a
        topic that is not compacted, ...) before anything is written.
        """
        if self._log._closed:
            raise StoreClosed("the store is closed")
        if self._log.read_only:
            raise self._log._read_only_error(f"append to topic {self.name!r}")
        part = self._part(partition)
        if not isinstance(batch, RecordBatch):
            raise TypeError(f"batch must be a streamlog.RecordBatch, not {type(batch).__name__}")
        image = batch._image if _codec.NATIVE else None
        if image is not None:
            # Encoded when the batch was built (from_arrays): check its summary
            # against this topic, then write the bytes as they are.
            data, max_ts, largest, null_value, null_key = image
            if null_value and not self._allow_none:
                raise ValueError("the batch holds a null value (a tombstone): allowed only "
                                 "on compacted topics")
            if null_key and self._allow_none:
                raise ValueError(f"topic {self.name!r} is compacted: every record needs a key "
                                 "and the batch holds a record without one")
            if largest > self._max_record:
                raise RecordTooLarge(f"the batch holds a record of {largest} bytes (key + "
                                     f"value), over max_record_bytes={self._max_record}")
        else:
            data, max_ts = _codec.encode_columns(
                batch.timestamps_ms, batch.value_offsets, batch.value_data, batch.value_null,
                batch.key_offsets, batch.key_data, batch.key_null, self._max_record,
                self._allow_none, self._allow_none)
        if len(data) > part.segment_bytes and len(data) > MAX_SEGMENT_BYTES:
            raise ValueError("append_batch: the batch is too large for one segment; split it")
        return part.append(data, len(batch), max_ts)

    def flush(self) -> None:
        """Make everything appended so far durable (fsync), whatever the durability mode."""
        self._log._check()
        if self._log.read_only:
            return  # nothing was written through this store
        for p in self._parts:
            p.flush()
        self._log._meta.sync()

    # ------------------------------------------------------------------ read
    def _part(self, partition) -> Partition:
        self._log._check()
        if self._notifier.config_word != self._seen:
            self._refresh()
        return self._parts[_validate.partition(partition, self._n)]

    def read(self, partition: int, offset: int = 0, limit: int | None = None) -> Iterator[Record]:
        """Records of ``partition`` from ``offset`` until the end (or ``limit`` records).

        An offset below start_offset starts at start_offset; one at or past
        the end yields nothing.
        """
        part = self._part(partition)
        offset = _validate.offset(offset)
        if limit is not None:
            limit = _validate.positive_int(limit, "limit", minimum=0)
        return part.read(offset, limit)

    def get(self, partition: int, offset: int) -> Record:
        """The record at ``offset``; OffsetOutOfRange outside [start_offset, end_offset)."""
        part = self._part(partition)
        offset = _validate.offset(offset)
        view = View._make(part.view())
        start, end = view.start_offset, view.end_offset
        if not start <= offset < end:
            raise OffsetOutOfRange(f"offset {offset} outside [{start}, {end}) of "
                                   f"{self.name}/{partition}")
        rec = part.get(offset)
        if rec is None:
            if self._allow_none and offset >= part.start_offset():
                raise OffsetOutOfRange(f"offset {offset} of {self.name}/{partition} was "
                                       "compacted away (a newer record of its key superseded it)")
            # removed by retention between the check and the read
            raise OffsetOutOfRange(f"offset {offset} of {self.name}/{partition} is gone")
        return rec

    def start_offset(self, partition: int) -> int:
        """First retained offset of ``partition``."""
        return self._part(partition).start_offset()

    def end_offset(self, partition: int) -> int:
        """Next offset to be written in ``partition``."""
        return self._part(partition).end_offset()

    def offset_for_time(self, partition: int, timestamp_ms: int) -> int:
        """Earliest offset whose timestamp is >= ``timestamp_ms``, by the running maximum
        timestamp as Kafka does; end_offset if there is none."""
        part = self._part(partition)
        ts = _validate.timestamp(timestamp_ms)
        return part.offset_for_time(ts)

    def read_batch(self, partition: int, offset: int, max_records: int) -> RecordBatch:
        """Up to ``max_records`` records from ``offset`` as numpy columns."""
        part = self._part(partition)
        offset = _validate.offset(offset)
        max_records = _validate.positive_int(max_records, "max_records", minimum=0)
        cols = part.read_columns(offset, max_records) if max_records else empty_columns()
        return RecordBatch(self.name, partition, cols)

    # ---------------------------------------------------------------- groups
    def group(self, name: str, mode: str = "shared", ack_wait_s: float = 30,
              max_deliver: int = 5, backoff_s: Sequence[float] | None = None,
              start: str = "earliest", dead_letter: str | None = None,
              consumer: str | None = None, subjects: Sequence[str] | None = None):
        """A consumer in group ``name`` of this topic (see streamlog.backends.local.groups).

        With ``subjects`` (NATS wildcards: ``*`` one token, a last ``>`` the
        rest) it delivers only records appended with a matching ``subject``."""
        return groups.open_group(self, name, mode=mode, ack_wait_s=ack_wait_s,
                          max_deliver=max_deliver, backoff_s=backoff_s, start=start,
                          dead_letter=dead_letter, consumer=consumer, subjects=subjects)

    def group_config(self, name: str) -> dict | None:
        """The stored options of group ``name`` (``mode``, ``ack_wait_s``, ...), or None
        when there is no such group. Reads only: opens no consumer."""
        from streamlog.backends.local.groups import group_config

        return group_config(self, name)

    def groups(self) -> list[str]:
        """Names of this topic's consumer groups."""
        return groups.list_groups(self)

    def delete_group(self, name: str, force: bool = True) -> None:
        """Delete a group's offsets and leases (its dead-letter topic stays).

        With ``force=False`` it is refused (GroupActive, nothing deleted) while
        the group has live consumers, and a missing group is a StreamlogError;
        the default deletes whatever the group's state, and a missing group is
        not an error.
        """
        self._log._check()
        if force is True:
            groups.delete_group(self, name)
        elif force is False:
            groups.delete_group_checked(self, name, force=False)
        else:
            raise TypeError(f"force must be a bool, not {type(force).__name__}")

    def group_consumers(self, name: str) -> list[str]:
        """The live consumers of group ``name``: those that polled within its ack_wait_s
        (a polling consumer beats at least that often) from a process that still runs,
        and did not close. StreamlogError when there is no such group."""
        return groups.group_consumers(self, name)

    def reset_group(self, name: str, to: str | int | datetime.datetime,
                    dry_run: bool = False, force: bool = False) -> list:
        """Move group ``name`` on every partition, as ``kafka-consumer-groups --reset-offsets``.

        ``to`` is ``"earliest"`` (the first retained record), ``"latest"`` (the
        end: only records appended from now on), an offset (clamped to each
        partition's [start, end]) or an aware ``datetime`` (the first record
        at or after it, by the running maximum timestamp). Records before the
        new position count as done, those from it on are delivered (again);
        outstanding leases are dropped. Returns a ``GroupReset`` per
        partition (old and new position). With ``dry_run`` nothing changes.
        Refused (GroupActive, nothing changed) while the group has live
        consumers unless ``force``; a missing group is a StreamlogError.
        """
        return groups.reset_group(self, name, to, dry_run=dry_run, force=force)


class Log(ViewMethods):
    """An open store directory. Thread-safe; share one per process.

    After ``fork()``, open the store again in the child. With ``read_only``,
    nothing in the directory is ever written, created or deleted: every
    write raises ReadOnlyStore before it starts, and retention is not applied.
    """

    def __init__(self, path, durability: str = "interval", read_only: bool = False) -> None:
        path = _validate.path(path)
        if not isinstance(durability, str):
            raise TypeError(f"durability must be a str, not {type(durability).__name__}")
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {', '.join(DURABILITY_MODES)}, "
                             f"not {durability!r}")
        if not isinstance(read_only, bool):
            raise TypeError(f"read_only must be a bool, not {type(read_only).__name__}")
        self.path = os.path.abspath(path)
        self.durability = durability
        self.read_only = read_only
        self._closed = False
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise StreamlogError(f"{self.path} is not a directory")
        if read_only:
            if not os.path.isdir(self.path):
                raise StreamlogError(f"{self.path}: no such store directory (a read-only "
                                     "open creates nothing)")
        else:
            os.makedirs(os.path.join(self.path, files.TOPICS_DIR), exist_ok=True)
        self._check_format()
        self._boot = boot_id()
        self._meta = Meta(os.path.join(self.path, files.META_DIR), durability, read_only)
        self._parts: dict[tuple[str, int], Partition] = {}
        self._notifiers: dict[str, Any] = {}
        self._parts_lock = threading.RLock()
        self._topics_cache: dict[str, dict] = {}
        self._closers: list[Callable[[], None]] = []
        # Event logs and tracking logs by name: one per Log, shared by every handle.
        self._event_logs: dict[str, Any] = {}
        self._tracking_logs: dict[str, Any] = {}
        self._engines_lock = threading.RLock()
        self._stop = threading.Event()
        self._syncer = None
        self._retainer = None
        self._compactor: compaction.Background | None = None
        if read_only:
            return
        if durability == "interval":
            self._syncer = threading.Thread(target=_sync_loop, args=(weakref.ref(self),
                                                                      self._stop),
                                            name="streamlog-sync", daemon=True)
            self._syncer.start()
        self._pid = os.getpid()
        with _OPEN_LOCK:
            _OPEN.add(self)
        # Retention on open, then at least every RETENTION_CHECK_INTERVAL_S while
        # open, so a topic that no longer receives records still loses old ones.
        try:
            # what it removed, for `streamlog retention` to report
            self._retained_on_open: list[dict] = self._retain_idle()
        except BaseException:
            self.close()
            raise
        self._retainer = threading.Thread(target=_retention_loop,
                                          args=(weakref.ref(self), self._stop),
                                          name="streamlog-retention", daemon=True)
        self._retainer.start()
        # compacted topics are compacted in the background by writers (storage/compaction.py)
        compaction.Background.start_if_needed(self)

    def _check_format(self) -> None:
        fpath = os.path.join(self.path, files.FORMAT_FILE)
        try:
            with open(fpath) as f:
                info = json.load(f)
            version = int(info.get("format", 0))
        except FileNotFoundError:
            if self.read_only:
                return  # an empty directory reads as an empty store
            tmp = fpath + f".{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump({"format": files.FORMAT_VERSION, "created_ms": now_ms()}, f)
            os.replace(tmp, fpath)
            files.fsync_dir(self.path)
            return
        except (ValueError, AttributeError, TypeError) as e:
            raise StreamlogError(f"{fpath}: unreadable format file ({e})") from None
        if version > files.FORMAT_VERSION:
            raise StreamlogError(f"{self.path} was written by a newer streamlog (on-disk format "
                                 f"{version}; this version reads up to {files.FORMAT_VERSION})")

    # --------------------------------------------------------------- identity
    @property
    def url(self) -> str:
        """Where the store lives, as a URL: ``file:///abs/path`` for a local directory
        (percent-encoded where a path needs it). Readable after close too."""
        return pathlib.Path(self.path).as_uri()

    def __repr__(self) -> str:
        return f"<streamlog.Log {self.url}{' (closed)' if self._closed else ''}>"

    # -------------------------------------------------------------- lifecycle
    def _check(self) -> None:
        if self._closed:
            raise StoreClosed("the store is closed")

    def _read_only_error(self, what: str) -> ReadOnlyStore:
        return ReadOnlyStore(f"{self.path} is open read-only: cannot {what}")

    def _check_writable(self, what: str) -> None:
        self._check()
        if self.read_only:
            raise self._read_only_error(what)

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the store (idempotent): syncs per the durability mode, then every handle
        into it raises StoreClosed.

        Afterwards nothing of the store stays held by this Log: no file
        descriptor, no mapping, no lock, no thread; the LMDB environment (and
        its reader slot and locks) is closed with the last open Log of the
        directory in this process. Handles the caller keeps raise StoreClosed.
        """
        if self._closed:
            return
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing must reach every handle
                pass
        self._closers.clear()
        self._closed = True
        self._stop.set()
        syncer = self._syncer
        if syncer is not None and syncer is not threading.current_thread():
            syncer.join()  # it wakes at once; no sync of it runs under a closing partition
        self._syncer = None
        retainer = self._retainer
        if retainer is not None and retainer is not threading.current_thread():
            retainer.join()  # a retention pass in progress ends before the files close
        if self._compactor is not None:
            self._compactor.stop()  # a compaction in progress ends before the files close
        with self._parts_lock:
            for p in self._parts.values():
                p.close()
            self._parts.clear()
            notifiers = list(self._notifiers.values())
            self._notifiers.clear()
            self._topics_cache.clear()
        for n in notifiers:
            if n.mapping.writable:  # wait_any() callers here wake and find the store closed
                n.notify()
            n.mapping.release()
        if self.durability != "never" and not self.read_only:
            try:
                self._meta.sync()
            except OSError:
                pass
        self._meta.close()

    def _on_close(self, fn: Callable[[], None]) -> None:
        self._closers.append(fn)

    # StoreClosed if the store was closed: views check it before their arguments (the
    # same function as _check, one call fewer on hot paths).
    raise_if_closed = _check

    # ------------------------------------------------------ event store engines
    def event_log(self, name: str):
        """The event log behind event store ``name`` (its single-partition topic
        ``name``, created if missing); one per Log and name, shared by every handle."""
        self._check()
        topic = self.topic(name, partitions=1)
        with self._engines_lock:
            el = self._event_logs.get(name)
            if el is None or el._topic.config.get("uid") != topic.config.get("uid"):
                el = self._event_logs[name] = eventlog.LocalEventLog(self, name, topic)
            return el

    def tracking_log(self, name: str):
        """The tracking records of application ``name`` (topic ``<name>.tracking``, and
        the tracking headers of event log ``<name>.events``); one per Log and name."""
        self._check()
        with self._engines_lock:
            tl = self._tracking_logs.get(name)
            if tl is None:
                tl = self._tracking_logs[name] = tracking.LocalTrackingLog(self, name)
            return tl
    def on_close(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` when the store closes, before its handles stop working
        (StoreClosed if it is closed already)."""
        self._check()
        self._closers.append(fn)

    # ----------------------------------------------------------------- topics
    def _clamp_groups(self, topic: str, partition: int, end_offset: int) -> None:
        """Recovery cut a torn tail: group positions past the new end move back to it."""
        groups.clamp_to_end(self, topic, partition, end_offset)

    def _notifier_of(self, name: str):
        with self._parts_lock:
            n = self._notifiers.get(name)
            if n is None:
                tdir = files.topic_dir(self.path, name)
                n = _open_notifier_read_only(tdir) if self.read_only else open_notifier(tdir)
                self._notifiers[name] = n
            return n

    def _partitions_of(self, name: str, config: dict) -> list[Partition]:
        out = []
        with self._parts_lock:
            notifier = None
            live = False  # a partition of this very topic is open here: keep its wake-up file
            for p in range(config["partitions"]):
                part = self._parts.get((name, p))
                if part is not None and part.ctl.deleted:
                    part.close()
                    part = None
                if part is not None:
                    live = True
                    r = config.get("retention")
                    part.retention = None if r is None else tuple(r)  # altered meanwhile
                if part is None:
                    r = config.get("retention")
                    if notifier is None:
                        if not live:  # a topic of that name was deleted: its file went too
                            self._notifiers.pop(name, None)
                        notifier = self._notifier_of(name)
                    part = Partition(self.path, name, p, config["segment_bytes"],
                                     self.durability, self._boot,
                                     None if r is None else tuple(r), notifier,
                                     self._clamp_groups, read_only=self.read_only)
                    self._parts[(name, p)] = part
                out.append(part)
        return out

    def topic(self, name: str, partitions: int | None = None, retention: Retention | None = None,
              segment_bytes: int | None = None, max_record_bytes: int | None = None,
              dedupe_window_s: float | None = None, compact: bool | None = None,
              delete_retention_s: float | None = None,
              serializer: Any = None, schema_version: int | str | None = None) -> Topic:
        """Create or open topic ``name``.

        ``compact=True``: compaction keeps the newest record of every key
        (docs/tables.md); a tombstone (value None) is dropped
        ``delete_retention_s`` (default a day) after it was written.

        None means the stored value of an existing topic, or the default for
        a new one; a value that differs from the stored one raises
        ConfigMismatch and changes nothing.

        ``serializer`` ("json", "msgpack", "str", "bytes" or an object with
        ``dumps``/``loads``) and ``schema_version`` are options of the handle,
        not of the topic: the handle returned then encodes values on append
        (writing headers ``content-type`` and ``schema-version``) and decodes
        them on read and in its groups (docs/messages.md).
        """
        self._check()
        _validate.name(name, "topic name")
        if serializer is not None or schema_version is not None:
            from streamlog.views import _serde

            stamp = _serde.check(serializer, schema_version)
            raw = self.topic(name, partitions, retention, segment_bytes, max_record_bytes,
                             dedupe_window_s, compact, delete_retention_s)
            assert stamp is not None  # a serializer or a schema version was given
            return _serde.SerializedTopic(raw, stamp)  # type: ignore[return-value]
        requested: dict[str, Any] = {}
        if partitions is not None:
            requested["partitions"] = _validate.positive_int(partitions, "partitions", 1,
                                                             MAX_PARTITIONS)
        if retention is not None:
            requested["retention"] = retention_limits(retention)
        if segment_bytes is not None:
            requested["segment_bytes"] = _validate.positive_int(
                segment_bytes, "segment_bytes", MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES)
        if max_record_bytes is not None:
            requested["max_record_bytes"] = _validate.positive_int(
                max_record_bytes, "max_record_bytes", 1, MAX_MAX_RECORD_BYTES)
        if dedupe_window_s is not None:
            requested["dedupe_window_s"] = _validate.seconds(dedupe_window_s, "dedupe_window_s")
        if compact is not None:
            if not isinstance(compact, bool):
                raise TypeError("compact must be a bool")
            requested["compact"] = compact
        if delete_retention_s is not None:
            requested["delete_retention_s"] = _validate.seconds(delete_retention_s,
                                                                "delete_retention_s")
        # Both given here: refused before anything is created; a window given for an
        # existing topic is checked against its stored retention below.
        _validate.dedupe_within_retention(requested.get("dedupe_window_s"),
                                          requested.get("retention"))
        config = self._create_or_check(name, requested)
        if "dedupe_window_s" in requested:
            _validate.dedupe_within_retention(config.get("dedupe_window_s"),
                                              config.get("retention"))
        return Topic(self, name, config)

    def _create_or_check(self, name: str, requested: dict) -> dict:
        db = self._meta.db(_TOPICS_DB)
        key = name.encode()
        with self._meta.read() as txn:
            raw = txn.get(key, db=db)
        if raw is None:
            if self.read_only:
                raise self._read_only_error(f"create topic {name!r}")

            def create(txn):
                raw = txn.get(key, db=db)
                if raw is not None:
                    return json.loads(raw)
                cfg = {"partitions": DEFAULT_PARTITIONS, "retention": None,
                       "segment_bytes": DEFAULT_SEGMENT_BYTES,
                       "max_record_bytes": DEFAULT_MAX_RECORD_BYTES,
                       "dedupe_window_s": float(DEFAULT_DEDUPE_WINDOW_S), "compact": False,
                       "delete_retention_s": _limits.DEFAULT_DELETE_RETENTION_S,
                       "created_ms": now_ms(), "uid": uuid.uuid4().hex}
                cfg.update(requested)
                _fit_dedupe_window(cfg, requested)
                txn.put(key, json.dumps(cfg).encode(), db=db)
                return cfg
            config = self._meta.write(create)
        else:
            config = json.loads(raw)
        config.setdefault("delete_retention_s", _limits.DEFAULT_DELETE_RETENTION_S)
        diffs = [f"{k}={v!r} (stored: {config.get(k)!r})" for k, v in requested.items()
                 if config.get(k) != v]
        if diffs:
            raise ConfigMismatch(f"topic {name!r} exists with other options: {', '.join(diffs)}")
        tdir = files.topic_dir(self.path, name)
        if not self.read_only and not os.path.isdir(tdir):
            os.makedirs(tdir, exist_ok=True)
            files.fsync_dir(os.path.dirname(tdir))  # the new topic directory is durable
        return config

    def _topic_config(self, name: str) -> dict | None:
        db = self._meta.db(_TOPICS_DB)  # before the txn: a first open creates the db
        with self._meta.read() as txn:
            raw = txn.get(name.encode(), db=db)
        return None if raw is None else json.loads(raw)

    def existing_topic(self, name: str) -> Topic:
        """Open a topic that must already exist (TopicNotFound otherwise)."""
        self._check()
        _validate.name(name, "topic name")
        config = self._topic_config(name)
        if config is None:
            raise TopicNotFound(f"topic {name!r} does not exist in {self.path}")
        return Topic(self, name, config)

    def _topic_handle(self, name: str, config: dict) -> Topic:
        """A handle on a topic whose stored config the caller has read."""
        return Topic(self, name, config)

    def topics(self) -> list[str]:
        """Names of every topic, those that views created included, sorted."""
        self._check()
        db = self._meta.db(_TOPICS_DB)  # before the txn: a first open creates the db
        with self._meta.read() as txn:
            return sorted(k.decode() for k, _ in txn.cursor(db=db))

    def delete_topic(self, name: str) -> None:
        """Delete a topic, its records and its groups; TopicNotFound if missing.

        Handles to it, in any process, raise TopicNotFound afterwards.
        """
        self._check_writable(f"delete topic {name!r}")
        _validate.name(name, "topic name")
        config = self._topic_config(name)
        if config is None:
            raise TopicNotFound(f"topic {name!r} does not exist in {self.path}")
        for part in self._partitions_of(name, config):
            part.mark_deleted()


        def drop(txn):
            if not txn.delete(name.encode(), db=self._meta.db(_TOPICS_DB)):
                return False
            # Every part that keeps per-topic state in LMDB drops it here, in the
            # transaction that deletes the topic: all of it goes, or none.
            groups.drop_topic(self._meta, txn, name)
            dedupe.drop_topic(self._meta, txn, name)
            for part in (eventlog, tracking):
                part.drop_topic(Tx(txn, self._meta.db_in(txn, part.KV_NAMESPACE)), name)
            replybox.drop_topic(Tx(txn, self._meta.db_in(txn, replybox.INDEX_NAMESPACE)), name)
            table.drop_topic(self._meta, txn, name)
            txn.delete(name.encode(), db=self._meta.db_in(txn, _OPS_DB))  # its counters
            return True

        if not self._meta.write(drop):
            raise TopicNotFound(f"topic {name!r} does not exist in {self.path}")
        with self._parts_lock:
            self._notifiers.pop(name, None)
            for p in range(config["partitions"]):
                gone = self._parts.pop((name, p), None)
                if gone is not None:
                    gone.close()
        tdir = files.topic_dir(self.path, name)
        trash = os.path.join(self.path, files.TOPICS_DIR,
                             f"{files.TRASH_PREFIX}{name}-{uuid.uuid4().hex}")
        try:
            os.rename(tdir, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def reply_box(self, name: str) -> LocalReplyBox:
        """The reply box of reply topic ``name`` (TopicNotFound if the topic does not exist):
        replies of a request-reply view by correlation id."""
        from streamlog.backends.local.replybox import LocalReplyBox

        self._check()
        return LocalReplyBox(self, name)
    def alter_topic(self, name: str, retention: Retention | None = None,
                    dedupe_window_s: float | None = None, max_record_bytes: int | None = None,
                    partitions: int | None = None) -> Topic:
        """Change a topic's stored options; returns a handle with the new ones.

        None leaves an option as it is; ``Retention(None, None)`` removes the
        retention limits. Every argument is checked before anything is written
        (TypeError/ValueError, TopicNotFound); giving nothing to change is a
        ValueError. Every process that has the topic open takes the new options
        at its next call on it: appends use the new partition count and record
        limit, retention runs with the new limits, consumers see the new
        partitions.

        ``partitions`` only grows (fewer is a ValueError: records and groups
        live in the partitions that exist). As in Kafka, growing the topic makes
        keys map anew: ``murmur2(key) % partitions`` sends a key's later records
        to another partition than its earlier ones, so per-key order holds only
        among the records appended after the change. Every consumer group starts
        each new partition at offset 0 (its first record). The topics of an
        event store (one commit order, every event kept) and of its tracking
        records keep one partition and no retention: such a change is refused.
        """
        self._check_writable(f"alter topic {name!r}")
        _validate.name(name, "topic name")
        changes: dict[str, Any] = {}
        if retention is not None:
            mb, ma = retention_limits(retention)
            changes["retention"] = None if mb is None and ma is None else [mb, ma]
        if dedupe_window_s is not None:
            changes["dedupe_window_s"] = _validate.seconds(dedupe_window_s, "dedupe_window_s")
        if max_record_bytes is not None:
            changes["max_record_bytes"] = _validate.positive_int(
                max_record_bytes, "max_record_bytes", 1, MAX_MAX_RECORD_BYTES)
        if partitions is not None:
            changes["partitions"] = _validate.positive_int(partitions, "partitions", 1,
                                                           MAX_PARTITIONS)
        if not changes:
            raise ValueError("nothing to alter: give retention, dedupe_window_s, "
                             "max_record_bytes or partitions")
        config = self._topic_config(name)
        if config is None:
            raise TopicNotFound(f"topic {name!r} does not exist in {self.path}")
        new = self._altered(name, config, changes)
        if new["partitions"] > config["partitions"]:
            # The new partitions' files first: a crash before the catalogue names them
            # leaves empty directories that a later growth simply uses.
            self._partitions_of(name, new)

        def write(txn):
            db = self._meta.db_in(txn, _TOPICS_DB)
            raw = txn.get(name.encode(), db=db)
            if raw is None:
                raise TopicNotFound(f"topic {name!r} does not exist in {self.path}")
            cur = json.loads(raw)
            if cur.get("uid") != config.get("uid"):
                raise TopicNotFound(f"topic {name!r} was deleted meanwhile")
            cfg = self._altered(name, cur, changes, owners=False)  # against another change's
            cfg["generation"] = cur.get("generation", 0) + 1
            txn.put(name.encode(), json.dumps(cfg).encode(), db=db)
            groups.on_topic_grown(self._meta, txn, name, cur, cfg)
            return cfg

        cfg = self._meta.write(write)
        if cfg["partitions"] > config["partitions"]:
            _logger.warning("topic %r grew from %d to %d partitions: keys map to partitions "
                            "anew (murmur2(key) %% %d), so a key's later records may go to "
                            "another partition than its earlier ones and per-key order holds "
                            "only from now on; every group starts the new partitions at "
                            "offset 0", name, config["partitions"], cfg["partitions"],
                            cfg["partitions"])
        # Publish: every process compares this word with the one it last read its copy
        # of the options at. (Should this process die before the store, the next handle
        # any process opens on the topic publishes the catalogue's generation instead.)
        notifier = self._notifier_of(name)
        notifier.set_config_word(cfg["generation"] & 0xFFFFFFFF)
        notifier.notify()  # consumers waiting for records look again (new partitions)
        return self.existing_topic(name)

    def _altered(self, name: str, config: dict, changes: dict, owners: bool = True) -> dict:
        """``config`` with ``changes`` applied, or the reason it cannot be (ValueError).

        ``owners``: also refuse what would break a view that owns the topic (this reads
        the store: not inside a write transaction)."""
        new = dict(config)
        new.update(changes)
        if new["partitions"] < config["partitions"]:
            raise ValueError(f"topic {name!r} has {config['partitions']} partitions: they only "
                             f"grow, not to {new['partitions']} (records and group positions "
                             "live in the partitions that exist)")
        max_age_s = (new.get("retention") or (None, None))[1]
        if "dedupe_window_s" not in changes and max_age_s is not None and \
                new.get("dedupe_window_s") is not None and new["dedupe_window_s"] > max_age_s:
            # As at creation: a window left as it was follows a retention that got shorter
            # (an id must not outlive its record); one given with it must fit.
            new["dedupe_window_s"] = float(max_age_s)
        _validate.dedupe_within_retention(new.get("dedupe_window_s"), new.get("retention"))
        if owners and (new["partitions"] != config["partitions"] or changes.get("retention")):
            owner = self._single_order_owner(name)
            if owner is not None:
                what = "partitions" if new["partitions"] != config["partitions"] else "retention"
                raise ValueError(f"topic {name!r} is {owner}: it keeps one partition and every "
                                 f"record, so its {what} cannot change")
        return new

    def _single_order_owner(self, name: str) -> str | None:
        """What needs ``name`` to stay one partition that keeps everything: an event store
        (its index in namespace ``event_store``) or an event-sourced application's
        tracking topic; None for any other topic."""
        if self.kv("event_store").get(name.encode() + b"\0m") is not None:
            return f"the event store {name!r}"
        if name.endswith(".tracking") and \
                self.kv("eventsourcing").get(name[:-len(".tracking")].encode() + b"\0tracking") \
                is not None:
            return f"the tracking topic of application {name[:-len('.tracking')]!r}"
        if name.endswith(".events") and \
                self.kv("eventsourcing").get(name[:-len(".events")].encode() + b"\0tracking") \
                is not None:
            return f"the events topic of application {name[:-len('.events')]!r}"
        return None

    def kv(self, name: str):
        """The key-value namespace ``name`` in the store's LMDB environment (views' state)."""
        from streamlog.backends.local.storage.meta import KV

        self._check()
        return KV(self._meta, name)

    # ------------------------------------------------------------- operations
    def stats(self) -> dict:
        """Figures per topic and partition (records, bytes, segments, offsets), and per group."""
        self._check()
        out: dict[str, Any] = {"path": self.path, "topics": {}, "groups": {}}
        for name in self.topics():
            try:
                t = self.existing_topic(name)
            except TopicNotFound:
                continue
            parts = []
            for p, part in enumerate(t._parts):
                view = View._make(part.view())
                segs = part.segments_info()
                start, end, max_ts = view.start_offset, view.end_offset, view.max_timestamp_ms
                parts.append({"partition": p, "start_offset": start, "end_offset": end,
                              "records": end - start,
                              "bytes": sum(s["bytes"] for s in segs),
                              "segments": len(segs),
                              "max_timestamp_ms": max_ts if max_ts >= 0 else None})
            out["topics"][name] = {"partitions": parts, "config": t.config}
            _add_append_rates(t, out)
            groups.stats(self, t, out)
        # Retention runs per topic: runs, segments/records/bytes removed, last run; and
        # compaction runs: runs, records removed, bytes freed, segments rewritten.
        counters = {k: v for k, v in self._retention_counters().items() if k in out["topics"]}
        out["compaction"] = {k: v.pop("compaction") for k, v in counters.items()
                             if "compaction" in v}
        out["retention"] = counters
        return out

    def verify(self, progress: Callable[[int, int], None] | None = None) -> list[Problem]:
        """Check every CRC of every batch of every segment. [] when healthy.

        ``progress(done_partitions, total_partitions)`` is called as it goes.
        """
        self._check()
        todo = []
        for name in self.topics():
            try:
                t = self.existing_topic(name)
            except TopicNotFound:
                continue
            todo.extend(t._parts)
        problems: list[Problem] = []
        for i, part in enumerate(todo):
            for pr in part.verify():
                problems.append(Problem(pr["path"], pr["file_pos"], pr["reason"], pr["topic"],
                                        pr["partition"], pr["kind"]))
            if progress is not None:
                progress(i + 1, len(todo))
        return problems

    def apply_retention(self, dry_run: bool = False) -> list[dict]:
        """Apply every topic's retention now; returns what was (or would be) deleted.

        An active segment whose first record is older than ``max_age_s`` is
        rolled so that it can go (Kafka's segment.ms); an empty one never is.
        A read-only store answers only a dry run (ReadOnlyStore otherwise).
        """
        if not dry_run:
            self._check_writable("apply retention")
        self._check()
        out = []
        for name in self.topics():
            try:
                t = self.existing_topic(name)
            except TopicNotFound:
                continue
            removed: list[dict] = []
            for part in t._parts:
                removed.extend(part.apply_retention(dry_run=dry_run))
            if not dry_run:
                self._count_retention_run(name, removed)
            out.extend(removed)
        return out

    def _count_retention_run(self, topic: str, removed: list[dict]) -> None:
        """Add one retention run of ``topic`` (and what it removed) to the store's counters:
        ``stats()["retention"]``, kept in the metadata so every process sees them."""
        key = topic.encode()

        def bump(txn):
            db = self._meta.db_in(txn, _OPS_DB)
            raw = txn.get(key, db=db)
            c = json.loads(raw) if raw else {"runs": 0, "segments": 0, "records": 0, "bytes": 0}
            c["runs"] += 1
            c["segments"] += len(removed)
            c["records"] += sum(d["end_offset"] - d["base_offset"] for d in removed)
            c["bytes"] += sum(d["bytes"] for d in removed)
            c["last_run_ms"] = now_ms()
            txn.put(key, json.dumps(c).encode(), db=db)

        try:
            self._meta.write(bump)
        except (OSError, StreamlogError) as e:  # a figure: never fails the retention itself
            _logger.warning("streamlog: could not count the retention run of %r: %s", topic, e)

    def _count_compaction_run(self, topic: str, result: dict) -> None:
        """Add one partition's compaction (``compact_partition``'s result) to the store's
        counters: ``stats()["compaction"]``, kept beside the retention counters."""
        key = topic.encode()

        def bump(txn):
            db = self._meta.db_in(txn, _OPS_DB)
            raw = txn.get(key, db=db)
            c = json.loads(raw) if raw else {"runs": 0, "segments": 0, "records": 0, "bytes": 0}
            k = c.setdefault("compaction", {"runs": 0, "records": 0, "bytes": 0, "segments": 0})
            k["runs"] += 1
            k["records"] += result["records_removed"]
            k["bytes"] += result["bytes_freed"]
            k["segments"] += result["segments_rewritten"]
            k["last_run_ms"] = now_ms()
            txn.put(key, json.dumps(c).encode(), db=db)

        try:
            self._meta.write(bump)
        except (OSError, StreamlogError) as e:  # a figure: never fails the compaction itself
            _logger.warning("streamlog: could not count the compaction of %r: %s", topic, e)

    def _retention_counters(self) -> dict:
        db = self._meta.db(_OPS_DB)  # before the txn: a first open creates the db
        with self._meta.read() as txn:
            return {k.decode(): json.loads(v) for k, v in txn.cursor(db=db)}

    def _retain_idle(self) -> list[dict]:
        """Apply retention to every topic that has a policy (on open, then periodically).

        Opens only those topics' partitions; a partition whose retention fails
        is logged and skipped, so one bad partition never stops the others
        (or the open).
        """
        out: list[dict] = []
        db = self._meta.db(_TOPICS_DB)
        with self._meta.read() as txn:
            todo = [(k.decode(), json.loads(v)) for k, v in txn.cursor(db=db)]
        for name, config in todo:
            r = config.get("retention")
            if not r or all(limit is None for limit in r):
                continue
            if self._closed:
                break
            try:
                removed: list[dict] = []
                for part in self._partitions_of(name, config):
                    removed.extend(part.apply_retention())
                out.extend(removed)
                if not self.read_only:
                    self._count_retention_run(name, removed)
            except TopicNotFound:
                continue  # deleted meanwhile
            except (OSError, StreamlogError) as e:
                _logger.warning("streamlog: retention of topic %r in %s failed: %s", name,
                                self.path, e)
        return out

    # ------------------------------------------------------------ compaction
    def compact(self, topic: str, progress: Callable[[int, int], None] | None = None
                ) -> CompactionResult:
        """Compact a ``compact=True`` topic now: every partition keeps the newest record
        of each key in its closed segments (docs/tables.md). Waits for a compaction
        of the same partition running in another process, then runs its own.
        ``progress(done, total)`` is called as the work goes on. ConfigMismatch on a
        topic that is not compacted."""
        self._check_writable(f"compact topic {topic!r}")
        t = self.existing_topic(topic)
        if not t.config.get("compact"):
            raise ConfigMismatch(f"topic {topic!r} is not compacted (compact=False)")
        return compaction.compact_topic(self, t, progress)

    def table(self, name: str):
        """The compacted topic ``name`` seen as key -> newest value (docs/tables.md);
        the topic is created with ``compact=True`` if missing."""
        self._check()
        return table.Table(self, name)

    # -------------------------------------------------------------- dedupe
    def _dedupe_append(self, topic: Topic, value, key, hdrs, ts, msg_id: bytes) -> Position:
        return dedupe.dedupe_append(self, topic, value, key, hdrs, ts, msg_id)


# Every Log of this process (weakly): repair asks whether a store is still open here.
_OPEN: weakref.WeakSet = weakref.WeakSet()
_OPEN_LOCK = threading.Lock()


def open_here(path) -> int:
    """How many Logs of this process have the store at ``path`` open (not closed yet)."""
    real = os.path.realpath(os.fspath(path))
    pid = os.getpid()
    with _OPEN_LOCK:
        logs = list(_OPEN)
    return sum(1 for log in logs
               if not log._closed and log._pid == pid and os.path.realpath(log.path) == real)




def append_rate(topic: Topic, partition: int, window_s: float = RATE_WINDOW_S,
                end_offset: int | None = None, now_ms_: int | None = None) -> float:
    """Records per second appended to ``partition`` over the last ``window_s`` seconds.

    Counted from record timestamps: ``end_offset - offset_for_time(now - window)``,
    so it costs one time-index lookup and no state. Records appended with
    explicit old ``timestamp_ms`` values do not count as recent.
    """
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0, not {window_s!r}")
    now = now_ms() if now_ms_ is None else now_ms_
    end = topic.end_offset(partition) if end_offset is None else end_offset
    since = topic.offset_for_time(partition, max(0, now - int(window_s * 1000)))
    return max(0, end - since) / window_s


def _add_append_rates(topic: Topic, out: dict) -> None:
    """Add ``append_rate_per_s`` to each partition of ``topic`` in ``out`` and to the topic;
    None for a partition whose time lookup hits damaged data (verify reports it)."""
    entry = out["topics"].get(topic.name)
    if entry is None:
        return
    now = now_ms()
    total = 0.0
    for part in entry["partitions"]:
        try:
            rate = append_rate(topic, part["partition"], end_offset=part["end_offset"],
                               now_ms_=now)
        except CorruptionError:  # figures must not fail on damage
            part["append_rate_per_s"] = None
            continue
        part["append_rate_per_s"] = rate
        total += rate
    entry["append_rate_per_s"] = total


def _fit_dedupe_window(cfg: dict, requested: dict) -> None:
    """A new topic whose retention max_age_s is shorter than the default dedupe window gets
    a window of max_age_s: the default must not make a short retention an error."""
    max_age_s = (cfg.get("retention") or (None, None))[1]
    if "dedupe_window_s" not in requested and max_age_s is not None:
        cfg["dedupe_window_s"] = min(cfg["dedupe_window_s"], float(max_age_s))


def _sync_loop(log_ref, stop: threading.Event) -> None:
    """The "interval" durability syncer: fsync what this process appended, every 200 ms."""
    while not stop.wait(SYNC_INTERVAL_S):
        log = log_ref()
        if log is None or log._closed:
            return
        try:
            with log._parts_lock:
                parts = list(log._parts.values())
            for p in parts:
                p.sync_if_dirty()
            log._meta.sync()
        except Exception:  # noqa: BLE001 - a failed background sync is retried next tick
            pass
        del log


def _retention_loop(log_ref, stop: threading.Event) -> None:
    """Apply retention every RETENTION_CHECK_INTERVAL_S while the store is open."""
    while not stop.wait(_limits.RETENTION_CHECK_INTERVAL_S):
        log = log_ref()
        if log is None or log._closed:
            return
        try:
            log._retain_idle()
        except Exception as e:  # noqa: BLE001 - retried at the next check
            _logger.warning("streamlog: retention check of %s failed: %s", log.path, e)
        del log


class _TopicWatch:
    """Wake-ups on appends to any partition of one topic: the topic's shared wake-up word
    (a futex counter every process of the machine maps)."""

    __slots__ = ("_log", "_name")

    def __init__(self, log: Log, name: str) -> None:
        self._log = log
        self._name = name

    def __repr__(self) -> str:
        return f"Watch({self._name!r})"

    def seq(self) -> int:
        """The counter: moved by every append to the topic and by ``wake``."""
        log = self._log
        log._check()
        return log._notifier_of(self._name).seq

    def wait(self, seen: int, timeout: float) -> bool:
        """Block until ``seq()`` differs from ``seen`` or ``timeout`` seconds pass (False)."""
        log = self._log
        log._check()
        return log._notifier_of(self._name).wait(seen, timeout)

    async def wait_async(self, seen: int, timeout: float) -> bool:
        """As ``wait``, awaited on the caller's loop: the process's watcher thread sleeps
        on the word for every waiter at once (streamlog.backends.local.watch)."""
        log = self._log
        log._check()
        return await _watch.wait_async(log._notifier_of(self._name), seen, timeout)

    def wake(self) -> None:
        """Move the counter without appending: every waiter looks again."""
        log = self._log
        log._check()
        log._notifier_of(self._name).notify()


class _NoNotifier:
    """A read-only open's stand-in for a topic's wake-up word when its file does not
    exist yet: waits simply time out (in short steps), and callers look again."""

    seq = 0
    config_word = 0

    def wait(self, seen: int, timeout: float) -> bool:
        time.sleep(max(0.0, min(timeout, 0.05)))
        return False


def _open_notifier_read_only(topic_path: str):
    """The topic's wake-up word mapped read-only (nothing is created)."""
    try:
        fd = os.open(os.path.join(topic_path, files.NOTIFY_FILE), os.O_RDONLY)
    except FileNotFoundError:
        return _NoNotifier()
    try:
        size = os.fstat(fd).st_size
        if size < 8:
            return _NoNotifier()
        # 16 bytes: the wake-up word, its waiter count and the configuration counter
        return _ext.Notifier(_ext.Mapping(fd, 16 if size >= 16 else 8, False))
    finally:
        os.close(fd)


def open_log(path, durability: str = "interval", read_only: bool = False) -> Log:
    """Open the store in directory ``path`` (``streamlog.open``).

    Creates the directory unless ``read_only``. A read-only open never
    writes, creates or deletes anything: writes raise ReadOnlyStore, a
    dead writer's unfinished bytes are skipped (not cut) and retention is
    not applied; a missing directory is a StreamlogError naming it.
    """
    return Log(path, durability=durability, read_only=read_only)
