"""The event store view: versioned event streams with expected-version appends.

``log.event_store("bank")`` keeps every stream of the store in one
single-partition topic named like the store (``bank``), so the store has one
commit order: an event's *position* is its offset in that topic (dense from
0). Each event is one record whose headers carry its stream id
(``es-stream``) and its version in the stream (``es-version``, decimal);
user headers ride beside them (names starting with ``es-`` are reserved).

One ``append`` is one record batch, written under the topic partition's
append lock after the expected-version check: all events of a call or none,
contiguous positions, and of two appenders racing on the same expected
version (threads or processes) exactly one wins.

The stream index (stream -> last version, and (stream, version) -> position)
lives in the directory's LMDB environment, namespace ``event_store``, keys
prefixed with the store's name. It is derived: the segments are the source
of truth. LMDB holds the index up to a high-water mark (``indexed_to``);
each process keeps the records after it in memory, catching up by reading
the log, and writes them back once it holds ``EVENT_INDEX_FLUSH_RECORDS``
(and when the store closes). A crash anywhere, even between an append and
an index write, leaves the log authoritative: the next reader or appender
rebuilds what LMDB lacks from the records. An index that points past the
log's end (the log lost its tail on power loss) or that belongs to an
earlier topic of the same name is dropped and rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
import weakref
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Iterator, Mapping

from .. import _ext, _validate, backend
from .._types import now_ms
from ..backend import (
    ANY,
    NO_STREAM,
    ConfigMismatch,
    CorruptionError,
    Event,
    RecordTooLarge,
    StoreClosed,
    StreamlogError,
    WrongExpectedVersion,
)

__all__ = ["EventStore", "Subscription", "Event", "ANY", "NO_STREAM"]

KV_NAMESPACE = "event_store"
STREAM_HEADER = "es-stream"
VERSION_HEADER = "es-version"
RESERVED_HEADER_PREFIX = "es-"

_HB_STREAM = STREAM_HEADER.encode()
_HB_VERSION = VERSION_HEADER.encode()
_CHUNK = backend.EVENT_INDEX_CHUNK_VERSIONS
_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")
# Index meta entry: topic uid (16 bytes; a recreated topic gets a new one),
# epoch (8 random bytes, new each time the LMDB index is started over), and
# indexed_to (every record below this offset is in the LMDB index).
_META = struct.Struct("<16s8sQ")
_LONG_ID = b"\xff\xff"  # skey marker of a hashed (long) stream id
_new_tuple = tuple.__new__
# Bytes an event's own headers add to its value (for the max_record_bytes check):
# two headers at 6 bytes of framing each, their names, and up to 20 version digits.
_FRAMING_BYTES = 12 + len(STREAM_HEADER) + len(VERSION_HEADER) + 20


def _stream_id(value) -> tuple[str, bytes]:
    """A stream id: a non-empty str of at most EVENT_STREAM_ID_MAX_BYTES UTF-8 bytes."""
    if not isinstance(value, str):
        raise TypeError(f"stream_id must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError("stream_id must not be empty")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"stream_id {value[:40]!r} is not valid Unicode: {e}") from None
    if len(raw) > backend.EVENT_STREAM_ID_MAX_BYTES:
        raise ValueError(f"stream_id {value[:40]!r}... is {len(raw)} bytes long (UTF-8); at "
                         f"most {backend.EVENT_STREAM_ID_MAX_BYTES} are allowed")
    return value, raw


def _int_arg(value, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, not {value}")
    return int(value)


def _expected_version(value) -> int:
    if type(value) is int and value >= ANY:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected_version must be an int (a version, NO_STREAM or ANY), "
                        f"not {type(value).__name__}")
    if value < ANY:
        raise ValueError(f"expected_version must be a version >= 0, NO_STREAM (-1) or ANY "
                         f"(-2), not {value}")
    return int(value)


def _user_headers(h) -> list[tuple[bytes, bytes]] | None:
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
    hdrs = backend.validate_headers(h)
    if not hdrs:
        return None
    for name, _ in hdrs:
        if name.startswith(b"es-"):
            raise ValueError(f"header name {name.decode()!r} is reserved: names starting with "
                             f"{RESERVED_HEADER_PREFIX!r} belong to the event store")
    return hdrs


def _events(events) -> list[tuple[bytes, list[tuple[bytes, bytes]] | None]]:
    """The events of one append: bytes-like values or (value, headers) pairs."""
    if type(events) is not list and type(events) is not tuple and (
            isinstance(events, str | bytes | bytearray | memoryview | Mapping)
            or not isinstance(events, Iterable)):
        raise TypeError("events must be a list of bytes-like values or (value, headers) pairs, "
                        f"not {type(events).__name__}")
    out = []
    append = out.append
    last_h = last_enc = None  # one headers object shared by many events: check it once
    for ev in events:
        t = type(ev)
        if t is bytes:
            append((ev, None))
        elif t is tuple or t is list or isinstance(ev, tuple | list):
            if len(ev) != 2:
                raise TypeError(f"an event pair must be (value, headers), not a "
                                f"{len(ev)}-item {type(ev).__name__}")
            value, headers = ev
            if type(value) is not bytes:
                value = backend.validate_value(value)
            if headers is None:
                append((value, None))
            elif headers is last_h:
                append((value, last_enc))
            else:
                last_h, last_enc = headers, _user_headers(headers)
                append((value, last_enc))
        else:
            append((backend.validate_value(ev), None))
    if not out:
        raise ValueError("events must not be empty: an append writes at least one event")
    return out


class _IndexMismatch(Exception):
    """Internal: LMDB's index does not continue where this process's tail starts."""


def _skey(sid_b: bytes) -> bytes:
    """The stream's part of its index keys: length-prefixed id, or a hash of a long one."""
    if len(sid_b) <= backend.EVENT_STREAM_ID_INLINE_BYTES:
        return _U16.pack(len(sid_b)) + sid_b
    return _LONG_ID + hashlib.blake2b(sid_b, digest_size=32).digest()


