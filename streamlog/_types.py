"""Small value types: Position, Retention, RecordBatch, Problem (public) and View."""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from streamlog import _ext, _validate
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

    A batch from a consumer group's ``poll_batch`` also has ``delivery_counts``
    (int64, 1 on a record's first delivery) and carries its lease privately,
    for that group handle's ``ack_batch`` / ``nack_batch``; on any other batch
    ``delivery_counts`` is None.
    """

    __slots__ = ("offsets", "timestamps_ms", "value_offsets", "value_data", "value_null",
                 "key_offsets", "key_data", "key_null", "topic", "partition", "_image",
                 "delivery_counts", "_lease")
    offsets: np.ndarray
    timestamps_ms: np.ndarray
    value_offsets: np.ndarray
    value_data: np.ndarray
    value_null: np.ndarray
    key_offsets: np.ndarray
    key_data: np.ndarray
    key_null: np.ndarray
    topic: str
    partition: int
    delivery_counts: np.ndarray | None

    def __init__(self, topic: str, partition: int, columns: dict) -> None:
        self.topic = topic
        self.partition = partition
        self.delivery_counts = None
        # A consumer group's poll_batch: what its ack_batch / nack_batch settle (the
        # backend's own object); None for every other batch, which they refuse.
        self._lease: object | None = None
        # from_arrays: the records already encoded as one on-disk batch (base offset 0),
        # with what an append checks against its topic; None: encoded when appended.
        self._image: tuple[bytes, int, int, bool, bool] | None = None
        for name in ("offsets", "timestamps_ms", "value_offsets", "value_data", "value_null",
                     "key_offsets", "key_data", "key_null"):
            arr = columns[name]
            arr.flags.writeable = False
            setattr(self, name, arr)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getstate__(self) -> dict:
        # Pickled (sent to another process) without its group lease: the copy is a
        # plain batch, as read_batch's; only the polling handle settles the original.
        return {name: getattr(self, name, None) for name in self.__slots__
                if name != "_lease"}

    def __setstate__(self, state: dict) -> None:
        for name, value in state.items():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
            setattr(self, name, value)
        self._lease = None

    @classmethod
    def from_arrays(cls, values, keys=None, timestamps_ms=None) -> RecordBatch:
        """Columns for ``Topic.append_batch``, built from arrays or lists.

        ``values`` and ``keys`` each take one of: a numpy array whose first
        axis is the records (record ``i`` is the raw bytes of ``arr[i]`` in C
        order: a 2-D ``uint8`` array of fixed-width rows, a 1-D ``float64``
        array of 8-byte values, a fixed-width ``S`` array, ...); or a
        sequence of bytes-like items (``None``: a null value, i.e. a
        tombstone, or no key). Keys may also be ``str`` (UTF-8); a ``str``
        value is a TypeError, as for ``append``. ``keys=None``: no record has
        a key. ``timestamps_ms``: None (now, for every record), one int for
        every record, or one int per record (an array or a sequence; each >= 0).
        ``offsets`` count from 0 within the batch: ``append_batch`` assigns the
        real ones. ``topic`` and ``partition`` are None. The batch is a
        snapshot: it copies what it is given, and it also encodes its records
        once into the on-disk batch layout (as a Kafka producer fills a record
        batch before sending it), so that ``append_batch`` only checks them
        against the topic's limits and writes the bytes. Raises TypeError or
        ValueError (lengths that differ, a negative timestamp, timestamps more
        than 2**31-1 ms apart) at once.
        """
        vo, vd, vn = _column_of(values, "values", allow_str=False)
        n = len(vn)
        if keys is None:
            ko, kd, kn = np.zeros(n + 1, np.int64), np.empty(0, np.uint8), np.ones(n, np.bool_)
        else:
            ko, kd, kn = _column_of(keys, "keys", allow_str=True)
            if len(kn) != n:
                raise ValueError(f"keys has {len(kn)} entries for {n} values")
        if timestamps_ms is None:
            ts = np.full(n, now_ms(), np.int64)
        elif isinstance(timestamps_ms, int) and not isinstance(timestamps_ms, bool):
            ts = np.full(n, _validate.timestamp(timestamps_ms), np.int64)
        else:
            arr = np.asarray(timestamps_ms)
            if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
                raise TypeError("timestamps_ms must be None, an int, or a 1-D sequence of ints")
            if len(arr) != n:
                raise ValueError(f"timestamps_ms has {len(arr)} entries for {n} values")
            if n and int(arr.min()) < 0:
                raise ValueError("timestamps_ms must be >= 0")
            ts = np.ascontiguousarray(arr, np.int64)
        obj = cls.__new__(cls)
        obj.topic = None  # type: ignore[assignment]
        obj.partition = None  # type: ignore[assignment]
        for name, arr in (("offsets", np.arange(n, dtype=np.int64)), ("timestamps_ms", ts),
                          ("value_offsets", vo), ("value_data", vd), ("value_null", vn),
                          ("key_offsets", ko), ("key_data", kd), ("key_null", kn)):
            if arr.base is not None or not arr.flags.owndata or arr is timestamps_ms:
                arr = arr.copy()  # a snapshot: the caller's arrays may change later
            arr.flags.writeable = False
            setattr(obj, name, arr)
        obj._image = None
        obj.delivery_counts = None
        obj._lease = None
        if n:
            obj._image = _ext.encode_image(obj.timestamps_ms, obj.value_offsets, obj.value_data,
                                           obj.value_null, obj.key_offsets, obj.key_data,
                                           obj.key_null)
        return obj

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


def batch_lease(batch, group, lease_type: type, nack: bool = False, delay_s: float = 0,
                error: str | None = None):
    """``(lease, delay_s)`` of a batch that ``group``'s ``poll_batch`` returned, its
    arguments checked before anything is settled: TypeError for a wrong type, ValueError
    for a batch that is not this handle's (``read_batch``'s, ``from_arrays``', another
    group's). ``lease_type`` is the backend's lease class; for a nack, ``delay_s`` is
    validated and returned as a float and ``error`` must be a str or None."""
    if not isinstance(batch, RecordBatch):
        raise TypeError(f"expected a RecordBatch from poll_batch, not {type(batch).__name__}")
    lease = batch._lease
    if not isinstance(lease, lease_type):
        raise ValueError("only a batch returned by a group's poll_batch can be settled "
                         "(not one from read_batch or RecordBatch.from_arrays)")
    if lease.group is not group:
        raise ValueError("a batch can be settled only through the group handle that "
                         "polled it")
    if nack:
        delay_s = _validate.seconds(delay_s, "delay_s") or 0.0
        if error is not None and not isinstance(error, str):
            raise TypeError(f"error must be a str or None, not {type(error).__name__}")
    return lease, delay_s


def empty_columns() -> dict:
    return {
        "offsets": np.empty(0, np.int64), "timestamps_ms": np.empty(0, np.int64),
        "value_offsets": np.zeros(1, np.int64), "value_data": np.empty(0, np.uint8),
        "value_null": np.empty(0, np.bool_), "key_offsets": np.zeros(1, np.int64),
        "key_data": np.empty(0, np.uint8), "key_null": np.empty(0, np.bool_),
    }


def record_columns(records) -> dict:
    """RecordBatch columns of records (anything with ``offset``, ``timestamp_ms``,
    ``key`` and ``value``; a None value is a tombstone, a None key no key), in their
    order: a group's columnar poll builds its batch so where it has records in hand."""
    vo, vd, vn = _column_of([r.value for r in records], "values", allow_str=False)
    ko, kd, kn = _column_of([r.key for r in records], "keys", allow_str=False)
    n = len(records)
    return {"offsets": np.fromiter((r.offset for r in records), np.int64, n),
            "timestamps_ms": np.fromiter((r.timestamp_ms for r in records), np.int64, n),
            "value_offsets": vo, "value_data": vd, "value_null": vn,
            "key_offsets": ko, "key_data": kd, "key_null": kn}


def _column_of(items, what: str, allow_str: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, data, null) columns of ``items``: a numpy array of rows or a sequence of
    bytes-like (None: null; str only where ``allow_str``, as UTF-8)."""
    if isinstance(items, np.ndarray) and items.dtype != object:
        if items.ndim == 0:
            raise TypeError(f"{what} must have one entry per record, not a 0-d array")
        n = items.shape[0]
        data = np.ascontiguousarray(items)
        row = data.itemsize * (data.size // n if n else 0)
        flat = data.reshape(-1).view(np.uint8) if data.size else np.empty(0, np.uint8)
        return np.arange(n + 1, dtype=np.int64) * row, flat, np.zeros(n, np.bool_)
    if isinstance(items, (str, bytes, bytearray, memoryview)) or \
            not hasattr(items, "__len__") or not hasattr(items, "__getitem__"):
        raise TypeError(f"{what} must be a numpy array or a sequence of bytes, "
                        f"not {type(items).__name__}")
    fast = _ext.bytes_column(items)  # a list or tuple of bytes / None: one C pass
    if fast is not None:
        return fast
    parts: list = []
    null = np.zeros(len(items), np.bool_)
    lengths = np.zeros(len(items) + 1, np.int64)
    for i, item in enumerate(items):
        if item is None:
            null[i] = True
            continue
        if type(item) is not bytes:
            if isinstance(item, str):
                if not allow_str:
                    raise TypeError(f"{what}[{i}] is a str: values must be bytes-like")
                item = item.encode("utf-8")
            elif isinstance(item, (bytearray, memoryview, np.ndarray)):
                item = memoryview(item).cast("B") if not isinstance(item, np.ndarray) \
                    else np.ascontiguousarray(item).view(np.uint8).reshape(-1)
            else:
                raise TypeError(f"{what}[{i}] must be bytes-like or None, "
                                f"not {type(item).__name__}")
        parts.append(item)
        lengths[i + 1] = len(item)
    data = np.frombuffer(b"".join(parts), np.uint8) if parts else np.empty(0, np.uint8)
    return np.cumsum(lengths), data, null
