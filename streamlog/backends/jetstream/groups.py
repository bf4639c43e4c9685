"""Consumer groups on JetStream: durable pull consumers, with what they cannot hold in KV.

A group of a topic is one durable pull consumer with explicit acks on each
partition stream (named ``G_<group>_<generation>``); the server keeps the
group's positions, acks, leases and redelivery counts, so a new connection
continues where an old one stopped. What a consumer cannot hold lives in the
store's key-value bucket ``SLG_<store>`` (history 1, read through the stream
leader), under ``<topic>.<group>.`` (both names encoded as stream names are):

=====================  ==================================================
key                    value (JSON)
=====================  ==================================================
``cfg``                the options, and per partition the consumer's
                       generation and start sequence (a seek starts a new
                       generation: a new consumer at the new position)
``r.<p>.<gen>.<off>``  a record's deferrals (deliveries handed back without
                       counting: ``append_delayed`` waits) and the error
                       text of its last ``nack(error=)``
``k.<p>.<gen>``        key_shared: the partition's window: the lowest
                       offset no consumer decided on yet, the decided ones
                       above it, and the keyed records not acknowledged
                       (key hash, holder, lease or due time, deliveries
                       handed back, the delivery expected without backoff)
``x``                  exclusive: live members (heartbeats) and each
                       partition's owner and epoch
``h``                  shared, key_shared: live members (a heartbeat per
                       consumer, written while it polls, gone when it
                       closes): ``group_consumers``, and the refusal of a
                       reset or delete while the group is live
``dl``                 the records moved to the dead-letter topic, per
                       partition (``stats``)
=====================  ==================================================

The group's ``max_deliver`` is enforced here, not by the server (whose own
count includes deliveries handed back unused): the delivery that goes over it
moves the record to the dead-letter topic with its origin headers and
terminates it; a ``nack`` that uses the last delivery does so at once.
docs/backends.md states the mapping and where it differs from the embedded
store.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from streamlog import _tracing, _validate
from streamlog._ext import Record
from streamlog._limits import (
    GROUP_HEARTBEAT_MAX_S,
    GROUP_HOLD_MAX_MS,
    GROUP_MAX_PENDING_RECORDS,
    GROUP_MEMBER_FORGET_S,
)
from streamlog._types import GroupReset, Position, RecordBatch, batch_lease, now_ms
from streamlog._types import empty_columns as _empty_columns
from streamlog._types import record_columns as _record_columns
from streamlog.errors import (
    ConfigMismatch,
    GroupActive,
    RecordTooLarge,
    StoreClosed,
    StreamlogError,
    TopicNotFound,
)

from . import _naming
from ._client import (
    JetStreamError,
    NotFound,
    StoredMsg,
    _translate,
    completing,
    subscribe_inline,
)

__all__ = [
    "DELIVER_AT_MS",
    "Group",
    "Lease",
    "Message",
    "append_delayed",
    "delete_group",
    "delete_group_checked",
    "group_consumers",
    "group_figures",
    "grow_groups",
    "reset_group",
    "group_config",
    "group_stats",
    "list_groups",
    "open_group",
]

log = logging.getLogger("streamlog.jetstream")

MODES = _validate.GROUP_MODES
STARTS = _validate.GROUP_STARTS

# Origin headers of a dead-lettered record (the embedded store's names).
DLQ_TOPIC = "sl-dlq-topic"
DLQ_PARTITION = "sl-dlq-partition"
DLQ_OFFSET = "sl-dlq-offset"
DLQ_GROUP = "sl-dlq-group"
DLQ_DELIVERY_COUNT = "sl-dlq-delivery-count"
DLQ_ERROR = "sl-dlq-error"
DLQ_TIMESTAMP_MS = "sl-dlq-timestamp-ms"
DLQ_TOMBSTONE = "sl-dlq-tombstone"

#: Record header of ``append_delayed``: the time (epoch ms, decimal) before which
#: no group delivers the record.
DELIVER_AT_MS = _validate.DELIVER_AT_MS

#: Records a key_shared group holds leased per partition: each has an entry in the
#: partition's key window, one KV value rewritten by every poll (well under the
#: server's 1 MB message size).
KEY_SHARED_MAX_PENDING = 5_000
#: Pull requests a partition consumer keeps waiting at once (one per polling handle).
MAX_WAITING_PULLS = 4096
#: How long one waiting pull lasts at most; a poll that waits longer renews it.
_LONG_POLL_S = 5.0
#: How long a poll that found only records it must hand back (a key held by
#: another consumer) waits before it looks again.
_SKIP_WAIT_S = 0.02
#: Pause between attempts of a poll that lost its connection.
_RETRY_PAUSE_S = 0.1
#: How long after its end a pull request the server never answered counts as ended
#: (a server restart forgets waiting requests).
_REQUEST_GRACE_S = 2.0
#: How long a pull sent ahead (with a one_at_a_time ack, or by ready_for_next) waits on
#: the server: long enough for the next record of a busy consumer to find it, short so
#: that close() can wait for it to end rather than lose what it brings in flight.
_AHEAD_PULL_S = 0.05
# The body of that pull request (also after an ack's +NXT), encoded once.
_AHEAD_PULL_BODY = json.dumps({"batch": 1, "expires": int(_AHEAD_PULL_S * 1_000_000_000)}).encode()
#: How long close() waits at most for pulls still open to end (expire or deliver).
_CLOSE_PULL_WAIT_S = _AHEAD_PULL_S + 0.25
#: How long a delivery may take from the server to this process, at most, for the
#: local lease deadline (never later than the server's): a tenth of ack_wait_s if less.
_TRANSIT_MARGIN_S = 0.05
_NS = 1_000_000_000
_API = "$JS.API"

_OPEN, _ACKED, _NACKED, _LOST = 0, 1, 2, 3
_ACK, _NACK, _EXTEND, _DEFER = 0, 1, 2, 3


class Lease(NamedTuple):
    """One leased record (``Group.pending()``): ``deadline`` in seconds since the epoch."""

    consumer: str
    partition: int
    offset: int
    deadline: float
    delivery_count: int


# ----------------------------------------------------------------- messages
class Message:
    """A record delivered by ``Group.poll``: the Record fields plus ``delivery_count``.

    ``ack()``, ``nack(delay_s=0, error=None)``, ``in_progress()`` and
    ``defer(delay_s)`` act on its lease and answer False when it was lost (the
    lease ran out, an exclusive takeover, a seek). Settled by its first ack or
    nack; later calls repeat ``ack()``'s answer or return False.
    """

    __slots__ = ("_record", "delivery_count", "_group", "_reply", "_dc", "_gen", "_deadline",
                 "_epoch", "_state", "_keyed")

    _fields = ("topic", "partition", "offset", "timestamp_ms", "key", "value", "headers",
               "delivery_count")

    def __init__(self, record: Record, delivery_count: int, group: Group, reply: str,
                 dc: int, gen: int, deadline: float, epoch: int, keyed: str | None) -> None:
        self._record = record
        self.delivery_count = delivery_count
        self._group = group
        self._reply = reply
        self._dc = dc  # the server's delivery count (deferrals included)
        self._gen = gen
        self._deadline = deadline  # monotonic: the server may redeliver from then on
        self._epoch = epoch
        self._state = _OPEN
        self._keyed = keyed  # key hash in a key_shared group, else None

    topic = property(lambda self: self._record.topic, doc="The topic's name.")
    partition = property(lambda self: self._record.partition, doc="The record's partition.")
    offset = property(lambda self: self._record.offset, doc="The record's offset.")
    timestamp_ms = property(lambda self: self._record.timestamp_ms, doc="The record's time.")
    key = property(lambda self: self._record.key, doc="The key (bytes) or None.")
    value = property(lambda self: self._record.value, doc="The value (bytes).")
    headers = property(lambda self: self._record.headers, doc="The headers (str -> bytes).")

    @property
    def record(self) -> Record:
        """The underlying Record."""
        return self._record

    def ack(self) -> bool:
        """Mark the record processed; False if the lease was lost (it will come again)."""
        self._group._check_store()
        if self._state:
            return self._state == _ACKED
        return self._group._settle([self], _ACK)[0]

    def nack(self, delay_s: float = 0, error: str | None = None) -> bool:
        """Hand the record back for redelivery after ``max(delay_s, backoff)``.

        The delivery counts toward ``max_deliver``; the one that uses the last
        moves the record to the dead-letter topic now, with ``error`` in its
        ``sl-dlq-error`` header (an error given to an earlier nack is kept on
        the server, so it survives restarts). False if the lease was lost.
        """
        self._group._check_store()
        if self._state:
            return False
        return self._group._settle([self], _NACK, delay_s, error)[0]

    def in_progress(self) -> bool:
        """Extend the lease by the group's ``ack_wait_s`` from now; False if it was lost."""
        self._group._check_store()
        if self._state:
            return False
        return self._group._settle([self], _EXTEND)[0]

    def defer(self, delay_s: float) -> bool:
        """Hand the record back until ``delay_s`` from now without counting this delivery."""
        self._group._check_store()
        if self._state:
            return False
        return self._group._settle([self], _DEFER, delay_s)[0]

    async def ack_async(self) -> bool:
        """``ack``, awaited."""
        self._group._check_store()
        if self._state:
            return self._state == _ACKED
        return (await self._group._settle_async([self], _ACK))[0]

    async def nack_async(self, delay_s: float = 0, error: str | None = None) -> bool:
        """``nack``, awaited."""
        self._group._check_store()
        if self._state:
            return False
        return (await self._group._settle_async([self], _NACK, delay_s, error))[0]

    async def in_progress_async(self) -> bool:
        """``in_progress``, awaited."""
        self._group._check_store()
        if self._state:
            return False
        return (await self._group._settle_async([self], _EXTEND))[0]

    async def defer_async(self, delay_s: float) -> bool:
        """``defer``, awaited."""
        self._group._check_store()
        if self._state:
            return False
        return (await self._group._settle_async([self], _DEFER, delay_s))[0]

    def _asdict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self._fields}

    def __repr__(self) -> str:
        return (f"Message(topic={self.topic!r}, partition={self.partition}, "
                f"offset={self.offset}, delivery_count={self.delivery_count}, "
                f"key={self.key!r}, value={self.value!r})")


class _BatchLease:
    """The lease of a ``poll_batch`` result (its ``RecordBatch._lease``): the handle that
    polled it, its Messages in the batch's order, whether it was settled (``state``)
    and what its ack answered."""

    __slots__ = ("group", "msgs", "state", "answers")

    def __init__(self, group: Group, msgs: list[Message]) -> None:
        self.group = group
        self.msgs = msgs
        self.state = _OPEN
        self.answers: np.ndarray | None = None


# ------------------------------------------------------------------ naming
def _base(topic_name: str, group: str) -> str:
    return f"{_naming.encode_token(topic_name)}.{_naming.encode_token(group)}"


def _bucket(topic) -> str:
    return f"SLG_{topic.store_name}"


def consumer_name(group: str, gen: int) -> str:
    """The durable consumer of ``group`` in generation ``gen`` (on every partition stream)."""
    name = f"G_{_naming.encode_token(group)}_{gen}"
    if len(name) <= 200:
        return name
    return f"GH_{hashlib.sha256(group.encode()).hexdigest()[:32]}_{gen}"


def _key_hash(key: bytes) -> str:
    return hashlib.blake2b(key, digest_size=8).hexdigest()


def _is(e: BaseException | None, *names: str) -> bool:
    """Whether ``e`` or an exception it was raised from is of a class named ``names``."""
    while e is not None:
        if any(c.__name__ in names for c in type(e).__mro__):
            return True
        e = e.__cause__
    return False


