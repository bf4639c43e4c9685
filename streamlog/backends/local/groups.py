"""Consumer groups: durable, named cursors over a topic that lease records to consumers.

``Topic.group(...)`` opens a :class:`Group` handle, which is one consumer of
the group. Every group sees every record of its topic (pub-sub); inside a
group each record is leased to one consumer at a time (point-to-point), in one
of three modes: ``shared`` (any consumer takes any record), ``key_shared`` (a
key is held by one consumer at a time) and ``exclusive`` (each partition is
owned by one live consumer and delivered in order).

All state lives in the store's LMDB environment (namespace ``groups``): per
group and partition a head, one entry per run of offsets and a due index (see
``_PartStore`` and ``groupstate``), so a poll or an ack is one LMDB
write transaction that touches a few entries whatever the number of records
and leases, and every process of the machine sees the same leases. docs/groups.md describes the
layout, the algorithms and the decisions taken where the API leaves a choice.
"""

from __future__ import annotations

import atexit
import bisect
import hashlib
import json
import math
import os
import struct
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from streamlog import _ext, _tracing, _validate
from streamlog._limits import (
    GROUP_ACK_DELAY_MS,
    GROUP_DEAD_LETTER_BATCH,
    GROUP_FILTER_SCAN_RECORDS,
    GROUP_HEARTBEAT_MAX_S,
    GROUP_HOLD_MAX_MS,
    GROUP_MAX_PENDING_RECORDS,
    GROUP_MEMBER_FORGET_S,
    GROUP_PREFETCH_HOLD_MS,
    GROUP_PREFETCH_MAX,
    GROUP_PREFETCH_WINDOW_MS,
    MAX_MAX_RECORD_BYTES,
)
from streamlog._types import (
    GroupReset,
    RecordBatch,
    View,
    batch_lease,
    empty_columns,
    now_ms,
    record_columns,
)
from streamlog.backends.local import codec as _codec
from streamlog.backends.local import groupstate as gs
from streamlog.backends.local.storage.meta import Tx
from streamlog.backends.local.storage.partition import _concat_columns
from streamlog.errors import (
    ConfigMismatch,
    GroupActive,
    RecordTooLarge,
    StoreClosed,
    StreamlogError,
)

if TYPE_CHECKING:
    from streamlog.backends.local.log import Topic

# The header of a record appended with ``Topic.append_delayed``: its due time (epoch
# ms), before which no group delivers it (``poll`` hands it back uncounted).
DELIVER_AT_MS = _validate.DELIVER_AT_MS

MODES = _validate.GROUP_MODES
STARTS = _validate.GROUP_STARTS
_NS = "groups"
_P = struct.Struct(">I")
_MAX_OFFSET = 1 << 63
# Records of the last decoded span a consumer keeps per partition (see _read_range).
_READ_CACHE_RECORDS = 16384
# Records a columnar poll reads at once when it wants fewer, and the bytes of keys and
# values that read-ahead may hold by the partition's last read (see _read_columns).
_COLUMN_READ_AHEAD = 1024
_COLUMN_READ_AHEAD_BYTES = 1 << 20
_MEMBER_KEY_MAX = 128  # longer consumer names are hashed in member keys (LMDB's key limit)

# Headers a dead-lettered record carries besides its own: where it came from.
DLQ_TOPIC = "sl-dlq-topic"
DLQ_PARTITION = "sl-dlq-partition"
DLQ_OFFSET = "sl-dlq-offset"
DLQ_GROUP = "sl-dlq-group"
DLQ_DELIVERY_COUNT = "sl-dlq-delivery-count"
DLQ_ERROR = "sl-dlq-error"
DLQ_TIMESTAMP_MS = "sl-dlq-timestamp-ms"
DLQ_TOMBSTONE = "sl-dlq-tombstone"

_ACK, _NACK, _EXTEND, _DEFER = 0, 1, 2, 3
# A partition the group has no state for yet (added by Log.alter_topic after the group
# was made, by a process that had not seen the change): its first record on.
_FRESH = gs.encode(gs.PartState(0))
# Message._state: 0 unsettled, 1 acked, 2 ack refused (lease lost), 3 nacked.
_OPEN, _ACKED, _LOST, _NACKED = 0, 1, 2, 3


# ------------------------------------------------------------------- keys
def _tk(topic: str) -> bytes:
    return topic.encode() + b"\0"


def _cfg_key(topic: str, group: str) -> bytes:
    return b"c" + _tk(topic) + group.encode()


def _part_prefix(topic: str, group: str) -> bytes:
    return b"p" + _tk(topic) + group.encode() + b"\0"


def _part_key(topic: str, group: str, p: int) -> bytes:
    return _part_prefix(topic, group) + _P.pack(p)


def _member_prefix(topic: str, group: str) -> bytes:
    return b"m" + _tk(topic) + group.encode() + b"\0"


def _member_key(topic: str, group: str, consumer: str) -> bytes:
    raw = consumer.encode()
    if len(raw) > _MEMBER_KEY_MAX:  # keep the key under LMDB's limit and the prefix intact
        raw = b"#" + hashlib.blake2b(raw, digest_size=16).hexdigest().encode()
    return _member_prefix(topic, group) + raw


_Q = struct.Struct(">Q")
_QQ = struct.Struct(">QQ")
_HASH = struct.Struct(">q")  # murmur2 of a key (kept signed as _codec returns it)


class _PartStore:
    """One group's state on one partition in LMDB, in the indexed layout.

    Under the partition's key (``_part_key``) lies the head
    (``_groupstate.Head``); under that key plus ``r`` + first offset (u64
    big-endian) one entry per run; plus ``d`` + ready time + first offset
    (u64, u64) an empty entry per unacked run, the due index; plus ``k`` +
    offset the murmur2 key hash of each keyed unacked record (key_shared).
    A value that is JSON is the layout of earlier releases: read as such,
    and rewritten in this layout by the first write transaction that opens
    it. Used inside one transaction only.
    """

    __slots__ = ("txn", "db", "pkey", "rk", "dk", "kk", "cur", "head", "raw", "old", "loaded",
                 "cache", "keyed")

    def __init__(self, tx: Tx, pkey: bytes, cache: dict | None = None) -> None:
        self.txn, self.db = tx.raw()
        self.pkey = pkey
        self.rk = pkey + b"r"
        self.dk = pkey + b"d"
        self.kk = pkey + b"k"
        self.cur = None
        self.head: gs.Head = None  # type: ignore[assignment]  # None until open() finds one
        self.raw: bytes | None = None
        self.old: gs.PartState | None = None  # decoded JSON of the older layout
        self.loaded: tuple[dict, dict] = ({}, {})  # runs and keys load() read, for save()
        # A handle's memory of the whole states it last wrote: pkey -> (head, runs, keys).
        # Every write changes the head (its seq), so an equal head means the same runs.
        self.cache = cache
        self.keyed = True  # key hashes may exist (False: a group not in key_shared mode)

    def open(self, write: bool, raw: bytes | None = None) -> gs.Head | None:
        """The head (None: no such partition state). ``write``: upgrade an older layout."""
        if raw is None:
            raw = self.txn.get(self.pkey, db=self.db)
            if raw is None:
                return None
            raw = bytes(raw)
        self.raw = raw
        if gs.is_head(raw):
            self.head = gs.decode_head(raw)
            return self.head
        st = gs.decode(raw)
        self.head = gs.Head()
        self.head.take(st, None)
        if write:
            self.save(st)
        else:
            self.old = st
        return self.head

    def create(self, st: gs.PartState) -> None:
        self.head = gs.Head()
        # A random start: a state deleted and created again never repeats an old head.
        self.head.seq = int.from_bytes(os.urandom(4), "big")
        self.save(st)

    def _cursor(self):
        if self.cur is None:
            self.cur = self.txn.cursor(db=self.db)
        return self.cur

    # ------------------------------------------------------------ whole state
    def load(self) -> gs.PartState:
        """The whole state (a walk over every run: for the operations that need it)."""
        if self.old is not None:
            return self.old
        h = self.head
        st = gs.PartState.__new__(gs.PartState)
        st.committed, st.next, st.owner, st.epoch = h.committed, h.next, h.owner, h.epoch
        st.redeliveries, st.dead_letters = h.redeliveries, h.dead_letters
        c = self.cache.get(self.pkey) if self.cache is not None else None
        if c is not None and c[0] == self.raw:
            runs, keys = c[1], c[2]
            st.runs = [list(r) for r in runs.values()]
            st.keys = dict(keys)
            self.loaded = (runs, keys)
            return st
        runs = {}
        keys = {}
        cur = self._cursor()
        rk, n = self.rk, len(self.rk)
        if cur.set_range(rk):
            for k, v in cur:
                if not k.startswith(rk):
                    break
                lo = _Q.unpack_from(k, n)[0]
                runs[lo] = tuple(gs.decode_run(lo, v))
        kk, n = self.kk, len(self.kk)
        if cur.set_range(kk):
            for k, v in cur:
                if not k.startswith(kk):
                    break
                keys[_Q.unpack_from(k, n)[0]] = _HASH.unpack(v)[0]
        st.runs = [list(r) for r in runs.values()]
        st.keys = dict(keys)
        self.loaded = (runs, keys)
        return st

    def save(self, st: gs.PartState, bo: list[int] | None = None) -> None:
        """Write ``st`` back: only the runs, index entries and keys that differ from what
        ``load`` read (everything when the state was in the older layout)."""
        txn, db = self.txn, self.db
        old_runs, old_keys = self.loaded
        h = self.head
        old_bo = h.bo
        new_bo = h.bo if bo is None else list(bo)
        rebo = old_bo != new_bo
        new_runs = {r[0]: tuple(r) for r in st.runs}
        for lo, r in old_runs.items():
            n = new_runs.get(lo)
            if n == r and not rebo:
                continue
            if n is None:
                txn.delete(self.rk + _Q.pack(lo), db=db)
            if r[2] is not None:
                txn.delete(self.dk + _QQ.pack(gs.ready_at(r, old_bo), lo), db=db)
        for lo, n in new_runs.items():
            r = old_runs.get(lo)
            if n == r and not rebo:
                continue
            if n != r:
                txn.put(self.rk + _Q.pack(lo), gs.encode_run(n), db=db)
            if n[2] is not None:
                txn.put(self.dk + _QQ.pack(gs.ready_at(n, new_bo), lo), b"", db=db)
        for o, hv in old_keys.items():
            if st.keys.get(o) != hv:
                txn.delete(self.kk + _Q.pack(o), db=db)
        for o, hv in st.keys.items():
            if old_keys.get(o) != hv:
                txn.put(self.kk + _Q.pack(o), _HASH.pack(hv), db=db)
        seq = h.seq
        h.take(st, new_bo)
        h.seq = seq
        self.loaded = (new_runs, dict(st.keys))
        self.old = None
        raw = self.save_head()
        if self.cache is not None:
            self.cache[self.pkey] = (raw, new_runs, self.loaded[1])

    def save_head(self) -> bytes:
        h = self.head
        h.seq += 1
        raw = gs.encode_head(h)
        self.txn.put(self.pkey, raw, db=self.db)
        return raw

    # ------------------------------------------- entries (see _groupstate)
    def get(self, lo: int) -> list | None:
        v = self.txn.get(self.rk + _Q.pack(lo), db=self.db)
        return None if v is None else gs.decode_run(lo, v)

    def containing(self, off: int) -> list | None:
        cur = self._cursor()
        rk = self.rk
        k = rk + _Q.pack(off)
        if cur.set_range(k):
            if cur.key() == k:
                return gs.decode_run(off, cur.value())
            if not cur.prev():
                return None
        elif not cur.last():
            return None
        k = cur.key()
        if not k.startswith(rk):
            return None
        lo = _Q.unpack_from(k, len(rk))[0]
        run = gs.decode_run(lo, cur.value())
        return run if run[1] > off else None

    def last(self) -> list | None:
        return self.containing(self.head.next - 1)

    def put(self, run: list) -> None:
        txn, db = self.txn, self.db
        txn.put(self.rk + _Q.pack(run[0]), gs.encode_run(run), db=db)
        if run[2] is not None:
            txn.put(self.dk + _QQ.pack(gs.ready_at(run, self.head.bo), run[0]), b"", db=db)

    def remove(self, run: list) -> None:
        txn, db = self.txn, self.db
        txn.delete(self.rk + _Q.pack(run[0]), db=db)
        if run[2] is not None:
            txn.delete(self.dk + _QQ.pack(gs.ready_at(run, self.head.bo), run[0]), db=db)

    def replace(self, old: list, new: list) -> None:
        bo = self.head.bo
        txn, db = self.txn, self.db
        txn.put(self.rk + _Q.pack(new[0]), gs.encode_run(new), db=db)
        a = None if old[2] is None else gs.ready_at(old, bo)
        b = None if new[2] is None else gs.ready_at(new, bo)
        if a != b:
            if a is not None:
                txn.delete(self.dk + _QQ.pack(a, old[0]), db=db)
            if b is not None:
                txn.put(self.dk + _QQ.pack(b, new[0]), b"", db=db)

    def due_after(self, key: bytes | None) -> tuple[bytes, int, int] | None:
        cur = self._cursor()
        dk = self.dk
        if not cur.set_range(dk if key is None else key + b"\0"):
            return None
        k = cur.key()
        if not k.startswith(dk):
            return None
        ready, lo = _QQ.unpack_from(k, len(dk))
        return bytes(k), ready, lo

    def drop_keys(self, lo: int, hi: int) -> None:
        cur = self._cursor()
        kk, n = self.kk, len(self.kk)
        if not cur.set_range(kk + _Q.pack(lo)):
            return
        while True:
            k = cur.key()
            if not k.startswith(kk) or _Q.unpack_from(k, n)[0] >= hi:
                return
            if not cur.delete():
                return


