"""Small value types: Position, Retention, RecordBatch, Problem (public) and View."""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from streamlog import _validate
from streamlog._ext import Record  # noqa: F401  (re-exported; NamedTuple-like, built in C)


class Position(NamedTuple):
    """Where an append landed: partition and offset."""

    partition: int
    offset: int


def now_ms() -> int:
    """The wall clock in milliseconds since the epoch: the unit of record timestamps,
    lease deadlines and dedupe windows."""
    return time.time_ns() // 1_000_000


class View(NamedTuple):
    """A consistent snapshot of one partition's published state (``Partition.view()``).

    ``generation`` changes when the segments are rewritten (tidy, cut);
    ``active_base`` is the first offset of the segment being appended to;
    ``end_offset`` the next offset to be written and ``end_pos`` its byte
    position there, within ``capacity`` bytes; ``start_offset`` the first
    offset retention kept; ``max_timestamp_ms`` the newest record's time (-1:
    none); ``index_count`` the entries in the active segment's index.
    """

    generation: int
    active_base: int
    end_offset: int
    end_pos: int
    capacity: int
    start_offset: int
    max_timestamp_ms: int
    index_count: int


class _RetentionFields(NamedTuple):
    max_bytes: int | None
    max_age_s: float | None


class Retention(_RetentionFields):
    """Per-partition retention limits; None means no limit.

    ``max_bytes``: keep at most this many bytes of closed segments per
    partition (an int >= 1). ``max_age_s``: a closed segment goes once its
    newest record is older than this many seconds (a finite number > 0).
    Checked here, when the object is made: a wrong type raises TypeError, a
    value outside those ranges ValueError (zero would keep nothing and is
    refused; "no limit" is None). Immutable and hashable (a NamedTuple).
    """

    __slots__ = ()

    def __new__(cls, max_bytes: int | None = None, max_age_s: float | None = None):
        if max_bytes is not None:
            if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
                raise TypeError(f"Retention max_bytes must be an int or None, not "
                                f"{type(max_bytes).__name__}")
            if max_bytes < 1:
                raise ValueError(f"Retention max_bytes must be >= 1 (None: no limit), "
                                 f"not {max_bytes}")
            max_bytes = int(max_bytes)
        _validate.seconds(max_age_s, "Retention max_age_s", allow_zero=False, allow_none=True)
        return super().__new__(cls, max_bytes, max_age_s)

    @classmethod
    def _make(cls, iterable) -> Retention:
        return cls(*iterable)

    def _replace(self, **changes) -> Retention:
        return type(self)(**{**self._asdict(), **changes})


def retention_limits(retention: object) -> list[int | float | None]:
    """A ``retention=`` option as topics store it: ``[max_bytes, max_age_s]``. TypeError
    for anything but a Retention (whose values were checked when it was made)."""
    if not isinstance(retention, Retention):
        raise TypeError("retention must be a streamlog.Retention")
    return [retention.max_bytes, retention.max_age_s]


class CompactionResult(NamedTuple):
    """What ``Log.compact()`` did: records removed, bytes given back, segments rewritten."""

    records_removed: int
    bytes_freed: int
    segments_rewritten: int


class TableChange(NamedTuple):
    """One change of a table seen by ``Table.watch()``: ``value`` None means deleted."""

    key: bytes
    value: bytes | None
    position: Position


class GroupReset(NamedTuple):
    """One partition of a group's reset (``Topic.reset_group``): its position before
    (``old``, the first offset not done) and after (``new``), and the partition's offsets."""

    partition: int
    old: int
    new: int
    start_offset: int
    end_offset: int


class Problem(NamedTuple):
    """One damaged place found by ``Log.verify()``."""

    path: str
    file_pos: int
    reason: str
    topic: str
    partition: int
    kind: str  # "corrupt"


class RecordBatch:
    """Columnar records: numpy arrays, no Python object per record.

    ``offsets``, ``timestamps_ms`` (int64); ``value_offsets`` / ``key_offsets``
    (N+1 int64 boundaries into ``value_data`` / ``key_data``, uint8);
    ``value_null`` / ``key_null`` (bool). Values are copied once out of the
    mapped segment into one contiguous array (in a segment they are
    interleaved with record headers, so they cannot be a single view); all
    columns share one block of memory, reused for a later batch once every
    column of this one is gone. Read-only; safe to share between threads.
    """

    __slots__ = ("offsets", "timestamps_ms", "value_offsets", "value_data", "value_null",
                 "key_offsets", "key_data", "key_null", "topic", "partition")

    def __init__(self, topic: str, partition: int, columns: dict) -> None:
        self.topic = topic
        self.partition = partition
        for name in ("offsets", "timestamps_ms", "value_offsets", "value_data", "value_null",
                     "key_offsets", "key_data", "key_null"):
            arr = columns[name]
            arr.flags.writeable = False
            setattr(self, name, arr)

    def __len__(self) -> int:
        return len(self.offsets)

    def value(self, i: int) -> memoryview | None:
        """Value of record ``i`` as a memoryview into ``value_data`` (None for a tombstone)."""
        if self.value_null[i]:
            return None
        return memoryview(self.value_data)[self.value_offsets[i]:self.value_offsets[i + 1]]

    def key(self, i: int) -> memoryview | None:
        """Key of record ``i`` as a memoryview into ``key_data`` (None for no key)."""
        if self.key_null[i]:
            return None
        return memoryview(self.key_data)[self.key_offsets[i]:self.key_offsets[i + 1]]

    def __repr__(self) -> str:
        first = int(self.offsets[0]) if len(self) else None
        return f"RecordBatch(topic={self.topic!r}, partition={self.partition}, " \
               f"records={len(self)}, first_offset={first})"


def empty_columns() -> dict:
    return {
        "offsets": np.empty(0, np.int64), "timestamps_ms": np.empty(0, np.int64),
        "value_offsets": np.zeros(1, np.int64), "value_data": np.empty(0, np.uint8),
        "value_null": np.empty(0, np.bool_), "key_offsets": np.zeros(1, np.int64),
        "key_data": np.empty(0, np.uint8), "key_null": np.empty(0, np.bool_),
    }