# ---------------------------------------------------------------------- KV
class _KV:
    """The store's group bucket: get/put/create/update/delete of JSON values, on the
    connection's loop (nats-py's KeyValue, errors translated)."""

    def __init__(self, conn, bucket: str, replicas: int) -> None:
        self.conn = conn
        self.bucket = bucket
        self.replicas = replicas
        self._kv: Any = None
        self._lock: asyncio.Lock | None = None

    async def _open(self) -> Any:
        if self._kv is not None:
            return self._kv
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._kv is None:
                js = self.conn.nc.jetstream(timeout=self.conn.request_timeout)
                try:
                    with _translate(f"key-value bucket {self.bucket}"):
                        self._kv = await js.key_value(self.bucket)
                except Exception as e:
                    if not _is(e, "BucketNotFoundError", "NotFound", "NotFoundError"):
                        raise
                    # A standard bucket (NATS's tools read it): one value per key,
                    # read through the stream leader so a reader sees every write.
                    await self.conn.api(f"STREAM.CREATE.KV_{self.bucket}", {
                        "name": f"KV_{self.bucket}",
                        "description": "streamlog consumer groups",
                        "subjects": [f"$KV.{self.bucket}.>"],
                        "retention": "limits", "storage": "file", "discard": "new",
                        "num_replicas": self.replicas, "max_msgs_per_subject": 1,
                        "max_msgs": -1, "max_bytes": -1, "max_age": 0, "max_msg_size": -1,
                        "allow_rollup_hdrs": True, "deny_delete": True,
                        "allow_direct": False, "duplicate_window": 120 * _NS,
                    })
                    with _translate(f"key-value bucket {self.bucket}"):
                        self._kv = await js.key_value(self.bucket)
        return self._kv

    async def get(self, key: str) -> tuple[Any, int]:
        """(value, revision), or (None, 0) when the key is absent."""
        kv = await self._open()
        try:
            e = await kv.get(key)
        except Exception as exc:
            if _is(exc, "KeyNotFoundError", "KeyDeletedError"):
                return None, 0
            _reraise(exc, f"get {key}")
        if e.value is None or e.operation is not None:
            return None, e.revision or 0
        return json.loads(e.value), e.revision

    async def put(self, key: str, value: Any) -> None:
        kv = await self._open()
        try:
            await kv.put(key, json.dumps(value, separators=(",", ":")).encode())
        except Exception as exc:
            _reraise(exc, f"put {key}")

    async def cas(self, key: str, value: Any, rev: int) -> bool:
        """Write ``value`` if the key's revision is still ``rev`` (0: absent); False if not."""
        kv = await self._open()
        data = json.dumps(value, separators=(",", ":")).encode()
        try:
            if rev:
                await kv.update(key, data, last=rev)
            else:
                await kv.create(key, data)
        except Exception as exc:
            if _is(exc, "KeyWrongLastSequenceError", "KeyExistsError") or \
                    getattr(exc, "err_code", None) == 10071:
                return False
            _reraise(exc, f"update {key}")
        return True

    async def delete(self, key: str) -> None:
        kv = await self._open()
        try:
            await kv.delete(key)
        except Exception as exc:
            _reraise(exc, f"delete {key}")

    async def keys(self, pattern: str) -> list[str]:
        """Keys matching ``pattern`` (subject wildcards), from the stream's subject list."""
        await self._open()
        prefix = f"$KV.{self.bucket}."
        out: list[str] = []
        while True:
            resp = await self.conn.api(f"STREAM.INFO.KV_{self.bucket}",
                                       {"subjects_filter": prefix + pattern,
                                        "offset": len(out)})
            page = (resp.get("state") or {}).get("subjects") or {}
            out.extend(k[len(prefix):] for k in page)
            total = (resp.get("state") or {}).get("num_subjects", 0)
            if not page or len(out) >= total:
                return out

    async def purge_prefix(self, prefix: str) -> None:
        """Remove every key under ``prefix.`` (and ``prefix`` itself) at once."""
        await self._open()
        await self.conn.api(f"STREAM.PURGE.KV_{self.bucket}",
                            {"filter": f"$KV.{self.bucket}.{prefix}.>"})


def _reraise(exc: BaseException, what: str) -> None:
    """Raise ``exc`` as the client module translates NATS errors (JetStreamError,
    TimeoutError); errors without a server description keep their class name."""
    if getattr(exc, "description", "") is None:
        raise JetStreamError(f"{what}: {type(exc).__name__}") from exc
    with _translate(what):
        raise exc


def _kv(topic, replicas: int | None = None) -> _KV:
    """The store's group bucket on ``topic``'s connection; should it not exist yet, it is
    created with the store handle's replicas, or ``replicas`` if more (the replication
    of a topic an R1 handle alters)."""
    conn = topic._conn
    cache = _KV_CACHE.setdefault(conn, {})
    name = _bucket(topic)
    kv = cache.get(name)
    if kv is None:
        r = max(int(getattr(topic._store, "replicas", 1) or 1), replicas or 1)
        kv = cache[name] = _KV(conn, name, r)
    return kv


_KV_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# -------------------------------------------------------------- validation
def _validate_options(topic, name: str, mode, ack_wait_s, max_deliver, backoff_s, start,
                      dead_letter, consumer, subjects=None) -> dict:
    opts = _validate.group_options(topic.name, name, mode, ack_wait_s, max_deliver, backoff_s,
                                   start, dead_letter, consumer)
    opts["subjects"] = _validate.subjects(subjects)  # None: every record
    return opts


def _public(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != "parts"}


def _backoff_s(cfg: dict, count: int) -> float:
    """The group's delay after delivery number ``count`` (the last entry repeats)."""
    bo = cfg.get("backoff_s")
    if not bo or count < 1:
        return 0.0
    return bo[min(count, len(bo)) - 1]


def _lease_s(cfg: dict, count: int) -> float:
    """How long after delivery number ``count`` its holder's ack still counts: the lease,
    then the backoff during which nobody else can take the record."""
    return cfg["ack_wait_s"] + _backoff_s(cfg, count)


def _consumer_config(topic, name: str, cfg: dict, p: int) -> dict:
    gen, start_seq = cfg["parts"][p]
    c: dict[str, Any] = {
        "durable_name": consumer_name(name, gen),
        "ack_policy": "explicit",
        # No server backoff: it would replace the ack wait, and nak delays are not
        # kept under it (nats-server 2.15); the backoff is applied here.
        "ack_wait": int(cfg["ack_wait_s"] * _NS),
        "max_deliver": -1,  # counted here: deferrals are not deliveries
        "max_ack_pending": (KEY_SHARED_MAX_PENDING if cfg["mode"] == "key_shared"
                            else GROUP_MAX_PENDING_RECORDS),
        "max_waiting": MAX_WAITING_PULLS,
        "replay_policy": "instant",
        "num_replicas": 0,
        "metadata": {"streamlog.topic": topic.name, "streamlog.group": name},
    }
    if cfg.get("subjects"):
        # The server filters: records published below the partition's subject with a
        # matching subject (_naming.message_subject) are delivered, the others are
        # never pending for this consumer (num_pending, hence lag, leaves them out).
        base = topic.subject(p)
        c["filter_subjects"] = [_naming.message_filter(base, s) for s in cfg["subjects"]]
    if start_seq:
        c["deliver_policy"] = "by_start_sequence"
        c["opt_start_seq"] = start_seq
    else:
        c["deliver_policy"] = "all"
    return c


async def _ensure_consumer(topic, name: str, cfg: dict, p: int) -> None:
    c = _consumer_config(topic, name, cfg, p)
    stream = topic.stream_name(p)
    # No action: created if absent, updated when the updatable options changed.
    await topic._conn.api(f"CONSUMER.CREATE.{stream}.{c['durable_name']}",
                          {"stream_name": stream, "config": c})


async def _stream_bounds(topic, p: int) -> tuple[int, int]:
    """(start offset, end offset) of a partition, from its stream leader."""
    st = await topic._conn.stream_info(topic.stream_name(p))
    end = st.last_seq
    start = st.first_seq - 1 if st.messages else end
    return start, end


# -------------------------------------------------------------------- open
def open_group(topic: Any, name: str, mode: str = "shared", ack_wait_s: float = 30,
               max_deliver: int = 5, backoff_s: Sequence[float] | None = None,
               start: str = "earliest", dead_letter: str | None = None,
               consumer: str | None = None, subjects: Sequence[str] | None = None) -> Group:
    """Create or join group ``name`` of ``topic``; the handle is one consumer.

    A different ``mode`` than the stored one raises ConfigMismatch and changes
    nothing; other options replace the stored ones and the partition
    consumers are updated to them (``start`` matters only when the group is
    created: "latest" fixes each partition's end then). ``subjects`` becomes
    the consumers' ``filter_subjects``.
    """
    _check_store(topic)
    opts = _validate_options(topic, name, mode, ack_wait_s, max_deliver, backoff_s, start,
                             dead_letter, consumer, subjects)
    cfg = topic._conn.run(_open(topic, name, opts))
    return Group(topic, name, cfg, consumer)


async def _open(topic, name: str, opts: dict) -> dict:
    kv = _kv(topic)
    key = _base(topic.name, name) + ".cfg"
    while True:
        cfg, rev = await kv.get(key)
        if cfg is None:
            parts = []
            for p in range(topic.partitions):
                if opts["start"] == "latest":
                    _, end = await _stream_bounds(topic, p)
                    parts.append([0, end + 1])
                else:
                    parts.append([0, 0])
            cfg = dict(opts, created_ms=now_ms(), partitions=topic.partitions, parts=parts)
            if not await kv.cas(key, cfg, rev):
                continue  # another opener created it first: use theirs
            break
        if cfg["mode"] != opts["mode"]:
            raise ConfigMismatch(f"group {name!r} of topic {topic.name!r} exists with "
                                 f"mode={cfg['mode']!r}, not {opts['mode']!r}")
        if all(cfg.get(k) == v for k, v in opts.items() if k != "start"):
            break
        cfg.update({k: v for k, v in opts.items() if k != "start"})
        if await kv.cas(key, cfg, rev):
            break
    await asyncio.gather(*(_ensure_consumer(topic, name, cfg, p)
                           for p in range(topic.partitions)))
    return cfg


def group_config(topic: Any, name: str) -> dict | None:
    """The stored options of group ``name``, or None when it does not exist."""
    _check_store(topic)
    _validate.name(name, "group name")
    cfg, _ = topic._conn.run(_kv(topic).get(_base(topic.name, name) + ".cfg"))
    return None if cfg is None else _public(cfg)


def list_groups(topic: Any) -> list[str]:
    """Names of ``topic``'s groups, sorted."""
    _check_store(topic)
    keys = topic._conn.run(_kv(topic).keys(f"{_naming.encode_token(topic.name)}.*.cfg"))
    return sorted(_naming.decode_token(k.split(".")[1]) for k in keys)


def delete_group(topic: Any, name: str) -> None:
    """Delete a group's consumers (positions, leases) and its stored state.

    Its dead-letter topic stays. A missing group is not an error. Open
    handles of the group raise StreamlogError on their next poll.
    """
    _check_store(topic)
    _validate.name(name, "group name")
    topic._conn.run(_delete(topic, name))


async def _delete(topic, name: str) -> None:
    kv = _kv(topic)
    base = _base(topic.name, name)
    cfg, _ = await kv.get(base + ".cfg")
    if cfg is not None:
        await kv.delete(base + ".cfg")  # first: handles see the group gone
    for p in range(topic.partitions):
        gens = {cfg["parts"][p][0]} if cfg is not None and p < len(cfg["parts"]) else {0}
        for gen in gens:
            try:
                await topic._conn.delete_consumer(topic.stream_name(p), consumer_name(name, gen))
            except NotFound:
                pass
    await kv.purge_prefix(base)


def committed_positions(topic: Any, name: str) -> dict[int, int]:
    """Group ``name``'s committed position per partition of ``topic``: its partition
    consumer's acknowledgement floor (every offset below it acknowledged or
    terminated), never below the partition's start; StreamlogError when there is no
    such group. Opens no consumer (one missing on the server is made again first)."""
    _check_store(topic)
    _validate.name(name, "group name")
    return topic._conn.run(_committed(topic, name))


async def _committed(topic, name: str) -> dict[int, int]:
    cfg, _ = await _kv(topic).get(_base(topic.name, name) + ".cfg")
    if cfg is None:
        raise StreamlogError(f"topic {topic.name!r} has no group {name!r}")
    out = {}
    for p in range(topic.partitions):
        gen, start_seq = cfg["parts"][p]
        stream = topic.stream_name(p)
        # Everything below the consumer's start sequence is done (a seek or start="latest"
        # made it there): a clustered consumer reports an acknowledgement floor of 0 until
        # its first ack, a single node's the sequence before its start.
        floor = max(start_seq - 1, 0)
        try:
            st = await topic._conn.consumer_info(stream, consumer_name(name, gen))
            floor = max(floor, st.ack_floor_stream_seq)
        except NotFound:  # not made yet: it will start there
            pass
        start, _ = await _stream_bounds(topic, p)
        out[p] = max(floor, start)
    return out