# ------------------------------------------------------------ value types
class Lease(NamedTuple):
    """One leased record of a group (``Group.pending()``).

    ``deadline`` is the lease's expiry in seconds since the epoch (as
    ``time.time()``); a deadline in the past means the lease expired and the
    record waits to be redelivered.
    """

    consumer: str
    partition: int
    offset: int
    deadline: float
    delivery_count: int


class Message:
    """A record delivered by ``Group.poll``: the Record fields plus ``delivery_count``.

    ``ack()``, ``nack(delay_s=0, error=None)`` and ``in_progress()`` act on its
    lease. A message is settled by its first ``ack`` or ``nack``; later calls
    are no-ops (``ack()`` repeats its first answer). Once the store is closed
    every call raises StoreClosed. Not thread-safe, like its Group.
    """

    # Only the Record and the lease live in the object; the Record fields are
    # read through it (C-level getters): a poll builds one Message per record,
    # so every attribute stored here costs each delivery.
    __slots__ = ("_record", "delivery_count", "_group", "_epoch", "_state", "_due")
    _record: Any  # the Record (streamlog._ext.Record)
    delivery_count: int
    _group: Group
    _epoch: int
    _state: int
    _due: int  # the lease's deadline (epoch ms) as of its delivery

    _fields = ("topic", "partition", "offset", "timestamp_ms", "key", "value", "headers",
               "delivery_count")

    topic = property(attrgetter("_record.topic"), doc="The topic's name.")
    partition = property(attrgetter("_record.partition"), doc="The record's partition.")
    offset = property(attrgetter("_record.offset"), doc="The record's offset.")
    timestamp_ms = property(attrgetter("_record.timestamp_ms"), doc="The record's timestamp.")
    key = property(attrgetter("_record.key"), doc="The key (bytes) or None.")
    value = property(attrgetter("_record.value"), doc="The value (bytes), None for a tombstone.")
    headers = property(attrgetter("_record.headers"), doc="The headers (str -> bytes).")

    @property
    def record(self):
        """The underlying Record."""
        return self._record

    def ack(self) -> bool:
        """Mark the record processed. False if the lease was lost (expired and taken by
        another consumer, or refused after an exclusive takeover).

        A one-at-a-time consumer's ack (the queue view's) whose lease has time
        left is batched: it is committed with the consumer's next poll, by its
        ``close()``, or within ``GROUP_ACK_DELAY_MS`` by the store's background
        committer (docs/guarantees.md); until then a crash redelivers it."""
        g = self._group
        g._log._check()  # a closed store refuses, settled or not
        if self._state:
            return self._state == _ACKED
        if g._defer_acks and _time_ns() // 1_000_000 < self._due - g._ack_margin_ms and \
                not g._closed:
            with g._lock:  # (Group._defer_ack, inline: the queue's hot path)
                if not g._acks:
                    g._acks_at = time.monotonic()
                g._acks.append(self)
                self._state = _ACKED
                if not g._active:
                    g._active = True
                    _COMMITTER.add(g)
            return True
        return g._settle([self], _ACK)[0]

    def nack(self, delay_s: float = 0, error: str | None = None) -> bool:
        """Hand the record back for redelivery after ``delay_s`` (and the group's backoff).

        ``error`` (optional) is kept and, if the record ends in the dead-letter
        topic, travels in its ``sl-dlq-error`` header. The delivery counts
        toward ``max_deliver``; a record that used its last delivery goes to
        the dead-letter topic now. Returns False if the lease was already lost.
        """
        self._group._log._check()  # a closed store refuses, settled or not
        if self._state:
            return False
        return self._group._settle([self], _NACK, delay_s, error)[0]

    def in_progress(self) -> bool:
        """Extend the lease by the group's ``ack_wait_s`` from now; False if it was lost."""
        self._group._log._check()  # a closed store refuses, settled or not
        if self._state:
            return False
        return self._group._settle([self], _EXTEND)[0]

    def defer(self, delay_s: float) -> bool:
        """Hand the record back until ``delay_s`` from now *without* counting this delivery.

        For records drawn before they are meant to be processed (a delayed
        queue message, a rate limit): unlike ``nack`` it neither uses up
        ``max_deliver`` nor applies the backoff. Settles the message; False
        if the lease was already lost.
        """
        self._group._log._check()  # a closed store refuses, settled or not
        if self._state:
            return False
        return self._group._settle([self], _DEFER, delay_s)[0]

    def _asdict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self._fields}

    def __repr__(self) -> str:
        return (f"Message(topic={self.topic!r}, partition={self.partition}, "
                f"offset={self.offset}, delivery_count={self.delivery_count}, "
                f"key={self.key!r}, value={self.value!r})")


_new_message = Message.__new__
_time_ns = time.time_ns  # now_ms() is _time_ns() // 1_000_000
# Messages for a leased range: ``_make_messages(records, out, group, count, epoch, state,
# due)`` appends one per record and says whether any record carries headers.
_MAKER = _ext.MessageMaker(Message)
_make_messages = _MAKER.build
# The usual settle of a poll's batch in one pass: ``_scan_messages(msgs, group,
# exclusive)`` -> (partition, epoch, lo, hi) or None; ``_set_states(msgs, state)``.
_scan_messages = _MAKER.scan
_set_states = _MAKER.set_state


# ------------------------------------------------------------- validation
def _validate_options(topic, name: str, mode, ack_wait_s, max_deliver, backoff_s, start,
                      dead_letter, consumer, subjects=None) -> dict:
    opts = _validate.group_options(topic.name, name, mode, ack_wait_s, max_deliver, backoff_s,
                                   start, dead_letter, consumer)
    # Stored only when given, so that a group's stored options stay as they were.
    opts["subjects"] = _validate.subjects(subjects)
    return opts


# ------------------------------------------------------------------- open
def open_group(topic: Topic, name: str, mode: str = "shared", ack_wait_s: float = 30,
               max_deliver: int = 5, backoff_s: Sequence[float] | None = None,
               start: str = "earliest", dead_letter: str | None = None,
               consumer: str | None = None, subjects: Sequence[str] | None = None) -> Group:
    """Create or join group ``name`` of ``topic`` and return a handle that is one consumer.

    A different ``mode`` than the stored one raises ConfigMismatch and changes
    nothing; other options replace the stored ones (``start`` matters only
    when the group is created: "latest" fixes each partition's end then).
    ``subjects`` (NATS wildcards) is the group's subject filter: records whose
    ``subject`` header matches none of them are acknowledged for the group by
    the poll that leases them, and never handed out.
    """
    log = topic._log
    log._check()
    opts = _validate_options(topic, name, mode, ack_wait_s, max_deliver, backoff_s, start,
                             dead_letter, consumer, subjects)
    topic._refresh()  # the partitions as of now (another process may have added some)
    # also raises TopicNotFound for a deleted topic
    views = [View._make(p.view()) for p in topic._parts]
    ckey = _cfg_key(topic.name, name)
    now = now_ms()

    def fn(tx: Tx):
        raw = tx.get(ckey)
        if raw is None:
            cfg = dict(opts, created_ms=now, partitions=topic.partitions)
            tx.put(ckey, _dumps(cfg))
            for p, v in enumerate(views):
                st = gs.PartState(v.end_offset if opts["start"] == "latest" else v.start_offset)
                _PartStore(tx, _part_key(topic.name, name, p)).create(st)
            return cfg
        cfg = json.loads(raw)
        if cfg["mode"] != opts["mode"]:
            raise ConfigMismatch(f"group {name!r} of topic {topic.name!r} exists with "
                                 f"mode={cfg['mode']!r}, not {opts['mode']!r}")
        if any(cfg.get(k) != v for k, v in opts.items()):  # (subjects: None = absent)
            cfg.update(opts)
            tx.put(ckey, _dumps(cfg))
        _forget_members(tx, topic.name, name, now, cfg)
        return cfg

    cfg = log.kv(_NS).transact(fn)
    return Group(topic, name, cfg, consumer)


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _forget_members(tx: Tx, topic: str, group: str, now: int, cfg: dict) -> None:
    """Drop member entries of consumers silent for long (processes that died)."""
    horizon = now - int(max(GROUP_MEMBER_FORGET_S, 10 * cfg["ack_wait_s"]) * 1000)
    for k, v in tx.scan(_member_prefix(topic, group)):
        if json.loads(v).get("t", 0) < horizon:
            tx.delete(k)


def list_groups(topic: Topic) -> list[str]:
    """Names of ``topic``'s groups, sorted."""
    topic._log._check()
    prefix = b"c" + _tk(topic.name)
    return sorted(k[len(prefix):].decode() for k, _ in topic._log.kv(_NS).scan(prefix))


def group_config(topic: Topic, name: str) -> dict | None:
    """The stored options of group ``name`` of ``topic``, or None when there is no such
    group. Reads only: opens no consumer."""
    topic._log._check()
    raw = topic._log.kv(_NS).get(_cfg_key(topic.name, name))
    return None if raw is None else json.loads(raw)


def delete_group(topic: Topic, name: str) -> None:
    """Delete a group's offsets, leases and members; its dead-letter topic stays.

    A missing group is not an error (nothing to delete). Open handles of the
    group raise StreamlogError on their next poll.
    """
    topic._log._check()
    _validate.name(name, "group name")

    def fn(tx: Tx):
        tx.delete(_cfg_key(topic.name, name))
        tx.delete_prefix(_part_prefix(topic.name, name))
        tx.delete_prefix(_member_prefix(topic.name, name))

    topic._log.kv(_NS).transact(fn)