class _Index:
    """This process's view of one store's stream index.

    Three layers, each derived from the log: LMDB (every record below
    ``indexed_to``, shared by all processes), ``tail`` (positions of the
    events in [base, end) that this process has not written to LMDB yet) and
    ``heads`` (the last version, as of ``end``, of every stream this process
    has seen in the log since it last started from LMDB: what expected-version
    checks need, without touching LMDB).
    What the tail and heads say comes from reading the log, so it holds
    whatever happens to LMDB meanwhile; LMDB entries are trusted only while
    the index meta still carries the epoch this process started from.

    Thread-safe through ``lock``; shared by every EventStore handle of one Log
    on the same store. Lock order: partition append lock, then ``lock``, then
    an LMDB write transaction.
    """

    def __init__(self, log, name: str, topic) -> None:
        self.log = log
        self.name = name
        self.topic = topic
        self.kv = log.kv(KV_NAMESPACE)
        uid = backend.topic_config(topic).get("uid") or ""
        try:
            self.uid = bytes.fromhex(uid)[:16].ljust(16, b"\0")
        except ValueError:
            self.uid = hashlib.blake2b(uid.encode(), digest_size=16).digest()
        self.lock = threading.Lock()
        self.prefix = name.encode() + b"\0"
        self.meta_key = self.prefix + b"m"
        self.epoch: bytes | None = None  # LMDB epoch the tail extends; None: not started
        self.base = 0  # the tail holds every event in [base, end)
        self.end = 0
        self.tail: dict[str, list] = {}  # stream id -> [first version, [positions]]
        self.count = 0  # events in the tail
        self.heads: dict[str, int] = {}  # stream id -> last version as of end

    # ------------------------------------------------------------------ keys
    def head_key(self, skey: bytes) -> bytes:
        return self.prefix + b"h" + skey

    def chunk_key(self, skey: bytes, chunk: int) -> bytes:
        return self.prefix + b"c" + skey + chunk.to_bytes(4, "big")

    # ------------------------------------------------------------------ meta
    def _meta(self, end: int | None) -> tuple[bytes, int, int]:
        """(epoch, indexed_to, end) of a valid LMDB index for this topic, starting it
        over when it is missing, belongs to an earlier topic, or reaches past the
        log's end (``end``, or the end read just after the index meta)."""
        for _ in range(16):
            raw = self.kv.get(self.meta_key)
            # indexed_to never passes the end of a healthy log, so the end is read
            # after the meta: a flush in between cannot make it look ahead.
            e = self.topic.end_offset(0) if end is None else end
            if raw is not None and len(raw) == _META.size:
                uid, epoch, indexed_to = _META.unpack(raw)
                if uid == self.uid and indexed_to <= e:
                    return epoch, indexed_to, e
            self._start_over(raw)
        raise StreamlogError(f"event store {self.name!r}: its index keeps changing")

    def _start_over(self, seen: bytes | None) -> None:
        """Empty this store's LMDB index (new epoch), unless another process changed it
        since we read ``seen``."""
        fresh = _META.pack(self.uid, os.urandom(8), 0)
        meta_key, prefix = self.meta_key, self.prefix

        def fn(tx):
            if tx.get(meta_key) != seen:
                return
            for k, _ in tx.scan(prefix):
                tx.delete(k)
            tx.put(meta_key, fresh)

        self.kv.transact(fn)

    def _restart(self, epoch: bytes, indexed_to: int) -> None:
        """Forget what this process knows and continue from LMDB's ``indexed_to``."""
        self.epoch = epoch
        self.base = self.end = indexed_to
        self.tail = {}
        self.count = 0
        self.heads = {}

    def check_lmdb(self, end: int | None = None) -> tuple[int, bool]:
        """Make sure LMDB entries can be trusted: the meta still has our epoch (else
        start from the new one). Returns (the log end it checked against, whether
        this process's knowledge was restarted). Caller holds ``lock``."""
        epoch, indexed_to, end = self._meta(end)
        if epoch != self.epoch or indexed_to < self.base or \
                indexed_to - self.end > backend.EVENT_INDEX_FLUSH_RECORDS:
            # A new epoch (or first use), or another process indexed far past what we
            # know: continue from LMDB rather than read all those records.
            self._restart(epoch, indexed_to)
            return end, True
        return end, False

    # ------------------------------------------------------------------ tail
    def sync(self, end: int | None = None) -> None:
        """Learn the events of every record up to the log's end (or ``end``, read under
        the append lock). Caller holds ``lock``."""
        if end is None and self.epoch is not None:
            end = self.topic.end_offset(0)
        if self.epoch is None or self.end > end:
            # First use, or we know of records the log no longer has (it lost its
            # tail): start from LMDB (which is checked against the log's end).
            self.epoch = None
            end, _ = self.check_lmdb(end)
        if self.end < end:
            self._catch_up(end)
        if self.count >= backend.EVENT_INDEX_FLUSH_RECORDS:
            self.flush()

    def _catch_up(self, end: int) -> None:
        """Add the events of the records in [self.end, end) to the tail."""
        offset = self.end
        for rec in self.topic.read(0, offset, end - offset):
            if rec.offset != offset:
                raise CorruptionError(None, 0, f"event store {self.name!r}: the log skips from "
                                      f"offset {offset} to {rec.offset}")
            h = rec.headers
            sid = h.get(STREAM_HEADER)
            ver = h.get(VERSION_HEADER)
            if sid is not None and ver is not None:
                self.add(sid.decode("utf-8", "replace"), int(ver), offset)
            offset += 1
        if offset != end:
            raise StreamlogError(f"event store {self.name!r}: read stopped at offset {offset} "
                                 f"before the end {end}")
        self.end = end

    def prepare_check(self, end: int) -> None:
        """Before an append's version check at log end ``end`` (caller holds ``lock``):
        learn what other writers appended since, or write back a full tail."""
        if self.end != end or self.epoch is None:
            self.sync(end)  # records appended since we last looked: learn them
        elif self.count >= backend.EVENT_INDEX_FLUSH_RECORDS:
            self.flush()

    def add_run(self, sid: str, version: int, position: int, count: int) -> None:
        """``count`` events of one stream at consecutive positions from ``position``
        (== the tail's end; the caller advances ``end``)."""
        t = self.tail.get(sid)
        if t is None:
            self.tail[sid] = [version, list(range(position, position + count))]
        else:
            if t[0] + len(t[1]) != version:
                raise CorruptionError(None, 0, f"event store {self.name!r}: stream {sid!r} "
                                      f"jumps to version {version} at position {position}, "
                                      f"after {t[0] + len(t[1]) - 1}")
            t[1].extend(range(position, position + count))
        heads = self.heads
        if len(heads) >= backend.EVENT_INDEX_CACHED_STREAMS and sid not in heads:
            heads.clear()
        heads[sid] = version + count - 1
        self.count += count

    def add(self, sid: str, version: int, position: int) -> None:
        """One more event, at ``position`` == the tail's end (caller advances ``end``)."""
        t = self.tail.get(sid)
        if t is None:
            self.tail[sid] = [version, [position]]
        else:
            if t[0] + len(t[1]) != version:
                raise CorruptionError(None, 0, f"event store {self.name!r}: stream {sid!r} "
                                      f"jumps to version {version} at position {position}, "
                                      f"after {t[0] + len(t[1]) - 1}")
            t[1].append(position)
        heads = self.heads
        if len(heads) >= backend.EVENT_INDEX_CACHED_STREAMS and sid not in heads:
            heads.clear()  # a cache: LMDB answers for the streams it forgets
        heads[sid] = version
        self.count += 1

    def last_version(self, sid: str, sid_b: bytes) -> int:
        """The stream's last version (NO_STREAM if it has none) as of ``end``. Caller
        holds ``lock`` and has synced."""
        v = self.heads.get(sid)
        if v is not None:
            return v
        skey = _skey(sid_b)
        for _ in range(4):
            raw = self.kv.get(self.head_key(skey))
            # The head is LMDB's answer only if LMDB is still the index we extend.
            _, restarted = self.check_lmdb()
            if restarted:
                self.sync()
                v = self.heads.get(sid)
                if v is not None:
                    return v
                continue
            t = self.tail.get(sid)
            if t is not None:
                return t[0] + len(t[1]) - 1
            return NO_STREAM if raw is None else _U64.unpack(raw)[0]
        raise StreamlogError(f"event store {self.name!r}: its index keeps changing")

    # ----------------------------------------------------------------- flush
    def flush(self) -> None:
        """Write the tail into LMDB and advance indexed_to. Caller holds ``lock``."""
        if not self.count:
            return
        tail, base, end, epoch = self.tail, self.base, self.end, self.epoch
        meta_key, uid = self.meta_key, self.uid

        def fn(tx):
            raw = tx.get(meta_key)
            if raw is None or len(raw) != _META.size:
                return None
            m_uid, m_epoch, indexed_to = _META.unpack(raw)
            if m_uid != uid or m_epoch != epoch or indexed_to < base:
                return None  # started over elsewhere: our tail is for an old epoch
            if indexed_to >= end:
                return indexed_to
            for sid, (first, positions) in tail.items():
                k = bisect_left(positions, indexed_to)
                if k == len(positions):
                    continue
                v0 = first + k
                skey = _skey(sid.encode("utf-8"))
                hk = self.head_key(skey)
                head = tx.get(hk)
                last = NO_STREAM if head is None else _U64.unpack(head)[0]
                if last != v0 - 1:
                    raise _IndexMismatch(sid)  # aborts the transaction: nothing written
                v, i, n = v0, k, len(positions)
                while i < n:
                    c, slot = divmod(v, _CHUNK)
                    ck = self.chunk_key(skey, c)
                    cur = tx.get(ck) or b""
                    if len(cur) != slot * 8:
                        raise _IndexMismatch(sid)
                    take = min(_CHUNK - slot, n - i)
                    tx.put(ck, cur + struct.pack(f"<{take}Q", *positions[i:i + take]))
                    v += take
                    i += take
                tx.put(hk, _U64.pack(v - 1))
            tx.put(meta_key, _META.pack(uid, epoch, end))
            return end

        try:
            result = self.kv.transact(fn)
        except _IndexMismatch:
            # LMDB disagrees with the log (the source of truth): rebuild it.
            self._start_over(self.kv.get(meta_key))
            self.epoch = None
            return
        if result is None:
            self.epoch = None  # the next sync starts from the current LMDB epoch
        else:
            # Everything up to end is in LMDB now; heads stay (they are as of end).
            self.tail = {}
            self.count = 0
            self.base = end

    def flush_quietly(self) -> None:
        """Flush on close: the index is derived, so a failure here loses nothing."""
        try:
            with self.lock:
                self.flush()
        except Exception:  # noqa: BLE001 - the next process rebuilds from the log
            pass

    # ----------------------------------------------------------------- reads
    def lmdb_positions(self, skey: bytes, lo: int, hi: int) -> list[int] | None:
        """Positions of versions lo..hi from LMDB; None if an entry is missing or the
        index was started over meanwhile (the caller syncs and retries)."""
        out: list[int] = []
        for c in range(lo // _CHUNK, hi // _CHUNK + 1):
            first = max(lo, c * _CHUNK) - c * _CHUNK
            last = min(hi, c * _CHUNK + _CHUNK - 1) - c * _CHUNK
            raw = self.kv.get(self.chunk_key(skey, c))
            if raw is None or len(raw) < (last + 1) * 8:
                return None
            out.extend(struct.unpack_from(f"<{last - first + 1}Q", raw, first * 8))
        return out


def _drop_index(tx, topic: str) -> None:
    """Topic deletion hook: a store's stream index goes with its topic."""
    for k, _ in tx.scan(topic.encode() + b"\0"):
        tx.delete(k)


backend.on_topic_deleted(KV_NAMESPACE, _drop_index)


# One _Index per (Log, store name) in this process: every handle shares it.
_INDEXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_INDEXES_LOCK = threading.Lock()


def _index_for(log, name: str, topic) -> _Index:
    with _INDEXES_LOCK:
        per_log = _INDEXES.get(log)
        if per_log is None:
            per_log = _INDEXES[log] = {}
        idx = per_log.get(name)
        uid = backend.topic_config(topic).get("uid")
        if idx is None or backend.topic_config(idx.topic).get("uid") != uid:
            idx = per_log[name] = _Index(log, name, topic)
            backend.on_close(log, idx.flush_quietly)
        return idx


class EventStore:
    """An event-sourcing view: streams of versioned events in one commit order.

    Thread-safe: a handle may be shared by threads; any number of processes may
    append to and read the same store at once.
    """

    def __init__(self, log, name: str) -> None:
        backend.validate_name(name, "event store name")
        topic = log.topic(name, partitions=1)
        cfg = backend.topic_config(topic)
        retention = cfg.get("retention") or (None, None)
        if cfg.get("compact") or any(x is not None for x in retention):
            raise ConfigMismatch(f"topic {name!r} has retention or compaction; the event store "
                                 f"{name!r} needs a topic that keeps every event")
        self._log = log
        self.name = name
        self._topic = topic
        self._max_record = cfg["max_record_bytes"]
        self._index = _index_for(log, name, topic)

    def __repr__(self) -> str:
        return f"EventStore({self.name!r})"

    # ---------------------------------------------------------------- append
    def append(self, stream_id: str, events, expected_version: int = ANY) -> int:
        """Append ``events`` to stream ``stream_id``; returns the stream's new last version.

        ``events`` is a non-empty list of bytes-like values or ``(value, headers)``
        pairs. ``expected_version`` is the version of the stream's last event,
        NO_STREAM for a stream that must not exist yet, or ANY. All events of
        the call are written (one batch, contiguous positions and versions) or
        none: WrongExpectedVersion(expected, actual) when the check fails.
        Bad input raises TypeError/ValueError/RecordTooLarge before any write.
        """
        self._log._check()
        sid, sid_b = _stream_id(stream_id)
        expected = _expected_version(expected_version)
        items = _events(events)
        return self._commit_one(sid, sid_b, expected, items)[1]

    def _commit_one(self, sid: str, sid_b: bytes, exp: int, items: list,
                    first_headers=None) -> tuple[int, int]:
        """``_commit`` for the events of one stream (every public append): the same
        steps (sharing ``_Index.prepare_check``, ``_check_sizes`` and ``_landed``)
        without the per-stream dicts, which cost this hot path about 15 %. ``items``:
        ``[(value, user_headers or None), ...]``. Returns (first position, the
        stream's new last version)."""
        self._log._check()
        idx = self._index
        n = len(items)
        limit = backend.topic_config(self._topic)["max_record_bytes"]  # (alter_topic)
        extra = list(first_headers) if first_headers else None
        values = [e[0] for e in items]
        sh = (_HB_STREAM, sid_b)

        def encode(first: int) -> tuple[bytes, int]:
            headers = [[sh, (_HB_VERSION, b"%d" % (first + i)), *e[1]] if e[1] else
                       [sh, (_HB_VERSION, b"%d" % (first + i))] for i, e in enumerate(items)]
            if extra:
                headers[0].extend(extra)
            ts = now_ms()
            return backend.encode_batch(None, values, headers, [ts] * n), ts

        # Encode before taking the append lock with the version we expect to get;
        # under the lock only a wrong guess (expected_version=ANY) re-encodes.
        if exp == ANY:
            with idx.lock:
                guess = idx.last_version(sid, sid_b) + 1
        else:
            guess = exp + 1
        data, ts = encode(guess)
        if len(data) > limit:
            self._check_sizes([(sid, sid_b, v, h) for v, h in items], extra, limit)
        state = [guess, data, ts, -1, None]  # first version, batch, ts, end, epoch

        def build(end: int):
            with idx.lock:
                idx.prepare_check(end)
                actual = idx.heads.get(sid)
                if actual is None:
                    actual = idx.last_version(sid, sid_b)
                if exp != ANY and actual != exp:
                    return None, 0, 0, WrongExpectedVersion(exp, actual, sid)
                if actual + 1 != state[0]:
                    state[0] = actual + 1
                    state[1], state[2] = encode(actual + 1)
                state[3] = end
                state[4] = idx.epoch
            return state[1], n, state[2], None

        base, result = self._topic.append_with(0, build)
        if base < 0:
            raise result
        first, _, _, end, epoch = state
        self._landed(base, end, epoch, n, ((sid, first, base, n),))
        return base, first + n - 1

    def _landed(self, base: int, end: int, epoch, n: int, runs) -> None:
        """After a commit's ``n`` events landed at ``base`` (the version check ran at log
        end ``end`` with index ``epoch``): add them to this process's index as ``runs``
        ``(stream_id, first version, position, count)``."""
        if base != end:
            raise StreamlogError(f"event store {self.name!r}: batch landed at offset {base}, "
                                 f"the version check ran at {end}")
        idx = self._index
        with idx.lock:
            # Our own events join what this process knows, unless another thread has
            # read them from the log already (or the index was restarted meanwhile).
            if idx.end == base and idx.epoch == epoch:
                for sid, first, position, count in runs:
                    idx.add_run(sid, first, position, count)
                idx.end = base + n
            if idx.count >= backend.EVENT_INDEX_FLUSH_RECORDS:
                idx.flush()

    def _check_sizes(self, entries: list, extra, limit: int) -> None:
        """RecordTooLarge for the first event whose value + headers exceed ``limit``."""
        for i, (_, sid_b, value, hdrs) in enumerate(entries):
            size = len(value) + len(sid_b) + _FRAMING_BYTES
            for a, b in (hdrs or ()):
                size += 6 + len(a) + len(b)
            for a, b in (extra if i == 0 and extra else ()):
                size += 6 + len(a) + len(b)
            if size > limit:
                raise RecordTooLarge(f"event of {size} bytes (value + headers) exceeds "
                                     f"max_record_bytes={limit} of {self.name!r}")

    def _commit(self, entries: list, expected: dict, first_headers=None) -> tuple[int, dict]:
        """Append events of one or more streams as one batch, checking each stream's
        expected version under the append lock.

        ``entries``: ``[(stream_id, stream_id_bytes, value, user_headers or None), ...]``
        in commit order (a stream's events need not be adjacent); ``expected``:
        ``{stream_id: (stream_id_bytes, expected_version)}`` for every stream.
        ``first_headers`` are added to the first record's headers. Returns
        ``(first position, {stream_id: new last version})``; raises
        WrongExpectedVersion (nothing written) on the first failed check.
        """
        if len(expected) == 1:
            (sid, (sid_b, exp)), = expected.items()
            base, last = self._commit_one(sid, sid_b, exp, [(e[2], e[3]) for e in entries],
                                          first_headers)
            return base, {sid: last}
        self._log._check()
        idx = self._index
        n = len(entries)
        limit = backend.topic_config(self._topic)["max_record_bytes"]  # (alter_topic)
        extra = list(first_headers) if first_headers else None
        values = [e[2] for e in entries]

        def encode(firsts: dict) -> tuple[bytes, int]:
            headers = []
            nxt = dict(firsts)
            for sid, sid_b, _, hdrs in entries:
                v = nxt[sid]
                nxt[sid] = v + 1
                h = [(_HB_STREAM, sid_b), (_HB_VERSION, b"%d" % v)]
                if hdrs:
                    h.extend(hdrs)
                headers.append(h)
            if extra:
                headers[0].extend(extra)
            ts = now_ms()
            return backend.encode_batch(None, values, headers, [ts] * n), ts

        # Encode before taking the append lock with the versions we expect to get;
        # under the lock only a wrong guess (expected_version=ANY) re-encodes.
        guess = {}
        for sid, (sid_b, exp) in expected.items():
            if exp == ANY:
                with idx.lock:
                    exp = idx.last_version(sid, sid_b)
            guess[sid] = exp + 1
        data, ts = encode(guess)
        if len(data) > limit:
            # No record of a batch within the limit can exceed it: check each one
            # only when the whole batch is larger (before anything is written).
            self._check_sizes(entries, extra, limit)
        planned: list = []

        def build(end: int):
            nonlocal data, ts
            with idx.lock:
                idx.prepare_check(end)
                firsts = {}
                heads = idx.heads
                for sid, (sid_b, exp) in expected.items():
                    actual = heads.get(sid)
                    if actual is None:
                        actual = idx.last_version(sid, sid_b)
                    if exp != ANY and actual != exp:
                        return None, 0, 0, WrongExpectedVersion(exp, actual, sid)
                    firsts[sid] = actual + 1
                if firsts != guess:
                    data, ts = encode(firsts)
                planned.extend((end, idx.epoch, firsts))
            return data, n, ts, None

        base, result = self._topic.append_with(0, build)
        if base < 0:
            raise result
        end, epoch, firsts = planned
        nxt = dict(firsts)
        runs = []
        for i, e in enumerate(entries):
            v = nxt[e[0]]
            nxt[e[0]] = v + 1
            runs.append((e[0], v, base + i, 1))
        self._landed(base, end, epoch, n, runs)
        counts: dict = {}
        for e in entries:
            counts[e[0]] = counts.get(e[0], 0) + 1
        return base, {sid: firsts[sid] + c - 1 for sid, c in counts.items()}

    # ------------------------------------------------------------------ read
    def read(self, stream_id: str, from_version: int = 0, limit: int | None = None,
             backwards: bool = False) -> list[Event]:
        """Events of one stream with version >= ``from_version``, oldest first.

        ``limit`` caps how many; ``backwards=True`` returns the same events
        newest first, so ``limit`` keeps the newest (``read(s, backwards=True,
        limit=1)`` is the last event). [] for an unknown stream. Uses the
        stream index: no scan of the log.
        """
        self._log._check()
        sid, sid_b = _stream_id(stream_id)
        lo = _int_arg(from_version, "from_version", 0)
        if limit is not None:
            limit = _int_arg(limit, "limit", 0)
        if not isinstance(backwards, bool):
            raise TypeError(f"backwards must be a bool, not {type(backwards).__name__}")
        return self._read_range(sid, sid_b, lo, None, limit, backwards)

    def last_version(self, stream_id: str) -> int:
        """The version of the stream's last event, NO_STREAM (-1) for an unknown stream."""
        self._log._check()
        sid, sid_b = _stream_id(stream_id)
        self._log._check()
        idx = self._index
        with idx.lock:
            idx.sync()
            return idx.last_version(sid, sid_b)

    def _read_range(self, sid: str, sid_b: bytes, lo: int, hi: int | None,
                    limit: int | None, backwards: bool) -> list[Event]:
        """Events of versions lo..hi (hi None: the last), at most ``limit`` of them
        (the newest ones when ``backwards``), oldest first unless ``backwards``."""
        events = self._stream_records(sid, sid_b, lo, hi, limit, backwards, as_events=True)[1]
        if backwards:
            events.reverse()
        return events

    def _stream_records(self, sid: str, sid_b: bytes, lo: int, hi: int | None,
                        limit: int | None, newest: bool = False,
                        as_events: bool = False) -> tuple[int, list]:
        """The records of versions lo..hi of a stream (hi None: its last), at most
        ``limit`` of them (the newest ones when ``newest``), oldest first, their
        ``es-*`` headers removed (or, ``as_events``, Events made of them); and the
        version of the first.

        Checked against the log: a record that is not the event the index says
        makes the index start over from the log (CorruptionError if it still
        disagrees).
        """
        self._log._check()
        idx = self._index
        skey = _skey(sid_b)
        for attempt in range(3):
            with idx.lock:
                idx.sync()
                last = idx.last_version(sid, sid_b)
                top = last if hi is None else min(hi, last)
                if top < lo or limit == 0:
                    return lo, []
                bottom = lo
                if limit is not None:
                    if newest:
                        bottom = max(lo, top - limit + 1)
                    else:
                        top = min(top, lo + limit - 1)
                t = idx.tail.get(sid)
                tail_first = t[0] if t is not None else top + 1
                tail_part = [] if t is None or top < tail_first else \
                    t[1][max(bottom, tail_first) - tail_first:top - tail_first + 1]
            positions: list[int] | None = []
            if bottom < tail_first:
                positions = idx.lmdb_positions(skey, bottom, min(top, tail_first - 1))
            if positions is not None:
                positions.extend(tail_part)
                records = self._records_at(sid_b, bottom, positions,
                                            sid if as_events else None)
                if records is not None:
                    return bottom, records
            # The index changed under us or disagrees with the log: start it over.
            with idx.lock:
                if attempt:
                    idx._start_over(idx.kv.get(idx.meta_key))
                idx.epoch = None
        raise CorruptionError(None, 0, f"event store {self.name!r}: the stream index of "
                              f"{sid!r} does not match the log; run `streamlog verify`")

    def _records_at(self, sid_b: bytes, first_version: int, positions: list[int],
                    event_sid: str | None = None) -> list | None:
        """The records at ``positions`` (rising; versions from ``first_version``) with
        their ``es-*`` headers removed, or None if one is not the event the index
        says. With ``event_sid``, Events (of that stream id) instead of records,
        made in the same pass.

        Positions close together are read in one pass. Every record's stream id
        is checked, and the versions of the first and the last: a stream's
        versions rise with its positions, so matching ends and a matching count
        pin every version in between.
        """
        out: list = []
        n = len(positions)
        if not n:
            return out
        gap = backend.EVENT_READ_GAP_RECORDS
        read = self._topic.read
        first_ver = last_ver = None
        v = first_version
        i = 0
        while i < n:
            j = i
            while j + 1 < n:
                step = positions[j + 1] - positions[j]
                if step <= 0:
                    return None  # positions of one stream always rise
                if step > gap:
                    break
                j += 1
            want = positions[i]
            span = positions[j] - want + 1
            # the per-record loop runs in the extension (_ext.event_run)
            run = _ext.event_run(read(0, want, span), positions, i, j,
                                 span == j - i + 1,  # then every record of the run is ours
                                 sid_b, event_sid, v, out, Event, STREAM_HEADER,
                                 VERSION_HEADER)
            if run is None:
                return None
            i, v, first, last_ver = run
            if first_ver is None:
                first_ver = first
            if i != j + 1:
                return None  # a record is missing
        if first_ver != b"%d" % first_version or last_ver != b"%d" % (first_version + n - 1) \
                or (out[-1].offset if event_sid is None else out[-1].position) != positions[-1]:
            return None
        return out

    def read_all(self, from_position: int = 0, limit: int | None = None) -> list[Event]:
        """Every event of every stream from ``from_position`` in commit order (at most
        ``limit``). Positions are dense from 0."""
        self._log._check()
        position = _int_arg(from_position, "from_position", 0)
        if limit is not None:
            limit = _int_arg(limit, "limit", 0)
        self._log._check()
        out: list[Event] = []
        while limit is None or len(out) < limit:
            want = backend.EVENT_SUBSCRIBE_BATCH_RECORDS * 8
            if limit is not None:
                want = min(want, limit - len(out))
            events, nxt = self._events_from(position, want)
            out.extend(events)
            if nxt == position:
                break
            position = nxt
        return out

    def _events_from(self, position: int, max_records: int) -> tuple[list[Event], int]:
        """Events of up to ``max_records`` records from ``position``, and the position
        after them. Records that are not events (no ``es-*`` headers) are skipped."""
        out: list[Event] = []
        nxt = position
        for rec in self._topic.read(0, position, max_records):
            nxt = rec.offset + 1
            h = rec.headers
            sid = h.pop(STREAM_HEADER, None)
            ver = h.pop(VERSION_HEADER, None)
            if sid is None or ver is None:
                continue
            out.append(_new_tuple(Event, (sid.decode("utf-8", "replace"), int(ver), rec.offset,
                                          rec.timestamp_ms, rec.value, h)))
        return out, nxt

    def end_position(self) -> int:
        """The position the next committed event will get (the number of records)."""
        self._log._check()
        return self._topic.end_offset(0)

    # ------------------------------------------------------------- subscribe
    def subscribe(self, from_position: int = 0, *, timeout: float | None = None) -> Subscription:
        """Events from ``from_position`` in commit order: first those already stored
        (catch-up), then each new one as it is committed, in any process (live).

        Iterate it; ``close()`` (from any thread) ends the iteration. With
        ``timeout`` (seconds), the iteration also ends after that long without
        a new event. Usable as a context manager.
        """
        self._log._check()
        position = _int_arg(from_position, "from_position", 0)
        timeout = _validate.seconds(timeout, "timeout", allow_inf=True, allow_none=True)
        self._log._check()
        return Subscription(self, position, timeout)


class Subscription:
    """An iterator over a store's events: catch-up, then live.

    One consumer iterates it; ``close()`` may come from any thread and wakes
    a waiting iteration at once. It sleeps on the topic's wake-up word between
    commits (no polling).
    """

    def __init__(self, store: EventStore, position: int, timeout: float | None) -> None:
        self._store = store
        self._topic = store._topic
        self._position = position
        self._timeout = timeout
        self._buffer: deque[Event] = deque()
        self._closed = False

    @property
    def position(self) -> int:
        """The position of the next event this subscription will read from the store."""
        return self._buffer[0].position if self._buffer else self._position

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        self._store._log._check()  # a closed store hands out nothing, not even buffered events
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            if self._closed:
                raise StopIteration
            if self._buffer:
                return self._buffer.popleft()
            seen = self._topic.notify_seq_any()
            events, nxt = self._store._events_from(self._position,
                                                   backend.EVENT_SUBSCRIBE_BATCH_RECORDS)
            if nxt != self._position:
                self._position = nxt
                self._buffer.extend(events)
                continue
            wait = backend.VIEW_POLL_S
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StopIteration
                wait = min(wait, remaining)
            if self._closed:
                raise StopIteration
            self._topic.wait_any(seen, wait)

    def close(self) -> None:
        """End the iteration (idempotent); a waiting ``next()`` returns at once."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        try:
            backend.wake_any(self._topic)
        except (StoreClosed, StreamlogError, OSError):
            pass

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