def group_stats(topic: Any) -> dict[str, dict]:
    """Figures of every group of ``topic`` from the servers, as ``stats()["groups"]``
    shows them: options, ``lag``, ``pending`` (delivered, not acknowledged),
    ``redeliveries`` (messages the server is redelivering now), and per partition
    ``committed`` (every offset below it acknowledged), ``next`` (the first offset
    never delivered), ``end_offset``, ``lag``, ``pending``, ``redeliveries``, and the
    ``owner`` in an exclusive group (with ``consumers``: the live ones)."""
    _check_store(topic)
    return topic._conn.run(_group_stats(topic))


async def _group_stats(topic) -> dict[str, dict]:
    kv = _kv(topic)
    out: dict[str, dict] = {}
    keys = await kv.keys(f"{_naming.encode_token(topic.name)}.*.cfg")
    for name in sorted(_naming.decode_token(k.split(".")[1]) for k in keys):
        base = _base(topic.name, name)
        cfg, _ = await kv.get(base + ".cfg")
        if cfg is None:
            continue
        x = None
        if cfg["mode"] == "exclusive":
            x, _ = await kv.get(base + ".x")
        entry: dict[str, Any] = {k: cfg[k] for k in ("mode", "ack_wait_s", "max_deliver",
                                                     "backoff_s", "dead_letter")}
        parts = []
        for p in range(min(topic.partitions, len(cfg["parts"]))):
            gen = cfg["parts"][p][0]
            try:
                st = await topic._conn.consumer_info(topic.stream_name(p),
                                                     consumer_name(name, gen))
            except NotFound:
                continue
            _, end = await _stream_bounds(topic, p)
            part = {"partition": p, "committed": st.ack_floor_stream_seq,
                    "next": st.delivered_stream_seq, "end_offset": end,
                    "lag": st.num_pending + st.num_ack_pending,
                    "pending": st.num_ack_pending, "redeliveries": st.num_redelivered}
            if x is not None:
                part["owner"] = x["o"][p][0] if p < len(x["o"]) else None
            parts.append(part)
        for k in ("lag", "pending", "redeliveries"):
            entry[k] = sum(part[k] for part in parts)
        if x is not None:
            now = now_ms()
            live_ms = int((cfg["ack_wait_s"] + min(GROUP_HEARTBEAT_MAX_S,
                                                   cfg["ack_wait_s"] / 4)) * 1000)
            entry["consumers"] = sorted(c for c, t in x["m"].items() if now - t <= live_ms)
        entry["partitions"] = parts
        out[name] = entry
    return out


def append_delayed(topic: Any, value: Any, deliver_at_ms: int, key: Any = None,
                   headers: Any = None) -> Position:
    """Append a record that no group delivers before ``deliver_at_ms`` (epoch ms).

    Readers see it at once, with the header ``streamlog.deliver-at-ms``. A
    group that draws it early hands it back on the server until its time and
    counts that as a deferral, not a delivery (``max_deliver`` and
    ``delivery_count`` count only real deliveries).
    """
    _check_store(topic)
    return topic.append(value, key=key, headers=_validate.delayed_headers(headers, deliver_at_ms))


def _check_store(topic) -> None:
    check = getattr(topic._store, "raise_if_closed", None)
    if check is not None:
        check()


def _due_ms(record: Record) -> int | None:
    return _validate.deliver_at(record.headers)


