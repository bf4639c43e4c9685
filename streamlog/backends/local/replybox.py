"""The reply box of a request-reply view on the embedded engine: replies by correlation id.

A reply box is one reply topic (``<rpc>.replies``) plus the correlation index:
key-value namespace ``rpc``, key ``<reply topic> NUL <correlation id>`` → the
reply's (partition, offset). A server writes the index entry and appends the
reply under the reply partition's append lock, the entry first, so the
entry is committed before the append wakes anyone: a requester woken by the
append always finds it. A requester sleeps on the reply topic's wake-up
word and looks its own correlation id up, so it never scans other
requesters' replies and never polls on a timer.

In one process, a server hands the reply to a waiting requester directly
(no reply record, no index entry) and wakes it: the process-wide table of
requests waiting in this process is keyed by (pid, store, reply topic), so
a forked child never answers its parent's requests. ``IN_PROCESS_HANDOVER =
False`` makes every reply take the durable path (tests and benchmarks
measure both paths in one process).
"""

from __future__ import annotations

import itertools
import os
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

from streamlog import _validate
from streamlog._limits import RPC_INDEX_GRACE_S, RPC_INDEX_PRUNE_INTERVAL_S
from streamlog._types import Record, now_ms
from streamlog.backends.local.codec import encode_record

if TYPE_CHECKING:
    from streamlog.backends.local.log import Log, Topic, _TopicWatch
    from streamlog.backends.local.storage.meta import KV, Tx

# The headers a reply record carries (the rpc view names the same ones).
CORRELATION_ID = "streamlog.correlation-id"
ERROR_TYPE = "streamlog.error-type"

INDEX_NAMESPACE = "rpc"
_INDEX_VALUE = struct.Struct(">IQ")  # partition, offset of the reply
# Correlation ids start with the deadline (12 hex digits of epoch ms), so the
# index sorts by deadline and pruning can read the deadline off the key.
_DEADLINE_HEX = 12

IN_PROCESS_HANDOVER = True
_LOCAL_LOCK = threading.Lock()
_LOCAL: dict[tuple[int, str, str], dict[bytes, _Slot]] = {}
# Replies spread over a reply topic's partitions in turn; pruning runs at most
# once per RPC_INDEX_PRUNE_INTERVAL_S per (store, reply topic) in a process.
_RR = itertools.count()
_NEXT_PRUNE: dict[tuple[str, str], float] = {}


class _Slot:
    """Where a server in this process leaves the reply of a waiting request."""

    __slots__ = ("reply",)

    def __init__(self) -> None:
        self.reply: tuple[bytes, str | None] | None = None


def _local_table(store: str, reply_topic: str) -> dict[bytes, _Slot]:
    key = (os.getpid(), store, reply_topic)
    table = _LOCAL.get(key)
    if table is None:
        with _LOCAL_LOCK:
            table = _LOCAL.setdefault(key, {})
    return table


def index_key(reply_topic: str, correlation_id: bytes) -> bytes:
    """The correlation index key of a reply: ``<reply topic> NUL <correlation id>``."""
    return reply_topic.encode() + b"\0" + correlation_id


def drop_topic(tx: Tx, topic: str) -> None:
    """A deleted topic's replies' index entries go with it (``tx``: namespace ``rpc``,
    inside the transaction that deletes the topic)."""
    tx.delete_prefix(topic.encode() + b"\0")


def _deadline_of(correlation_id: bytes) -> int | None:
    try:
        return int(correlation_id[:_DEADLINE_HEX], 16)
    except ValueError:
        return None


def encode_one(topic: Topic, value: Any, key: Any = None, headers: Any = None,
               timestamp_ms: int | None = None) -> tuple[bytes, int]:
    """Validate one record as ``append`` does and encode it as a one-record batch.

    Returns ``(batch, timestamp_ms)`` for ``append_with``'s ``build``; raises
    TypeError/ValueError/RecordTooLarge as ``append`` would.
    """
    cfg = topic.config
    value = _validate.value(value, bool(cfg["compact"]))
    key = _validate.key(key)
    hdrs = _validate.headers(headers)
    ts = now_ms() if timestamp_ms is None else _validate.timestamp(timestamp_ms)
    _validate.record_size(key, value, hdrs, cfg["max_record_bytes"])
    return encode_record(key, value, hdrs, ts), ts


