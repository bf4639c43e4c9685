"""Consumer groups: durable, named cursors over a topic that lease records to consumers.

``Topic.group(...)`` opens a :class:`Group` handle, which is one consumer of
the group. Every group sees every record of its topic (pub-sub); inside a
group each record is leased to one consumer at a time (point-to-point), in one
of three modes: ``shared`` (any consumer takes any record), ``key_shared`` (a
key is held by one consumer at a time) and ``exclusive`` (each partition is
owned by one live consumer and delivered in order).

All state lives in the store's LMDB environment (namespace ``groups``), one
value per group and partition (see ``streamlog._groupstate``), so a poll or an
ack is one LMDB write transaction whatever the number of records, and every
process of the machine sees the same leases. docs/groups.md describes the
layout, the algorithms and the decisions taken where the API leaves a choice.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import struct
import time
import uuid
import weakref
from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NamedTuple

from streamlog import _validate
from streamlog._limits import (
    DERIVED_NAME_MAX_CHARS,
    GROUP_DEAD_LETTER_BATCH,
    GROUP_HEARTBEAT_MAX_S,
    GROUP_MAX_PENDING_RECORDS,
    GROUP_MEMBER_FORGET_S,
    MAX_MAX_RECORD_BYTES,
)
from streamlog._types import View, now_ms
from streamlog.backends.local import codec as _codec
from streamlog.backends.local import groupstate as gs
from streamlog.backends.local.storage.meta import Tx
from streamlog.errors import ConfigMismatch, RecordTooLarge, StoreClosed, StreamlogError

if TYPE_CHECKING:
    from streamlog.backends.local.log import Topic

MODES = ("shared", "key_shared", "exclusive")
STARTS = ("earliest", "latest")
_NS = "groups"
_P = struct.Struct(">I")
_MAX_OFFSET = 1 << 63
# Records of the last decoded span a consumer keeps per partition (see _read_range).
_READ_CACHE_RECORDS = 16384
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
    __slots__ = ("_record", "delivery_count", "_group", "_epoch", "_state")

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
        another consumer, or refused after an exclusive takeover)."""
        self._group._log._check()  # a closed store refuses, settled or not
        if self._state:
            return self._state == _ACKED
        return self._group._settle([self], _ACK)[0]

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


# ------------------------------------------------------------- validation
def _validate_options(topic: Topic, name: str, mode, ack_wait_s, max_deliver, backoff_s,
                      start, dead_letter, consumer) -> dict:
    _validate.name(name, "group name")
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, not {type(mode).__name__}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    _validate.seconds(ack_wait_s, "ack_wait_s", allow_zero=False)
    max_deliver = _validate.positive_int(max_deliver, "max_deliver", 1)
    backoff: list[float] | None = None
    if backoff_s is not None:
        if isinstance(backoff_s, str | bytes) or not isinstance(backoff_s, Iterable):
            raise TypeError("backoff_s must be a sequence of seconds")
        backoff = []
        for i, b in enumerate(backoff_s):
            backoff.append(_validate.seconds(b, f"backoff_s[{i}]"))
        backoff = backoff or None
    if not isinstance(start, str):
        raise TypeError(f"start must be a str, not {type(start).__name__}")
    if start not in STARTS:
        raise ValueError(f"start must be 'earliest' or 'latest', not {start!r}")
    if dead_letter is None:
        dead_letter = f"{topic.name}.{name}.dlq"
        if len(dead_letter) > DERIVED_NAME_MAX_CHARS:
            raise ValueError(f"the dead-letter topic name {dead_letter[:40]!r}... would be "
                             f"{len(dead_letter)} characters (at most "
                             f"{DERIVED_NAME_MAX_CHARS}): pass dead_letter=")
    else:
        _validate.name(dead_letter, "dead_letter topic name")
    if dead_letter == topic.name:
        raise ValueError("a group's dead-letter topic cannot be its own topic")
    if consumer is not None:
        _validate.name(consumer, "consumer name")
    return {"mode": mode, "ack_wait_s": float(ack_wait_s), "max_deliver": max_deliver,
            "backoff_s": backoff, "start": start, "dead_letter": dead_letter}