# ------------------------------------------------------------------- group
class _Puller:
    """One handle's pull requests: a reply subject per partition, every delivery and
    status collected in one buffer (a delivery that arrives after its poll returned
    is handed out by the next poll)."""

    def __init__(self) -> None:
        self.sub: Any = None
        self.inbox = ""
        self.buf: deque = deque()
        self.open: dict[int, int] = {}  # partition -> deliveries its open request still may bring
        self.sent: dict[int, float] = {}  # partition -> when its last request was sent
        self.ends: dict[int, float] = {}  # partition -> when its open request ends at the latest
        self.missing: set[int] = set()  # partitions whose consumer did not answer (gone)
        self.event: asyncio.Event | None = None
        self._waiter: asyncio.Future | None = None  # the poll waiting in ``wait``

    async def start(self, nc) -> None:
        if self.sub is not None:
            return
        self.event = asyncio.Event()
        self.inbox = nc.new_inbox()
        # Called from the client's reader: the poll waiting for this delivery resumes
        # in the next loop step (no subscription task in between).
        self.sub = await subscribe_inline(nc, self.inbox + ".*", self._on_msg)

    def _on_msg(self, msg) -> None:
        subj = msg.subject
        if subj.startswith(self.inbox):
            p = int(subj.rsplit(".", 1)[1])  # a status, on the request's reply subject
        else:
            # A delivery, on the record's own subject: streamlog.<store>.<topic>.<p>,
            # then .s.<subject> for a record appended with one (_naming).
            p = int(subj.split(".", 4)[3])
        status = (msg.headers or {}).get("Status") if msg.headers else None
        if status:
            if status.startswith("4") or status.startswith("5"):
                self.open.pop(p, None)
                if status == "503" or (status == "409" and "Deleted" in
                                       (msg.headers or {}).get("Description", "")):
                    self.missing.add(p)
        else:
            left = self.open.get(p)
            if left is not None:
                if left <= 1:
                    del self.open[p]
                else:
                    self.open[p] = left - 1
            self.buf.append((p, msg, self.sent.get(p, 0.0), time.monotonic()))
        assert self.event is not None
        self.event.set()
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait(self, timeout: float) -> bool:
        """Until a delivery or status arrives (True: ``event`` is set), or ``timeout``
        seconds pass (False). As ``wait_for(event.wait(), timeout)`` without its task
        and its exception per wait: a poll waits once per record it hands out."""
        assert self.event is not None
        if self.event.is_set():
            return True
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiter = fut
        timer = loop.call_later(max(0.0, timeout), _resolve_none, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._waiter = None
        return self.event.is_set()

    async def request(self, nc, subject: str, p: int, batch: int, expires_s: float | None) -> None:
        body: dict[str, Any] = {"batch": batch}
        if expires_s is None:
            body["no_wait"] = True
        else:
            body["expires"] = max(int(expires_s * _NS), 1_000_000)
        self.opened(p, batch, expires_s)
        await nc.publish(subject, json.dumps(body).encode(), reply=f"{self.inbox}.{p}")

    def opened(self, p: int, batch: int, expires_s: float | None) -> None:
        """Note a pull request for ``p`` about to be sent (by ``request``, or with an ack)."""
        self.open[p] = batch
        self.sent[p] = now = time.monotonic()
        # A server restart or a lost connection forgets requests without answering:
        # one is taken for ended once it should have expired (or, without wait, soon).
        self.ends[p] = now + (expires_s or 0.0) + _REQUEST_GRACE_S

    def is_open(self, p: int) -> bool:
        if p not in self.open:
            return False
        if time.monotonic() > self.ends.get(p, 0.0):
            del self.open[p]
            return False
        return True

    async def stop(self) -> None:
        if self.sub is not None:
            sub, self.sub = self.sub, None
            await sub.unsubscribe()


class Group:
    """One consumer of a consumer group on JetStream (``Topic.group(...)``).

    Not thread-safe: one handle is one consumer (open one per thread).
    Process-safe: any number of processes may consume one group.
    """

    def __init__(self, topic, name: str, config: dict, consumer: str | None) -> None:
        self.topic = topic
        self.name = name
        self.mode: str = config["mode"]
        self.consumer: str = consumer or f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._conn = topic._conn
        self._kv = _kv(topic)
        self._base = _base(topic.name, name)
        self._cfg = config
        self._cfg_at = time.monotonic()
        self._closed = False
        self._dlq = None
        self._rr = 0
        self._puller = _Puller()
        self._ack_next = False  # one_at_a_time: an ack also asks for the next record
        self._out: dict[tuple[int, int], Message] = {}  # (partition, offset) -> open Message
        self._owned: dict[int, int] = {}  # exclusive: partition -> epoch
        self._draining: set[int] = set()
        self._hold: dict[int, float] = {}  # exclusive: partition -> not fetched before
        self._beat_at = -math.inf
        self._streams = [topic.stream_name(p) for p in range(topic.partitions)]
        ref = weakref.ref(self)
        self._closer = lambda: _close_ref(ref)
        on_close = getattr(topic._store, "on_close", None)
        if on_close is not None:
            on_close(self._closer)

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
        return _public(self._cfg)

    def _check_store(self) -> None:
        _check_store(self.topic)

    def _check(self) -> None:
        if self._closed:
            raise StoreClosed(f"group handle {self.consumer!r} of {self.name!r} is closed")
        _check_store(self.topic)

    def _beat_s(self) -> float:
        return min(GROUP_HEARTBEAT_MAX_S, self._cfg["ack_wait_s"] / 4)

    async def _reload(self) -> None:
        cfg, _ = await self._kv.get(self._base + ".cfg")
        if cfg is None:
            raise StreamlogError(f"group {self.name!r} of topic {self.topic.name!r} was deleted")
        self._cfg = cfg
        self._cfg_at = time.monotonic()
        self._puller.missing.clear()
        if len(cfg["parts"]) > len(self._streams) or self.topic.partitions > len(self._streams):
            await self._grown()

    def _pull_subject(self, p: int) -> str:
        gen = self._cfg["parts"][p][0]
        return f"{_API}.CONSUMER.MSG.NEXT.{self._streams[p]}.{consumer_name(self.name, gen)}"

    # -------------------------------------------------------------- poll
    def poll(self, max_records: int = 100, timeout: float | None = 1.0) -> list[Message]:
        """Up to ``max_records`` messages, waiting up to ``timeout`` seconds for the first
        (see ``_poll``); with a tracer provider set, a receive span linked to each
        message's producer span."""
        msgs = self._poll(max_records, timeout)
        if msgs:
            tracer = _tracing.tracer()
            if tracer is not None:
                _tracing.receive(tracer, self.topic.name, msgs)
        return msgs

    def _poll(self, max_records: int = 100, timeout: float | None = 1.0) -> list[Message]:
        """Up to ``max_records`` messages, waiting up to ``timeout`` seconds for the first.

        Returns [] on timeout (``timeout=None`` waits without limit). Records
        appended with ``append_delayed`` are not delivered before their time;
        a record whose deliveries are used up goes to the dead-letter topic.
        """
        max_records, end = self._poll_args(max_records, timeout)
        while True:
            msgs, dead = self._conn.run(self._apoll_riding(max_records, end))
            if dead:
                self._dead_letter(dead)
            if msgs or time.monotonic() >= end:
                return msgs
            self._check()

    async def poll_async(self, max_records: int = 100,
                         timeout: float | None = 1.0) -> list[Message]:
        """``poll``, awaited. Cancelled while it waits, it leases nothing: a delivery
        that comes after is handed out by the handle's next poll."""
        max_records, end = self._poll_args(max_records, timeout)
        return await self._shielded(self._apoll_until(max_records, end),
                                    self._hand_back_polled)

    def _poll_args(self, max_records: Any, timeout: Any) -> tuple[int, float]:
        """A poll's arguments checked (the store open), and its deadline (monotonic)."""
        self._check()
        max_records = _validate.positive_int(max_records, "max_records", 1)
        if timeout is not None:
            timeout = _validate.seconds(timeout, "timeout", allow_inf=True)
        return max_records, math.inf if timeout is None else time.monotonic() + timeout

    @staticmethod
    async def _shielded(coro: Any, hand_back: Any) -> Any:
        """Await a poll that runs to its end in its own task (a cancellation inside the
        NATS client would be lost); cancelled meanwhile, what it leases goes back at
        once through ``hand_back``, uncounted."""
        task = asyncio.ensure_future(coro)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(hand_back)
            raise

    def _hand_back_polled(self, task: asyncio.Future[list[Message]]) -> None:
        if task.cancelled() or task.exception() is not None or not task.result():
            return
        asyncio.ensure_future(self._settle_async(task.result(), _DEFER, 0))

    async def _apoll_until(self, max_records: int, end: float) -> list[Message]:
        while True:
            msgs, dead = await self._apoll_riding(max_records, end)
            if dead:
                await self._adead_letter(dead)
            if msgs or time.monotonic() >= end:
                if msgs:
                    tracer = _tracing.tracer()
                    if tracer is not None:
                        _tracing.receive(tracer, self.topic.name, msgs)
                return msgs
            self._check()

    async def _apoll_riding(self, max_records: int, end: float) -> tuple[list[Message], list]:
        """``_apoll``, riding out a lost connection until ``end`` ([] then); a deleted
        topic is TopicNotFound. Returns the messages and what must be dead-lettered."""
        while True:
            try:
                return await self._apoll(max_records, end)
            except NotFound as e:
                if self._conn.nc.is_connected:
                    raise TopicNotFound(f"topic {self.topic.name!r} does not exist "
                                        f"({e.description})") from None
                raise
            except (TimeoutError, JetStreamError) as e:
                # A lost connection or a server restarting: the client reconnects on
                # its own; the poll rides it out until its timeout, as a Kafka
                # consumer's does. Anything else (or a live connection) is raised.
                nc = self._conn.nc
                if nc.is_connected and not isinstance(e, TimeoutError):
                    raise
                log.warning("poll of group %r: %s; retrying", self.name, e)
                self._check()
                left = end - time.monotonic()
                if left <= 0:
                    return [], []
                await asyncio.sleep(min(left, _RETRY_PAUSE_S))

    async def _apoll(self, max_records: int, end: float) -> tuple[list[Message], list]:
        nc = self._conn.nc
        pl = self._puller
        await pl.start(nc)
        out: list[Message] = []
        dead: list = []
        while True:
            now = time.monotonic()
            if pl.missing or now - self._cfg_at >= GROUP_HEARTBEAT_MAX_S or \
                    self.topic.partitions > len(self._streams):  # the topic grew
                missing = set(pl.missing)
                await self._reload()
                for p in missing:  # still absent after the reload: create it again
                    await _ensure_consumer(self.topic, self.name, self._cfg, p)
            if self.mode == "exclusive":
                await self._assign(force=not self._owned)
            else:
                await self._heartbeat()
            parts = self._parts()
            skipped = False
            # What arrived since the last poll first, then one quick pass over
            # every partition (rotating, so partitions share the room fairly).
            if pl.buf:
                skipped |= await self._admit(max_records - len(out), out, dead)
            n = len(parts)
            for i in range(n):
                room = max_records - len(out)
                if room <= 0:
                    break
                p = parts[(self._rr + i) % n]
                if pl.is_open(p):
                    continue
                assert pl.event is not None
                pl.event.clear()
                await pl.request(nc, self._pull_subject(p), p, room, None)
                while pl.is_open(p):
                    await pl.wait(_REQUEST_GRACE_S)
                    pl.event.clear()
                skipped |= await self._admit(max_records - len(out), out, dead)
            self._rr += 1
            if out or dead:
                return out, dead
            if pl.missing:
                continue  # a consumer is gone (a seek, a deleted group): look again
            now = time.monotonic()
            if now >= end:
                return out, dead
            if skipped:
                await asyncio.sleep(min(_SKIP_WAIT_S, end - now))
                continue
            # Wait: one request for a single delivery per partition, until one comes.
            wait = min(end - now, _LONG_POLL_S)
            if self.mode == "exclusive":
                wait = min(wait, self._beat_s())
            assert pl.event is not None
            pl.event.clear()
            for p in parts:
                if not pl.is_open(p):
                    await pl.request(nc, self._pull_subject(p), p, 1, wait)
            give_up = time.monotonic() + wait
            while not pl.buf and not pl.missing and time.monotonic() < give_up:
                if not parts or not any(pl.is_open(p) for p in parts):
                    await asyncio.sleep(max(0.0, give_up - time.monotonic()))
                    break
                if not await pl.wait(min(give_up - time.monotonic(), self._beat_s())):
                    if time.monotonic() >= give_up or self.mode == "exclusive":
                        break
                    await self._heartbeat()  # still polling: still a live consumer
                    continue
                pl.event.clear()

    def _parts(self) -> list[int]:
        if self.mode == "exclusive":
            now = time.monotonic()
            return sorted(p for p in self._owned
                          if p not in self._draining and self._hold.get(p, 0) <= now)
        return list(range(min(len(self._streams), len(self._cfg["parts"]))))

    async def _admit(self, room: int, out: list[Message], dead: list) -> bool:
        """Turn buffered deliveries into Messages (up to ``room``); hand back what must
        wait; list what used up its deliveries. True if something was handed back."""
        pl = self._puller
        cfg = self._cfg
        md = cfg["max_deliver"]
        got: dict[int, list] = {}
        # The server delivered each message after its request was sent and before
        # it arrived here; its lease runs from then. A lower bound of that moment
        # (the arrival, less a transit margin, never before the request) gives a
        # local deadline that never outlives the server's.
        margin = min(_TRANSIT_MARGIN_S, cfg["ack_wait_s"] / 10)
        while pl.buf:
            p, msg, sent, arrived = pl.buf.popleft()
            got.setdefault(p, []).append((msg, max(sent, arrived - margin)))
        skipped = False
        now = now_ms()
        settle: list[tuple[str, bytes]] = []
        stale_before = time.monotonic() - _hold_s(cfg) if self._ack_next else -math.inf
        for p, msgs in got.items():
            gen = cfg["parts"][p][0]
            cname = consumer_name(self.name, gen)
            items = []
            for msg, t_deliv in msgs:
                md_ = msg.metadata
                if md_.consumer != cname:
                    continue  # a consumer replaced by a seek: its deliveries are void
                seq = md_.sequence.stream
                stored = StoredMsg(seq, msg.subject, msg.data, dict(msg.headers or {}),
                                   int(md_.timestamp.timestamp() * _NS) if md_.timestamp else 0)
                rec = self.topic._record(p, stored)
                items.append((rec, md_.num_delivered, msg.reply, t_deliv))
            items.sort(key=lambda it: it[0].offset)
            # Deferrals (and nack errors) of records delivered before.
            extra: dict[int, dict] = {}
            again = [it for it in items if it[1] > 1]
            if again and not (self.mode == "key_shared"
                              and all(it[0].key is not None for it in again)):
                vals = await asyncio.gather(*(self._kv.get(self._rkey(p, gen, it[0].offset))
                                              for it in again))
                for it, (v, _) in zip(again, vals, strict=True):
                    if v:
                        extra[it[0].offset] = v
            if self.mode == "key_shared" and items:
                decided = await self._key_window(p, gen, items, now, room - len(out))
            else:
                decided = None
            epoch = self._owned.get(p, 0)
            for rec, dc, reply, t_deliv in items:
                off = rec.offset
                keyed = decided is not None and rec.key is not None
                if keyed:
                    verdict, skips, wait_s = decided[off]
                    eff = dc - skips
                    if verdict == "skip":
                        skipped = True
                        settle.append((reply, b"-NAK"))
                        continue
                    if verdict == "defer":
                        settle.append((reply, _nak(wait_s)))
                        continue
                else:
                    r = extra.get(off) or {}
                    eff = dc - r.get("d", 0)
                    due = _due_ms(rec)
                    wait_s = 0.0
                    if due is not None and due > now:
                        wait_s = (due - now) / 1000  # appended with a delay
                    elif eff <= md and dc > 1 and r.get("ok") != dc:
                        # back after its lease ran out: not before the backoff
                        wait_s = _backoff_s(cfg, eff - 1)
                    if wait_s > 0:
                        await self._hand_back(p, gen, off, r, dc)
                        settle.append((reply, _nak(wait_s)))
                        continue
                if eff > md:
                    if keyed:
                        err = ((await self._kv.get(self._rkey(p, gen, off)))[0] or {}).get("e")
                    else:
                        err = (extra.get(off) or {}).get("e")
                    dead.append((p, gen, rec, md, err, reply, keyed))
                    continue
                if not keyed and (len(out) >= room or t_deliv < stale_before):
                    # More than the room (several partitions answered a wait at
                    # once), or asked for by a one_at_a_time ack and not polled
                    # soon after: hand it back without counting the delivery.
                    await self._hand_back(p, gen, off, extra.get(off), dc)
                    settle.append((reply, b"-NAK"))
                    continue
                m = Message(rec, eff, self, reply, dc, gen, t_deliv + _lease_s(cfg, eff),
                            epoch, _key_hash(rec.key) if keyed else None)
                self._out[(p, off)] = m
                out.append(m)
        if settle:
            nc = self._conn.nc
            for reply, payload in settle:
                await nc.publish(reply, payload)
        return skipped

    def _rkey(self, p: int, gen: int, offset: int) -> str:
        return f"{self._base}.r.{p}.{gen}.{offset}"

    async def _hand_back(self, p: int, gen: int, offset: int, known: dict | None,
                         dc: int) -> None:
        """Count a delivery handed back unused (a deferral), and mark the next one as
        expected (no backoff: it does not follow an expired lease)."""
        v = dict(known or {})
        v["d"] = v.get("d", 0) + 1
        v["ok"] = dc + 1
        await self._kv.put(self._rkey(p, gen, offset), v)

    # ---------------------------------------------------------- key_shared
    async def _key_window(self, p: int, gen: int, items: list, now: int,
                          room: int) -> dict[int, tuple[str | None, int, float]]:
        """key_shared: decide, in one compare-and-set of the partition's window, which
        keyed records this consumer takes, which it hands back (a key held by another
        consumer, an earlier record of the key waiting, or an earlier record not yet
        seen by any consumer's decision, whose key is unknown), which wait for their time.

        The window holds ``f``, the lowest offset not decided yet, ``dn``, the offsets
        decided above it, and ``e``, the keyed records not acknowledged yet. Returns
        offset -> (verdict, deliveries handed back so far, wait): verdict None (take),
        "skip" or "defer".
        """
        key = f"{self._base}.k.{p}.{gen}"
        me = self.consumer
        cfg = self._cfg
        md = cfg["max_deliver"]
        while True:
            win, rev = await self._kv.get(key)
            if win is None:
                # A new window starts at the first record the consumer has not had acked.
                st = await self._conn.consumer_info(self._streams[p], consumer_name(self.name, gen))
                win = {"f": st.ack_floor_stream_seq, "dn": [], "e": {}}
            entries: dict[str, list] = win["e"]
            f: int = win["f"]
            dn = set(win["dn"])
            if items and f < items[0][0].offset:
                # Records retention removed before anyone drew them are decided too.
                start, _ = await _stream_bounds(self.topic, p)
                if start > f:
                    f = start
                    dn = {o for o in dn if o >= f}
            decided: dict[int, tuple[str | None, int, float]] = {}
            blocked_keys: set[str] = set()
            taken = 0
            for rec, dc, _reply, _t in items:
                off = rec.offset
                if off < f or off in dn:
                    pass  # decided before (a redelivery)
                else:
                    dn.add(off)
                while f in dn:
                    dn.discard(f)
                    f += 1
                while f < off and cfg.get("subjects"):
                    # Records the subject filter passes over are never delivered to
                    # this group: decided. Skip to the next one it matches.
                    nxt = await self._first_match(p, f, off)
                    if nxt <= f:
                        break
                    f = nxt
                    dn = {o for o in dn if o >= f}
                    while f in dn:
                        dn.discard(f)
                        f += 1
                if rec.key is None:
                    continue
                h = _key_hash(rec.key)
                e = entries.get(str(off))
                skips = e[3] if e else 0
                eff = dc - skips
                blocked = h in blocked_keys or f < off  # an undecided record before it
                if not blocked:
                    for o2, (h2, owner, until, _s, _ok) in entries.items():
                        if h2 != h or int(o2) == off:
                            continue
                        live = until > now
                        if owner not in ("", me) and live:
                            blocked = True  # held by another consumer
                            break
                        if int(o2) < off and not (owner == me and live):
                            blocked = True  # an earlier record of the key waits
                            break
                due = _due_ms(rec)
                wait_s = 0.0
                if due is not None and due > now:
                    wait_s = (due - now) / 1000
                elif eff <= md and dc > 1 and e is not None and e[4] != dc:
                    wait_s = _backoff_s(cfg, eff - 1)  # back after its lease ran out
                if blocked or (eff <= md and taken >= room):
                    entries[str(off)] = [h, "", now, skips + 1, dc + 1]
                    decided[off] = ("skip", skips, 0.0)
                    blocked_keys.add(h)
                elif wait_s > 0:
                    entries[str(off)] = [h, "", now + int(wait_s * 1000), skips + 1, dc + 1]
                    decided[off] = ("defer", skips, wait_s)
                    blocked_keys.add(h)
                else:
                    if eff <= md:
                        taken += 1
                        entries[str(off)] = [h, me, now + int(_lease_s(cfg, eff) * 1000),
                                             skips, 0]
                    decided[off] = (None, skips, 0.0)
            win = {"f": f, "dn": sorted(dn), "e": entries}
            if await self._kv.cas(key, win, rev):
                return decided

    async def _first_match(self, p: int, offset: int, limit: int) -> int:
        """The first offset at or after ``offset`` (at most ``limit``) whose record the
        group's subject filter matches: one direct get per pattern, by subject."""
        base = self.topic.subject(p)
        best = limit
        for pattern in self._cfg["subjects"]:
            msgs = await self._conn.get_range(
                self._streams[p], offset + 1, 1,
                next_by_subj=_naming.message_filter(base, pattern))
            if msgs:
                best = min(best, msgs[0].seq - 1)
        return best

    async def _window_settle(self, p: int, gen: int, msgs: list[Message], action: int,
                             until: int) -> None:
        key = f"{self._base}.k.{p}.{gen}"
        me = self.consumer
        while True:
            win, rev = await self._kv.get(key)
            if not win:
                return
            changed = False
            entries = win["e"]
            for m in msgs:
                e = entries.get(str(m.offset))
                if e is None or e[1] != me:
                    continue
                changed = True
                if action == _ACK:
                    del entries[str(m.offset)]
                elif action == _EXTEND:
                    e[2] = until
                else:
                    e[1], e[2], e[4] = "", until, m._dc + 1
                    if action == _DEFER:
                        e[3] += 1
            if not changed or await self._kv.cas(key, win, rev):
                return

    # ------------------------------------------------------------ liveness
    _hb_at = -math.inf  # when this handle last noted its heartbeat (monotonic)

    async def _heartbeat(self) -> None:
        """shared, key_shared: note in the bucket, at most every ``_beat_s``, that this
        consumer is polling (``group_consumers``; a reset or delete refuses while a
        group has live consumers). An exclusive group's heartbeats are its ``x`` key."""
        now_m = time.monotonic()
        if now_m - self._hb_at < self._beat_s():
            return
        self._hb_at = now_m
        try:
            await _beat(self._kv, self._base + ".h", self.consumer, self._cfg)
        except (JetStreamError, TimeoutError) as e:  # not the poll's to fail: next beat
            log.debug("heartbeat of %r in group %r: %s", self.consumer, self.name, e)

    async def _grown(self) -> None:
        """The topic gained partitions (``alter_topic``): this handle and its topic
        handle take the new count, and the group consumes the new partitions."""
        await self.topic._arefresh()
        self._streams = [self.topic.stream_name(p) for p in range(self.topic.partitions)]

    # ----------------------------------------------------------- exclusive
    async def _assign(self, force: bool = False) -> None:
        """Exclusive mode: heartbeat, and spread the partitions over the live consumers
        (sticky; a consumer silent for ``ack_wait_s`` plus a heartbeat loses its
        partitions, epoch + 1, so its late acks are refused)."""
        now_m = time.monotonic()
        if not force and now_m - self._beat_at < self._beat_s():
            return
        key = self._base + ".x"
        me = self.consumer
        n_parts = self.topic.partitions
        while True:
            now = now_ms()
            x, rev = await self._kv.get(key)
            x = x or {"m": {}, "o": [[None, 0] for _ in range(n_parts)]}
            x["o"].extend([None, 0] for _ in range(n_parts - len(x["o"])))  # a grown topic
            aw_ms = int((self._cfg["ack_wait_s"] + self._beat_s()) * 1000)
            forget = now - int(max(GROUP_MEMBER_FORGET_S, 10 * self._cfg["ack_wait_s"]) * 1000)
            members = {c: t for c, t in x["m"].items() if t >= forget}
            members[me] = now
            live = sorted(c for c, t in members.items() if now - t <= aw_ms)
            owners = x["o"]
            i = live.index(me)
            quota = n_parts // len(live) + (1 if i < n_parts % len(live) else 0)
            owned = [p for p in range(n_parts) if owners[p][0] == me]
            draining: set[int] = set()
            if len(owned) > quota:
                for p in owned[quota:]:
                    if any(k[0] == p and m._deadline > now_m for k, m in self._out.items()):
                        draining.add(p)
                    else:
                        owners[p] = [None, owners[p][1] + 1]
                owned = owned[:quota] + sorted(draining)
            elif len(owned) < quota:
                for p in range(n_parts):
                    if len(owned) >= quota:
                        break
                    if owners[p][0] is None or owners[p][0] not in live:
                        owners[p] = [me, owners[p][1] + 1]
                        owned.append(p)
            x = {"m": members, "o": owners}
            if await self._kv.cas(key, x, rev):
                break
        self._beat_at = now_m
        self._owned = {p: owners[p][1] for p in owned}
        self._draining = draining

    async def _owners(self) -> list:
        x, _ = await self._kv.get(self._base + ".x")
        return x["o"] if x else []

    # -------------------------------------------------------- columnar poll
    def poll_batch(self, max_records: int = 1000, timeout: float | None = 1.0) -> RecordBatch:
        """Up to ``max_records`` records of ONE partition as a leased ``RecordBatch`` (see
        ``streamlog.api.Group.poll_batch``). Here the records are polled as ``poll``
        polls them; those of partitions other than the first message's go back at
        once, their delivery not counted (a batch has one partition), and the batch
        keeps its Messages privately, for ``ack_batch`` / ``nack_batch``."""
        msgs = self._poll(max_records, timeout)
        batch = self._batch_of(msgs)
        if len(batch):
            tracer = _tracing.tracer()
            if tracer is not None:
                _tracing.receive_batch(tracer, self.topic.name, batch)
        return batch

    async def poll_batch_async(self, max_records: int = 1000,
                               timeout: float | None = 1.0) -> RecordBatch:
        """``poll_batch``, awaited. Cancelled while it waits, it leases nothing."""
        max_records, end = self._poll_args(max_records, timeout)
        return await self._shielded(self._apoll_batch(max_records, end), self._hand_back_batch)

    async def _apoll_batch(self, max_records: int, end: float) -> RecordBatch:
        while True:
            msgs, dead = await self._apoll_riding(max_records, end)
            if dead:
                await self._adead_letter(dead)
            if msgs or time.monotonic() >= end:
                rest = [m for m in msgs if m.partition != msgs[0].partition] if msgs else []
                if rest:
                    await self._settle_async(rest, _DEFER, 0)
                batch = self._batch_of([m for m in msgs if m.partition == msgs[0].partition]
                                       if rest else msgs, handed_back=True)
                if len(batch):
                    tracer = _tracing.tracer()
                    if tracer is not None:
                        _tracing.receive_batch(tracer, self.topic.name, batch)
                return batch
            self._check()

    def _hand_back_batch(self, task: asyncio.Future[RecordBatch]) -> None:
        if task.cancelled() or task.exception() is not None or not len(task.result()):
            return
        lease = task.result()._lease
        assert isinstance(lease, _BatchLease)
        lease.state = _NACKED
        asyncio.ensure_future(self._settle_async(lease.msgs, _DEFER, 0))

    def _batch_of(self, msgs: list[Message], handed_back: bool = False) -> RecordBatch:
        """The RecordBatch of polled messages: those of the first one's partition, in
        offset order; the others go back uncounted (unless ``handed_back`` already)."""
        if msgs:
            p = msgs[0].partition
            mine = [m for m in msgs if m.partition == p]
            if len(mine) < len(msgs) and not handed_back:
                self._settle([m for m in msgs if m.partition != p], _DEFER, 0)
            mine.sort(key=lambda m: m.offset)
            cols = _record_columns([m._record for m in mine])
        else:
            p, mine, cols = -1, [], _empty_columns()
        batch = RecordBatch(self.topic.name, p, cols)
        counts = np.fromiter((m.delivery_count for m in mine), np.int64, len(mine))
        counts.flags.writeable = False
        batch.delivery_counts = counts
        batch._lease = _BatchLease(self, mine)
        return batch

    def _defer_batch(self, batch: RecordBatch) -> None:
        """Hand a ``poll_batch`` result nobody took back to the group at once, its
        delivery not counted (``streamlog.aio``: a poll cancelled meanwhile)."""
        lease = self._batch_lease(batch, _DEFER, 0, None)
        if lease.state == _OPEN:
            lease.state = _NACKED
            self._settle(lease.msgs, _DEFER, 0)

    def _batch_lease(self, batch: RecordBatch, action: int, delay_s: float,
                     error: str | None) -> _BatchLease:
        """The lease of a batch this handle's poll_batch returned (ValueError otherwise,
        TypeError for a wrong argument), checked before anything changes."""
        self._check_store()
        return batch_lease(batch, self, _BatchLease, action == _NACK, delay_s, error)[0]

    def _answers(self, lease: _BatchLease, action: int,
                 answers: list[bool] | None) -> np.ndarray:
        """A settle's answers as a read-only bool array; the lease remembers them."""
        if answers is None:  # settled before
            if action == _ACK and lease.answers is not None:
                return lease.answers
            out = np.zeros(len(lease.msgs), np.bool_)
        else:
            out = np.array(answers, np.bool_)
            lease.state = _ACKED if action == _ACK else _NACKED
            if action == _ACK:
                lease.answers = out
        out.flags.writeable = False
        return out

    def ack_batch(self, batch: RecordBatch) -> np.ndarray:
        """Ack every record of a ``poll_batch`` result at once (``ack`` of its Messages);
        a bool array, False where the lease was lost."""
        lease = self._batch_lease(batch, _ACK, 0, None)
        if lease.state != _OPEN:
            return self._answers(lease, _ACK, None)
        return self._answers(lease, _ACK, self._settle(lease.msgs, _ACK))

    def nack_batch(self, batch: RecordBatch, delay_s: float = 0,
                   error: str | None = None) -> np.ndarray:
        """Nack every record of a ``poll_batch`` result at once (see ``Message.nack``)."""
        lease = self._batch_lease(batch, _NACK, delay_s, error)
        if lease.state != _OPEN:
            return self._answers(lease, _NACK, None)
        return self._answers(lease, _NACK, self._settle(lease.msgs, _NACK, delay_s, error))

    async def ack_batch_async(self, batch: RecordBatch) -> np.ndarray:
        """``ack_batch``, awaited."""
        lease = self._batch_lease(batch, _ACK, 0, None)
        if lease.state != _OPEN:
            return self._answers(lease, _ACK, None)
        return self._answers(lease, _ACK, await self._settle_async(lease.msgs, _ACK))

    async def nack_batch_async(self, batch: RecordBatch, delay_s: float = 0,
                               error: str | None = None) -> np.ndarray:
        """``nack_batch``, awaited."""
        lease = self._batch_lease(batch, _NACK, delay_s, error)
        if lease.state != _OPEN:
            return self._answers(lease, _NACK, None)
        return self._answers(lease, _NACK,
                             await self._settle_async(lease.msgs, _NACK, delay_s, error))

    # ---------------------------------------------------------------- settle
    def ack(self, msgs: Iterable[Message]) -> list[bool]:
        """Ack many messages at once; returns each one's ``ack()`` answer."""
        self._check_store()
        return self._settle(_as_list(msgs), _ACK)

    def nack(self, msgs: Iterable[Message], delay_s: float = 0,
             error: str | None = None) -> list[bool]:
        """Nack many messages at once (see ``Message.nack``)."""
        self._check_store()
        return self._settle(_as_list(msgs), _NACK, delay_s, error)

    def _settle(self, msgs: list[Message], action: int, delay_s: float = 0,
                error: str | None = None) -> list[bool]:
        out, todo, delay_s = self._to_settle(msgs, action, delay_s, error)
        if not todo or self._closed:
            return out
        if action == _ACK and len(todo) == 1 and self._ack_next and \
                self._ack_and_pull(msgs[todo[0]]):
            out[todo[0]] = True
            return out
        answers, dead = self._conn.run(self._asettle([msgs[i] for i in todo], action,
                                                     delay_s, error))
        for i, ok in zip(todo, answers, strict=True):
            out[i] = ok
        if dead:
            self._dead_letter(dead)
        return out

    async def _settle_async(self, msgs: list[Message], action: int, delay_s: float = 0,
                            error: str | None = None) -> list[bool]:
        """``_settle``, awaited; cancelled, the settle still completes whole."""
        out, todo, delay_s = self._to_settle(msgs, action, delay_s, error)
        if not todo or self._closed:
            return out
        if action == _ACK and len(todo) == 1 and self._ack_next and \
                self._ack_and_pull(msgs[todo[0]]):
            out[todo[0]] = True  # as in _settle: sent by a loop callback, nothing awaited
            return out
        return await completing(self._settle_todo(msgs, out, todo, action, delay_s, error))

    async def _settle_todo(self, msgs: list[Message], out: list[bool], todo: list[int],
                           action: int, delay_s: float, error: str | None) -> list[bool]:
        if not todo or self._closed:
            return out
        answers, dead = await self._asettle([msgs[i] for i in todo], action, delay_s, error)
        for i, ok in zip(todo, answers, strict=True):
            out[i] = ok
        if dead:
            await self._adead_letter(dead)
        return out

    async def ack_async(self, msgs: Iterable[Message]) -> list[bool]:
        """``ack``, awaited."""
        self._check_store()
        return await self._settle_async(_as_list(msgs), _ACK)

    async def nack_async(self, msgs: Iterable[Message], delay_s: float = 0,
                         error: str | None = None) -> list[bool]:
        """``nack``, awaited."""
        self._check_store()
        return await self._settle_async(_as_list(msgs), _NACK, delay_s, error)

    def _to_settle(self, msgs: list[Message], action: int, delay_s: float,
                   error: str | None) -> tuple[list[bool], list[int], float]:
        """Check a settle's arguments: the answers known already (settled messages), the
        indexes of the messages still to settle, and the checked delay."""
        self._check_store()
        if action in (_NACK, _DEFER):
            delay_s = _validate.seconds(delay_s, "delay_s")
            if error is not None and not isinstance(error, str):
                raise TypeError(f"error must be a str or None, not {type(error).__name__}")
        out = [False] * len(msgs)
        todo = []
        for i, m in enumerate(msgs):
            if not isinstance(m, Message):
                raise TypeError(f"expected Messages, not {type(m).__name__}")
            if m._group is not self:
                raise ValueError("a message can be settled only through the group "
                                 "handle that delivered it")
            if m._state:
                out[i] = m._state == _ACKED if action == _ACK else False
            else:
                todo.append(i)
        return out, todo, delay_s

    async def _asettle(self, msgs: list[Message], action: int, delay_s: float,
                       error: str | None) -> tuple[list[bool], list]:
        now_m = time.monotonic()
        cfg = self._cfg
        owners = await self._owners() if self.mode == "exclusive" else None
        if self.mode == "exclusive":
            await self._assign()  # a sign of life
        valid = []
        for m in msgs:
            ok = m._deadline > now_m and m._gen == cfg["parts"][m.partition][0]
            if ok and owners is not None:
                o = owners[m.partition] if m.partition < len(owners) else [None, 0]
                ok = o[0] == self.consumer and o[1] == m._epoch
            valid.append(ok)
        sends: list[tuple[Message, bytes]] = []
        dead: list = []
        notes: list[Message] = []
        revoked: list[Message] = []
        bo = cfg.get("backoff_s")
        for m, ok in zip(msgs, valid, strict=True):
            if not ok:
                if action in (_ACK, _NACK, _DEFER):
                    m._state = _LOST if action == _ACK else _NACKED
                    self._out.pop((m.partition, m.offset), None)
                continue
            if action == _ACK:
                sends.append((m, b"+ACK"))
            elif action == _EXTEND:
                sends.append((m, b"+WPI"))
                if self.mode == "exclusive":
                    # The owner's later leases of the partition too: none of the
                    # batch expires before the record being worked on.
                    sends.extend((o, b"+WPI") for (p, _off), o in self._out.items()
                                 if p == m.partition and o._state == _OPEN
                                 and o not in msgs and all(o is not x for x, _ in sends))
            elif action == _DEFER:
                sends.append((m, _nak(delay_s) if delay_s > 0 else b"-NAK"))
                if m._keyed is None:
                    notes.append(m)
            else:
                if m.delivery_count >= cfg["max_deliver"]:
                    dead.append(m)
                    continue
                wait = max(delay_s, _backoff_s(cfg, m.delivery_count))
                sends.append((m, _nak(wait) if wait > 0 else b"-NAK"))
                if error is not None or (bo and m._keyed is None):
                    notes.append(m)
                if self.mode == "exclusive":
                    revoked.extend(self._rewind(m, wait, msgs))
        revoked = list({id(m): m for m in revoked}.values())
        if notes or revoked:
            # Before the nak: the redelivery must find what it needs to know.
            await asyncio.gather(*(self._note(m, action, error) for m in notes),
                                 *(self._note(m, _DEFER, None) for m in revoked))
        for m in revoked:  # after the record they queued behind: redelivered in order
            hold = self._hold.get(m.partition, 0) - now_m
            sends.append((m, _nak(hold) if hold > 0 else b"-NAK"))
        answers = await _requests(self._conn.nc, [(m._reply, p) for m, p in sends])
        good = {id(m): a for (m, _), a in zip(sends, answers, strict=True)}
        now = now_ms()
        if self.mode == "key_shared":
            by_part: dict[tuple[int, int], list[Message]] = {}
            for m, _ in sends:
                if m._keyed is not None and good[id(m)]:
                    by_part.setdefault((m.partition, m._gen), []).append(m)
            for (p, gen), ms in by_part.items():
                if action == _EXTEND:
                    until = now + int(_lease_s(cfg, ms[0].delivery_count) * 1000)
                elif action == _ACK:
                    until = 0
                else:
                    wait = delay_s if action == _DEFER else max(
                        delay_s, _backoff_s(cfg, ms[0].delivery_count))
                    until = now + int(wait * 1000)
                await self._window_settle(p, gen, ms, action, until)
        if action == _ACK:
            cleanup = [m for m, _ in sends if good[id(m)] and m._dc > 1]
            if cleanup:
                await asyncio.gather(*(self._kv.delete(self._rkey(m.partition, m._gen, m.offset))
                                       for m in cleanup))
        for m in revoked:
            m._state = _LOST
            self._out.pop((m.partition, m.offset), None)
        if action == _EXTEND:
            for m, _ in sends:
                if good[id(m)]:
                    m._deadline = now_m + _lease_s(cfg, m.delivery_count)
        res = []
        for m, ok in zip(msgs, valid, strict=True):
            if not ok:
                res.append(False)
                continue
            if m in dead:
                res.append(True)
                continue
            a = good[id(m)]
            res.append(a)
            if action == _EXTEND:
                continue
            m._state = (_ACKED if a else _LOST) if action == _ACK else _NACKED
            self._out.pop((m.partition, m.offset), None)
        jobs = []
        for m in dead:
            err = error
            if err is None and m._dc > 1:
                v, _ = await self._kv.get(self._rkey(m.partition, m._gen, m.offset))
                err = (v or {}).get("e")
            m._state = _NACKED
            self._out.pop((m.partition, m.offset), None)
            jobs.append((m.partition, m._gen, m._record, m.delivery_count, err, m._reply,
                         m._keyed is not None))
        return res, jobs

    def _rewind(self, m: Message, wait: float, settling: list[Message]) -> list[Message]:
        """exclusive: a record handed back restarts its partition there. The later
        records this consumer holds go back too, without counting their delivery, and
        the partition is not fetched from until the record is due: nothing overtakes it."""
        if wait > 0:
            self._hold[m.partition] = max(self._hold.get(m.partition, 0),
                                          time.monotonic() + wait)
        return [o for (p, off), o in sorted(self._out.items())
                if p == m.partition and off > m.offset and o._state == _OPEN
                and o not in settling]

    async def _note(self, m: Message, action: int, error: str | None) -> None:
        """Keep on the server what a record's next delivery needs: a nack's error
        text, a deferral, and that the next delivery follows a hand-back (no backoff)."""
        key = self._rkey(m.partition, m._gen, m.offset)
        v: dict = {}
        if m._dc > 1 or m._keyed is not None:
            v, _ = await self._kv.get(key)
            v = v or {}
        if error is not None:
            v["e"] = error
        if m._keyed is None:
            if action == _DEFER:
                v["d"] = v.get("d", 0) + 1
            v["ok"] = m._dc + 1
        await self._kv.put(key, v)

    # ---------------------------------------------------------- dead letters
    def dead_letters(self):
        """The group's dead-letter topic (created if it does not exist yet)."""
        self._check_store()
        name = self._cfg["dead_letter"]
        if self._dlq is not None and self._dlq.name == name:
            return self._dlq
        store = self.topic._store
        try:
            self._dlq = store.existing_topic(name)
        except TopicNotFound:
            self._dlq = store.topic(name)
        return self._dlq

    def _dead_letter(self, jobs: list) -> None:
        """Append records that used up max_deliver to the dead-letter topic, then
        terminate them on the server (a msg_id of origin and count: a consumer that
        dies between the two does not add the record twice)."""
        dlq = self.dead_letters()
        done = [self._dlq_entry(dlq, job) for job in jobs]
        self._conn.run(self._terminate(done))

    async def _adead_letter(self, jobs: list) -> None:
        """``_dead_letter``, awaited. Opening the dead-letter topic (rare: once per
        handle) runs in a thread, as it may create the topic."""
        dlq = self._dlq
        if dlq is None or dlq.name != self._cfg["dead_letter"]:
            dlq = await asyncio.to_thread(self.dead_letters)
        done = [await self._adlq_entry(dlq, job) for job in jobs]
        await self._terminate(done)

    def _dlq_entry(self, dlq: Any, job: tuple) -> tuple:
        """Append one dead-lettered record to ``dlq``; what ``_terminate`` needs of it."""
        return self._conn.run(self._adlq_entry(dlq, job))

    async def _adlq_entry(self, dlq: Any, job: tuple) -> tuple:
        p, gen, rec, count, err, reply, keyed = job
        hdrs = dict(rec.headers)
        hdrs[DLQ_TOPIC] = self.topic.name.encode()
        hdrs[DLQ_PARTITION] = b"%d" % p
        hdrs[DLQ_OFFSET] = b"%d" % rec.offset
        hdrs[DLQ_GROUP] = self.name.encode()
        hdrs[DLQ_DELIVERY_COUNT] = b"%d" % count
        hdrs[DLQ_TIMESTAMP_MS] = b"%d" % rec.timestamp_ms
        if err is not None:
            hdrs[DLQ_ERROR] = err.encode()
        value = rec.value
        if value is None:
            value = b""
            hdrs[DLQ_TOMBSTONE] = b"1"
        mid = f"{self.topic.name}/{self.name}/{p}/{rec.offset}/{count}"
        try:
            await dlq.append_async(value, key=rec.key, headers=hdrs, msg_id=mid)
        except RecordTooLarge:  # the origin headers pushed it over: keep the origin
            hdrs = {k: v for k, v in hdrs.items() if k.startswith("sl-dlq-")}
            hdrs["sl-dlq-truncated"] = b"1"
            await dlq.append_async(b"", key=rec.key, headers=hdrs, msg_id=mid)
        return p, gen, rec.offset, reply, keyed

    async def _terminate(self, done: list) -> None:
        await _requests(self._conn.nc, [(reply, b"+TERM dead-lettered") for *_, reply, _k in done])
        await _count_dead(self._kv, self._base, [d[0] for d in done])
        await asyncio.gather(*(self._kv.delete(self._rkey(p, gen, off))
                               for p, gen, off, _r, _k in done))
        keyed: dict[tuple[int, int], list[int]] = {}
        for p, gen, off, _r, k in done:
            if k:
                keyed.setdefault((p, gen), []).append(off)
        for (p, gen), offs in keyed.items():
            key = f"{self._base}.k.{p}.{gen}"
            while True:
                win, rev = await self._kv.get(key)
                if not win:
                    break
                for off in offs:
                    win["e"].pop(str(off), None)
                if await self._kv.cas(key, win, rev):
                    break

    def one_at_a_time(self) -> None:
        """The contract's hint that this consumer polls one record at a time and settles
        it before its next poll (the rpc server, the queue view's ``get``).

        In a shared group an ``ack`` of one message is then one message to the
        server that both acknowledges it and asks for the next record (JetStream's
        ``+NXT``), sent without waiting for an answer, as nats-py's own
        ``msg.ack()`` does: the lease is checked here (its local deadline never
        outlives the server's), so ``ack()`` answers as it would otherwise. The
        next ``poll`` finds the next record already delivered, or its pull already
        waiting on the server. A record so delivered and not polled within
        ``GROUP_HOLD_MAX_MS`` (or a tenth of ``ack_wait_s``) goes back to the group,
        its delivery not counted, and so does one still unpolled at ``close``. An
        ack that the connection loses on the way means the record comes again
        after its lease, as when a consumer dies before acking.
        """
        self._check()
        self._ack_next = True

    def ready_for_next(self) -> None:
        """A hint that this one-at-a-time consumer settles its message next (an rpc
        server between its handler and its reply): the pull for the next record goes
        out now, without waiting, so that the next record finds it waiting on the
        server even while the reply is being stored and the ack sent (the ack then
        asks for nothing more). Only for a shared group of a single-partition topic
        (one pull ahead for several partitions would hold records from other
        consumers); a record so delivered is handled as one an ack asked for (see
        ``one_at_a_time``). StoreClosed on a closed store, as every method."""
        self._check_store()
        if not self._ack_next or self._closed or self.mode != "shared" or \
                self.topic.partitions != 1:
            return
        _call_soon(self._conn.loop, self._pull_ahead, 0)

    def _pull_ahead(self, p: int) -> None:
        """On the loop (a plain callback, no task): the pull request ready_for_next
        sends, unless a pull is waiting or the next record is here already."""
        pl = self._puller
        if pl.sub is None or pl.is_open(p) or pl.buf or self._closed:
            return
        pl.opened(p, 1, _AHEAD_PULL_S)
        self._conn.send_now(self._pull_subject(p), _AHEAD_PULL_BODY, f"{pl.inbox}.{p}")

    def _ack_and_pull(self, m: Message) -> bool:
        """one_at_a_time: acknowledge ``m`` and ask for the next record in one message,
        without waiting (see ``one_at_a_time``). False (nothing sent) where an ack
        needs more than that: another mode, a redelivered record (its notes in KV are
        cleaned up), a lease that looks lost here (the full path answers it)."""
        if self.mode != "shared" or m._dc > 1 or \
                m._gen != self._cfg["parts"][m.partition][0] or \
                m._deadline <= time.monotonic():
            return False
        m._state = _ACKED
        self._out.pop((m.partition, m.offset), None)
        _call_soon(self._conn.loop, self._send_ack_next, m)
        return True

    async def _hand_back_unpolled(self, unpolled: list) -> None:
        """one_at_a_time: records delivered to this handle and never polled go back
        without counting the delivery (before their nak: the redelivery reads it)."""

        async def one(p: int, msg: Any) -> None:
            md_ = msg.metadata
            gen = self._cfg["parts"][p][0]
            if md_.consumer != consumer_name(self.name, gen):
                return  # a consumer replaced by a seek: nothing to count
            off = md_.sequence.stream - 1
            known = None
            if md_.num_delivered > 1:
                known, _ = await self._kv.get(self._rkey(p, gen, off))
            await self._hand_back(p, gen, off, known, md_.num_delivered)

        await asyncio.gather(*(one(p, msg) for p, msg in unpolled))

    def _send_ack_next(self, m: Message) -> None:
        """On the loop (a plain callback, no task): the one_at_a_time ack, asking for
        the next record unless a pull is waiting or the next record is here."""
        pl = self._puller
        p = m.partition
        if pl.sub is None or pl.is_open(p) or pl.buf:
            # A pull is waiting already, or the next record is here: a plain ack (one
            # more record pulled now would wait behind it, held from other consumers).
            self._conn.send_now(m._reply, b"+ACK")
            return
        pl.opened(p, 1, _AHEAD_PULL_S)
        self._conn.send_now(m._reply, b"+NXT " + _AHEAD_PULL_BODY, f"{pl.inbox}.{p}")

    # --------------------------------------------------------------- inspect
    def lag(self, partition: int | None = None) -> int:
        """Records not yet acked (in one partition, or all), counting only what
        retention kept: the consumers' pending and unacknowledged counts."""
        self._check()
        if partition is not None:
            partition = _validate.partition(partition, self.topic.partitions)
        return self._conn.run(self._alag(partition))

    async def lag_async(self, partition: int | None = None) -> int:
        """``lag``, awaited."""
        self._check()
        if partition is not None:
            partition = _validate.partition(partition, self.topic.partitions)
        return await completing(self._alag(partition))

    async def _alag(self, partition: int | None) -> int:
        await self._reload()
        parts = range(self.topic.partitions) if partition is None else [partition]
        total = 0
        for p in parts:
            gen = self._cfg["parts"][p][0]
            try:
                st = await self._conn.consumer_info(self._streams[p], consumer_name(self.name, gen))
            except NotFound:
                await _ensure_consumer(self.topic, self.name, self._cfg, p)
                st = await self._conn.consumer_info(self._streams[p], consumer_name(self.name, gen))
            total += st.num_pending + st.num_ack_pending
        return total

    def pending(self) -> list[Lease]:
        """The records this handle holds leased (JetStream does not list other
        consumers' leases), oldest offset first per partition."""
        self._check()
        now_m, now_w = time.monotonic(), time.time()
        return [Lease(self.consumer, p, off, now_w + (m._deadline - now_m), m.delivery_count)
                for (p, off), m in sorted(self._out.items())]

    # ------------------------------------------------------------------ seek
    def seek(self, partition: int, offset: int) -> None:
        """Move the group on ``partition``: records before ``offset`` count as done,
        records from it on are delivered again with fresh delivery counts
        (outstanding leases there are dropped; their acks answer False).

        An offset below the start (retention) or past the end is clamped.
        """
        self._check()
        partition = _validate.partition(partition, self.topic.partitions)
        offset = _validate.offset(offset)
        self._conn.run(self._aseek({partition: offset}))

    def seek_to_time(self, timestamp_ms: int) -> None:
        """Seek every partition to its first record at or after ``timestamp_ms``."""
        self._check()
        ts = _validate.timestamp(timestamp_ms)
        targets = {p: self.topic.offset_for_time(p, ts) for p in range(self.topic.partitions)}
        self._conn.run(self._aseek(targets))

    async def _aseek(self, targets: dict[int, int]) -> None:
        for p, off in list(targets.items()):
            start, end = await _stream_bounds(self.topic, p)
            targets[p] = min(max(off, start), end)
        key = self._base + ".cfg"
        while True:
            cfg, rev = await self._kv.get(key)
            if cfg is None:
                raise StreamlogError(f"group {self.name!r} of topic {self.topic.name!r} was "
                                     "deleted")
            old = {p: cfg["parts"][p][0] for p in targets}
            for p, off in targets.items():
                cfg["parts"][p] = [old[p] + 1, off + 1]
            if await self._kv.cas(key, cfg, rev):
                break
        self._cfg = cfg
        self._cfg_at = time.monotonic()
        for p in targets:
            await _ensure_consumer(self.topic, self.name, cfg, p)
            try:
                await self._conn.delete_consumer(self._streams[p], consumer_name(self.name, old[p]))
            except NotFound:
                pass
            for k in [k for k in self._out if k[0] == p]:
                self._out.pop(k)._state = _LOST

    # ----------------------------------------------------------------- close
    def close(self) -> None:
        """Leave the group: this consumer's leases (and exclusive partitions) go back
        at once (their deliveries count). Idempotent; the store's close does it too."""
        if self._closed:
            return
        self._closed = True
        try:
            _check_store(self.topic)
        except StoreClosed:
            return
        try:
            self._conn.run(self._aclose())
        except StoreClosed:
            pass

    async def close_async(self) -> None:
        """``close``, awaited."""
        if self._closed:
            return
        self._closed = True
        try:
            _check_store(self.topic)
        except StoreClosed:
            return
        await completing(self._aclose())

    async def _aclose(self) -> None:
        pl = self._puller
        if self._ack_next and pl.event is not None:
            # A pull sent ahead may still bring a record. Unsubscribing now would lose
            # one in flight until its lease ran out; the pull ends within _AHEAD_PULL_S
            # (the server answers its expiry), then what it brought is handed back.
            give_up = time.monotonic() + _CLOSE_PULL_WAIT_S
            while pl.open and any(pl.is_open(p) for p in list(pl.open)) and \
                    time.monotonic() < give_up:
                await pl.wait(give_up - time.monotonic())
                pl.event.clear()
        await pl.stop()
        msgs = [m for m in self._out.values() if m._state == _OPEN]
        self._out.clear()
        sends = [(m._reply, b"-NAK") for m in msgs]
        unpolled = []
        while pl.buf:  # delivered to this handle after its last poll
            p, msg = pl.buf.popleft()[:2]
            unpolled.append((p, msg))
            sends.append((msg.reply, b"-NAK"))
        if self._ack_next and self.mode == "shared":
            await self._hand_back_unpolled(unpolled)
        for m in msgs:
            m._state = _NACKED
        if self._cfg.get("backoff_s"):  # handed back at once: no backoff on return
            await asyncio.gather(*(self._note(m, _NACK, None) for m in msgs
                                   if m._keyed is None))
        await _requests(self._conn.nc, sends)
        if self.mode == "key_shared":
            by_part: dict[tuple[int, int], list[Message]] = {}
            for m in msgs:
                if m._keyed is not None:
                    by_part.setdefault((m.partition, m._gen), []).append(m)
            for (p, gen), ms in by_part.items():
                await self._window_settle(p, gen, ms, _NACK, now_ms())
        if self.mode != "exclusive" and self._hb_at > -math.inf:
            try:
                await _beat(self._kv, self._base + ".h", self.consumer, self._cfg, leave=True)
            except (JetStreamError, TimeoutError):
                pass  # the heartbeat ages out on its own
        if self.mode == "exclusive":
            key = self._base + ".x"
            while True:
                x, rev = await self._kv.get(key)
                if not x:
                    break
                x["m"].pop(self.consumer, None)
                for o in x["o"]:
                    if o[0] == self.consumer:
                        o[0], o[1] = None, o[1] + 1
                if await self._kv.cas(key, x, rev):
                    break


# ----------------------------------------------------------------- helpers
def _nak(delay_s: float) -> bytes:
    return b'-NAK {"delay": %d}' % max(int(delay_s * _NS), 1)


async def _requests(nc, items: list[tuple[str, bytes]]) -> list[bool]:
    """Send acks (or naks, progress, terms) as requests, pipelined, and await every
    answer: True when the consumer took it, False when it is gone (no responder: a
    seek, a deleted group). One reply subscription for the whole batch."""
    if not items:
        return []
    n = len(items)
    answers: list[bool | None] = [None] * n
    left = [n]
    done = asyncio.get_running_loop().create_future()

    async def on_reply(msg) -> None:
        i = int(msg.subject.rsplit(".", 1)[1])
        if answers[i] is None:
            status = (msg.headers or {}).get("Status") if msg.headers else None
            answers[i] = status is None or not status.startswith("5")
            left[0] -= 1
            if left[0] == 0 and not done.done():
                done.set_result(None)

    inbox = nc.new_inbox()
    with _translate("acknowledgements"):
        sub = await nc.subscribe(inbox + ".*", cb=on_reply)
        try:
            for i, (subject, payload) in enumerate(items):
                await nc.publish(subject, payload, reply=f"{inbox}.{i}")
            try:
                await asyncio.wait_for(asyncio.shield(done), 10.0)
            except TimeoutError:
                raise TimeoutError(f"{left[0]} of {n} acknowledgements got no answer "
                                   "from the server in time") from None
        finally:
            await sub.unsubscribe()
    return [bool(a) for a in answers]


def _resolve_none(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def _hold_s(cfg: dict) -> float:
    """How long a record a one_at_a_time ack asked for may wait for the next poll."""
    return min(GROUP_HOLD_MAX_MS / 1000, cfg["ack_wait_s"] / 10)


def _call_soon(loop: asyncio.AbstractEventLoop, fn, *args) -> None:
    """Run ``fn(*args)`` on ``loop`` soon, from any thread, without waiting for it: a
    plain callback, no task (this runs twice per rpc request). A failure is logged: an
    ack not sent means a redelivery after the lease, a pull not sent is sent by the
    next poll."""

    def call() -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - see above
            log.debug("an ack or pull was not sent: %r", e)

    try:
        loop.call_soon_threadsafe(call)
    except RuntimeError:  # the loop is closed: the store is closing
        pass


def _as_list(msgs) -> list:
    if isinstance(msgs, Message):
        return [msgs]
    return list(msgs)


def _close_ref(ref) -> None:
    g = ref()
    if g is not None:
        g.close()


# --------------------------------------------------------------- lifecycle
def _live_ms(cfg: dict) -> int:
    """How recent a consumer's heartbeat must be for it to count as live: ``ack_wait_s``
    plus one heartbeat interval (a polling consumer beats at least that often)."""
    return int((cfg["ack_wait_s"] + min(GROUP_HEARTBEAT_MAX_S, cfg["ack_wait_s"] / 4)) * 1000)


async def _beat(kv: _KV, key: str, consumer: str, cfg: dict, leave: bool = False) -> None:
    """Note (or, ``leave``, remove) ``consumer``'s heartbeat in the members map at ``key``
    by compare-and-set; entries silent for long are forgotten on the way."""
    while True:
        now = now_ms()
        v, rev = await kv.get(key)
        members = dict((v or {}).get("m") or {})
        forget = now - int(max(GROUP_MEMBER_FORGET_S, 10 * cfg["ack_wait_s"]) * 1000)
        members = {c: t for c, t in members.items() if t >= forget}
        if leave:
            if consumer not in (v or {}).get("m", {}):
                return
            members.pop(consumer, None)
        else:
            members[consumer] = now
        if await kv.cas(key, {"m": members}, rev):
            return


async def _count_dead(kv: _KV, base: str, partitions: list[int]) -> None:
    """Add the records just dead-lettered to the group's count per partition (``.dl``)."""
    if not partitions:
        return
    key = base + ".dl"
    while True:
        v, rev = await kv.get(key)
        v = dict(v or {})
        for p in partitions:
            v[str(p)] = v.get(str(p), 0) + 1
        if await kv.cas(key, v, rev):
            return


async def _alive(topic, name: str, cfg: dict) -> list[str]:
    """The group's live consumers: a heartbeat within ``_live_ms`` (exclusive: its
    members in ``x``; the other modes: ``h``, written by their polls)."""
    v, _ = await _kv(topic).get(_base(topic.name, name) +
                                 (".x" if cfg["mode"] == "exclusive" else ".h"))
    now, live = now_ms(), _live_ms(cfg)
    return sorted(c for c, t in ((v or {}).get("m") or {}).items() if now - t <= live)


async def _no_group(topic, name: str) -> StreamlogError:
    keys = await _kv(topic).keys(f"{_naming.encode_token(topic.name)}.*.cfg")
    known = sorted(_naming.decode_token(k.split(".")[1]) for k in keys)
    hint = f" (groups: {', '.join(known[:10])}{', ...' if len(known) > 10 else ''})" \
        if known else " (it has no groups)"
    return StreamlogError(f"topic {topic.name!r} has no group {name!r}{hint}")


def _refuse_active(topic, name: str, live: list[str], what: str) -> GroupActive:
    shown = ", ".join(live[:5]) + (", ..." if len(live) > 5 else "")
    return GroupActive(f"group {name!r} of topic {topic.name!r} has {len(live)} live "
                       f"consumer{'s' if len(live) != 1 else ''} ({shown}): stop them before "
                       f"you {what} it, or force it (their leases are dropped and they go "
                       "on from the new positions)", live)


def group_consumers(topic: Any, name: str) -> list[str]:
    """The live consumers of group ``name`` (a heartbeat within its ``ack_wait_s`` and
    one heartbeat interval; a consumer beats while it polls and leaves when it closes).
    StreamlogError when the topic has no such group."""
    _check_store(topic)
    _validate.name(name, "group name")
    return topic._conn.run(_agroup_consumers(topic, name))


async def _agroup_consumers(topic, name: str) -> list[str]:
    cfg, _ = await _kv(topic).get(_base(topic.name, name) + ".cfg")
    if cfg is None:
        raise await _no_group(topic, name)
    return await _alive(topic, name, cfg)


def delete_group_checked(topic: Any, name: str, force: bool) -> None:
    """Delete group ``name``, refusing (GroupActive) while it has live consumers unless
    ``force``, and (StreamlogError) when there is no such group."""
    _check_store(topic)
    _validate.name(name, "group name")
    topic._conn.run(_adelete_checked(topic, name, force))


async def _adelete_checked(topic, name: str, force: bool) -> None:
    cfg, _ = await _kv(topic).get(_base(topic.name, name) + ".cfg")
    if cfg is None:
        raise await _no_group(topic, name)
    live = await _alive(topic, name, cfg)
    if live and not force:
        raise _refuse_active(topic, name, live, "delete")
    await _delete(topic, name)


async def _position(topic, name: str, cfg: dict, p: int, start: int) -> int:
    """The group's position on partition ``p``: the first offset not acknowledged (the
    consumer's ack floor), never below the partition's start."""
    gen, start_seq = cfg["parts"][p] if p < len(cfg["parts"]) else (0, 0)
    try:
        st = await topic._conn.consumer_info(topic.stream_name(p), consumer_name(name, gen))
        floor = st.ack_floor_stream_seq
    except NotFound:
        floor = max(start_seq - 1, 0)
    return max(floor, start)


def reset_group(topic: Any, name: str, to: Any, dry_run: bool = False,
                force: bool = False) -> list[GroupReset]:
    """Move group ``name`` on every partition (``JetStreamTopic.reset_group``)."""
    import datetime as _dt

    _check_store(topic)
    _validate.name(name, "group name")
    if not isinstance(dry_run, bool) or not isinstance(force, bool):
        raise TypeError("dry_run and force must be bools")
    to = _validate.reset_target(to)
    if not dry_run:
        topic._store._check_writable(f"reset group {name!r}")
    bounds = [topic._run(_stream_bounds(topic, p)) for p in range(topic.partitions)]
    targets = {}
    for p, (start, end) in enumerate(bounds):
        if to == "earliest":
            targets[p] = start
        elif to == "latest":
            targets[p] = end
        elif isinstance(to, _dt.datetime):
            targets[p] = topic.offset_for_time(p, max(int(to.timestamp() * 1000), 0))
        else:
            targets[p] = min(max(to, start), end)  # clamped, as Kafka does
    return topic._conn.run(_areset(topic, name, targets, bounds, dry_run, force))


async def _areset(topic, name: str, targets: dict[int, int], bounds: list,
                  dry_run: bool, force: bool) -> list[GroupReset]:
    kv = _kv(topic)
    base = _base(topic.name, name)
    key = base + ".cfg"
    while True:
        cfg, rev = await kv.get(key)
        if cfg is None:
            raise await _no_group(topic, name)
        rows = [GroupReset(p, await _position(topic, name, cfg, p, bounds[p][0]), targets[p],
                           bounds[p][0], bounds[p][1]) for p in range(len(bounds))]
        if dry_run:
            return rows
        live = await _alive(topic, name, cfg)
        if live and not force:
            raise _refuse_active(topic, name, live, "reset")
        parts = [list(x) for x in cfg["parts"]]
        parts.extend([0, 0] for _ in range(len(bounds) - len(parts)))
        old = {p: parts[p][0] for p in targets}
        for p, off in targets.items():
            parts[p] = [old[p] + 1, off + 1]  # a new generation: a consumer at the target
        new = dict(cfg, parts=parts)
        if await kv.cas(key, new, rev):
            break
    # The new consumers first (a handle that finds the old one gone reloads and uses
    # them), then the old ones go: their deliveries and leases are void. Any other
    # generation of the group found on the stream (left by a seek or reset whose process
    # died half-way) goes too.
    await asyncio.gather(*(_ensure_consumer(topic, name, new, p) for p in targets))
    for p in targets:
        stale = {consumer_name(name, old[p])} | await _other_generations(
            topic, name, p, consumer_name(name, new["parts"][p][0]))
        for cname in sorted(stale):
            try:
                await topic._conn.delete_consumer(topic.stream_name(p), cname)
            except NotFound:
                pass
        await kv.purge_prefix(f"{base}.r.{p}.{old[p]}")  # deferrals of the old generation
        if new["mode"] == "key_shared":
            await kv.delete(f"{base}.k.{p}.{old[p]}")  # its key window
    return rows


async def _other_generations(topic, name: str, p: int, keep: str) -> set[str]:
    """The durable consumers of group ``name`` on partition ``p``'s stream (by their
    metadata) other than ``keep``."""
    out: set[str] = set()
    stream = topic.stream_name(p)
    offset = 0
    while True:
        resp = await topic._conn.api(f"CONSUMER.LIST.{stream}", {"offset": offset})
        page = resp.get("consumers") or []
        for c in page:
            cfg = c.get("config") or {}
            meta = cfg.get("metadata") or {}
            if meta.get("streamlog.group") == name and \
                    meta.get("streamlog.topic") == topic.name and c.get("name") != keep:
                out.add(c["name"])
        offset += len(page)
        if not page or offset >= resp.get("total", 0):
            return out


async def grow_groups(topic, old_partitions: int) -> None:
    """``alter_topic`` grew ``topic`` (this handle has the new count): every group starts
    each new partition at offset 0, its first record, as Kafka does for partitions added
    to a topic; their consumers are created now."""
    kv = _kv(topic)
    keys = await kv.keys(f"{_naming.encode_token(topic.name)}.*.cfg")
    for k in keys:
        name = _naming.decode_token(k.split(".")[1])
        while True:
            cfg, rev = await kv.get(k)
            if cfg is None:
                break
            if len(cfg["parts"]) < topic.partitions:
                cfg["parts"] = [list(x) for x in cfg["parts"]] + [
                    [0, 0] for _ in range(topic.partitions - len(cfg["parts"]))]
                cfg["partitions"] = topic.partitions
                if not await kv.cas(k, cfg, rev):
                    continue
            await asyncio.gather(*(_ensure_consumer(topic, name, cfg, p)
                                   for p in range(old_partitions, topic.partitions)))
            break


def group_figures(topic: Any) -> dict[str, dict]:
    """Every group's figures in the embedded store's ``stats()["groups"][topic]`` shape:
    options, ``consumers`` (live ones), ``lag``, ``pending`` (leased),
    ``redeliveries`` (being redelivered now), ``dead_letters`` (records this group
    moved to its dead-letter topic), ``oldest_unacked_age_seconds`` and, per
    partition, ``committed``, ``next``, ``end_offset`` and the same counts.
    ``oldest_lease_age_seconds`` is None: JetStream does not list a consumer's leases."""
    _check_store(topic)
    return topic._conn.run(_group_figures(topic))


async def _group_figures(topic) -> dict[str, dict]:
    kv = _kv(topic)
    keys = await kv.keys(f"{_naming.encode_token(topic.name)}.*.cfg")
    names = sorted(_naming.decode_token(k.split(".")[1]) for k in keys)
    bounds = await asyncio.gather(*(_stream_bounds(topic, p) for p in range(topic.partitions)))
    got = await asyncio.gather(*(_one_group_figures(topic, kv, n, bounds) for n in names))
    return {n: g for n, g in zip(names, got, strict=True) if g is not None}


async def _one_group_figures(topic, kv: _KV, name: str, bounds: list) -> dict | None:
    base = _base(topic.name, name)
    cfg, _ = await kv.get(base + ".cfg")
    if cfg is None:
        return None
    dead, _ = await kv.get(base + ".dl")
    dead = dead or {}
    x = None
    if cfg["mode"] == "exclusive":
        x, _ = await kv.get(base + ".x")
    now = now_ms()

    async def part(p: int) -> dict:
        start, end = bounds[p]
        gen, start_seq = cfg["parts"][p] if p < len(cfg["parts"]) else (0, 0)
        try:
            st = await topic._conn.consumer_info(topic.stream_name(p), consumer_name(name, gen))
            committed = max(st.ack_floor_stream_seq, start)
            nxt = max(st.delivered_stream_seq, committed)
            lag, pending, redel = st.num_pending + st.num_ack_pending, st.num_ack_pending, \
                st.num_redelivered
        except NotFound:  # not created yet (a reset or growth under way)
            committed = nxt = max(start_seq - 1, start)
            lag, pending, redel = max(0, end - committed), 0, 0
        age = None
        if lag > 0 and committed < end:
            try:
                m = await topic._get_message(p, committed + 1)
                age = max(0.0, (now - _records_ts(topic, p, m)) / 1000)
            except (NotFound, JetStreamError, TimeoutError):
                age = None
        out = {"partition": p, "committed": committed, "next": nxt, "end_offset": end,
               "lag": lag, "pending": pending, "redeliveries": redel,
               "dead_letters": int(dead.get(str(p), 0)),
               "oldest_unacked_age_seconds": age, "oldest_lease_age_seconds": None}
        if x is not None:
            o = x["o"][p] if p < len(x["o"]) else [None, 0]
            out["owner"] = o[0]
        return out

    parts = list(await asyncio.gather(*(part(p) for p in range(len(bounds)))))
    live = await _alive(topic, name, cfg)
    ages = [q["oldest_unacked_age_seconds"] for q in parts
            if q["oldest_unacked_age_seconds"] is not None]
    return {"mode": cfg["mode"], "ack_wait_s": cfg["ack_wait_s"],
            "max_deliver": cfg["max_deliver"], "dead_letter": cfg["dead_letter"],
            "consumers": len(live),
            "lag": sum(q["lag"] for q in parts),
            "pending": sum(q["pending"] for q in parts),
            "redeliveries": sum(q["redeliveries"] for q in parts),
            "dead_letters": sum(q["dead_letters"] for q in parts),
            "oldest_unacked_age_seconds": max(ages) if ages else None,
            "oldest_lease_age_seconds": None,
            "partitions": parts}


def _records_ts(topic, p: int, m: StoredMsg) -> int:
    return topic._record(p, m).timestamp_ms
