"""Tables: a compacted topic seen as key -> newest value, kept in an LMDB index.

``log.table(name)`` opens the compacted topic ``name`` (created with
``compact=True`` if missing) and an index of it in the store's LMDB
environment, namespace ``table`` (docs/tables.md):

* ``<name>\\0k<key>`` -> ``partition u32 | offset u64 | value`` for every live
  key (keys too long for an LMDB key are stored as ``<name>\\0h<BLAKE2b>`` with
  the key itself before the value: ``... | key_length u32 | key | value``);
* ``<name>\\1h<partition u32>`` -> ``next_offset u64 | caught_up_ms i64``: how far
  the index has read each partition, and when;
* ``<name>\\1n`` -> ``count u64``: how many keys are live.

The index is derived from the topic: writes go to the topic only
(``put`` is an append), and every read first brings the index up to the
partitions' published ends, in one LMDB write transaction per
``TABLE_CATCHUP_RECORDS`` records, so a ``get`` sees every append that returned
before it in any process. Every process shares the one index (no copy per
process). Deleted, it is rebuilt from the topic on the next read. An index
that was last caught up more than ``delete_retention_s`` ago, and whose unread
part of the topic has had records removed by compaction since, may have missed
a tombstone that compaction dropped, so it is rebuilt from the topic instead of
caught up.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import time
from collections.abc import Iterator
from typing import Any

from streamlog import _validate
from streamlog._limits import DEFAULT_DELETE_RETENTION_S, LMDB_MAX_KEY_BYTES, VIEW_POLL_S
from streamlog._types import Position, TableChange
from streamlog.backends.local import codec as _codec
from streamlog.backends.local.storage import meta as _meta_mod
from streamlog.backends.local.storage.meta import _MISSING as _MISSING_DB
from streamlog.errors import ConfigMismatch, StoreClosed, TopicNotFound, WrongExpectedVersion

_NS = "table"
_REQUIRED: Any = object()  # update()'s expected_offset has no default
_ENTRY = struct.Struct("<IQ")  # partition, offset
_HWM = struct.Struct("<Qq")  # next offset, caught_up_ms
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# Records applied per LMDB write transaction while catching up: bounds how long
# one catch-up holds LMDB's writer lock.
TABLE_CATCHUP_RECORDS = 50_000
# get() remembers up to this many values per partition and handle, each valid only
# while the partition has not changed since it was read (hot keys of a read-mostly
# table skip LMDB; any append anywhere invalidates them).
TABLE_CACHE_KEYS = 1024
_MISS = object()


def drop_topic(meta, txn, topic: str) -> None:
    """Topic deletion hook: the table index of the topic goes with it."""
    db = meta.db_in(txn, _NS)
    for prefix in (topic.encode() + b"\0", topic.encode() + b"\1"):
        cur = txn.cursor(db=db)
        keys = []
        if cur.set_range(prefix):
            for k, _ in cur:
                if not k.startswith(prefix):
                    break
                keys.append(bytes(k))
        for k in keys:
            txn.delete(k, db=db)


class Table:
    """A compacted topic seen as a mapping of key -> newest value.

    ``put``/``delete`` append to the topic; ``get``, ``[]``, ``in``, ``len``,
    ``keys()`` and ``items()`` read the shared LMDB index after bringing it up
    to date. Keys are bytes or str (UTF-8) and come back as bytes; values are
    bytes-like. Thread-safe; any number of processes may use the same table.
    """

    def __init__(self, log, name: str) -> None:
        _validate.name(name, "table name")
        topic = log.topic(name) if name in log.topics() else log.topic(name, compact=True)
        if not topic.config.get("compact"):
            raise ConfigMismatch(f"topic {name!r} is not compacted: a table needs "
                                 "compact=True")
        self.name = name
        self._log = log
        self._topic = topic
        self._meta = log._meta
        self._data = name.encode() + b"\0"
        self._mark = name.encode() + b"\1"
        self._retention_ms = int(1000 * float(topic.config.get(
            "delete_retention_s", DEFAULT_DELETE_RETENTION_S)))
        self._inline_max = LMDB_MAX_KEY_BYTES - len(self._data) - 1
        # for the fast paths of put() and get()
        self._append = topic.append
        self._parts = topic._parts
        self._nparts = topic.partitions
        self._pfk = lambda k: _codec.partition_for_key(k, topic.partitions)
        self._kprefix = self._data + b"k"
        self._hwm_keys = [self._hwm_key(p) for p in range(topic.partitions)]
        self._fast_env = self._fast_db = None
        self._cache: list[tuple[tuple, dict]] = [((-1, -1), {}) for _ in range(topic.partitions)]

    def __repr__(self) -> str:
        return f"Table({self.name!r})"

    # ------------------------------------------------------------------ keys
    def _ikey(self, key: bytes) -> bytes:
        if len(key) <= self._inline_max:
            return self._data + b"k" + key
        return self._data + b"h" + hashlib.blake2b(key, digest_size=32).digest()

    def _entry(self, key: bytes, p: int, off: int, value: bytes) -> bytes:
        if len(key) <= self._inline_max:
            return _ENTRY.pack(p, off) + value
        return _ENTRY.pack(p, off) + _U32.pack(len(key)) + key + value

    @staticmethod
    def _decode(ikey: bytes, raw, prefix_len: int) -> tuple[bytes, int, int, bytes]:
        """(key, partition, offset, value) of an index entry."""
        p, off = _ENTRY.unpack_from(raw, 0)
        if ikey[prefix_len] == ord("k"):
            return bytes(ikey[prefix_len + 1:]), p, off, bytes(raw[12:])
        (klen,) = _U32.unpack_from(raw, 12)
        return bytes(raw[16:16 + klen]), p, off, bytes(raw[16 + klen:])

    # -------------------------------------------------------------- catch-up
    def _hwm_key(self, p: int) -> bytes:
        return self._mark + b"h" + _U32.pack(p)

    def _catch_up(self, partitions) -> dict:
        """Bring the index up to the published end of each of ``partitions``.

        A read-only store cannot write the index: the records past it are read into
        an overlay instead, returned as {key: (key, partition, offset, value or None)}
        (empty when the index is current, as it always is for a writable store).
        """
        parts = self._topic._parts
        ends = {p: parts[p].end_offset() for p in partitions}
        db = self._meta.db(_NS)
        with self._meta.read() as txn:
            hwms = {p: _hwm_of(txn.get(self._hwm_key(p), db=db)) for p in partitions}
        behind = [p for p in partitions if hwms[p][0] < ends[p]]
        if not behind:
            return {}
        if self._log.read_only:
            overlay: dict = {}
            for p in behind:
                for rec in parts[p].read(max(hwms[p][0], parts[p].start_offset())):
                    if rec.offset >= ends[p]:
                        break
                    if rec.key is not None:
                        overlay[rec.key] = (rec.key, p, rec.offset, rec.value)
            return overlay
        while behind:
            behind = self._meta.write(functools.partial(self._apply, db=db, partitions=behind,
                                                        ends=ends))
        return {}

    def _apply(self, txn, db, partitions, ends) -> list[int]:
        """Apply up to TABLE_CATCHUP_RECORDS records (one write transaction); returns the
        partitions still behind ``ends``."""
        now = int(time.time() * 1000)
        parts = self._topic._parts
        count_key = self._mark + b"n"
        raw = txn.get(count_key, db=db)
        count = _U64.unpack(raw)[0] if raw is not None else 0
        budget = TABLE_CATCHUP_RECORDS
        still = []
        for p in partitions:
            hwm, at = _hwm_of(txn.get(self._hwm_key(p), db=db))
            if hwm >= ends[p]:
                continue
            if 0 <= hwm and at + self._retention_ms < now and hwm > parts[p].start_offset() \
                    and parts[p].removed_between(hwm, ends[p]):
                # compaction may have dropped a tombstone this index never saw: rebuild
                count = self._reset(txn, db)
                hwm = -1
            off = max(hwm, parts[p].start_offset())
            cols = parts[p].read_columns(off, min(budget, ends[p] - off)) if budget else None
            offs = cols["offsets"].tolist() if cols is not None else []
            while offs and offs[-1] >= ends[p]:
                offs.pop()
            n = len(offs)
            budget -= n
            if n:
                assert cols is not None  # n > 0: offsets came from cols
                kd, vd = cols["key_data"].tobytes(), cols["value_data"].tobytes()
                ko, vo = cols["key_offsets"].tolist(), cols["value_offsets"].tolist()
                kn, vn = cols["key_null"].tolist(), cols["value_null"].tolist()
                last: dict[bytes, tuple[int, bytes | None]] = {}  # the newest op per key
                for i in range(n):
                    if not kn[i]:  # (keyless records predate compaction: not in a table)
                        last[kd[ko[i]:ko[i + 1]]] = (offs[i], None if vn[i] else
                                                     vd[vo[i]:vo[i + 1]])
                puts, dels = [], []
                for key, (o, v) in last.items():
                    if v is None:
                        dels.append(self._ikey(key))
                    else:
                        puts.append((self._ikey(key), self._entry(key, p, o, v)))
                if puts:
                    get = txn.get
                    count += sum(1 for ik, _ in puts if get(ik, db=db) is None)
                    txn.cursor(db=db).putmulti(puts, dupdata=False, overwrite=True)
                for ik in dels:
                    if txn.delete(ik, db=db):
                        count -= 1
                off = offs[-1] + 1
            elif cols is not None:
                off = ends[p]  # nothing but removed offsets up to the end
            txn.put(self._hwm_key(p), _HWM.pack(off, now), db=db)
            if off < ends[p]:
                still.append(p)
        txn.put(count_key, _U64.pack(max(count, 0)), db=db)
        return still

    def _reset(self, txn, db) -> int:
        drop_topic(self._meta, txn, self.name)
        return 0

    # --------------------------------------------------------------- writes
    def put(self, key, value) -> Position:
        """Set ``key`` to ``value`` (an append to the topic); its Position."""
        if type(key) is bytes and type(value) is bytes:
            return self._append(value, key)  # the topic's own fast path checks the rest
        self._check()
        if value is None:
            raise TypeError("value must be bytes-like: use delete() to remove a key")
        return self._topic.append(value, key=_key(key))

    def delete(self, key) -> Position:
        """Remove ``key`` (a tombstone appended to the topic); its Position."""
        self._check()
        return self._topic.append(None, key=_key(key))

    def update(self, key, value, *, expected_offset: int | None = _REQUIRED) -> Position:
        """Set ``key`` to ``value`` only if its current record is at ``expected_offset``
        (None: only if the key is absent). Compare-and-set across processes: the
        check and the append are made under the partition's append lock.
        Raises WrongExpectedVersion(expected, actual) otherwise (actual None: absent).
        """
        self._check()
        if expected_offset is _REQUIRED:
            raise TypeError("update() needs expected_offset= (None: only if the key is absent)")
        k = _key(key)
        if value is None:
            raise TypeError("value must be bytes-like: use delete() to remove a key")
        value = _validate.value(value, False)
        if expected_offset is not None:
            expected_offset = _validate.offset(expected_offset)
        p = self._topic._partition_of(k)
        _validate.record_size(k, value, None, self._topic._max_record)
        ts = int(time.time() * 1000)
        data = _codec.encode_record(k, value, None, ts)

        def build(end_offset: int):
            self._catch_up([p])  # under the append lock: nothing can come in between
            actual = self._offset_of(k)
            if actual != expected_offset:
                return None, 0, 0, actual
            return data, 1, ts, None

        off, actual = self._topic.append_with(p, build)
        if off < 0:
            err = WrongExpectedVersion(expected_offset, actual)  # type: ignore[arg-type]
            err.args = (f"table {self.name!r}, key {k!r}: expected offset {expected_offset}, "
                        f"actual {actual}",)
            raise err
        return Position(p, off)

    # ---------------------------------------------------------------- reads
    def _raw(self, k: bytes):
        p = self._topic._partition_of(k)
        overlay = self._catch_up([p])
        if k in overlay:
            e = overlay[k]
            return None if e[3] is None else e
        db = self._meta.db(_NS)
        with self._meta.read() as txn:
            raw = txn.get(self._ikey(k), db=db)
            if raw is None:
                return None
            return self._decode(self._ikey(k), raw, len(self._data))

    def _offset_of(self, k: bytes) -> int | None:
        e = self._raw(k)
        return None if e is None else e[2]

    def get(self, key, default=None) -> bytes | None:
        """The newest value of ``key``, or ``default`` when it has none."""
        if self._log._closed:
            raise StoreClosed("the store is closed")
        k = key if type(key) is bytes else _key(key)
        if len(k) <= self._inline_max:
            p = self._pfk(k) if self._nparts > 1 else 0
            ctl = self._parts[p].ctl
            if ctl.deleted:
                raise TopicNotFound(f"topic {self.name!r} was deleted")
            end = ctl.end_offset()
            # Values read since the partition last changed: valid while its end and
            # append counter are those they were read at (any append, in any process,
            # moves the counter; compaction never changes a key's newest value).
            stamp = (end, ctl.notify_seq)
            cache = self._cache[p]
            if cache[0] == stamp:
                v = cache[1].get(k, _MISS)
                if v is not _MISS:
                    return default if v is None else v
            else:
                cache = self._cache[p] = (stamp, {})
            # else one read transaction: the index is current for the key's partition
            # (its mark at or past the published end): read the entry
            env = self._meta._env()
            if self._fast_env is not env:
                self._fast_env, self._fast_db = env, self._meta.db(_NS)
            if self._fast_db is not _MISSING_DB:
                with _meta_mod._GATE, env.begin(db=self._fast_db) as txn:
                    mark = txn.get(self._hwm_keys[p])
                    if mark is not None and _U64.unpack_from(mark)[0] >= end:
                        raw = txn.get(self._kprefix + k)
                        v = None if raw is None else raw[12:]
                        if len(cache[1]) < TABLE_CACHE_KEYS:
                            cache[1][k] = v
                        return default if v is None else v
        e = self._raw(k)
        return default if e is None else e[3]

    def position(self, key) -> Position | None:
        """Where the newest record of ``key`` is (the ``expected_offset`` of update)."""
        self._check()
        e = self._raw(_key(key))
        return None if e is None else Position(e[1], e[2])

    def __getitem__(self, key) -> bytes:
        self._check()
        e = self._raw(_key(key))
        if e is None:
            raise KeyError(key)
        return e[3]

    def __contains__(self, key) -> bool:
        self._check()
        return self._raw(_key(key)) is not None

    def __len__(self) -> int:
        self._check()
        if self._catch_up(range(self._topic.partitions)):
            return len(self._scan())
        db = self._meta.db(_NS)
        with self._meta.read() as txn:
            raw = txn.get(self._mark + b"n", db=db)
        return _U64.unpack(raw)[0] if raw is not None else 0

    def _scan(self) -> list[tuple[bytes, int, int, bytes]]:
        self._check()
        overlay = self._catch_up(range(self._topic.partitions))
        db = self._meta.db(_NS)
        out: list[Any] = []
        hashed: list[Any] = []
        n = len(self._data)
        with self._meta.read() as txn:
            cur = txn.cursor(db=db)
            if cur.set_range(self._data):
                for k, v in cur:
                    if not k.startswith(self._data):
                        break
                    e = self._decode(bytes(k), v, n)
                    (out if k[n] == ord("k") else hashed).append(e)
        if hashed:  # long keys are stored by hash: put them in key order too
            out = sorted(out + hashed)
        if overlay:
            merged = {e[0]: e for e in out}
            merged.update(overlay)
            out = sorted(e for e in merged.values() if e[3] is not None)
        return out

    def keys(self) -> list[bytes]:
        """Every live key, in key order (bytes order)."""
        return [e[0] for e in self._scan()]

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value), in key order."""
        return [(e[0], e[3]) for e in self._scan()]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.keys())

    def watch(self, from_offset: int | None = None,
              timeout_s: float | None = None) -> Iterator[TableChange]:
        """Changes of the table: first a catch-up, then each change as it is appended.

        ``from_offset=None``: the current contents (one change per live key, in
        key order), then every later change. ``from_offset=N``: every record
        from offset N of each partition on (compaction may have removed older
        values of a key; its newest is always there). ``timeout_s``: stop after
        that long without a change (None: never).
        """
        self._check()
        parts = self._topic._parts
        if from_offset is None:
            self._catch_up(range(len(parts)))
            db = self._meta.db(_NS)
            with self._meta.read() as txn:
                nexts = [_hwm_of(txn.get(self._hwm_key(p), db=db))[0] for p in
                         range(len(parts))]
            snapshot = self._scan()
            nexts = [max(n, 0) for n in nexts]
            for key, p, off, value in snapshot:
                if off < nexts[p]:
                    yield TableChange(key, value, Position(p, off))
        else:
            nexts = [_validate.offset(from_offset)] * len(parts)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            seen = self._topic.notify_seq_any()
            got = False
            for p, part in enumerate(parts):
                for rec in part.read(nexts[p]):
                    nexts[p] = rec.offset + 1
                    if rec.key is None:
                        continue
                    got = True
                    yield TableChange(rec.key, rec.value, Position(p, rec.offset))
            if got:
                if deadline is not None and timeout_s is not None:
                    deadline = time.monotonic() + timeout_s
                continue
            wait = VIEW_POLL_S
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                wait = min(wait, left)
            self._topic.wait_any(seen, wait)

    def _check(self) -> None:
        if self._log._closed:
            raise StoreClosed("the store is closed")


def _hwm_of(raw) -> tuple[int, int]:
    if raw is None:
        return -1, 0
    return _HWM.unpack(raw)


def _key(key) -> bytes:
    if key is None:
        raise TypeError("a table key must be bytes or str, not None")
    out = key if type(key) is bytes else _validate.key(key)
    assert out is not None  # not None in, not None out
    return out
