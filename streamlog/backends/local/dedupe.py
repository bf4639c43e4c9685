"""msg_id dedupe: a repeated append inside the topic's dedupe window writes nothing.

``Topic.append(value, msg_id=...)`` lands here. The check and the append
happen under the partition's append lock (``Topic.append_with``), so two
processes appending the same msg_id to a partition at once are serialised:
the second finds the first and gets its Position back. Lock order: the
partition's append lock, then the LMDB write transaction.

Where the record goes: by its key as usual; a keyless record with a msg_id
goes to the partition ``murmur2(msg_id)`` picks (Kafka's formula applied to
the id), not round-robin, so a retry lands in the partition that holds the
first attempt. The check is serialised per partition: reusing one msg_id with
two different keys (so two partitions) is caught unless both appends race.

The msg_id travels in the record's ``sl-msg-id`` header, so the index in LMDB
(namespace ``dedupe``) is derived from the segments: each partition keeps a
high-water mark, and an append first indexes any record carrying the header
that was written since (records of another process whose LMDB commit was
lost, a rebuilt index). The id of the record being appended is indexed in the
same transaction, just before the bytes are written; a process that dies
between the two leaves an entry pointing at a record that does not carry the
id, and a hit is always checked against the record itself, so such an entry
never hides a retry. Expired ids are pruned lazily, a few per append.
docs/groups.md ("Dedupe") has the layout.
"""

from __future__ import annotations

import hashlib
import struct

from streamlog import _validate
from streamlog._limits import DEDUPE_CATCHUP_SCAN_RECORDS, DEDUPE_ID_MAX_BYTES, DEDUPE_PRUNE_BATCH
from streamlog._types import Position, now_ms
from streamlog.backends.local import codec as _codec
from streamlog.backends.local.storage.meta import Tx

MSG_ID_HEADER = "sl-msg-id"
_MSG_ID_HEADER_B = MSG_ID_HEADER.encode()
_NS = "dedupe"
_ENTRY = struct.Struct(">IQq")  # partition, offset, indexed_ms
_ORDER = struct.Struct(">IQ")  # partition, offset: the per-partition index in offset order
_U64 = struct.Struct(">Q")
_ORDER_VALUE = struct.Struct(">q")  # indexed_ms, followed by the id key


def _tk(topic: str) -> bytes:
    return topic.encode() + b"\0"


def _id_key(topic: str, msg_id: bytes) -> bytes:
    if len(msg_id) > DEDUPE_ID_MAX_BYTES:
        msg_id = b"#" + hashlib.blake2b(msg_id, digest_size=32).digest()
    return b"i" + _tk(topic) + msg_id


def _hwm_key(topic: str, p: int) -> bytes:
    return b"h" + _tk(topic) + struct.pack(">I", p)


def _order_prefix(topic: str, p: int) -> bytes:
    return b"o" + _tk(topic) + struct.pack(">I", p)


def _order_key(topic: str, p: int, offset: int) -> bytes:
    return b"o" + _tk(topic) + _ORDER.pack(p, offset)


def partition_for_msg_id(msg_id: bytes, partitions: int) -> int:
    """The partition a keyless record with ``msg_id`` goes to (Kafka's murmur2 formula)."""
    if partitions == 1:
        return 0
    return _codec.partition_for_key(msg_id, partitions)


def dedupe_append(log, topic, value, key, hdrs, ts: int, msg_id: bytes) -> Position:
    """Append unless ``msg_id`` was appended to ``topic`` inside its dedupe window.

    Returns the new record's Position, or the first one's for a repeat (then
    nothing is written). ``value``, ``key``, ``hdrs`` and ``ts`` arrive
    validated by ``Topic.append``; the size check (with the ``sl-msg-id``
    header counted) happens here, before anything is written.
    """
    headers = [(n, v) for n, v in (hdrs or ()) if n != _MSG_ID_HEADER_B]
    headers.append((_MSG_ID_HEADER_B, msg_id))
    _validate.record_size(key, value, headers, topic._max_record)
    n = topic.partitions
    p = topic._partition_of(key) if key is not None else partition_for_msg_id(msg_id, n)
    data = _codec.encode_record(key, value, headers, ts)
    window_ms = int(topic.config["dedupe_window_s"] * 1000)
    name = topic.name
    kv = log.kv(_NS)
    idk = _id_key(name, msg_id)
    hwm_key = _hwm_key(name, p)

    def build(end: int):
        now = now_ms()

        def fn(tx: Tx):
            raw = tx.get(hwm_key)
            hwm = _U64.unpack(raw)[0] if raw is not None else -1
            if hwm > end:  # an append indexed here never reached the segment
                _drop_from(tx, name, p, end)
                hwm = end
            if hwm < end:
                _catch_up(tx, topic, p, hwm, end, now, window_ms)
            found = _lookup(tx, topic, idk, msg_id, now, window_ms)
            if found is not None:
                if hwm != end:
                    tx.put(hwm_key, _U64.pack(end))
                return found
            tx.put(idk, _ENTRY.pack(p, end, now))
            tx.put(_order_key(name, p, end), _ORDER_VALUE.pack(now) + idk)
            tx.put(hwm_key, _U64.pack(end + 1))
            _prune(tx, name, p, now - window_ms)
            return None

        found = kv.transact(fn)
        if found is not None:
            return None, 0, 0, found
        return data, 1, ts, None

    base, found = topic.append_with(p, build)
    if base < 0:
        return found
    return Position(p, base)


