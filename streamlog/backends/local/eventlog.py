"""The event store's engine on the embedded store: ``LocalEventLog``.

An event log named like its event store (``bank``) keeps every stream in
one single-partition topic of that name, so it has one commit order: an
event's *position* is its offset in that topic (dense from 0). Each event is
one record whose headers carry its stream id (``es-stream``) and its version
in the stream (``es-version``, decimal) beside the event's own headers.

One commit is one record batch, written under the topic partition's append
lock after the expected-version checks: every event of it or none, at
contiguous positions, and of two committers racing on the same expected
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
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any

from streamlog import _ext
from streamlog._limits import (
    EVENT_INDEX_CACHED_STREAMS,
    EVENT_INDEX_CHUNK_VERSIONS,
    EVENT_INDEX_FLUSH_RECORDS,
    EVENT_READ_GAP_RECORDS,
    EVENT_STREAM_ID_INLINE_BYTES,
)
from streamlog._types import Record, now_ms
from streamlog.api import (
    ANY,
    NO_STREAM,
    STREAM_HEADER,
    VERSION_HEADER,
    EncodedHeaders,
    Event,
    NewEventFields,
    Watch,
    events_from_records,
)
from streamlog.backends.local.codec import encode_batch
from streamlog.errors import CorruptionError, RecordTooLarge, StreamlogError, WrongExpectedVersion

__all__ = ["KV_NAMESPACE", "LocalEventLog", "drop_topic"]

KV_NAMESPACE = "event_store"

_HB_STREAM = STREAM_HEADER.encode()
_HB_VERSION = VERSION_HEADER.encode()
_CHUNK = EVENT_INDEX_CHUNK_VERSIONS
_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")
# Index meta entry: topic uid (16 bytes; a recreated topic gets a new one),
# epoch (8 random bytes, new each time the LMDB index is started over), and
# indexed_to (every record below this offset is in the LMDB index).
_META = struct.Struct("<16s8sQ")
_LONG_ID = b"\xff\xff"  # skey marker of a hashed (long) stream id
# Bytes an event's own headers add to its value (for the max_record_bytes check):
# two headers at 6 bytes of framing each, their names, and up to 20 version digits.
_FRAMING_BYTES = 12 + len(STREAM_HEADER) + len(VERSION_HEADER) + 20


class _IndexMismatch(Exception):
    """Internal: LMDB's index does not continue where this process's tail starts."""


def _skey(sid_b: bytes) -> bytes:
    """The stream's part of its index keys: length-prefixed id, or a hash of a long one."""
    if len(sid_b) <= EVENT_STREAM_ID_INLINE_BYTES:
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
        uid = topic.config.get("uid") or ""
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
                indexed_to - self.end > EVENT_INDEX_FLUSH_RECORDS:
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
        if end is None or self.epoch is None or self.end > end:
            # First use, or we know of records the log no longer has (it lost its
            # tail): start from LMDB (which is checked against the log's end).
            self.epoch = None
            end, _ = self.check_lmdb(end)
        if self.end < end:
            self._catch_up(end)
        if self.count >= EVENT_INDEX_FLUSH_RECORDS:
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
        elif self.count >= EVENT_INDEX_FLUSH_RECORDS:
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
        if len(heads) >= EVENT_INDEX_CACHED_STREAMS and sid not in heads:
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
        if len(heads) >= EVENT_INDEX_CACHED_STREAMS and sid not in heads:
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


def drop_topic(tx: Any, topic: str) -> None:
    """Drop the stream index of the event store on ``topic`` (``tx``: a transaction on
    the ``event_store`` namespace, the one that deletes the topic)."""
    for k, _ in tx.scan(topic.encode() + b"\0"):
        tx.delete(k)