def _pid_alive(pid) -> bool:
    """Whether process ``pid`` of this machine still runs (True when it cannot be told)."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def _live_members(tx: Tx, topic: str, group: str, cfg: dict, now: int) -> list[str]:
    """Consumers of the group that are alive: a heartbeat within ack_wait_s (a consumer
    beats at least every ack_wait_s / 4 while it polls, and its entry goes when it closes)
    from a process that still runs."""
    aw = int(cfg["ack_wait_s"] * 1000)
    out = []
    for _, v in tx.scan(_member_prefix(topic, group)):
        d = json.loads(v)
        if now - d.get("t", 0) <= aw and _pid_alive(d.get("p")):
            out.append(d["c"])
    return sorted(out)


def group_consumers(topic: Topic, name: str) -> list[str]:
    """The live consumers of group ``name`` (see ``_live_members``); StreamlogError when
    the topic has no such group."""
    log = topic._log
    log._check()
    _validate.name(name, "group name")
    db = log._meta.db(_NS)  # before the txn: a first open inside one is EINVAL
    with log._meta.read() as txn:
        tx = Tx(txn, db)
        raw = tx.get(_cfg_key(topic.name, name))
        if raw is None:
            raise _no_group(topic, name, tx)
        return _live_members(tx, topic.name, name, json.loads(raw), now_ms())


def _no_group(topic: Topic, name: str, tx: Tx) -> StreamlogError:
    prefix = b"c" + _tk(topic.name)
    known = [k[len(prefix):].decode() for k, _ in tx.scan(prefix)]
    hint = f" (groups: {', '.join(known[:10])}{', ...' if len(known) > 10 else ''})" \
        if known else " (it has no groups)"
    return StreamlogError(f"topic {topic.name!r} has no group {name!r}{hint}")


def _refuse_active(topic: Topic, name: str, live: list[str], what: str) -> GroupActive:
    shown = ", ".join(live[:5]) + (", ..." if len(live) > 5 else "")
    return GroupActive(f"group {name!r} of topic {topic.name!r} has {len(live)} live "
                       f"consumer{'s' if len(live) != 1 else ''} ({shown}): stop them before "
                       f"you {what} it, or force it (their leases are dropped and they go "
                       "on from the new positions)", live)


def reset_group(topic: Topic, name: str, to, dry_run: bool = False,
                force: bool = False) -> list[GroupReset]:
    """Move group ``name`` on every partition (``Topic.reset_group`` documents ``to``)."""
    import datetime as _dt

    log = topic._log
    log._check()
    _validate.name(name, "group name")
    if not isinstance(dry_run, bool) or not isinstance(force, bool):
        raise TypeError("dry_run and force must be bools")
    _validate.reset_target(to)
    if not dry_run:
        log._check_writable(f"reset group {name!r}")
    topic._refresh()
    n = topic.partitions
    views = [View._make(topic._parts[p].view()) for p in range(n)]
    targets = {}
    for p, v in enumerate(views):
        if to == "earliest":
            targets[p] = v.start_offset
        elif to == "latest":
            targets[p] = v.end_offset
        elif isinstance(to, _dt.datetime):
            ms = int(to.timestamp() * 1000)
            targets[p] = topic.offset_for_time(p, max(ms, 0))
        else:
            targets[p] = min(max(to, v.start_offset), v.end_offset)  # clamped, as Kafka does
    ckey = _cfg_key(topic.name, name)

    def plan(tx: Tx, now: int) -> tuple[list[GroupReset], list[str]]:
        raw = tx.get(ckey)
        if raw is None:
            raise _no_group(topic, name, tx)
        live = _live_members(tx, topic.name, name, json.loads(raw), now)
        rows = []
        for p, v in enumerate(views):
            h = _PartStore(tx, _part_key(topic.name, name, p)).open(False)
            committed = 0 if h is None else h.committed
            rows.append(GroupReset(p, max(committed, v.start_offset), targets[p],
                                   v.start_offset, v.end_offset))
        return rows, live

    if dry_run:
        db = log._meta.db(_NS)
        with log._meta.read() as txn:
            rows, _ = plan(Tx(txn, db), now_ms())
        return rows

    def fn(tx: Tx):
        rows, live = plan(tx, now_ms())
        if live and not force:
            raise _refuse_active(topic, name, live, "reset")
        for p, off in targets.items():
            ps = _PartStore(tx, _part_key(topic.name, name, p))
            if ps.open(write=True) is None:
                ps.create(gs.PartState(0))
            st = ps.load()
            gs.seek(st, off)
            st.epoch += 1  # an exclusive owner's acks of what it held before are refused
            ps.save(st)
        return rows

    rows = log.kv(_NS).transact(fn)
    _wake(topic)
    return rows


def committed_positions(topic: Topic, name: str) -> dict[int, int]:
    """Group ``name``'s committed position per partition of ``topic`` (never below the
    partition's start: what retention removed counts as done); StreamlogError when
    there is no such group. Reads only: opens no consumer."""
    log = topic._log
    log._check()
    _validate.name(name, "group name")
    topic._refresh()
    starts = [View._make(topic._parts[p].view()).start_offset for p in range(topic.partitions)]
    db = log._meta.db(_NS)
    with log._meta.read() as txn:
        tx = Tx(txn, db)
        if tx.get(_cfg_key(topic.name, name)) is None:
            raise _no_group(topic, name, tx)
        out = {}
        for p, start in enumerate(starts):
            h = _PartStore(tx, _part_key(topic.name, name, p)).open(False)
            out[p] = max(0 if h is None else h.committed, start)
    return out


def delete_group_checked(topic: Topic, name: str, force: bool) -> None:
    """Delete group ``name``, refusing (GroupActive) while it has live consumers unless
    ``force``, and (StreamlogError) when there is no such group; one transaction."""
    topic._log._check_writable(f"delete group {name!r}")
    _validate.name(name, "group name")

    def fn(tx: Tx):
        raw = tx.get(_cfg_key(topic.name, name))
        if raw is None:
            raise _no_group(topic, name, tx)
        live = _live_members(tx, topic.name, name, json.loads(raw), now_ms())
        if live and not force:
            raise _refuse_active(topic, name, live, "delete")
        tx.delete(_cfg_key(topic.name, name))
        tx.delete_prefix(_part_prefix(topic.name, name))
        tx.delete_prefix(_member_prefix(topic.name, name))

    topic._log.kv(_NS).transact(fn)
    _wake(topic)


def clamp_to_end(log, topic: str, partition: int, end_offset: int) -> None:
    """Move every group of ``topic`` back to ``end_offset`` on ``partition``.

    Called when recovery cuts a torn tail, before the new end is published:
    the offsets past it will be written again, with other records, and each
    group must deliver those (a crash between the two only redelivers).
    """
    prefix = b"c" + _tk(topic)
    kv = log.kv(_NS)

    def fn(tx: Tx):
        for k, _ in tx.scan(prefix):
            ps = _PartStore(tx, _part_key(topic, k[len(prefix):].decode(), partition))
            if ps.open(write=True) is None:
                continue
            st = ps.load()
            if gs.clamp(st, 0, end_offset):
                ps.save(st)

    kv.transact(fn)


# ------------------------------------------------------------------ group
class Group:
    """One consumer of a consumer group (``Topic.group(...)``).

    Not thread-safe: a Group handle is one consumer; share it between threads
    only under your own lock (or open one handle per thread). Process-safe:
    any number of processes may hold consumers of one group.
    """

    def __init__(self, topic: Topic, name: str, config: dict, consumer: str | None) -> None:
        self.topic = topic
        self.name = name
        self.mode: str = config["mode"]
        # An explicitly named consumer may be a restart of one that held leases:
        # its first poll hands those leases back at once.
        self._reclaim = consumer is not None
        self.consumer: str = consumer or f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._log = topic._log
        self._kv = self._log.kv(_NS)
        self._cfg = config
        self._cfg_raw = b""
        self._ckey = _cfg_key(topic.name, name)
        self._pkeys = [_part_key(topic.name, name, p) for p in range(topic.partitions)]
        self._mkey = _member_key(topic.name, name, self.consumer)
        self._mprefix = _member_prefix(topic.name, name)
        self._rr = 0
        self._beat_ms = 0
        self._closed = False
        self._dlq: Topic | None = None
        self._cache: dict[int, tuple[int, list]] = {}
        self._col_cache: dict[int, tuple[int, dict | None, float]] = {}  # _read_columns
        self._states_cache: dict[bytes, tuple] = {}  # see _PartStore.cache
        # One-at-a-time consumers (the queue view's get): an ack of one message also
        # leases the next in its transaction; ``_held`` is (that Message, when leased in
        # ms) until ``_take_held`` hands it out or back (docs/groups.md).
        self._ack_leases_next = False
        # Messages leased and not handed out yet (the ack's next one, or a prefetch of a
        # consumer that comes back quickly): (Message, the time in ms after which it is
        # no longer handed out but goes back, its delivery not counted, whether its poll
        # already looked at its subject and delay), oldest first.
        self._held: deque[tuple[Message, int, bool]] = deque()
        # Batched acks of a one-at-a-time consumer (see Message.ack): acks not committed
        # yet, oldest first, and when the oldest was made (monotonic). ``_lock`` guards
        # them and ``_held`` against the background committer; ``_commit_lock`` is held
        # from taking them to their commit, so a flush never misses one in flight.
        self._defer_acks = False
        self._ack_margin_ms = 0
        self._acks: list[Message] = []
        self._acks_at = 0.0
        self._active = False  # in the committer's set (something batched or held)
        self._lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._pf_t = 0.0  # prefetch pacing: when the last batch was leased (monotonic)
        self._pf_got = 0  # and how many records it held
        self._removed_acked = False  # the last poll acked offsets compaction removed
        # partition -> (state bytes, end, start, due_ms, options) of its last look
        # that found nothing deliverable before due_ms (see _poll_once)
        self._idle: dict[int, tuple] = {}
        self._skipped = 0  # records the subject filter dropped in the last look
        self._filter: tuple[Any, Any] = (None, None)  # (subjects, _codec.SubjectFilter)
        # (partition, offset) -> the first offset a settle of that message covers: a
        # filtered poll leases the records its filter passed over between two matches
        # together with the later one, so that acking the messages acks them too.
        self._spans: dict[int, dict[int, int]] = {}  # partition -> {offset: first offset}
        # A clean close of the store is a clean close of its consumers: their leases go
        # back at once (a crash keeps them until ack_wait_s, or until the same consumer
        # name comes back). A weak reference: the store does not keep handles alive.
        ref = weakref.ref(self)
        self._closer = lambda: _close_ref(ref)
        self._log._on_close(self._closer)

    def __repr__(self) -> str:
        return (f"Group({self.name!r}, topic={self.topic.name!r}, mode={self.mode!r}, "
                f"consumer={self.consumer!r})")

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def config(self) -> dict:
        """The group's stored options as this handle last read them."""
        return dict(self._cfg)

    def _check(self) -> None:
        if self._closed:
            raise StoreClosed(f"group handle {self.consumer!r} of {self.name!r} is closed")
        self._log._check()

    def _load_cfg(self, tx: Tx) -> dict:
        raw = tx.get(self._ckey)
        if raw is None:
            raise StreamlogError(f"group {self.name!r} of topic {self.topic.name!r} was "
                                 "deleted")
        if raw != self._cfg_raw:  # parse only when another opener changed the options
            self._cfg = json.loads(raw)  # a cache of raw -> parsed: safe if fn runs again
            self._cfg_raw = raw
        return self._cfg

    def _beat_interval_ms(self, cfg: dict) -> int:
        return int(min(GROUP_HEARTBEAT_MAX_S, cfg["ack_wait_s"] / 4) * 1000)

    def _heartbeat(self, tx: Tx, cfg: dict, now: int) -> bool:
        """Record that this consumer is alive, at most once per heartbeat interval."""
        if now - self._beat_ms < self._beat_interval_ms(cfg):
            return False
        tx.put(self._mkey, _dumps({"c": self.consumer, "t": now, "p": os.getpid()}))
        return True

    # ---------------------------------------------------------------- poll
    def poll(self, max_records: int = 100, timeout: float | None = 1.0) -> list[Message]:
        """Up to ``max_records`` messages, waiting up to ``timeout`` seconds for the first.

        Returns [] on timeout (``timeout=None`` waits without limit). Wakes
        as soon as any process appends to the topic, or a lease or delay it
        waits for comes due.
        """
        if self._held and max_records == 1 and max_records.__class__ is int and \
                not self._closed and not self._log._closed and \
                (timeout is None or (timeout.__class__ is float or timeout.__class__ is int)
                 and timeout >= 0):
            # The one-at-a-time consumer's usual call, with arguments the checks below
            # would pass: hand out the next record it holds.
            now = _time_ns() // 1_000_000
            with self._lock:  # a prefetched one in time: nothing more to look at
                h = self._held[0] if self._held else None
                quick = h is not None and h[2] and now <= h[1]
                if quick:
                    self._held.popleft()
            held = h[0] if quick else self._take_held()  # type: ignore[index]
            if held is not None:
                tracer = _tracing.tracer()
                if tracer is not None:
                    _tracing.receive(tracer, self.topic.name, [held])
                return [held]
        self._check()
        max_records = _validate.positive_int(max_records, "max_records", 1)
        if timeout is not None:
            timeout = _validate.seconds(timeout, "timeout", allow_inf=True)
        while self._held:  # (an ack of a filtered-out one may hold the next)
            held = self._take_held()
            if held is not None:
                tracer = _tracing.tracer()
                if tracer is not None:
                    _tracing.receive(tracer, self.topic.name, [held])
                return [held]
        t0 = time.monotonic()
        topic = self.topic
        while True:
            seq = topic.notify_seq_any()  # before looking: an append after this wakes us
            paced = max_records == 1 and self._ack_leases_next
            want = self._prefetch_size() if paced else max_records
            msgs, due_ms, _ = self._poll_once(want)
            if paced:
                self._pf_got = len(msgs)
            if msgs:
                if len(msgs) > max_records:  # a prefetch: the rest go out one per poll
                    self._hold(msgs[max_records:], GROUP_PREFETCH_HOLD_MS, checked=True)
                    msgs = msgs[:max_records]
                tracer = _tracing.tracer()
                if tracer is not None:
                    _tracing.receive(tracer, topic.name, msgs)
                return msgs
            if self._removed_acked:  # leased only offsets compaction removed: look again
                continue
            if self._skipped:
                continue  # the look only passed over records the filter drops: look on
            if not self._wait(seq, t0, timeout, due_ms):
                return []

    def poll_batch(self, max_records: int = 1000, timeout: float | None = 1.0) -> RecordBatch:
        """Up to ``max_records`` records of ONE partition as a leased ``RecordBatch``.

        The columnar twin of ``poll``: the records are leased exactly as ``poll``
        leases them (the same transaction, modes, subject filter, ``ack_wait_s``,
        ``max_deliver``, backoff, dead-lettering and pending cap), but all from the
        first partition (in this consumer's round-robin order) that has any, and they
        come back as numpy columns, without a Python object per record: ``topic``,
        ``partition``, ``offsets`` (increasing, not necessarily contiguous),
        ``timestamps_ms``, keys, values and ``delivery_counts`` (1 on a first
        delivery). Settle it whole with ``ack_batch`` / ``nack_batch`` of this
        handle. Waits up to ``timeout`` seconds like ``poll`` and returns an empty
        batch (``len(b) == 0``) on timeout. Headers are not columns: a record's
        headers are not in the batch (as ``read_batch``).
        """
        self._check()
        max_records = _validate.positive_int(max_records, "max_records", 1)
        if timeout is not None:
            timeout = _validate.seconds(timeout, "timeout", allow_inf=True)
        if self._held:
            # A one-at-a-time consumer's prefetched records go back first, their delivery
            # not counted: a batch holds records of one lease look, leased in order.
            with self._lock:
                back = [m for m, _, _ in self._held]
                self._held.clear()
            self._settle(back, _DEFER, 0)
        t0 = time.monotonic()
        topic = self.topic
        while True:
            seq = topic.notify_seq_any()  # before looking: an append after this wakes us
            msgs, due_ms, pieces = self._poll_once(max_records, columnar=True)
            if msgs or pieces:
                batch = self._batch_of(msgs, pieces)
                if len(batch):
                    tracer = _tracing.tracer()
                    if tracer is not None:
                        _tracing.receive_batch(tracer, topic.name, batch)
                    return batch
            if self._removed_acked or self._skipped:
                continue  # as poll: leased only removed records, or passed filtered ones
            if not self._wait(seq, t0, timeout, due_ms):
                return self._batch_of([], None)  # empty: nothing came in time

    def _wait(self, seq: int, t0: float, timeout: float | None, due_ms: int) -> bool:
        """A poll that found nothing waits here for an append, a due lease or delay, or
        its heartbeat interval (whichever comes first); False when ``timeout`` (seconds
        since ``t0``) has run out."""
        wait = math.inf if timeout is None else timeout - (time.monotonic() - t0)
        if wait <= 0:
            return False
        now = now_ms()
        if due_ms < gs.FOREVER_MS:
            wait = min(wait, max(due_ms - now, 0) / 1000 + 0.0005)
        # Look up at least once per heartbeat interval: a consumer blocked in poll
        # stays live (exclusive groups keep its partitions; stats count it).
        wait = min(wait, self._beat_interval_ms(self._cfg) / 1000)
        self.topic.wait_any(seq, min(wait, 3600.0))
        self._check()
        return True

    def _batch_of(self, msgs: list[Message], pieces: list | None) -> RecordBatch:
        """The RecordBatch of one columnar look: the ranges read as columns (``pieces``)
        and the records that were looked at one by one (``msgs``), in offset order, with
        the lease ``ack_batch`` settles."""
        if pieces and len(pieces) == 1 and not msgs:  # the usual: one range, no headers
            cols, count, partition, epoch = pieces[0]
            counts = np.full(len(cols["offsets"]), count, np.int64)
            counts.flags.writeable = False
            batch = RecordBatch(self.topic.name, partition, cols)
            batch.delivery_counts = counts
            batch._lease = _BatchLease(self, epoch)
            return batch
        parts = {m._record.partition for m in msgs}
        parts.update(piece[2] for piece in pieces or ())
        if len(parts) > 1:  # (not expected: the look stops at the first partition)
            keep = pieces[0][2] if pieces else min(parts)
            self._hand_back_early([(m, now_ms()) for m in msgs
                                   if m._record.partition != keep])
            msgs = [m for m in msgs if m._record.partition == keep]
            pieces = [piece for piece in pieces or () if piece[2] == keep]
            parts = {keep}
        all_pieces: list[tuple[dict, Any]] = [
            (cols, np.full(len(cols["offsets"]), count, np.int64))
            for cols, count, _, _ in pieces or ()]
        if msgs:
            all_pieces.append((record_columns([m._record for m in msgs]),
                               np.array([m.delivery_count for m in msgs], np.int64)))
        partition = parts.pop() if parts else -1
        epoch = pieces[0][3] if pieces else msgs[0]._epoch if msgs else 0
        if not all_pieces:  # (zero-length, read-only: shared by every empty batch)
            cols, counts = _EMPTY_COLUMNS, _NO_COUNTS
        else:
            cols, counts = _join_pieces(all_pieces)
        batch = RecordBatch(self.topic.name, partition, cols)
        counts.flags.writeable = False
        batch.delivery_counts = counts
        batch._lease = _BatchLease(self, epoch)
        return batch

    def ack_batch(self, batch: RecordBatch) -> np.ndarray:
        """Ack every record of a ``poll_batch`` result in one transaction, committed when
        it returns. A bool array, one entry per record: False where the lease was lost
        (expired and taken by another consumer, or an exclusive takeover). A second
        ack of the batch repeats the first answer. ValueError (nothing changed) for a
        batch this handle's ``poll_batch`` did not return."""
        return self._settle_batch(batch, _ACK)

    def nack_batch(self, batch: RecordBatch, delay_s: float = 0,
                   error: str | None = None) -> np.ndarray:
        """Nack every record of a ``poll_batch`` result in one transaction (see
        ``Message.nack``: redelivered after ``delay_s`` and the backoff, dead-lettered
        once ``max_deliver`` is used up). A bool array as ``ack_batch``; once the
        batch is settled, all False."""
        return self._settle_batch(batch, _NACK, delay_s, error)

    def _defer_batch(self, batch: RecordBatch) -> None:
        """Hand a ``poll_batch`` result nobody took back to the group at once, its
        delivery not counted (``streamlog.aio``: a poll cancelled meanwhile)."""
        self._settle_batch(batch, _DEFER)

    def _settle_batch(self, batch: RecordBatch, action: int, delay_s: float = 0,
                      error: str | None = None) -> np.ndarray:
        self._log._check()
        lease, delay_s = batch_lease(batch, self, _BatchLease, action == _NACK, delay_s, error)
        n = len(batch)
        if lease.state != _OPEN and action == _ACK and lease.answers is not None:
            return lease.answers  # a second ack repeats the first
        out = np.zeros(n, np.bool_)
        if lease.state != _OPEN or n == 0 or self._closed:
            out.flags.writeable = False
            return out
        p = batch.partition
        offsets = batch.offsets
        spans = self._spans.get(p) if self._spans else None
        if spans:  # a filtered poll's records: each settle covers the gap before it
            ranges = self._span_ranges([_At(p, o) for o in offsets.tolist()], True)[p][0]
        elif int(offsets[-1]) - int(offsets[0]) == n - 1:
            ranges = [(int(offsets[0]), int(offsets[-1]) + 1)]  # the usual: contiguous
        else:
            ranges = gs.to_ranges(offsets.tolist())
        ok, dead, full = self._settle_ranges({p: {lease.epoch: ranges}}, action,
                                             delay_s, error, False)
        good = ok.get(p)
        if good:
            if good == ranges:
                out[:] = True
            else:
                starts = np.array([a for a, _ in good], np.int64)
                ends = np.array([b for _, b in good], np.int64)
                j = np.searchsorted(starts, offsets, side="right") - 1
                out = (j >= 0) & (offsets < ends[np.maximum(j, 0)])
        out.flags.writeable = False
        lease.state = _ACKED if action == _ACK else _NACKED
        if action == _ACK:
            lease.answers = out
        self._settled(action, dead, full)
        return out

    def _sync_partitions(self) -> None:
        """Follow a topic that grew (``Log.alter_topic``, in any process): the group takes
        the new partitions, each from its first record."""
        self.topic._refresh()
        n = len(self.topic._parts)
        if n != len(self._pkeys):
            self._pkeys = [_part_key(self.topic.name, self.name, p) for p in range(n)]
            self._idle = {}

    def _poll_once(self, max_records: int, columnar: bool = False
                   ) -> tuple[list[Message], int, list | None]:
        """One look for records to lease, in one transaction (``poll``'s and
        ``poll_batch``'s). Returns ``(messages, due_ms, pieces)``: the records leased,
        when something not deliverable now comes due, and, with ``columnar``
        (``poll_batch``: every record from one partition), ``pieces``, the leased
        ranges read as columns, ``(columns, delivery count, partition, epoch)`` each;
        ``messages`` then holds only the records that needed a look one by one
        (headers, a subject filter). None without ``columnar``."""
        one_part = columnar
        self._sync_partitions()
        topic = self.topic
        parts = topic._parts
        views = [View._make(p.view()) for p in parts]
        now = now_ms()
        me = self.consumer
        reclaim = self._reclaim
        mode = self.mode
        n = len(parts)
        order = [(self._rr + i) % n for i in range(n)]
        pkeys = self._pkeys
        scanned = [0]  # records the filter dropped inside the transaction (last run of fn)
        acks: list[Message] | None = None
        scan_room = [0]  # records the filter may still look at in this poll

        def fn(tx: Tx):
            cfg = self._load_cfg(tx)
            scanned[0] = 0
            # Batched acks first (idempotent if fn runs again): the room they make
            # counts for this poll.
            full = self._apply_acks(tx, acks) if acks else False
            scan_room[0] = GROUP_FILTER_SCAN_RECORDS
            flt = self._subject_match(cfg)
            aw = int(cfg["ack_wait_s"] * 1000)
            md = cfg["max_deliver"]
            bo = [int(b * 1000) for b in cfg["backoff_s"]] if cfg["backoff_s"] else None
            room = max_records
            dead_room = GROUP_DEAD_LETTER_BATCH
            taken: list[tuple[int, gs.Lease, int]] = []
            due = gs.FOREVER_MS
            beat = self._heartbeat(tx, cfg, now)
            if mode == "exclusive":
                states, owned, draining, claimed, stores = self._assign(tx, cfg, now)
                for p in order:
                    if p not in owned:
                        continue
                    st = states[p]
                    v = views[p]
                    dirty = gs.clamp(st, v.start_offset) or p in claimed
                    if p in draining:
                        res = None  # being handed to another consumer: wait for its leases
                    else:
                        res = gs.lease_exclusive(st, me, now, room, v.end_offset, aw, md, bo,
                                                 reclaim, GROUP_MAX_PENDING_RECORDS,
                                                 dead_room)
                    if res is not None:
                        room -= res.taken
                        if one_part and res.taken:
                            room = 0  # poll_batch: the records of one partition only
                        dead_room -= sum(d[1] - d[0] for d in res.dead)
                        due = min(due, res.due_ms)
                        if res.deliver or res.dead:
                            taken.append((p, res, st.epoch))
                        dirty = dirty or res.changed
                    if dirty:
                        stores[p].save(st, bo)
                return cfg, taken, due, beat, {}, full
            idle = dict(idle_before)  # rebuilt on each run: fn may run twice
            for p in order:
                v = views[p]
                raw = tx.get(pkeys[p]) or _FRESH  # (_load_cfg found the group)
                if room <= 0 and dead_room <= 0:
                    break
                c = idle_before.get(p)
                if c is not None and not reclaim and c[0] == raw and c[1] == v.end_offset and \
                        c[2] == v.start_offset and c[4] is cfg and now < c[3]:
                    # Same state, same log, same options as when this partition last had
                    # nothing for us, and nothing comes due before c[3]: skip the decode.
                    due = min(due, c[3])
                    continue
                if room <= 0 and flt is not None and mode == "shared" and gs.is_head(raw):
                    hd = gs.decode_head(raw)
                    if hd.pending == 0:
                        # A filtered poll with no room left, and nothing leased here to
                        # redeliver or dead-letter: only new records, for the next poll.
                        if hd.next < v.end_offset:
                            due = min(due, now)
                        continue
                ps = _PartStore(tx, pkeys[p], self._states_cache)
                h = ps.open(True, bytes(raw))
                assert h is not None  # raw is a state: open() decodes it
                if mode == "shared" and not reclaim and h.bo == (bo or []) and \
                        h.committed >= v.start_offset:
                    # The usual poll: the indexed layout hands out redeliveries and new
                    # records touching only the entries it changes.
                    if flt is not None:
                        res = self._lease_filtered(ps, parts[p], flt, me, now, room,
                                                   v.end_offset, aw, md, dead_room, scanned,
                                                   scan_room)
                    else:
                        res = gs.lease_shared_store(ps, me, now, room, v.end_offset, aw, md,
                                                    GROUP_MAX_PENDING_RECORDS, dead_room)
                    room -= res.taken
                    if one_part and res.taken:
                        room = 0  # poll_batch: the records of one partition only
                    dead_room -= sum(d[1] - d[0] for d in res.dead)
                    due = min(due, res.due_ms)
                    if res.deliver or res.dead or res.picked:
                        taken.append((p, res, h.epoch))
                    idle.pop(p, None)
                    if res.changed:
                        ps.save_head()
                    elif res.due_ms > now:
                        idle[p] = (ps.raw, v.end_offset, v.start_offset, res.due_ms, cfg)
                    continue
                st = ps.load()
                dirty = gs.clamp(st, v.start_offset) or h.bo != (bo or [])
                if mode == "shared":
                    res = gs.lease_shared(st, me, now, room, v.end_offset, aw, md, bo, reclaim,
                                          GROUP_MAX_PENDING_RECORDS, dead_room)
                else:
                    new = _read_keys(parts[p], st.next, v.end_offset, room, self._cache)
                    res = gs.lease_key_shared(st, me, now, room, new, aw, md, bo, reclaim,
                                              GROUP_MAX_PENDING_RECORDS, dead_room)
                room -= res.taken
                if one_part and res.taken:
                    room = 0  # poll_batch: the records of one partition only
                dead_room -= sum(d[1] - d[0] for d in res.dead)
                due = min(due, res.due_ms)
                if res.deliver or res.dead:
                    taken.append((p, res, st.epoch))
                idle.pop(p, None)
                if dirty or res.changed:
                    ps.save(st, bo)
                elif res.due_ms > now:
                    idle[p] = (ps.raw, v.end_offset, v.start_offset, res.due_ms, cfg)
            return cfg, taken, due, beat, idle, full

        idle_before = self._idle
        if self._acks:
            self._commit_lock.acquire()
            acks = self._take_acks()
        try:
            cfg, taken, due, beat, idle, full = self._kv.transact(fn)
        except BaseException:
            if acks:
                self._put_back(acks)
            raise
        finally:
            if acks is not None:
                self._commit_lock.release()
        if full:
            _wake(self.topic)  # the batched acks made room under the pending cap
        self._idle = idle
        self._cfg = cfg
        self._reclaim = False
        self._rr = (self._rr + 1) % n
        if beat:
            self._beat_ms = now
        msgs: list[Message] = []
        jobs = []
        early: list[tuple[Message, int]] = []
        skip: list[Message] = []
        flt = self._subject_match(cfg)
        match = None if flt is None else flt.matches
        held: set = set()  # exclusive: partitions, key_shared: (partition, key) held back
        lease_due = now + int(cfg["ack_wait_s"] * 1000)
        ordered = mode != "shared"
        removed: list[tuple[int, int, list[tuple[int, int]]]] = []
        self._removed_acked = False
        pieces: list | None = [] if columnar else None
        for p, res, epoch in taken:
            part = parts[p]
            picked = res.picked
            if picked:
                self._take_picked(p, picked, epoch, msgs, now, early)
            for lo, hi, count in res.deliver:
                if pieces is not None and match is None and not held:
                    cols = _read_columns(part, lo, hi, views[p].end_offset, self._col_cache)
                    if not cols["headers"]:  # (a record with headers: looked at below)
                        pieces.append((cols, count, p, epoch))
                        got = len(cols["offsets"])
                        if part.compacted_topic and got < hi - lo:
                            have_offs = set(cols["offsets"].tolist())
                            gone = gs.to_ranges([o for o in range(lo, hi)
                                                 if o not in have_offs])
                            removed.append((p, epoch, gone))
                        continue
                first = len(msgs)
                batch: list[Message] = []
                if not _make_messages(_read_range(part, lo, hi, self._cache), batch, self,
                                      count, epoch, _OPEN, lease_due, self._ack_leases_next) \
                        and match is None and not held:
                    msgs.extend(batch)  # no headers, no filter: every one goes out as is
                    batch = []
                for m in batch:
                    r = m._record
                    if match is not None:
                        subj = r.headers.get(_validate.SUBJECT_HEADER)
                        if subj is None or not match(subj):
                            skip.append(m)  # not for this group: done, never handed out
                            continue
                    if r.headers:  # a record without headers costs this test only
                        at = _deliver_at(r.headers)
                        if at is not None and at > now:
                            early.append((m, at))
                            if ordered:
                                held.add(p if mode == "exclusive" else (p, r.key))
                            continue
                    if held and (p if mode == "exclusive" else (p, r.key)) in held:
                        # In order behind a held-back record: handed back with it (due
                        # now, and the lease order keeps it behind until that one goes).
                        early.append((m, now))
                        continue
                    msgs.append(m)
                if part.compacted_topic and len(msgs) - first < hi - lo:
                    # offsets compaction removed: nothing to deliver, done at once
                    have = {m._record.offset for m in msgs[first:]}
                    gone = gs.to_ranges([o for o in range(lo, hi) if o not in have])
                    removed.append((p, epoch, gone))
            for lo, hi, count, err in res.dead:
                jobs.append((p, lo, hi, count, err))
        if jobs:
            self._dead_letter(jobs)
        self._skipped = len(skip) + scanned[0]
        if skip:
            self._settle(skip, _ACK)
        if early:
            self._hand_back_early(early)
            due = min(due, min(at for _, at in early))
        if removed:
            self._ack_removed(removed)
        return msgs, due, pieces

    def _take_picked(self, p: int, picked: list, epoch: int, msgs: list[Message], now: int,
                     early: list[tuple[Message, int]]) -> None:
        """Messages for the new records a filtered poll matched on partition ``p`` (shared:
        no order to keep), appended to ``msgs`` (or to ``early``, delayed ones); the
        records passed over between two of them are settled with the later one
        (``_spans``, see _lease_filtered)."""
        spans = self._spans.get(p)
        if spans is None:
            spans = self._spans[p] = {}
        elif len(spans) > 4 * GROUP_MAX_PENDING_RECORDS:
            spans.clear()  # messages never settled: their gaps expire and come back
        prev = picked[0].offset
        new = _new_message
        for r in picked:
            off = r.offset
            if off > prev:
                spans[off] = prev
            prev = off + 1
            m = new(Message)
            m.delivery_count = 1
            m._record = r
            m._group = self
            m._epoch = epoch
            m._state = _OPEN
            if _validate.DELIVER_AT_MS in r.headers:
                at = _deliver_at(r.headers)
                if at is not None and at > now:
                    early.append((m, at))
                    continue
            msgs.append(m)

    def _subject_match(self, cfg: dict):
        """The group's compiled subject filter (``_codec.SubjectFilter``), None without one."""
        subjects = cfg.get("subjects")
        if not subjects:
            return None
        if self._filter[0] != subjects:
            self._filter = (subjects, _codec.SubjectFilter(subjects))
        return self._filter[1]

    def _lease_filtered(self, ps: _PartStore, part, flt, me: str, now: int, room: int,
                        end: int, aw: int, md: int, dead_room: int, scanned: list[int],
                        scan_room: list[int]) -> gs.Lease:
        """The shared poll of a group with a subject filter, inside its transaction.

        Redeliveries come first, as in any shared poll (the caller filters those
        records one by one: a rare path). Then new records: the extension looks
        at their subjects in the mapped segments and returns only the matching
        ones (at most ``room``; at most ``scan_room[0]`` records looked at per
        poll). The records passed over before the first match (and after the
        last, when fewer than ``room`` matched) are done at once: one entry in
        the group's state, however many records. Those between the first and
        the last match are leased with the matches as one run, so that acking
        the messages (whose settles cover the gap before each, ``_spans``) acks
        the run whole; if the consumer dies instead, the run comes back and is
        filtered again."""
        out = gs.lease_shared_store(ps, me, now, room, ps.head.next, aw, md,
                                    GROUP_MAX_PENDING_RECORDS, dead_room)
        room -= out.taken
        h = ps.head
        if h.next >= end:
            return out
        if room <= 0 or scan_room[0] <= 0:
            out.due_ms = now  # more to look at: this partition is not idle
            return out
        start = h.next
        hi = min(end, start + scan_room[0])
        recs: list = []
        upto = part.read_matching(start, hi, room, flt, recs)
        capped = False
        if recs:
            first = recs[0].offset
            cap = GROUP_MAX_PENDING_RECORDS - h.pending
            if recs[-1].offset + 1 - first > cap:  # the pending cap: fewer matches now
                recs = [r for r in recs if r.offset + 1 - first <= cap]
                upto = recs[-1].offset + 1 if recs else first
                capped = True  # an ack makes room (and changes the state: no idle skip)
        else:
            first = upto
        scan_room[0] -= upto - start
        changed = gs.pass_over_store(ps, first)
        if recs:
            stop = recs[-1].offset + 1
            ps.put([first, stop, me, now + aw, 1, None])
            h.pending += stop - first
            h.next = stop
            gs.pass_over_store(ps, upto)
            out.picked = recs
            out.taken += len(recs)
            changed = True
        scanned[0] += (upto - start) - len(recs)
        out.changed = out.changed or changed
        if upto < end and not capped:
            out.due_ms = min(out.due_ms, now)  # stopped by room or budget: look again
        return out

    def _hand_back_early(self, early: list[tuple[Message, int]]) -> None:
        """Records drawn before their ``streamlog.deliver-at-ms`` go back until then, their
        delivery refunded (as ``Message.defer``), in one transaction: a delay never uses
        up ``max_deliver``."""
        exclusive = self.mode == "exclusive"
        todo: dict[int, dict[tuple[int, int], list[int]]] = {}
        for m, at in early:
            r = m._record
            todo.setdefault(r.partition, {}).setdefault(
                (m._epoch if exclusive else 0, at), []).append(r.offset)
            m._state = _NACKED
        me = self.consumer
        pkeys = self._pkeys

        keyed = self.mode == "key_shared"

        def fn(tx: Tx):
            for p, by_due in todo.items():
                ps = _PartStore(tx, pkeys[p])
                ps.keyed = keyed
                st = ps.open(write=True)
                if st is None:
                    continue
                if exclusive and st.owner != me:
                    continue  # taken over meanwhile: the new owner delivers them
                changed = False
                for (epoch, at), offsets in by_due.items():
                    if exclusive and epoch != st.epoch:
                        continue
                    if gs.apply_store(ps, gs.to_ranges(offsets),
                                      lambda r, at=at: [gs.FREE, at, max(r[4] - 1, 0), r[5]]
                                      if r[2] == me else None):
                        changed = True
                if changed:
                    ps.save_head()

        self._kv.transact(fn)
        _wake(self.topic)  # pollers waiting elsewhere learn the new due time


    def _ack_removed(self, removed: list[tuple[int, int, list[tuple[int, int]]]]) -> None:
        """Ack leased offsets of a compacted topic that hold no record any more."""
        me = self.consumer
        exclusive = self.mode == "exclusive"
        pkeys = self._pkeys
        keyed = self.mode == "key_shared"

        def fn(tx: Tx) -> bool:
            done = False
            for p, epoch, ranges in removed:
                ps = _PartStore(tx, pkeys[p])
                ps.keyed = keyed
                h = ps.open(write=True)
                if h is None:
                    continue
                if exclusive and (h.owner != me or h.epoch != epoch):
                    continue
                if gs.ack_store(ps, me, ranges):
                    ps.save_head()
                    done = True
            return done

        self._removed_acked = self._kv.transact(fn)

    def _assign(self, tx: Tx, cfg: dict, now: int
                ) -> tuple[dict, set, set, set, dict[int, _PartStore]]:
        """Exclusive mode: spread partitions over the live consumers, one owner each.

        Sticky: a live owner keeps its partitions; a consumer over its fair
        share stops taking new records from the excess and lets go of a
        partition once none of its leases there is live; a consumer under its
        share claims partitions that are free or whose owner closed or went
        silent for ack_wait_s (bumping the partition's epoch, so the old
        owner's acks are refused). Returns (states, owned, draining, claimed,
        stores):
        ``owned`` includes the ``draining`` partitions (over the share, leases
        still live); released partitions are written back here, ``claimed``
        ones by the caller.
        """
        me = self.consumer
        aw = int(cfg["ack_wait_s"] * 1000)
        live = {me}
        for _, v in tx.scan(self._mprefix):
            d = json.loads(v)
            if now - d.get("t", 0) <= aw:
                live.add(d["c"])
        ranked = sorted(live)
        n_parts = len(self._pkeys)
        i = ranked.index(me)
        quota = n_parts // len(ranked) + (1 if i < n_parts % len(ranked) else 0)
        states = {}
        stores = {}
        for p, key in enumerate(self._pkeys):
            ps = stores[p] = _PartStore(tx, key, self._states_cache)
            if ps.open(write=True) is None:
                # A partition the topic grew by, with no state yet (_load_cfg found the
                # group): it starts at offset 0, as on_topic_grown writes it.
                ps.create(gs.PartState(0))
            states[p] = ps.load()
        owned = [p for p in range(n_parts) if states[p].owner == me]
        claimed: set[int] = set()
        draining: set[int] = set()
        if len(owned) > quota:
            for p in owned[quota:]:
                if gs.has_live_lease(states[p], me, now):
                    draining.add(p)
                else:
                    states[p].owner = None
                    states[p].epoch += 1
                    stores[p].save(states[p])
            owned = owned[:quota] + sorted(draining)
        elif len(owned) < quota:
            for p in range(n_parts):
                if len(owned) >= quota:
                    break
                st = states[p]
                if st.owner is None or st.owner not in live:
                    st.owner = me
                    st.epoch += 1
                    owned.append(p)
                    claimed.add(p)
        return states, set(owned), draining, claimed, stores

    # ------------------------------------------------------------ settle
    def ack(self, msgs: Iterable[Message]) -> list[bool]:
        """Ack many messages in one transaction; returns each one's ``ack()`` answer."""
        self._log._check()
        return self._settle(_as_list(msgs), _ACK)

    def nack(self, msgs: Iterable[Message], delay_s: float = 0,
             error: str | None = None) -> list[bool]:
        """Nack many messages in one transaction (see ``Message.nack``)."""
        self._log._check()
        return self._settle(_as_list(msgs), _NACK, delay_s, error)

    def _settle(self, msgs: list[Message], action: int, delay_s: float = 0,
                error: str | None = None) -> list[bool]:
        self._log._check()  # before the arguments: a closed store refuses whatever they are
        if action in (_NACK, _DEFER):
            delay_s = _validate.seconds(delay_s, "delay_s") or 0.0
            if error is not None and not isinstance(error, str):
                raise TypeError(f"error must be a str or None, not {type(error).__name__}")
        n = len(msgs)
        out = [False] * n
        exclusive = self.mode == "exclusive"
        # Offsets -> ranges before the transaction (it holds LMDB's writer lock), and
        # in one pass per step for the usual batch (one partition, all unsettled): the
        # per-message cost of an ack is what bounds a consumer's records per second.
        ranges_of: dict[int, dict[int, list[tuple[int, int]]]] = {}
        todo: list[int] | range
        # One poll's batch, in order, of a group without a subject filter: its range in
        # one pass (a filtered group's acks also cover the records passed over before
        # each message: its spans, below).
        span = _scan_messages(msgs, self, exclusive) if n > 1 and not self._spans else None
        if span is not None:
            todo = range(n)
            ranges_of[span[0]] = {span[1]: [(span[2], span[3])]}
        else:
            try:  # only poll() sets _group: a message of this handle is a Message
                fast = n > 0 and {m._group for m in msgs} == {self} and \
                    {m._state for m in msgs} == {_OPEN}
            except AttributeError:  # not Messages: the careful path names the culprit
                fast = False
            if fast:
                todo = range(n)
                recs = [m._record for m in msgs]
                parts = {r.partition for r in recs}
                epochs = {m._epoch for m in msgs} if exclusive else {0}
                if self._spans:
                    ranges_of = self._span_ranges(recs, action != _EXTEND)
                elif len(parts) == 1 and len(epochs) == 1:
                    ranges_of[parts.pop()] = {
                        epochs.pop(): gs.to_ranges([r.offset for r in recs])}
                else:
                    ranges_of = _ranges_by_part(msgs, exclusive)
            else:
                todo = []
                for i, m in enumerate(msgs):
                    if m.__class__ is not Message or m._group is not self:
                        if not isinstance(m, Message):
                            raise TypeError(f"expected Messages, not {type(m).__name__}")
                        raise ValueError("a message can be settled only through the group "
                                         "handle that delivered it")
                    if m._state:
                        out[i] = m._state == _ACKED if action == _ACK else False
                    else:
                        todo.append(i)
                if self._spans:
                    ranges_of = self._span_ranges([msgs[i]._record for i in todo],
                                                  action != _EXTEND)
                else:
                    ranges_of = _ranges_by_part([msgs[i] for i in todo], exclusive)
        if not todo or self._closed:
            return out
        lease_next = action == _ACK and self._ack_leases_next and n == 1 and \
            not self._held and self.mode == "shared"
        ok, dead, full = self._settle_ranges(ranges_of, action, delay_s, error, lease_next)
        state = _ACKED if action == _ACK else _NACKED if action in (_NACK, _DEFER) else 0
        if len(ok) == 1 and len(ranges_of) == 1 and len(todo) == n:
            ((p, changed),) = ok.items()
            ((_, asked),) = ranges_of.items()
            if len(asked) == 1 and p in ranges_of and changed == list(asked.values())[0]:
                # every message of the batch succeeded: no per-message lookups
                if state:
                    if span is not None:
                        _set_states(msgs, state)
                    else:
                        for m in msgs:
                            m._state = state
                self._settled(action, dead, full)
                return [True] * n
        for i in todo:
            m = msgs[i]
            r = m._record
            ranges = ok.get(r.partition)
            off = r.offset
            if not ranges:
                good = False
            elif len(ranges) == 1:
                good = ranges[0][0] <= off < ranges[0][1]
            else:
                j = bisect.bisect_right(ranges, (off, _MAX_OFFSET)) - 1
                good = j >= 0 and ranges[j][0] <= off < ranges[j][1]
            out[i] = good
            if action == _ACK:
                m._state = _ACKED if good else _LOST
            elif action in (_NACK, _DEFER):
                m._state = _NACKED
        self._settled(action, dead, full)
        return out

    def _settle_ranges(self, ranges_of: dict[int, dict[int, list[tuple[int, int]]]],
                       action: int, delay_s: float, error: str | None, lease_next: bool
                       ) -> tuple[dict[int, list[tuple[int, int]]],
                                  list[tuple[int, int, int, int, str | None]], bool]:
        """The transaction of a settle (``ack``/``nack``/... of messages, ``ack_batch``/
        ``nack_batch`` of a columnar poll): ``ranges_of`` is partition -> {epoch (0 but
        in exclusive mode): offset ranges}. Returns ``(ok, dead, full)``: per
        partition the ranges whose lease this consumer still held (and now settled),
        the dead-letter jobs of a nack, whether a partition was at its pending cap.
        ``lease_next``: an ack of one message that also leases the next record."""
        self._log._check()
        exclusive = self.mode == "exclusive"
        me = self.consumer
        now = now_ms()
        pkeys = self._pkeys
        defer_to = now + int(delay_s * 1000)
        keyed = self.mode == "key_shared"
        if lease_next:
            views = [View._make(part.view()) for part in self.topic._parts]

        def fn(tx: Tx):
            cfg = self._load_cfg(tx)
            aw = int(cfg["ack_wait_s"] * 1000)
            md = cfg["max_deliver"]
            bo = [int(b * 1000) for b in cfg["backoff_s"]] if cfg["backoff_s"] else None
            ok: dict[int, list[tuple[int, int]]] = {}
            dead: list[tuple[int, int, int, int, str | None]] = []
            full = False
            beat = self._heartbeat(tx, cfg, now)
            opened: dict[int, _PartStore] = {}
            dirty: dict[int, _PartStore] = {}
            for p, by_epoch in ranges_of.items():
                ps = opened[p] = _PartStore(tx, pkeys[p])
                ps.keyed = keyed
                st = ps.open(write=True)  # the head: only the runs touched are read
                if st is None:
                    continue
                if exclusive and st.owner != me:
                    continue  # taken over: the old owner's calls are refused
                ranges = by_epoch.get(st.epoch if exclusive else 0)
                if not ranges:
                    continue
                if action == _ACK:
                    if not full and st.pending >= GROUP_MAX_PENDING_RECORDS:
                        full = True  # pollers may be waiting for room: wake them after
                    changed = gs.ack_store(ps, me, ranges)
                elif action == _DEFER:
                    changed = [(a, b) for a, b, _ in gs.apply_store(
                        ps, ranges,
                        lambda r: [gs.FREE, defer_to, max(r[4] - 1, 0), r[5]] if r[2] == me
                        else None)]
                elif action == _EXTEND:
                    if exclusive:  # keep the partition's later leases from expiring first
                        ranges = [(st.committed, st.next)]
                    changed = [(a, b) for a, b, _ in gs.apply_store(
                        ps, ranges, lambda r: [me, now + aw, r[4], r[5]] if r[2] == me
                        else None)]
                else:
                    changed = _nack_state(ps, me, ranges, now, int(delay_s * 1000), bo, md,
                                          aw, error, dead, p)
                if changed:
                    ok[p] = changed
                    dirty[p] = ps
            nxt = None
            if lease_next and ok:
                nxt = self._lease_one(tx, views, now, aw, md, bo, opened, dirty)
            for ps in dirty.values():
                ps.save_head()
            return ok, dead, beat, full, nxt

        ok, dead, beat, full, nxt = self._kv.transact(fn)
        if nxt is not None:
            p, lo, count = nxt
            (r,) = _read_range(self.topic._parts[p], lo, lo + 1, self._cache)
            m = _new_message(Message)
            m.delivery_count = count
            m._record = r
            m._group = self
            m._epoch = 0
            m._state = _OPEN
            m._due = now + int(self._cfg["ack_wait_s"] * 1000)
            self._hold([m], GROUP_HOLD_MAX_MS, now)
        if beat:
            self._beat_ms = now
        return ok, dead, full

    def _span_ranges(self, recs: list, settling: bool
                     ) -> dict[int, dict[int, list[tuple[int, int]]]]:
        """partition -> {0: ranges} of what settling the messages of records ``recs``
        covers: each one's offset and the records a filtered poll passed over just
        before it (``_spans``, shared groups only); ``settling`` forgets those gaps."""
        offs_of: dict[int, list[int]] = {}
        if len({r.partition for r in recs}) == 1:
            offs_of[recs[0].partition] = [r.offset for r in recs]
        else:
            for r in recs:
                offs_of.setdefault(r.partition, []).append(r.offset)
        out: dict[int, dict[int, list[tuple[int, int]]]] = {}
        for p, offs in offs_of.items():
            spans = self._spans.get(p)
            if not spans:
                out[p] = {0: gs.to_ranges(offs)}
                continue
            get = spans.pop if settling else spans.get
            los = [get(o, o) for o in offs]
            follow = [o + 1 for o in offs]
            if los[1:] == follow[:-1]:
                # the usual ack: one poll's messages in order, each gap just before its
                # message, so together one range (list compares run in C)
                out[p] = {0: [(los[0], follow[-1])]}
                continue
            merged: list[tuple[int, int]] = []
            for lo, hi in sorted(zip(los, follow, strict=True)):
                if merged and lo <= merged[-1][1]:
                    if hi > merged[-1][1]:
                        merged[-1] = (merged[-1][0], hi)
                else:
                    merged.append((lo, hi))
            out[p] = {0: merged}
        return out

    def _lease_one(self, tx: Tx, views: list, now: int, aw: int, md: int,
                   bo: list[int] | None, opened: dict, dirty: dict
                   ) -> tuple[int, int, int] | None:
        """Inside an ack's transaction: lease this consumer one more record, if one is
        deliverable at once by the usual shared poll (else the next poll finds it).
        ``opened``/``dirty``: the partition stores the ack opened / changed (their
        heads are written once, by the caller)."""
        n = len(self._pkeys)
        for i in range(n):
            p = (self._rr + i) % n
            v = views[p]
            ps = opened.get(p)
            if ps is None:
                ps = opened[p] = _PartStore(tx, self._pkeys[p])
                ps.open(write=True)
            h = ps.head
            if h is None or h.bo != (bo or []) or h.committed < v.start_offset:
                continue
            res = gs.lease_shared_store(ps, self.consumer, now, 1, v.end_offset, aw, md,
                                        GROUP_MAX_PENDING_RECORDS, 0)
            if res.changed:
                dirty[p] = ps
            if res.deliver:
                lo, _, count = res.deliver[0]
                self._rr = (p + 1) % n
                return p, lo, count
        return None

    def one_at_a_time(self) -> None:
        """A hint that this consumer polls one record at a time and settles it before
        its next poll (the queue view's ``get``). Three things follow, so that a
        ``get`` + ``ack`` loop does not pay an LMDB write transaction per call:

        * a consumer that comes back for more quickly leases a batch of records in
          one transaction (at most ``GROUP_PREFETCH_MAX``, as many as its recent pace
          takes within ``GROUP_PREFETCH_WINDOW_MS``) and ``poll(1)`` hands them out
          one at a time; a slow consumer keeps leasing one record at a time;
        * in a shared group without a subject filter, unless the store's durability
          is ``always``, an ``ack`` whose lease has time left is batched: committed
          in the transaction of the next poll that goes to the store, by ``close()``,
          or by the background committer within ``GROUP_ACK_DELAY_MS`` (a crash
          before that redelivers the message, as at-least-once allows);
        * an ``ack`` that does commit at once also leases the next record in its
          transaction.

        A record leased and not handed out within ``GROUP_HOLD_MAX_MS`` (or a tenth
        of ``ack_wait_s``) goes back to the group, its delivery not counted;
        ``close`` hands such records back too."""
        self._log._check()
        self._ack_leases_next = True
        # Not for a group with a subject filter: its acks also settle the records passed
        # over before each message (its spans), which only a settle computes.
        if self.mode == "shared" and self._log.durability != "always" and \
                not self._cfg.get("subjects"):
            aw = int(self._cfg["ack_wait_s"] * 1000)
            # Batched only while the lease has this much left: the commit is due long
            # before the lease could expire and go to another consumer.
            self._ack_margin_ms = max(10 * GROUP_ACK_DELAY_MS, aw // 4)
            self._defer_acks = True

    def _prefetch_size(self) -> int:
        """How many records the next lease of a one-at-a-time consumer takes: what it
        handed out since its last lease, scaled to GROUP_PREFETCH_WINDOW_MS of the pace
        it went at (so a consumer that takes 10 ms a message leases one at a time)."""
        t = time.monotonic()
        elapsed = t - self._pf_t
        self._pf_t = t
        got = self._pf_got
        if got <= 0 or elapsed <= 0:
            return 1
        n = int(got * (GROUP_PREFETCH_WINDOW_MS / 1000) / elapsed)
        return 1 if n < 1 else GROUP_PREFETCH_MAX if n > GROUP_PREFETCH_MAX else n

    def _hold(self, msgs: list[Message], hold_ms: int, at: int | None = None,
              checked: bool = False) -> None:
        """Keep leased messages to hand out one per poll (see ``_take_held``) for at most
        ``hold_ms`` (and a tenth of ack_wait_s), from ``at`` (now). ``checked``: a poll
        already filtered them by subject and delay."""
        if at is None:
            at = now_ms()
        until = at + min(hold_ms, int(self._cfg["ack_wait_s"] * 100))
        with self._lock:
            self._held.extend((m, until, checked) for m in msgs)
            if not self._active:
                self._active = True
                _COMMITTER.add(self)

    def _take_acks(self) -> list[Message]:
        with self._lock:
            acks = self._acks
            self._acks = []
        return acks

    def _put_back(self, acks: list[Message]) -> None:
        """Batched acks whose transaction failed: they wait for the next commit."""
        with self._lock:
            self._acks[:0] = acks
            if not self._active:
                self._active = True
                _COMMITTER.add(self)

    def _apply_acks(self, tx: Tx, acks: list[Message]) -> bool:
        """Commit batched acks inside ``tx``; True when a partition was at its pending cap
        (pollers waiting for room are then woken)."""
        span = _scan_messages(acks, self, False, _ACKED)
        by_part: dict[int, list[tuple[int, int]]] = {}
        if span is not None:  # the usual case: one prefetched batch, acked in order
            by_part[span[0]] = [(span[2], span[3])]
        else:
            offsets: dict[int, list[int]] = {}
            for m in acks:
                r = m._record
                offsets.setdefault(r.partition, []).append(r.offset)
            by_part = {p: gs.to_ranges(offs) for p, offs in offsets.items()}
        full = False
        me = self.consumer
        for p, ranges in by_part.items():
            ps = _PartStore(tx, self._pkeys[p])
            h = ps.open(write=True)
            if h is None:
                continue
            if h.pending >= GROUP_MAX_PENDING_RECORDS:
                full = True
            if gs.ack_store(ps, me, ranges):
                ps.save_head()
        return full

    def _flush_acks(self) -> None:
        """Commit this consumer's batched acks now, in one transaction."""
        if not self._acks:
            return
        with self._commit_lock:
            self._flush_acks_locked()

    def _flush_acks_locked(self) -> None:
        """``_flush_acks`` under ``_commit_lock`` (which ``close`` takes too, so nothing
        of this runs on a store a close has begun to tear down)."""
        if self._closed:
            return  # close() committed them
        acks = self._take_acks()
        if not acks:
            return
        try:
            full = self._kv.transact(lambda tx: self._apply_acks(tx, acks))
        except BaseException:
            self._put_back(acks)
            raise
        if full:
            _wake(self.topic)

    def _commit_due(self, now: float) -> bool:
        """The background committer's look at this consumer: commit batched acks older
        than GROUP_ACK_DELAY_MS, hand back held records past the hold limit. False (and
        out of the committer's set) once nothing is batched or held."""
        stale: list[Message] = []
        with self._commit_lock:  # close() waits for this look to end
            with self._lock:
                if self._closed or not self._acks and not self._held:
                    self._active = False
                    _COMMITTER.discard(self)
                    return False
                due = bool(self._acks) and now - self._acks_at >= GROUP_ACK_DELAY_MS / 1000
                if self._held:
                    t = now_ms()
                    while self._held and self._held[0][1] < t:
                        stale.append(self._held.popleft()[0])
            if due:
                self._flush_acks_locked()
            if stale:
                self._settle(stale, _DEFER, 0)
        return True

    def ready_for_next(self) -> None:
        """A hint that this one-at-a-time consumer settles its message next. Nothing to
        do here: the ack leases the next record in its own transaction already, and a
        lease taken earlier would only hold the record from other consumers longer.
        StoreClosed on a closed store, as every method."""
        self._log._check()

    def _take_held(self) -> Message | None:
        """The message the last ack leased, if it was leased within the hold limit and
        is due; otherwise it goes back to the group, its delivery not counted."""
        now = now_ms()
        stale: list[Message] = []
        with self._lock:
            if not self._held:
                return None
            m, until, checked = self._held.popleft()
            if now > until:  # this one and those leased with it or before go back
                stale.append(m)
                while self._held and now > self._held[0][1]:
                    stale.append(self._held.popleft()[0])
        if not stale:
            if checked:  # a prefetched one: its poll already looked at subject and delay
                return m
            r = m._record
            flt = self._subject_match(self._cfg)
            if flt is not None:
                subj = r.headers.get(_validate.SUBJECT_HEADER)
                if subj is None or not flt.matches(subj):
                    self._settle([m], _ACK)  # not for this group: done
                    return None
            due = _deliver_at(r.headers) if r.headers else None
            if due is None or due <= now:
                return m
            self._hand_back_early([(m, due)])
            return None
        self._settle(stale, _DEFER, 0)
        return None

    def _settled(self, action: int, dead: list[tuple[int, int, int, int, str | None]],
                 full: bool) -> None:
        """What follows a settle's transaction, whichever way its answers were computed.

        Only a nack can use up a record's last delivery: ``defer`` refunds the
        delivery it hands back, so a deferred record is never dead-lettered by
        the defer itself (it is, later, if a counted delivery uses it up).
        """
        if action == _NACK and dead:
            self._dead_letter(dead)
        if action in (_NACK, _DEFER) or \
                action == _ACK and (full or self.mode == "key_shared"):
            # A record handed back (pollers re-read when it comes due), a key let go
            # of, room made under the pending cap: waiting pollers look again.
            _wake(self.topic)

    # ---------------------------------------------------------- dead letters
    def dead_letters(self) -> Topic:
        """The group's dead-letter topic (created if it does not exist yet)."""
        self._log._check()
        name = self._cfg["dead_letter"]
        if self._dlq is not None and self._dlq.name == name:
            return self._dlq
        log = self._log
        cfg = log._topic_config(name)
        if cfg is None:
            limit = min(MAX_MAX_RECORD_BYTES,
                        self.topic.config["max_record_bytes"] + 64 * 1024)
            cfg = log._create_or_check(name, {"max_record_bytes": limit})
        self._dlq = log._topic_handle(name, cfg)
        return self._dlq

    def _dead_letter(self, jobs: list[tuple[int, int, int, int, str | None]]) -> None:
        """Move records that used up max_deliver to the dead-letter topic, then ack them.

        The append carries a msg_id made of the record's origin and delivery
        count, so a consumer that dies between the append and the ack (its
        lease then expires and another consumer redoes the job) does not add
        the record twice.
        """
        dlq = self.dead_letters()
        parts = self.topic._parts
        done: dict[int, list[int]] = {}
        passed: dict[int, list[int]] = {}  # records the subject filter does not match
        flt = self._subject_match(self._cfg)
        for p, lo, hi, count, err in jobs:
            for r in _read_range(parts[p], lo, hi):
                if flt is not None:
                    subj = r.headers.get(_validate.SUBJECT_HEADER)
                    if subj is None or not flt.matches(subj):
                        passed.setdefault(p, []).append(r.offset)  # never for this group
                        continue
                hdrs = dict(r.headers)
                hdrs[DLQ_TOPIC] = self.topic.name
                hdrs[DLQ_PARTITION] = str(p)
                hdrs[DLQ_OFFSET] = str(r.offset)
                hdrs[DLQ_GROUP] = self.name
                hdrs[DLQ_DELIVERY_COUNT] = str(count)
                hdrs[DLQ_TIMESTAMP_MS] = str(r.timestamp_ms)
                if err is not None:
                    hdrs[DLQ_ERROR] = err
                value = r.value
                if value is None:
                    value = b""
                    hdrs[DLQ_TOMBSTONE] = "1"
                mid = f"{self.topic.name}/{self.name}/{p}/{r.offset}/{count}"
                try:
                    dlq.append(value, key=r.key, headers=hdrs, msg_id=mid)
                except RecordTooLarge:  # the origin headers pushed it over: keep the origin
                    hdrs = {k: v for k, v in hdrs.items() if k.startswith("sl-dlq-")}
                    hdrs["sl-dlq-truncated"] = "1"
                    dlq.append(b"", key=r.key, headers=hdrs, msg_id=mid)
            done.setdefault(p, []).extend(range(lo, hi))
        for p, offs in passed.items():
            done[p] = sorted(set(done.get(p, ())) - set(offs))
        me = self.consumer
        pkeys = self._pkeys

        def fn(tx: Tx):
            for p in done.keys() | passed.keys():
                ps = _PartStore(tx, pkeys[p])
                h = ps.open(write=True)
                if h is None:
                    continue
                changed = gs.ack_store(ps, me, gs.to_ranges(done.get(p, [])))
                if changed:
                    h.dead_letters += sum(b - a for a, b in changed)
                if gs.ack_store(ps, me, gs.to_ranges(passed.get(p, []))) or changed:
                    ps.save_head()

        self._kv.transact(fn)

    # ------------------------------------------------------------- inspect
    def _states(self) -> list[gs.PartState]:
        self._log._check()
        _COMMITTER.flush(self._log)  # this process's batched acks count
        self._flush_acks()
        self._sync_partitions()
        db = self._log._meta.db(_NS)  # before the txn: a first open inside one is EINVAL
        with self._log._meta.read() as txn:
            tx = Tx(txn, db)
            if tx.get(self._ckey) is None:
                raise StreamlogError(f"group {self.name!r} of topic {self.topic.name!r} was "
                                     "deleted")
            return [_read_state(tx, k) for k in self._pkeys]

    def lag(self, partition: int | None = None) -> int:
        """Records not yet acked (in one partition, or all), counting only what retention kept."""
        self._check()
        if partition is not None:
            partition = _validate.partition(partition, self.topic.partitions)
        states = self._states()
        total = 0
        for p, st in enumerate(states):
            if partition is not None and p != partition:
                continue
            v = View._make(self.topic._parts[p].view())
            total += _lag_of(st, v.start_offset, v.end_offset, self.topic._parts[p])
        return total

    def pending(self) -> list[Lease]:
        """Every leased record of the group (all consumers), oldest offset first per partition."""
        out = []
        for p, st in enumerate(self._states()):
            for consumer, offset, due, count in gs.leased_records(st):
                out.append(Lease(consumer, p, offset, due / 1000, count))
        return out

    # ---------------------------------------------------------------- seek
    def seek(self, partition: int, offset: int) -> None:
        """Move the group on ``partition``: records before ``offset`` count as done, records
        from it on are delivered again (outstanding leases there are dropped).

        An offset below the start (retention) or past the end is clamped.
        """
        self._check()
        self._sync_partitions()
        partition = _validate.partition(partition, self.topic.partitions)
        offset = _validate.offset(offset)
        v = View._make(self.topic._parts[partition].view())
        self._seek({partition: min(max(offset, v.start_offset), v.end_offset)})

    def seek_to_time(self, timestamp_ms: int) -> None:
        """Seek every partition to its first record at or after ``timestamp_ms``."""
        self._check()
        ts = _validate.timestamp(timestamp_ms)
        self._sync_partitions()
        self._seek({p: self.topic.offset_for_time(p, ts) for p in range(self.topic.partitions)})

    def _seek(self, targets: dict[int, int]) -> None:
        pkeys = self._pkeys

        def fn(tx: Tx):
            self._load_cfg(tx)
            for p, off in targets.items():
                ps = _PartStore(tx, pkeys[p])
                if ps.open(write=True) is None:
                    ps.create(gs.PartState(off))
                    continue
                st = ps.load()
                gs.seek(st, off)
                ps.save(st)

        self._kv.transact(fn)
        _wake(self.topic)

    # --------------------------------------------------------------- close
    def close(self) -> None:
        """Leave the group: this consumer's leases (and exclusive partitions) go back at once.

        Idempotent; ``log.close()`` does it for every handle still open. Other
        consumers waiting in ``poll`` are woken to take them. (A consumer that
        dies without closing keeps its leases until they expire.)
        """
        if self._closed:
            return
        self._closed = True
        if self._log._closed:
            return
        try:
            self._log._closers.remove(self._closer)
        except ValueError:  # the store is closing: it is running the closers now
            pass
        me = self.consumer
        now = now_ms()
        pkeys = self._pkeys
        self._commit_lock.acquire()
        with self._lock:
            acks = self._acks
            self._acks = []
            held = [m._record for m, _, _ in self._held]
            self._held.clear()
            if self._active:
                self._active = False
                _COMMITTER.discard(self)
        back: dict[int, list[int]] = {}
        for r in held:
            back.setdefault(r.partition, []).append(r.offset)

        def fn(tx: Tx):
            if acks:  # batched acks are committed by a clean close
                self._apply_acks(tx, acks)
            for p, offsets in back.items():  # leased, never handed out: not a delivery
                ps = _PartStore(tx, pkeys[p])
                if ps.open(write=True) is not None and gs.apply_store(
                        ps, gs.to_ranges(offsets),
                        lambda r: [gs.FREE, now, max(r[4] - 1, 0), r[5]] if r[2] == me
                        else None):
                    ps.save_head()
            for key in pkeys:
                ps = _PartStore(tx, key)
                h = ps.open(write=True)
                if h is None:
                    continue
                changed = gs.apply_store(ps, [(h.committed, h.next)],
                                         lambda r: [gs.FREE, now, r[4], r[5]] if r[2] == me
                                         else None)
                if h.owner == me:
                    h.owner = None
                    h.epoch += 1
                    changed = changed or [(0, 0, [])]
                if changed:
                    ps.save_head()
            tx.delete(self._mkey)

        try:
            self._kv.transact(fn)
            _wake(self.topic)
        except StoreClosed:
            pass
        finally:
            self._commit_lock.release()
            if self._defer_acks or self._ack_leases_next:
                _COMMITTER.closed(self)


class _Committer:
    """The background committer of batched acks (one daemon thread per process).

    A one-at-a-time consumer with batched acks or held records is in its set
    (``add``); every half GROUP_ACK_DELAY_MS the thread commits the acks of
    those whose oldest is GROUP_ACK_DELAY_MS old and hands back held records
    past the hold limit, so an ack is committed within about that delay even
    if its consumer never polls again. A consumer with nothing batched or held
    leaves the set; the thread ends after a second with an empty set, or at
    once when the last consumer in it closes (so a closed store leaves no
    thread of its own behind), and the next ``add`` starts another.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._groups: set[Group] = set()
        self._pid = 0
        self._thread: threading.Thread | None = None
        self._quit = False

    def add(self, g: Group) -> None:
        """Called under ``g._lock`` when ``g`` gets something to commit or hand back."""
        with self._cond:
            if self._pid != os.getpid():  # first use, or a child of fork: a thread of its own
                self._pid = os.getpid()
                self._groups = set()
                self._thread = None
            self._groups.add(g)
            self._quit = False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="streamlog-ack-committer",
                                                daemon=True)
                self._thread.start()
            else:
                self._cond.notify()

    def discard(self, g: Group) -> None:
        """Called under ``g._lock`` once ``g`` has nothing batched or held."""
        with self._cond:
            self._groups.discard(g)

    def closed(self, g: Group) -> None:
        """``g`` closed: out of the set; the last one out ends the thread (and waits for
        it, unless this is the thread)."""
        with self._cond:
            self._groups.discard(g)
            if self._groups or self._thread is None:
                return
            self._quit = True
            t = self._thread
            self._cond.notify()
        if t is not threading.current_thread():
            t.join(1.0)

    def flush(self, log) -> None:
        """Commit the batched acks of every consumer of ``log`` in this process now (so
        lag and stats read in this process count them)."""
        with self._cond:
            groups = [g for g in self._groups if g._log is log]
        for g in groups:
            g._flush_acks()

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                if not self._groups:
                    if not self._quit:
                        self._cond.wait(1.0)
                    if not self._groups:
                        if self._thread is me:
                            self._thread = None
                        return
                self._cond.wait(GROUP_ACK_DELAY_MS / 2000)
                groups = list(self._groups)
            now = time.monotonic()
            for g in groups:
                try:
                    g._commit_due(now)
                except Exception:  # noqa: BLE001 - a closed store, a deleted group: drop it
                    with g._lock:
                        g._acks = []
                        g._held.clear()
                        g._active = False
                        self.discard(g)


_COMMITTER = _Committer()


def _commit_at_exit() -> None:
    """At interpreter exit, commit every batched ack and hand back every held record of
    this process's consumers: a program that ends without closing its store is not a
    crash, and its acks stay acks."""
    with _COMMITTER._cond:
        groups = list(_COMMITTER._groups) if _COMMITTER._pid == os.getpid() else []
    for g in groups:
        try:
            with g._commit_lock:
                with g._lock:
                    held = [m for m, _, _ in g._held]
                    g._held.clear()
                g._flush_acks_locked()
                if held:
                    g._settle(held, _DEFER, 0)
        except Exception:  # noqa: BLE001, S110 - a closed store: nothing left to do
            pass


atexit.register(_commit_at_exit)


def _reset_committer_after_fork() -> None:
    """In a child of fork: a committer of its own (the parent's thread is not here), and
    the consumers the parent's committer looked after get fresh locks (a parent thread
    may have held them at the fork) and join the child's set on their next ack."""
    global _COMMITTER
    inherited = list(_COMMITTER._groups)
    _COMMITTER = _Committer()
    for g in inherited:
        g._lock = threading.Lock()
        g._commit_lock = threading.Lock()
        g._active = False


os.register_at_fork(after_in_child=_reset_committer_after_fork)


def _close_ref(ref) -> None:
    g = ref()
    if g is not None:
        g.close()


_EMPTY_COLUMNS = empty_columns()
_NO_COUNTS = np.empty(0, np.int64)
for _arr in (*_EMPTY_COLUMNS.values(), _NO_COUNTS):
    _arr.flags.writeable = False


class _BatchLease:
    """The lease of a ``poll_batch`` result (its ``RecordBatch._lease``): the handle that
    polled it, the partition's epoch then (exclusive mode), and whether it was settled
    (``state``; ``answers``: what its ack returned)."""

    __slots__ = ("group", "epoch", "state", "answers")

    def __init__(self, group: Group, epoch: int) -> None:
        self.group = group
        self.epoch = epoch
        self.state = _OPEN
        self.answers: np.ndarray | None = None


class _At(NamedTuple):
    """A record's place, where a settle needs only that (``Group._span_ranges``)."""

    partition: int
    offset: int


def _read_columns(part, lo: int, hi: int, end: int, cache: dict) -> dict:
    """Records ``[lo, hi)`` of a partition as RecordBatch columns (those compaction or
    retention removed are missing); ``"headers"``: how many of them carry headers.

    As ``_read_range`` keeps the span a read decoded, ``cache`` (the consumer's,
    partition -> (first offset, columns or None, bytes per record of the last read))
    keeps the columns of up to ``_COLUMN_READ_AHEAD`` records read at once (up to
    ``end``; fewer where the records are large: about ``_COLUMN_READ_AHEAD_BYTES``
    of keys and values at the size the last read found), none of them with headers:
    the next small polls slice their ranges from it (views into the same memory, no
    copy) instead of walking the stored batch from its start again."""
    p = part.partition
    c = cache.get(p)
    if c is not None and c[1] is not None and c[0] <= lo and \
            hi <= c[0] + len(c[1]["offsets"]):
        return _rows(c[1], lo - c[0], hi - c[0])
    ahead = 0 if c is None else \
        min(_COLUMN_READ_AHEAD, int(_COLUMN_READ_AHEAD_BYTES / max(c[2], 1.0)))
    want = min(max(hi, lo + ahead), max(end, hi))
    cols = _read_columns_from(part, lo, want)
    offs = cols["offsets"]
    n = len(offs)
    size = (len(cols["value_data"]) + len(cols["key_data"])) / n if n else 1.0
    if want > hi and n and not cols["headers"] and int(offs[-1]) - int(offs[0]) == n - 1:
        first = int(offs[0])
        cache[p] = (first, cols, size)
        return _rows(cols, max(lo - first, 0), max(min(hi - first, n), 0))
    cache[p] = (0, None, size)
    if n and offs[-1] >= hi:  # read ahead, or records past a removed offset: not leased
        cols = _slice_columns(cols, int(np.searchsorted(offs, hi)))
    return cols


def _rows(cols: dict, i: int, j: int) -> dict:
    """Records ``i`` to ``j`` of columns without headers, as columns of their own: views
    of the same memory but for the key and value boundaries, which start at 0 again."""
    vo, ko = cols["value_offsets"], cols["key_offsets"]
    v0, v1, k0, k1 = int(vo[i]), int(vo[j]), int(ko[i]), int(ko[j])
    return {"offsets": cols["offsets"][i:j], "timestamps_ms": cols["timestamps_ms"][i:j],
            "value_offsets": vo[i:j + 1] - v0, "value_data": cols["value_data"][v0:v1],
            "value_null": cols["value_null"][i:j], "key_offsets": ko[i:j + 1] - k0,
            "key_data": cols["key_data"][k0:k1], "key_null": cols["key_null"][i:j],
            "headers": 0}


def _read_columns_from(part, lo: int, hi: int) -> dict:
    """Records ``[lo, hi)`` as columns (and perhaps records after ``hi``, where some
    offsets are missing)."""
    cols = part.read_columns(lo, hi - lo)
    offs = cols["offsets"]
    while len(offs) < hi - lo and (not len(offs) or offs[-1] < hi - 1):
        # read_columns stops at a segment's end: read on from the next offset
        more = part.read_columns(int(offs[-1]) + 1 if len(offs) else lo, hi - lo - len(offs))
        if not len(more["offsets"]):
            break
        cols = _concat_columns(cols, more)
        offs = cols["offsets"]
    return cols


def _slice_columns(cols: dict, k: int) -> dict:
    """The first ``k`` records of columns (their headers counted as before: a bound)."""
    vo, ko = cols["value_offsets"][:k + 1], cols["key_offsets"][:k + 1]
    return {"offsets": cols["offsets"][:k], "timestamps_ms": cols["timestamps_ms"][:k],
            "value_offsets": vo, "value_data": cols["value_data"][:int(vo[-1])],
            "value_null": cols["value_null"][:k], "key_offsets": ko,
            "key_data": cols["key_data"][:int(ko[-1])], "key_null": cols["key_null"][:k],
            "headers": cols.get("headers", 0)}


def _join_pieces(pieces: list[tuple[dict, np.ndarray]]) -> tuple[dict, np.ndarray]:
    """One set of columns (and delivery counts) of several, in increasing offset order."""
    cols, counts = pieces[0]
    for more, c in pieces[1:]:
        cols = _concat_columns(cols, more)
        counts = np.concatenate([counts, c])
    offs = cols["offsets"]
    if len(offs) > 1 and not bool((offs[1:] > offs[:-1]).all()):
        order = np.argsort(offs, kind="stable")
        cols = _take_rows(cols, order)
        counts = counts[order]
    cols = {k: v for k, v in cols.items() if k != "headers"}
    return cols, counts


def _take_rows(cols: dict, order: np.ndarray) -> dict:
    """Columns with their records in ``order`` (a permutation)."""
    out = {"offsets": cols["offsets"][order], "timestamps_ms": cols["timestamps_ms"][order],
           "value_null": cols["value_null"][order], "key_null": cols["key_null"][order]}
    for which in ("value", "key"):
        bounds, data = cols[f"{which}_offsets"], cols[f"{which}_data"]
        lengths = (bounds[1:] - bounds[:-1])[order]
        starts = bounds[:-1][order]
        new_bounds = np.zeros(len(order) + 1, np.int64)
        np.cumsum(lengths, out=new_bounds[1:])
        # every byte's source: its record's start plus its place within the record
        idx = np.repeat(starts - new_bounds[:-1], lengths) + np.arange(int(new_bounds[-1]))
        out[f"{which}_offsets"] = new_bounds
        out[f"{which}_data"] = np.ascontiguousarray(data[idx])
    return out


def _ranges_by_part(msgs: list[Message],
                    exclusive: bool) -> dict[int, dict[int, list[tuple[int, int]]]]:
    """partition -> epoch (0 unless exclusive) -> the messages' offsets as ranges."""
    offsets: dict[int, dict[int, list[int]]] = {}
    for m in msgs:
        r = m._record
        offsets.setdefault(r.partition, {}).setdefault(
            m._epoch if exclusive else 0, []).append(r.offset)
    return {p: {e: gs.to_ranges(offs) for e, offs in by_epoch.items()}
            for p, by_epoch in offsets.items()}


def _as_list(msgs) -> list:
    if isinstance(msgs, Message):
        return [msgs]
    return list(msgs)


def _wake(topic: Topic) -> None:
    """Wake every poller of the topic (they re-check and sleep again if nothing is theirs)."""
    try:
        topic._log._notifier_of(topic.name).notify()
    except StoreClosed:
        pass


def _nack_state(ps: _PartStore, me: str, ranges, now: int, delay_ms: int, bo, md: int,
                aw: int, error, dead: list, p: int) -> list[tuple[int, int]]:
    """Nack ``ranges``; records that used their last delivery stay leased to ``me`` and are
    listed in ``dead`` for the dead-letter topic."""
    def change(r):
        if r[2] != me:
            return None
        err = error if error is not None else r[5]
        if r[4] >= md:
            return [me, now + aw, r[4], err]
        return [gs.FREE, now + max(delay_ms, gs.backoff_ms(bo, r[4])), r[4], err]

    pieces = gs.apply_store(ps, ranges, change)
    for a, b, new in pieces:
        if new[0] == me:
            dead.append((p, a, b, new[2], new[3]))
    return [(a, b) for a, b, _ in pieces]


def _read_state(tx: Tx, key: bytes) -> gs.PartState:
    """A partition's whole state, in either layout, for reading (nothing is written)."""
    ps = _PartStore(tx, key)
    if ps.open(write=False) is None:
        return gs.PartState()
    return ps.load()


_deliver_at = _validate.deliver_at


def _lag_of(st: gs.PartState, start: int, end: int, part=None) -> int:
    c = max(st.committed, start)
    if end <= c:
        return 0
    lag = (end - c) - gs.acked_count(st, c)
    if part is not None and part.compacted_topic:
        lag -= part.removed_between(c, end)  # compaction removed them: nothing to consume
    return max(lag, 0)


def _read_range(part, lo: int, hi: int, cache: dict | None = None) -> list:
    """Records ``[lo, hi)`` of a partition, read in batches (those retention removed are
    skipped).

    Reads decode whole record batches, so a batch of 1,000 records appended at
    once comes back whole to a poll that wants 100 of them: ``cache`` (a dict
    the caller keeps per partition) holds the last span decoded, and the next
    ranges inside it are sliced from it instead of decoded again. Records are
    immutable, so a cached one is always right.
    """
    if cache is not None:
        c = cache.get(part.partition)
        if c is not None and c[0] <= lo and hi <= c[0] + len(c[1]):
            return c[1][lo - c[0]:hi - c[0]]
    out: list = []
    off = lo
    cursor = None
    while off < hi:
        buf: list = []
        cursor = part.read_into(off, hi - off, buf, cursor)
        if not buf:
            break
        if cache is not None and len(buf) <= _READ_CACHE_RECORDS and \
                buf[-1].offset - buf[0].offset == len(buf) - 1:
            cache[part.partition] = (buf[0].offset, buf)
        if buf[-1].offset < hi:
            out.extend(buf)
        else:
            for r in buf:
                if r.offset >= hi:
                    break
                out.append(r)
        off = buf[-1].offset + 1
        if cursor is None:
            break
    return out


def _read_keys(part, offset: int, end: int, room: int,
               cache: dict | None = None) -> list[tuple[int, int | None]]:
    """``(offset, murmur2(key) or None)`` of the records after ``offset``, for key_shared."""
    if offset >= end:
        return []
    want = min(end - offset, max(2 * room, 64))
    murmur2 = _codec.murmur2
    return [(r.offset, None if r.key is None else murmur2(r.key))
            for r in _read_range(part, offset, offset + want, cache)]


# ------------------------------------------------------------------ hooks
def drop_topic(meta, txn, topic: str) -> None:
    """Topic deletion hook: its groups' configs, offsets, leases and members go with it."""
    tx = Tx(txn, meta.db_in(txn, _NS))
    tk = _tk(topic)
    for prefix in (b"c" + tk, b"p" + tk, b"m" + tk):
        tx.delete_prefix(prefix)


def stats(log, topic: Topic, out: dict) -> None:
    """Stats hook: per group figures under ``log.stats()["groups"][topic][group]``."""
    _COMMITTER.flush(log)  # this process's batched acks count
    prefix = b"c" + _tk(topic.name)
    now = now_ms()
    db = log._meta.db(_NS)  # before the txn: a first open inside one is EINVAL
    with log._meta.read() as txn:
        tx = Tx(txn, db)
        groups = {}
        for k, raw in tx.scan(prefix):
            name = k[len(prefix):].decode()
            cfg = json.loads(raw)
            consumers = len(_live_members(tx, topic.name, name, cfg, now))
            parts = []
            wait_ms = int(cfg["ack_wait_s"] * 1000)
            for p in range(topic.partitions):
                st = _read_state(tx, _part_key(topic.name, name, p))
                v = View._make(topic._parts[p].view())
                lag = _lag_of(st, v.start_offset, v.end_offset, topic._parts[p])
                parts.append({"partition": p, "committed": max(st.committed, v.start_offset),
                              "next": st.next, "end_offset": v.end_offset,
                              "lag": lag,
                              "pending": sum(r[1] - r[0] for r in st.runs if r[2]),
                              "redeliveries": st.redeliveries,
                              "dead_letters": st.dead_letters, "owner": st.owner,
                              "oldest_unacked_age_seconds": _oldest_unacked_age(
                                  topic, p, st, v, lag, now),
                              "oldest_lease_age_seconds": _oldest_lease_age(st, wait_ms, now)})
            groups[name] = {
                "mode": cfg["mode"], "ack_wait_s": cfg["ack_wait_s"],
                "max_deliver": cfg["max_deliver"], "dead_letter": cfg["dead_letter"],
                "consumers": consumers,
                "lag": sum(x["lag"] for x in parts),
                "pending": sum(x["pending"] for x in parts),
                "redeliveries": sum(x["redeliveries"] for x in parts),
                "dead_letters": sum(x["dead_letters"] for x in parts),
                "oldest_unacked_age_seconds": _max_or_none(
                    x["oldest_unacked_age_seconds"] for x in parts),
                "oldest_lease_age_seconds": _max_or_none(
                    x["oldest_lease_age_seconds"] for x in parts),
                "partitions": parts,
            }
    if groups:
        out.setdefault("groups", {})[topic.name] = groups


def _max_or_none(values) -> float | None:
    got = [x for x in values if x is not None]
    return max(got) if got else None


def _oldest_unacked_age(topic: Topic, p: int, st, v, lag: int, now: int) -> float | None:
    """Seconds since the oldest record the group has not settled was appended (its first
    unsettled offset's timestamp); None when it is caught up or the record is unreadable."""
    if lag <= 0:
        return None
    off = max(st.committed, v.start_offset)
    for r in st.runs:  # the first run not acked (the acked prefix is folded already)
        if r[2] is not None and r[1] > off:
            off = max(off, r[0])
            break
    else:
        off = max(off, st.next)
    if off >= v.end_offset:
        return None
    try:
        ts = topic.get(p, off).timestamp_ms
    except (StreamlogError, OSError, LookupError):
        return None
    return max(0.0, (now - ts) / 1000)


def _oldest_lease_age(st, wait_ms: int, now: int) -> float | None:
    """Seconds since the oldest lease still held was taken (or last renewed by
    ``in_progress``): its deadline less the group's ``ack_wait_s``."""
    starts = [r[3] - wait_ms for r in st.runs
              if r[2] is not None and r[2] != gs.FREE and r[3] < gs.FOREVER_MS]
    if not starts:
        return None
    return max(0.0, (now - min(starts)) / 1000)


def on_topic_grown(meta, txn, topic: str, old: dict, new: dict) -> None:
    """Called by ``alter_topic`` in its transaction: every group of a topic that grew
    starts each new partition at offset 0, its first record (as Kafka does for
    partitions added to a topic)."""
    if new["partitions"] <= old["partitions"]:
        return
    tx = Tx(txn, meta.db_in(txn, _NS))
    prefix = b"c" + _tk(topic)
    for k, _ in tx.scan(prefix):
        group = k[len(prefix):].decode()
        for p in range(old["partitions"], new["partitions"]):
            ps = _PartStore(tx, _part_key(topic, group, p))
            if ps.open(write=True) is None:
                ps.create(gs.PartState(0))