def _lookup(tx: Tx, topic, idk: bytes, msg_id: bytes, now: int,
            window_ms: int) -> Position | None:
    """The Position of ``msg_id``'s first append if it is inside the window and real."""
    raw = tx.get(idk)
    if raw is None:
        return None
    q, off, t = _ENTRY.unpack(raw)
    if t < now - window_ms or q >= topic.partitions:
        return None
    part = topic._parts[q]
    if off >= part.end_offset():
        return None
    rec = part.get(off)
    if rec is None:  # removed by retention: still a repeat of a record that was written
        return Position(q, off)
    if rec.headers.get(MSG_ID_HEADER) != msg_id:
        return None  # the indexing process died before writing: not a repeat
    return Position(q, off)


def _catch_up(tx: Tx, topic, p: int, hwm: int, end: int, now: int, window_ms: int) -> None:
    """Index the records carrying ``sl-msg-id`` in ``[hwm, end)`` (hwm -1: never indexed)."""
    part = topic._parts[p]
    start = max(hwm, 0)
    if hwm < 0 or end - start > DEDUPE_CATCHUP_SCAN_RECORDS:
        # Only records inside the window matter: skip to the first one by timestamp.
        start = max(start, part.offset_for_time(max(now - window_ms, 0)))
    name = topic.name
    off = start
    cursor = None
    while off < end:
        buf: list = []
        cursor = part.read_into(off, min(end - off, 1024), buf, cursor)
        if not buf:
            break
        for r in buf:
            if r.offset >= end:
                break
            mid = r.headers.get(MSG_ID_HEADER)
            if mid is not None:
                idk = _id_key(name, mid)
                t = min(r.timestamp_ms, now)
                old = tx.get(idk)
                if old is None or _ENTRY.unpack(old)[2] <= t:
                    tx.put(idk, _ENTRY.pack(p, r.offset, t))
                    tx.put(_order_key(name, p, r.offset), _ORDER_VALUE.pack(t) + idk)
        off = buf[-1].offset + 1
        if cursor is None:
            break
    tx.put(_hwm_key(name, p), _U64.pack(end))


def _drop_from(tx: Tx, name: str, p: int, end: int) -> None:
    """Forget index entries of partition ``p`` at or past ``end`` (never written)."""
    prefix = _order_prefix(name, p)
    for k, v in tx.scan(prefix):
        off = _U64.unpack(k[len(prefix):])[0]
        if off < end:
            continue
        idk = v[_ORDER_VALUE.size:]
        raw = tx.get(idk)
        if raw is not None and _ENTRY.unpack(raw)[:2] == (p, off):
            tx.delete(idk)
        tx.delete(k)


def _prune(tx: Tx, name: str, p: int, horizon_ms: int) -> None:
    """Drop a few of partition ``p``'s oldest ids once they are out of the window."""
    prefix = _order_prefix(name, p)
    for k, v in tx.scan(prefix, limit=DEDUPE_PRUNE_BATCH):
        (t,) = _ORDER_VALUE.unpack(v[:_ORDER_VALUE.size])
        if t >= horizon_ms:
            break
        off = _U64.unpack(k[len(prefix):])[0]
        idk = v[_ORDER_VALUE.size:]
        raw = tx.get(idk)
        if raw is not None and _ENTRY.unpack(raw)[:2] == (p, off):
            tx.delete(idk)
        tx.delete(k)


def drop_topic(meta, txn, topic: str) -> None:
    """Topic deletion hook: the topic's dedupe ids and marks go with it."""
    tx = Tx(txn, meta.db_in(txn, _NS))
    tk = _tk(topic)
    for prefix in (b"i" + tk, b"h" + tk, b"o" + tk):
        tx.delete_prefix(prefix)