class LocalEventLog:
    """The event log behind event store ``name``: conditional commits of one or more
    streams, the stream index, and reads by stream or by position.

    One per (Log, name) in a process (``Log.event_log``): every handle on the
    store shares its index. Thread-safe; any number of processes may commit
    to and read the same log at once.
    """

    def __init__(self, log: Any, name: str, topic: Any) -> None:
        self._log = log
        self.name = name
        self._topic = topic
        self._index = _Index(log, name, topic)
        log._on_close(self._index.flush_quietly)

    def __repr__(self) -> str:
        return f"LocalEventLog({self.name!r})"

    # ---------------------------------------------------------------- commit
    def commit(self, events: Sequence[NewEventFields], expected: Mapping[str, int],
               first_headers: EncodedHeaders | None = None) -> tuple[int, dict[str, int]]:
        """Append ``events`` in one batch after checking each stream's expected version
        under the append lock; returns the first position and each stream's new last
        version. WrongExpectedVersion (nothing written) on the first failed check."""
        if len(expected) == 1:
            (sid, exp), = expected.items()
            base, last = self._commit_one(sid, events[0][1], exp, events, first_headers)
            return base, {sid: last}
        return self._commit(events, expected, first_headers)

    def _commit_one(self, sid: str, sid_b: bytes, exp: int, items: Sequence[NewEventFields],
                    first_headers: EncodedHeaders | None = None) -> tuple[int, int]:
        """``_commit`` for the events of one stream (every public append): the same
        steps (sharing ``_Index.prepare_check``, ``_check_sizes`` and ``_landed``)
        without the per-stream dicts, which cost this hot path about 15 %. Returns
        (first position, the stream's new last version)."""
        self._log._check()
        idx = self._index
        n = len(items)
        limit = self._topic.config["max_record_bytes"]  # read each time: alter_topic may change it
        extra = list(first_headers) if first_headers else None
        values = [e[2] for e in items]
        sh = (_HB_STREAM, sid_b)

        def encode(first: int) -> tuple[bytes, int]:
            headers = [[sh, (_HB_VERSION, b"%d" % (first + i)), *e[3]] if e[3] else
                       [sh, (_HB_VERSION, b"%d" % (first + i))] for i, e in enumerate(items)]
            if extra:
                headers[0].extend(extra)
            ts = now_ms()
            return encode_batch(None, values, headers, [ts] * n), ts

        # Encode before taking the append lock with the version we expect to get;
        # under the lock only a wrong guess (expected_version=ANY) re-encodes.
        if exp == ANY:
            with idx.lock:
                guess = idx.last_version(sid, sid_b) + 1
        else:
            guess = exp + 1
        data, ts = encode(guess)
        if len(data) > limit:
            self._check_sizes(items, extra, limit)
        state: list[Any] = [guess, data, ts, -1, None]  # first version, batch, ts, end, epoch

        def build(end: int) -> tuple[bytes | None, int, int, Any]:
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

    def _landed(self, base: int, end: int, epoch: bytes | None, n: int,
                runs: Sequence[tuple[str, int, int, int]]) -> None:
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
            if idx.count >= EVENT_INDEX_FLUSH_RECORDS:
                idx.flush()

    def _check_sizes(self, entries: Sequence[NewEventFields], extra: EncodedHeaders | None,
                     limit: int) -> None:
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

    def _commit(self, entries: Sequence[NewEventFields], expected: Mapping[str, int],
                first_headers: EncodedHeaders | None = None) -> tuple[int, dict[str, int]]:
        """``commit`` of events of several streams (a stream's events need not be
        adjacent): one batch, each stream's expected version checked under the
        append lock."""
        self._log._check()
        idx = self._index
        n = len(entries)
        limit = self._topic.config["max_record_bytes"]  # read each time: alter_topic may change it
        extra = list(first_headers) if first_headers else None
        values = [e[2] for e in entries]
        sid_bytes: dict[str, bytes] = {}
        for e in entries:
            if e[0] not in sid_bytes:
                sid_bytes[e[0]] = e[1]
        for sid in expected:
            if sid not in sid_bytes:
                sid_bytes[sid] = sid.encode("utf-8")

        def encode(firsts: dict[str, int]) -> tuple[bytes, int]:
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
            return encode_batch(None, values, headers, [ts] * n), ts

        # Encode before taking the append lock with the versions we expect to get;
        # under the lock only a wrong guess (expected_version=ANY) re-encodes.
        guess = {}
        for sid, exp in expected.items():
            if exp == ANY:
                with idx.lock:
                    exp = idx.last_version(sid, sid_bytes[sid])
            guess[sid] = exp + 1
        data, ts = encode(guess)
        if len(data) > limit:
            # No record of a batch within the limit can exceed it: check each one
            # only when the whole batch is larger (before anything is written).
            self._check_sizes(entries, extra, limit)
        planned: list[Any] = []

        def build(end: int) -> tuple[bytes | None, int, int, Any]:
            nonlocal data, ts
            with idx.lock:
                idx.prepare_check(end)
                firsts = {}
                heads = idx.heads
                for sid, exp in expected.items():
                    actual = heads.get(sid)
                    if actual is None:
                        actual = idx.last_version(sid, sid_bytes[sid])
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
        counts: dict[str, int] = {}
        for e in entries:
            counts[e[0]] = counts.get(e[0], 0) + 1
        return base, {sid: firsts[sid] + c - 1 for sid, c in counts.items()}

    # ------------------------------------------------------------------ read
    def last_version(self, stream_id: str) -> int:
        """The version of the stream's last event, NO_STREAM (-1) for an unknown stream."""
        self._log._check()
        idx = self._index
        with idx.lock:
            idx.sync()
            return idx.last_version(stream_id, stream_id.encode("utf-8"))

    def stream_records(self, stream_id: str, lo: int, hi: int | None, limit: int | None,
                       backwards: bool = False) -> tuple[int, list[Record]]:
        """The records of versions lo..hi of a stream (hi None: its last), at most
        ``limit`` (the newest ones when ``backwards``), oldest first, their ``es-*``
        headers removed; and the version of the first."""
        return self._stream_records(stream_id, stream_id.encode("utf-8"), lo, hi, limit,
                                    backwards)

    def stream_events(self, stream_id: str, lo: int, hi: int | None, limit: int | None,
                      backwards: bool = False) -> list[Event]:
        """As ``stream_records``, Events made in the same pass (oldest first)."""
        return self._stream_records(stream_id, stream_id.encode("utf-8"), lo, hi, limit,
                                    backwards, as_events=True)[1]

    def _stream_records(self, sid: str, sid_b: bytes, lo: int, hi: int | None,
                        limit: int | None, newest: bool = False,
                        as_events: bool = False) -> tuple[int, list[Any]]:
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
                    event_sid: str | None = None) -> list[Any] | None:
        """The records at ``positions`` (rising; versions from ``first_version``) with
        their ``es-*`` headers removed, or None if one is not the event the index
        says. With ``event_sid``, Events (of that stream id) instead of records,
        made in the same pass.

        Positions close together are read in one pass. Every record's stream id
        is checked, and the versions of the first and the last: a stream's
        versions rise with its positions, so matching ends and a matching count
        pin every version in between.
        """
        out: list[Any] = []
        n = len(positions)
        if not n:
            return out
        gap = EVENT_READ_GAP_RECORDS
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

    def events(self, position: int, max_events: int) -> tuple[list[Event], int]:
        """Events of up to ``max_events`` records from ``position``, and the position
        after them. Records that are not events (no ``es-*`` headers) are skipped."""
        return events_from_records(self._topic.read(0, position, max_events), position)

    def end_position(self) -> int:
        """The position the next committed event will get (the number of records)."""
        self._log._check()
        end: int = self._topic.end_offset(0)
        return end

    def watch(self) -> Watch:
        """Wake-ups on every commit (the topic's wake-up word)."""
        w: Watch = self._topic.watch()
        return w


def _index_for(log: Any, name: str, topic: Any = None) -> _Index:
    """The stream index this process keeps for event store ``name`` of ``log``."""
    idx: _Index = log.event_log(name)._index
    return idx