# ------------------------------------------------------------------- open
def open_group(topic: Topic, name: str, mode: str = "shared", ack_wait_s: float = 30,
               max_deliver: int = 5, backoff_s: Sequence[float] | None = None,
               start: str = "earliest", dead_letter: str | None = None,
               consumer: str | None = None) -> Group:
    """Create or join group ``name`` of ``topic`` and return a handle that is one consumer.

    A different ``mode`` than the stored one raises ConfigMismatch and changes
    nothing; other options replace the stored ones (``start`` matters only
    when the group is created: "latest" fixes each partition's end then).
    """
    log = topic._log
    log._check()
    opts = _validate_options(topic, name, mode, ack_wait_s, max_deliver, backoff_s, start,
                             dead_letter, consumer)
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
                tx.put(_part_key(topic.name, name, p), gs.encode(st))
            return cfg
        cfg = json.loads(raw)
        if cfg["mode"] != opts["mode"]:
            raise ConfigMismatch(f"group {name!r} of topic {topic.name!r} exists with "
                                 f"mode={cfg['mode']!r}, not {opts['mode']!r}")
        if any(cfg.get(k) != v for k, v in opts.items()):
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
            key = _part_key(topic, k[len(prefix):].decode(), partition)
            raw = tx.get(key)
            if raw is None:
                continue
            st = gs.decode(raw)
            if gs.clamp(st, 0, end_offset):
                tx.put(key, gs.encode(st))

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
        self._removed_acked = False  # the last poll acked offsets compaction removed
        # partition -> (state bytes, end, start, due_ms, options) of its last look
        # that found nothing deliverable before due_ms (see _poll_once)
        self._idle: dict[int, tuple] = {}
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
        tx.put(self._mkey, _dumps({"c": self.consumer, "t": now}))
        return True

    # ---------------------------------------------------------------- poll
    def poll(self, max_records: int = 100, timeout: float | None = 1.0) -> list[Message]:
        """Up to ``max_records`` messages, waiting up to ``timeout`` seconds for the first.

        Returns [] on timeout (``timeout=None`` waits without limit). Wakes
        as soon as any process appends to the topic, or a lease or delay it
        waits for comes due.
        """
        self._check()
        max_records = _validate.positive_int(max_records, "max_records", 1)
        if timeout is not None:
            timeout = _validate.seconds(timeout, "timeout", allow_inf=True)
        t0 = time.monotonic()
        topic = self.topic
        while True:
            seq = topic.notify_seq_any()  # before looking: an append after this wakes us
            msgs, due_ms = self._poll_once(max_records)
            if msgs:
                return msgs
            if self._removed_acked:  # leased only offsets compaction removed: look again
                continue
            wait = math.inf if timeout is None else timeout - (time.monotonic() - t0)
            if wait <= 0:
                return []
            now = now_ms()
            if due_ms < gs.FOREVER_MS:
                wait = min(wait, max(due_ms - now, 0) / 1000 + 0.0005)
            # Look up at least once per heartbeat interval: a consumer blocked in poll
            # stays live (exclusive groups keep its partitions; stats count it).
            wait = min(wait, self._beat_interval_ms(self._cfg) / 1000)
            topic.wait_any(seq, min(wait, 3600.0))
            self._check()

    def _poll_once(self, max_records: int) -> tuple[list[Message], int]:
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

        def fn(tx: Tx):
            cfg = self._load_cfg(tx)
            aw = int(cfg["ack_wait_s"] * 1000)
            md = cfg["max_deliver"]
            bo = [int(b * 1000) for b in cfg["backoff_s"]] if cfg["backoff_s"] else None
            room = max_records
            dead_room = GROUP_DEAD_LETTER_BATCH
            taken: list[tuple[int, gs.Lease, int]] = []
            due = gs.FOREVER_MS
            beat = self._heartbeat(tx, cfg, now)
            if mode == "exclusive":
                states, owned, draining, claimed = self._assign(tx, cfg, now)
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
                        dead_room -= sum(d[1] - d[0] for d in res.dead)
                        due = min(due, res.due_ms)
                        if res.deliver or res.dead:
                            taken.append((p, res, st.epoch))
                        dirty = dirty or res.changed
                    if dirty:
                        tx.put(pkeys[p], gs.encode(st))
                return cfg, taken, due, beat, {}
            idle = dict(idle_before)  # rebuilt on each run: fn may run twice
            for p in order:
                v = views[p]
                raw = tx.get(pkeys[p])
                if raw is None:
                    raise StreamlogError(f"group {self.name!r} of topic {topic.name!r} "
                                         "was deleted")
                if room <= 0 and dead_room <= 0:
                    break
                c = idle_before.get(p)
                if c is not None and not reclaim and c[0] == raw and c[1] == v.end_offset and \
                        c[2] == v.start_offset and c[4] is cfg and now < c[3]:
                    # Same state, same log, same options as when this partition last had
                    # nothing for us, and nothing comes due before c[3]: skip the decode.
                    due = min(due, c[3])
                    continue
                st = gs.decode(raw)
                dirty = gs.clamp(st, v.start_offset)
                if mode == "shared":
                    res = gs.lease_shared(st, me, now, room, v.end_offset, aw, md, bo, reclaim,
                                          GROUP_MAX_PENDING_RECORDS, dead_room)
                else:
                    new = _read_keys(parts[p], st.next, v.end_offset, room, self._cache)
                    res = gs.lease_key_shared(st, me, now, room, new, aw, md, bo, reclaim,
                                              GROUP_MAX_PENDING_RECORDS, dead_room)
                room -= res.taken
                dead_room -= sum(d[1] - d[0] for d in res.dead)
                due = min(due, res.due_ms)
                if res.deliver or res.dead:
                    taken.append((p, res, st.epoch))
                idle.pop(p, None)
                if dirty or res.changed:
                    tx.put(pkeys[p], gs.encode(st))
                elif res.due_ms > now:
                    idle[p] = (raw, v.end_offset, v.start_offset, res.due_ms, cfg)
            return cfg, taken, due, beat, idle

        idle_before = self._idle
        cfg, taken, due, beat, idle = self._kv.transact(fn)
        self._idle = idle
        self._cfg = cfg
        self._reclaim = False
        self._rr = (self._rr + 1) % n
        if beat:
            self._beat_ms = now
        msgs: list[Message] = []
        jobs = []
        removed: list[tuple[int, int, list[tuple[int, int]]]] = []
        self._removed_acked = False
        for p, res, epoch in taken:
            part = parts[p]
            for lo, hi, count in res.deliver:
                first = len(msgs)
                for r in _read_range(part, lo, hi, self._cache):
                    m = _new_message(Message)
                    m.delivery_count = count
                    m._record = r
                    m._group = self
                    m._epoch = epoch
                    m._state = _OPEN
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
        if removed:
            self._ack_removed(removed)
        return msgs, due

    def _ack_removed(self, removed: list[tuple[int, int, list[tuple[int, int]]]]) -> None:
        """Ack leased offsets of a compacted topic that hold no record any more."""
        me = self.consumer
        exclusive = self.mode == "exclusive"
        pkeys = self._pkeys

        def fn(tx: Tx) -> bool:
            done = False
            for p, epoch, ranges in removed:
                raw = tx.get(pkeys[p])
                if raw is None:
                    continue
                st = gs.decode(raw)
                if exclusive and (st.owner != me or st.epoch != epoch):
                    continue
                if gs.ack(st, me, ranges):
                    tx.put(pkeys[p], gs.encode(st))
                    done = True
            return done

        self._removed_acked = self._kv.transact(fn)

    def _assign(self, tx: Tx, cfg: dict, now: int) -> tuple[dict, set, set, set]:
        """Exclusive mode: spread partitions over the live consumers, one owner each.

        Sticky: a live owner keeps its partitions; a consumer over its fair
        share stops taking new records from the excess and lets go of a
        partition once none of its leases there is live; a consumer under its
        share claims partitions that are free or whose owner closed or went
        silent for ack_wait_s (bumping the partition's epoch, so the old
        owner's acks are refused). Returns (states, owned, draining, claimed):
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
        for p, key in enumerate(self._pkeys):
            raw = tx.get(key)
            if raw is None:
                raise StreamlogError(f"group {self.name!r} of topic {self.topic.name!r} was "
                                     "deleted")
            states[p] = gs.decode(raw)
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
                    tx.put(self._pkeys[p], gs.encode(states[p]))
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
        return states, set(owned), draining, claimed

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
            delay_s = _validate.seconds(delay_s, "delay_s")
            if error is not None and not isinstance(error, str):
                raise TypeError(f"error must be a str or None, not {type(error).__name__}")
        n = len(msgs)
        out = [False] * n
        exclusive = self.mode == "exclusive"
        # Offsets -> ranges before the transaction (it holds LMDB's writer lock), and
        # in one pass per step for the usual batch (one partition, all unsettled): the
        # per-message cost of an ack is what bounds a consumer's records per second.
        ranges_of: dict[int, dict[int, list[tuple[int, int]]]] = {}
        try:  # only poll() sets _group: a message of this handle is a Message
            fast = n > 0 and {m._group for m in msgs} == {self} and \
                {m._state for m in msgs} == {_OPEN}
        except AttributeError:  # not Messages: the careful path names the culprit
            fast = False
        if fast:
            todo: list[int] | range = range(n)
            recs = [m._record for m in msgs]
            parts = {r.partition for r in recs}
            epochs = {m._epoch for m in msgs} if exclusive else {0}
            if len(parts) == 1 and len(epochs) == 1:
                ranges_of[parts.pop()] = {epochs.pop(): gs.to_ranges([r.offset for r in recs])}
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
            ranges_of = _ranges_by_part([msgs[i] for i in todo], exclusive)
        if not todo or self._closed:
            return out
        self._log._check()
        me = self.consumer
        now = now_ms()
        pkeys = self._pkeys

        def fn(tx: Tx):
            cfg = self._load_cfg(tx)
            aw = int(cfg["ack_wait_s"] * 1000)
            md = cfg["max_deliver"]
            bo = [int(b * 1000) for b in cfg["backoff_s"]] if cfg["backoff_s"] else None
            ok: dict[int, list[tuple[int, int]]] = {}
            dead: list[tuple[int, int, int, int, str | None]] = []
            full = False
            beat = self._heartbeat(tx, cfg, now)
            for p, by_epoch in ranges_of.items():
                raw = tx.get(pkeys[p])
                if raw is None:
                    continue
                st = gs.decode(raw)
                if exclusive and st.owner != me:
                    continue  # taken over: the old owner's calls are refused
                ranges = by_epoch.get(st.epoch if exclusive else 0)
                if not ranges:
                    continue
                if action == _ACK:
                    if not full and gs.pending_count(st) >= GROUP_MAX_PENDING_RECORDS:
                        full = True  # pollers may be waiting for room: wake them after
                    changed = gs.ack(st, me, ranges)
                elif action == _DEFER:
                    changed = gs.defer(st, me, ranges, now + int(delay_s * 1000))
                elif action == _EXTEND:
                    if exclusive:  # keep the partition's later leases from expiring first
                        ranges = [(st.committed, st.next)]
                    changed = gs.extend(st, me, ranges, now + aw)
                else:
                    changed = _nack_state(st, me, ranges, now, int(delay_s * 1000), bo, md,
                                          aw, error, dead, p)
                if changed:
                    ok[p] = changed
                    tx.put(pkeys[p], gs.encode(st))
            return ok, dead, beat, full

        ok, dead, beat, full = self._kv.transact(fn)
        if beat:
            self._beat_ms = now
        state = _ACKED if action == _ACK else _NACKED if action in (_NACK, _DEFER) else 0
        if len(ok) == 1 and len(ranges_of) == 1 and len(todo) == n:
            ((p, changed),) = ok.items()
            ((_, asked),) = ranges_of.items()
            if len(asked) == 1 and p in ranges_of and changed == list(asked.values())[0]:
                # every message of the batch succeeded: no per-message lookups
                if state:
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
        for p, lo, hi, count, err in jobs:
            for r in _read_range(parts[p], lo, hi):
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
        me = self.consumer
        pkeys = self._pkeys

        def fn(tx: Tx):
            for p, offsets in done.items():
                raw = tx.get(pkeys[p])
                if raw is None:
                    continue
                st = gs.decode(raw)
                changed = gs.ack(st, me, gs.to_ranges(offsets))
                if changed:
                    st.dead_letters += sum(b - a for a, b in changed)
                    tx.put(pkeys[p], gs.encode(st))

        self._kv.transact(fn)

    # ------------------------------------------------------------- inspect
    def _states(self) -> list[gs.PartState]:
        self._log._check()
        db = self._log._meta.db(_NS)  # before the txn: a first open inside one is EINVAL
        with self._log._meta.read() as txn:
            tx = Tx(txn, db)
            if tx.get(self._ckey) is None:
                raise StreamlogError(f"group {self.name!r} of topic {self.topic.name!r} was "
                                     "deleted")
            return [gs.decode(tx.get(k) or b'{"c":0,"n":0,"r":[]}') for k in self._pkeys]

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
        partition = _validate.partition(partition, self.topic.partitions)
        offset = _validate.offset(offset)
        v = View._make(self.topic._parts[partition].view())
        self._seek({partition: min(max(offset, v.start_offset), v.end_offset)})

    def seek_to_time(self, timestamp_ms: int) -> None:
        """Seek every partition to its first record at or after ``timestamp_ms``."""
        self._check()
        ts = _validate.timestamp(timestamp_ms)
        self._seek({p: self.topic.offset_for_time(p, ts) for p in range(self.topic.partitions)})

    def _seek(self, targets: dict[int, int]) -> None:
        pkeys = self._pkeys

        def fn(tx: Tx):
            self._load_cfg(tx)
            for p, off in targets.items():
                raw = tx.get(pkeys[p])
                st = gs.decode(raw) if raw is not None else gs.PartState()
                gs.seek(st, off)
                tx.put(pkeys[p], gs.encode(st))

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

        def fn(tx: Tx):
            for key in pkeys:
                raw = tx.get(key)
                if raw is None:
                    continue
                st = gs.decode(raw)
                changed = gs.release(st, me, now)
                if st.owner == me:
                    st.owner = None
                    st.epoch += 1
                    changed = changed or [(0, 0)]
                if changed:
                    tx.put(key, gs.encode(st))
            tx.delete(self._mkey)

        try:
            self._kv.transact(fn)
            _wake(self.topic)
        except StoreClosed:
            pass


def _close_ref(ref) -> None:
    g = ref()
    if g is not None:
        g.close()


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


def _nack_state(st: gs.PartState, me: str, ranges, now: int, delay_ms: int, bo, md: int,
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

    changed = gs.apply(st, ranges, change)
    if changed:
        for a, b in changed:
            for run in st.runs:
                if run[0] <= a < run[1]:
                    if run[2] == me:
                        dead.append((p, a, b, run[4], run[5]))
                    break
    return changed


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
    prefix = b"c" + _tk(topic.name)
    now = now_ms()
    db = log._meta.db(_NS)  # before the txn: a first open inside one is EINVAL
    with log._meta.read() as txn:
        tx = Tx(txn, db)
        groups = {}
        for k, raw in tx.scan(prefix):
            name = k[len(prefix):].decode()
            cfg = json.loads(raw)
            aw = int(cfg["ack_wait_s"] * 1000)
            consumers = sum(1 for _, v in tx.scan(_member_prefix(topic.name, name))
                            if now - json.loads(v).get("t", 0) <= aw)
            parts = []
            for p in range(topic.partitions):
                rawp = tx.get(_part_key(topic.name, name, p))
                st = gs.decode(rawp) if rawp is not None else gs.PartState()
                v = View._make(topic._parts[p].view())
                parts.append({"partition": p, "committed": max(st.committed, v.start_offset),
                              "next": st.next, "end_offset": v.end_offset,
                              "lag": _lag_of(st, v.start_offset, v.end_offset,
                                             topic._parts[p]),
                              "pending": sum(r[1] - r[0] for r in st.runs if r[2]),
                              "redeliveries": st.redeliveries,
                              "dead_letters": st.dead_letters, "owner": st.owner})
            groups[name] = {
                "mode": cfg["mode"], "ack_wait_s": cfg["ack_wait_s"],
                "max_deliver": cfg["max_deliver"], "dead_letter": cfg["dead_letter"],
                "consumers": consumers,
                "lag": sum(x["lag"] for x in parts),
                "pending": sum(x["pending"] for x in parts),
                "redeliveries": sum(x["redeliveries"] for x in parts),
                "dead_letters": sum(x["dead_letters"] for x in parts),
                "partitions": parts,
            }
    if groups:
        out.setdefault("groups", {})[topic.name] = groups