def prune_index(index: KV, reply_topic: str, now_ms: int | None = None) -> int:
    """Delete correlation entries whose request deadline passed long ago; returns how many.

    Requesters delete their entry when they read the reply; what is left
    belongs to requests that timed out or requesters that died.
    """
    cutoff = (_now_ms() if now_ms is None else now_ms) - int(RPC_INDEX_GRACE_S * 1000)
    prefix = reply_topic.encode() + b"\0"

    def prune(tx: Tx) -> int:
        stale = []
        for k, _ in tx.scan(prefix):
            deadline = _deadline_of(k[len(prefix):])
            if deadline is None or deadline >= cutoff:
                break  # keys sort by deadline: the rest are younger
            stale.append(k)
        for k in stale:
            tx.delete(k)
        return len(stale)

    return int(index.transact(prune))


_now_ms = now_ms  # prune_index's parameter shadows the name


class LocalReplyBox:
    """The replies of reply topic ``name`` by correlation id (``Log.reply_box(name)``).

    Thread-safe. TopicNotFound when the reply topic does not exist.
    """

    def __init__(self, log: Log, name: str) -> None:
        self._log = log
        self.name = name
        self._topic = log.existing_topic(name)
        self._watch = self._topic.watch()
        self._index = log.kv(INDEX_NAMESPACE)
        self._store = os.path.realpath(log.path)

    def __repr__(self) -> str:
        return f"LocalReplyBox({self.name!r})"

    def watch(self) -> _TopicWatch:
        """Wake-ups on every reply put (the reply topic's wake-up word)."""
        return self._watch

    def open(self, correlation_id: bytes) -> None:
        """Register the waiting requester in this process: a server here hands over to it."""
        _local_table(self._store, self.name)[correlation_id] = _Slot()

    def close(self, correlation_id: bytes) -> None:
        """The requester stops waiting: its slot goes."""
        _local_table(self._store, self.name).pop(correlation_id, None)

    def take(self, correlation_id: bytes) -> tuple[bytes, str | None] | None:
        """The reply if it has come: handed over in this process, or found through the
        index (whose entry is then deleted: it served its purpose)."""
        slot = _local_table(self._store, self.name).get(correlation_id)
        if slot is not None and slot.reply is not None:
            return slot.reply
        key = index_key(self.name, correlation_id)
        rec = self._lookup(correlation_id, key)
        if rec is None:
            return None
        self._index.delete(key)
        err = rec.headers.get(ERROR_TYPE)
        return rec.value or b"", None if err is None else err.decode("utf-8", "replace")

    def _lookup(self, correlation_id: bytes, key: bytes | None = None) -> Record | None:
        if key is None:
            key = index_key(self.name, correlation_id)
        raw = self._index.get(key)
        if raw is None:
            return None
        partition, offset = _INDEX_VALUE.unpack(raw)
        try:
            if offset >= self._topic.end_offset(partition):
                return None  # indexed, not yet appended: its append will wake us
            rec = self._topic.get(partition, offset)
        except (IndexError, ValueError):
            return None  # gone (retention) or a stale entry
        # Entries are checked against the record they point at, so a stale one
        # (a crash between index and append) is never taken for a reply.
        if rec.headers.get(CORRELATION_ID) != correlation_id:
            return None
        return rec

    def put(self, correlation_id: bytes, value: bytes, error: str | None) -> None:
        """Deliver a reply: handed over to a requester waiting in this process, else a
        record on the reply topic, indexed first (both under the partition's append lock).

        Raises RecordTooLarge (nothing written) when the reply does not fit a record.
        """
        if IN_PROCESS_HANDOVER:
            slot = _local_table(self._store, self.name).get(correlation_id)
            if slot is not None:
                slot.reply = (value, error)
                self._watch.wake()
                return
        topic = self._topic
        hdrs: dict[str, bytes | str] = {CORRELATION_ID: correlation_id}
        if error is not None:
            hdrs[ERROR_TYPE] = error
        data, ts = encode_one(topic, value, None, hdrs)
        n = topic.partitions
        partition = 0 if n == 1 else next(_RR) % n
        key = index_key(self.name, correlation_id)
        index = self._index
        packed = _INDEX_VALUE.pack

        def build(end_offset: int) -> tuple[bytes, int, int, None]:
            # Indexed before the append (both under the partition lock), so the
            # wake-up of the append finds the entry committed.
            index.put(key, packed(partition, end_offset))
            return data, 1, ts, None

        topic.append_with(partition, build)
        now = time.monotonic()
        pk = (self._store, self.name)
        if now >= _NEXT_PRUNE.get(pk, 0.0):
            _NEXT_PRUNE[pk] = now + RPC_INDEX_PRUNE_INTERVAL_S
            prune_index(index, self.name)
