"""The record-batch codec of docs/format.md: a pure-Python reference and its compiled twin.

The functions named ``py_*`` are the reference: small and readable on purpose,
and always importable so that tests hold them beside the compiled sibling
(``streamlog._ext``, built from ``ext/codec.pxi`` and ``ext/native.pxi``),
which must produce the same bytes, with the same names, signatures and
errors (tests/property/test_codec_parity.py checks it). The plain names
(``encode_batch``, ``read_span``, ...) are what the engine calls: the
compiled functions, or the reference when ``STREAMLOG_NO_EXTENSIONS=1``
(slow, for debugging the format). A missing build is an ImportError, never a
silent fallback.

Everything is little-endian. A batch is a 44-byte header followed by records::

    batch  = base_offset u64 | batch_length u32 | length_check u32 | crc u32
             | magic u16 | version u8 | attributes u8 | record_count u32
             | first_timestamp_ms i64 | max_timestamp_ms i64 | record*
    record = timestamp_delta i32 | key_length i32 | value_length i32
             | headers_length u32 | key | value | headers
    headers = (name_length u16 | name | value_length u32 | value)*
"""

from __future__ import annotations

import os
import struct
import types
from collections.abc import Sequence

import crc32c as _crc32c
import numpy as np

from streamlog import _ext
from streamlog.errors import CorruptionError, RecordTooLarge, TornTail

NATIVE = os.environ.get("STREAMLOG_NO_EXTENSIONS", "") != "1"

# (name, struct code) in on-disk order; offsets are derived from the sizes so
# the table in docs/format.md, this module and the extension cannot drift.
BATCH_FIELDS = (
    ("base_offset", "Q"),
    ("batch_length", "I"),
    ("length_check", "I"),
    ("crc", "I"),
    ("magic", "H"),
    ("version", "B"),
    ("attributes", "B"),
    ("record_count", "I"),
    ("first_timestamp_ms", "q"),
    ("max_timestamp_ms", "q"),
)
RECORD_FIELDS = (
    ("timestamp_delta", "i"),
    ("key_length", "i"),
    ("value_length", "i"),
    ("headers_length", "I"),
)


def _offsets(fields):
    out, pos = {}, 0
    for name, code in fields:
        out[name] = pos
        pos += struct.calcsize("<" + code)
    return out, pos


BATCH_OFFSETS, HEADER_SIZE = _offsets(BATCH_FIELDS)
RECORD_OFFSETS, RECORD_HEADER_SIZE = _offsets(RECORD_FIELDS)
# The CRC covers from the magic to the end of the batch: the base offset is
# outside it (I3) so a batch is checksummed before the append lock assigns it.
CRC_START = BATCH_OFFSETS["magic"]
MAGIC = 0x4C53  # b"SL" little-endian
VERSION = 1
LENGTH_CHECK_XOR = 0xFFFFFFFF
# attributes bit 0: a gap batch, a bare header covering ``record_count`` offsets
# whose records compaction removed (docs/format.md, I2). No other bit is defined.
ATTR_GAP = 1

_HEADER = struct.Struct("<" + "".join(code for _, code in BATCH_FIELDS))
_RECORD = struct.Struct("<" + "".join(code for _, code in RECORD_FIELDS))
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

HeaderList = Sequence[tuple[bytes, bytes]]


def py_crc32c(data) -> int:
    """CRC32C (Castagnoli) of a bytes-like object."""
    return _crc32c.crc32c(data)


def _encode_headers(headers: HeaderList | None) -> bytes:
    if not headers:
        return b""
    parts = []
    for name, value in headers:
        parts.append(_U16.pack(len(name)))
        parts.append(bytes(name))
        parts.append(_U32.pack(len(value)))
        parts.append(bytes(value))
    return b"".join(parts)


def py_encode_batch(
    keys: Sequence[bytes | None] | None,
    values: Sequence,
    headers: Sequence[HeaderList | None] | None,
    timestamps_ms: Sequence[int],
) -> bytes:
    """Encode records as one batch with base_offset 0 (the append sets it).

    ``keys``/``headers`` may be None for "none on any record". Header names are
    UTF-8 bytes already. Raises ValueError for an empty batch or timestamps more
    than 2**31-1 ms apart.
    """
    count = len(values)
    if count == 0:
        raise ValueError("a batch needs at least one record")
    if len(timestamps_ms) != count:
        raise ValueError("timestamps_ms must have one entry per record")
    first_ts = timestamps_ms[0]
    max_ts = first_ts
    body = []
    for i in range(count):
        key = None if keys is None else keys[i]
        value = values[i]
        hdr = _encode_headers(None if headers is None else headers[i])
        ts = timestamps_ms[i]
        delta = ts - first_ts
        if not -(1 << 31) <= delta < (1 << 31):
            raise ValueError("timestamps of one batch must lie within 2**31 ms of each other")
        if ts > max_ts:
            max_ts = ts
        body.append(
            _RECORD.pack(
                delta,
                -1 if key is None else len(key),
                -1 if value is None else len(value),
                len(hdr),
            )
        )
        if key is not None:
            body.append(bytes(key))
        if value is not None:
            body.append(bytes(value))
        body.append(hdr)
    records = b"".join(body)
    length = HEADER_SIZE + len(records)
    tail = (
        _HEADER.pack(
            0, length, length ^ LENGTH_CHECK_XOR, 0, MAGIC, VERSION, 0, count, first_ts, max_ts
        )[CRC_START:]
        + records
    )
    crc = py_crc32c(tail)
    return _HEADER.pack(
        0, length, length ^ LENGTH_CHECK_XOR, crc, MAGIC, VERSION, 0, count, first_ts, max_ts
    )[:CRC_START] + tail


def encode_gap(base_offset: int, count: int, first_ts: int, max_ts: int) -> bytes:
    """A gap batch: ``count`` offsets from ``base_offset`` whose records compaction
    removed. A bare header (no records) with attributes bit 0 set; its timestamps
    keep the removed records' range, so the running maximum timestamp of the
    partition (the time index) is the same after compaction as before. Only
    compaction writes these, so the base offset is stamped here."""
    if count < 1 or max_ts < first_ts:
        raise ValueError("a gap covers at least one offset, with max_ts >= first_ts")
    length = HEADER_SIZE
    head = _HEADER.pack(base_offset, length, length ^ LENGTH_CHECK_XOR, 0, MAGIC, VERSION,
                        ATTR_GAP, count, first_ts, max_ts)
    crc = py_crc32c(head[CRC_START:])
    return head[:BATCH_OFFSETS["crc"]] + _U32.pack(crc) + head[CRC_START:]


def py_encode_record(key, value, headers: HeaderList | None, timestamp_ms: int) -> bytes:
    """Encode one record as a batch of one (the per-record append path)."""
    return py_encode_batch(None if key is None else [key], [value],
                        None if headers is None else [headers], [timestamp_ms])


def py_set_base_offset(buf, pos: int, base_offset: int) -> None:
    """Write the base offset of the batch at ``pos`` (outside the CRC range)."""
    _U64.pack_into(buf, pos, base_offset)


def py_batch_info(buf, pos: int, limit: int, expected_base_offset: int, check_crc: bool):
    """Check the batch at ``pos`` and return its header fields.

    Returns ``(batch_length, record_count, first_timestamp_ms, max_timestamp_ms)``;
    ``(0, 0, 0, 0)`` when ``pos == limit`` or the header is all zero (the
    preallocated, never-written end of an active segment). Raises ``TornTail``
    when the batch would end past ``limit`` and ``CorruptionError`` (path None)
    when a check fails. ``expected_base_offset`` < 0 skips the I2 check.
    """
    mv = memoryview(buf)
    limit = min(limit, mv.nbytes)  # as the extension does: never past the buffer
    avail = limit - pos
    if avail <= 0:
        return (0, 0, 0, 0)
    if avail < HEADER_SIZE:
        if not any(mv[pos:limit]):
            return (0, 0, 0, 0)
        raise TornTail(pos, f"{avail} bytes left, a batch header needs {HEADER_SIZE}")
    (base, length, check, crc, magic, version, attrs, count, first_ts, max_ts) = (
        _HEADER.unpack_from(buf, pos)
    )
    if length == 0 and check == 0 and not any(mv[pos:pos + HEADER_SIZE]):
        return (0, 0, 0, 0)
    if length ^ check != LENGTH_CHECK_XOR:
        raise CorruptionError(None, pos, "batch length fails its check word")
    attrs = mv[pos + BATCH_OFFSETS["attributes"]]
    if length < HEADER_SIZE + RECORD_HEADER_SIZE and not (length == HEADER_SIZE
                                                           and attrs == ATTR_GAP):
        raise CorruptionError(None, pos, f"batch length {length} is below the minimum")
    if length > avail:
        raise TornTail(pos, f"batch of {length} bytes but only {avail} remain")
    if magic != MAGIC or version != VERSION:
        raise CorruptionError(None, pos, f"bad magic {magic:#06x} or version {version}")
    if check_crc:
        actual = py_crc32c(mv[pos + CRC_START:pos + length])
        if actual != crc:
            raise CorruptionError(None, pos, f"CRC32C mismatch (stored {crc:#010x}, "
                                             f"computed {actual:#010x})")
    if attrs & ~ATTR_GAP:
        raise CorruptionError(None, pos, f"reserved attribute bits set ({attrs:#04x})")
    if attrs == ATTR_GAP and length != HEADER_SIZE:
        raise CorruptionError(None, pos, "a gap batch holds records")
    if count == 0 or max_ts < first_ts:
        raise CorruptionError(None, pos, "record count or timestamps out of range")
    if expected_base_offset >= 0 and base != expected_base_offset:
        raise CorruptionError(None, pos, f"base offset {base} where {expected_base_offset} "
                                         "was expected (I2)")
    return (length, count, first_ts, max_ts)


def py_decode_batch(buf, pos: int, limit: int, expected_base_offset: int = -1):
    """Check and decode the batch at ``pos``.

    Returns ``(base_offset, batch_length, records)`` with records as tuples
    ``(offset, timestamp_ms, key, value, headers)`` (headers a dict of str to
    bytes). Raises as ``batch_info`` does; an end marker raises TornTail.
    """
    length, count, first_ts, _ = py_batch_info(buf, pos, limit, expected_base_offset, True)
    if length == 0:
        raise TornTail(pos, "no batch here")
    base = _U64.unpack_from(buf, pos)[0]
    mv = memoryview(buf)
    end = pos + length
    p = pos + HEADER_SIZE
    out = []
    if mv[pos + BATCH_OFFSETS["attributes"]] == ATTR_GAP:
        count = 0  # a gap batch: offsets removed by compaction, no records
    for i in range(count):
        if p + RECORD_HEADER_SIZE > end:
            raise CorruptionError(None, pos, f"record {i} header runs past the batch end")
        delta, klen, vlen, hlen = _RECORD.unpack_from(buf, p)
        p += RECORD_HEADER_SIZE
        if klen < -1 or vlen < -1:
            raise CorruptionError(None, pos, f"record {i} has a negative length")
        need = max(klen, 0) + max(vlen, 0) + hlen
        if p + need > end:
            raise CorruptionError(None, pos, f"record {i} runs past the batch end")
        key = None if klen < 0 else bytes(mv[p:p + klen])
        p += max(klen, 0)
        value = None if vlen < 0 else bytes(mv[p:p + vlen])
        p += max(vlen, 0)
        headers = py_decode_headers(mv[p:p + hlen], pos)
        p += hlen
        out.append((base + i, first_ts + delta, key, value, headers))
    if p != end:
        raise CorruptionError(None, pos, "records do not fill the batch exactly")
    return base, length, out


def py_decode_headers(raw, batch_pos: int = 0) -> dict[str, bytes]:
    """Decode a record's header block into a dict of str to bytes."""
    out: dict[str, bytes] = {}
    p, end = 0, len(raw)
    while p < end:
        if p + 2 > end:
            raise CorruptionError(None, batch_pos, "header name length runs past the record")
        (nlen,) = _U16.unpack_from(raw, p)
        p += 2
        if p + nlen + 4 > end:
            raise CorruptionError(None, batch_pos, "header runs past the record")
        try:
            name = bytes(raw[p:p + nlen]).decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptionError(None, batch_pos, "header name is not UTF-8") from None
        p += nlen
        (vlen,) = _U32.unpack_from(raw, p)
        p += 4
        if p + vlen > end:
            raise CorruptionError(None, batch_pos, "header value runs past the record")
        out[name] = bytes(raw[p:p + vlen])
        p += vlen
    return out


def py_murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c) as a signed 32-bit int, as the Java client returns."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = (data[i4] & 0xFF) + ((data[i4 + 1] & 0xFF) << 8) + \
            ((data[i4 + 2] & 0xFF) << 16) + ((data[i4 + 3] & 0xFF) << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rem = length % 4
    idx = length & ~3
    if rem == 3:
        h ^= (data[idx + 2] & 0xFF) << 16
    if rem >= 2:
        h ^= (data[idx + 1] & 0xFF) << 8
    if rem >= 1:
        h ^= data[idx] & 0xFF
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h >= (1 << 31) else h


def py_partition_for_key(key: bytes, partitions: int) -> int:
    """The partition Kafka's Java client picks: (py_murmur2(key) & 0x7fffffff) % partitions."""
    return (py_murmur2(key) & 0x7FFFFFFF) % partitions


# ------------------------------------------- reference storage helpers
# The storage-facing twins (read_span, hop, time_search, scan, read_columns), built on
# the reference codec with the extension's contracts.

def py_read_span(buf, pos, limit, expected_base, min_offset, max_count, topic, partition,
                 out, crc_from):
    limit = min(limit, len(memoryview(buf)))
    n = 0
    while n < max_count:
        length = py_batch_info(buf, pos, limit, expected_base, pos >= crc_from)[0]
        if length == 0:
            return pos, expected_base, True
        length, count = py_batch_info(buf, pos, limit, expected_base, False)[:2]
        base, length, recs = py_decode_batch(buf, pos, limit, expected_base)
        for off, ts, key, value, headers in recs:
            if off >= min_offset:
                out.append(_ext.Record(topic, partition, off, ts, key, value, headers))
                n += 1
        pos += length
        expected_base = base + count
    return pos, expected_base, pos >= limit


def py_hop(buf, pos, limit, expected_base, target):
    limit = min(limit, len(memoryview(buf)))
    while True:
        length, count, _, _ = py_batch_info(buf, pos, limit, expected_base, False)
        if length == 0 or expected_base + count > target:
            return pos, expected_base
        pos += length
        expected_base += count


def py_time_search(buf, pos, limit, expected_base, running_max, target_ts):
    limit = min(limit, len(memoryview(buf)))
    while True:
        length, count, _, max_ts = py_batch_info(buf, pos, limit, expected_base, True)
        if length == 0:
            return -1, pos, expected_base, running_max
        base, length, recs = py_decode_batch(buf, pos, limit, expected_base)
        for off, ts, *_ in recs:
            running_max = max(running_max, ts)
            if running_max >= target_ts:
                return off, pos, expected_base, running_max
        running_max = max(running_max, max_ts)  # a gap batch keeps its removed records' maximum
        if running_max >= target_ts:
            return base, pos, expected_base, running_max
        pos += length
        expected_base = base + count


def py_scan(buf, pos, limit, expected_base, running_max, last_index_pos, index_out):
    limit = min(limit, len(memoryview(buf)))
    while True:
        try:
            length, count, _, max_ts = py_batch_info(buf, pos, limit, expected_base, True)
            if length == 0:
                return pos, expected_base, running_max, None
            base, length, recs = py_decode_batch(buf, pos, limit, expected_base)
        except TornTail as e:
            return pos, expected_base, running_max, ("torn", e.file_pos, e.reason)
        except CorruptionError as e:
            return pos, expected_base, running_max, ("corrupt", e.file_pos, e.reason)
        if index_out is not None and pos > 0 and pos - last_index_pos >= \
                _ext.INDEX_INTERVAL_BYTES:
            index_out.append((base, pos, running_max))
            last_index_pos = pos
        running_max = max(running_max, max_ts)
        pos += length
        expected_base = base + count


def py_read_columns(buf, pos, limit, expected_base, min_offset, max_count, crc_from):
    limit = min(limit, len(memoryview(buf)))
    taken = []
    cont_pos, cont_base, checked = pos, expected_base, pos
    while len(taken) < max_count:
        length, count = py_batch_info(buf, pos, limit, expected_base, pos >= crc_from)[:2]
        if length == 0:
            break
        checked = pos + length
        base, length, recs = py_decode_batch(buf, pos, limit, expected_base)
        wanted = [r for r in recs if r[0] >= min_offset][: max_count - len(taken)]
        taken.extend(wanted)
        if wanted and wanted[-1][0] < base + len(recs) - 1:
            cont_pos, cont_base = pos, base
            break
        pos += length
        expected_base = base + count
        cont_pos, cont_base = pos, expected_base
    n = len(taken)

    def column(items):
        offs = np.zeros(n + 1, dtype=np.int64)
        data = b"".join(b for b in items if b is not None)
        np.cumsum([0 if b is None else len(b) for b in items], out=offs[1:])
        return offs, np.frombuffer(data, dtype=np.uint8).copy(), \
            np.array([b is None for b in items], dtype=np.bool_)

    vo, vd, vn = column([r[3] for r in taken])
    ko, kd, kn = column([r[2] for r in taken])
    cols = {"offsets": np.array([r[0] for r in taken], dtype=np.int64),
            "timestamps_ms": np.array([r[1] for r in taken], dtype=np.int64),
            "value_offsets": vo, "value_data": vd, "value_null": vn,
            "key_offsets": ko, "key_data": kd, "key_null": kn,
            "headers": sum(1 for r in taken if r[4])}
    return cols, cont_pos, cont_base, checked


_COLUMN_TYPES = {"timestamps_ms": np.int64, "value_offsets": np.int64, "key_offsets": np.int64,
                 "value_null": np.bool_, "key_null": np.bool_, "value_data": np.uint8,
                 "key_data": np.uint8}


def _column(arr, name: str, n: int):
    want = np.dtype(_COLUMN_TYPES[name])
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"RecordBatch column {name} must be a numpy array, "
                        f"not {type(arr).__name__}")
    if arr.ndim != 1 or arr.dtype != want or not arr.flags.c_contiguous:
        raise TypeError(f"RecordBatch column {name} must be a 1-D contiguous array of "
                        f"{want.name}, not {arr.dtype} of shape {arr.shape}")
    if n >= 0 and len(arr) != n:
        raise ValueError(f"RecordBatch column {name} has {len(arr)} entries, expected {n}")
    return arr


def py_encode_columns(timestamps_ms, value_offsets, value_data, value_null, key_offsets,
                      key_data, key_null, max_record, allow_null, need_key):
    """Encode RecordBatch columns as one batch (no headers); ``(bytes, max_timestamp_ms)``.

    Checks, in order, before producing anything: column types and lengths
    (TypeError / ValueError), offsets inside their data and non-decreasing,
    then per record: timestamp >= 0 and within 2**31 ms of the first, a null
    value only if ``allow_null``, a key if ``need_key``, key + value at most
    ``max_record`` bytes (RecordTooLarge). Null entries' bytes are ignored.
    """
    if not isinstance(timestamps_ms, np.ndarray):
        raise TypeError("RecordBatch column timestamps_ms must be a numpy array")
    n = len(timestamps_ms)
    if n == 0:
        raise ValueError("append_batch needs at least one record (the batch is empty)")
    ts = _column(timestamps_ms, "timestamps_ms", n).tolist()
    vo = _column(value_offsets, "value_offsets", n + 1).tolist()
    ko = _column(key_offsets, "key_offsets", n + 1).tolist()
    vn = _column(value_null, "value_null", n).tolist()
    kn = _column(key_null, "key_null", n).tolist()
    vd = _column(value_data, "value_data", -1).tobytes()
    kd = _column(key_data, "key_data", -1).tobytes()
    for offs, data, name in ((vo, vd, "value"), (ko, kd, "key")):
        if offs[0] < 0 or offs[n] > len(data):
            raise ValueError(f"RecordBatch {name} offsets run outside their data "
                             f"({offs[0]}..{offs[n]} of {len(data)} bytes)")
        for i in range(n):
            if offs[i + 1] < offs[i]:
                raise ValueError(f"RecordBatch {name} offsets decrease at record {i}")
    keys: list[bytes | None] = []
    values: list[bytes | None] = []
    total = HEADER_SIZE
    for i in range(n):
        if ts[i] < 0:
            raise ValueError(f"RecordBatch record {i}: timestamp_ms must be >= 0, not {ts[i]}")
        if not -(1 << 31) <= ts[i] - ts[0] < (1 << 31):
            raise ValueError("timestamps of one batch must lie within 2**31 ms of each other")
        if vn[i] and not allow_null:
            raise ValueError(f"RecordBatch record {i} has a null value (a tombstone): "
                             "allowed only on compacted topics")
        if kn[i] and need_key:
            raise ValueError(f"RecordBatch record {i} has no key: the topic is compacted "
                             "and every record needs a key")
        value = None if vn[i] else vd[vo[i]:vo[i + 1]]
        key = None if kn[i] else kd[ko[i]:ko[i + 1]]
        size = (len(value) if value is not None else 0) + (len(key) if key is not None else 0)
        if size > max_record:
            raise RecordTooLarge(f"record {i} of {size} bytes (key + value) exceeds "
                                 f"max_record_bytes={max_record}")
        total += RECORD_HEADER_SIZE + size
        if total > 0xFFFFFFFF:
            raise ValueError("append_batch: the batch would exceed 4 GiB; split it")
        values.append(value)
        keys.append(key)
    return py_encode_batch(keys, values, None, ts), max(ts)

# ------------------------------------------- subject filters (reference)
SUBJECT_HEADER = "subject"  # the header a record's subject travels in (_validate.SUBJECT_HEADER)


def py_subject_matches(pattern: bytes, subject: bytes) -> bool:
    """NATS wildcard rules on ``.``-separated tokens: ``*`` is any one token, a last ``>``
    one or more tokens, any other token matches itself byte for byte."""
    pt = pattern.split(b".")
    st = subject.split(b".")
    if pt[-1] == b">":
        if len(st) < len(pt):
            return False
        st, pt = st[:len(pt) - 1], pt[:-1]
    elif len(st) != len(pt):
        return False
    return all(p == b"*" or p == s for p, s in zip(pt, st, strict=True))


class PySubjectFilter:
    """The reference of ``_ext.SubjectFilter``: a subject matches if any pattern does."""

    def __init__(self, patterns) -> None:
        self.patterns = tuple(p.encode("utf-8") if isinstance(p, str) else bytes(p)
                              for p in patterns)

    def matches(self, subject) -> bool:
        if isinstance(subject, str):
            subject = subject.encode("utf-8")
        subject = bytes(subject)
        return any(py_subject_matches(p, subject) for p in self.patterns)


def py_match_span(buf, pos, limit, expected_base, min_offset, max_offset, max_matches, flt,
                  topic, partition, out, crc_from):
    """The reference of ``_ext.match_span``: decode each batch, keep the matching records."""
    limit = min(limit, len(memoryview(buf)))
    scanned = min_offset
    if max_matches <= 0 or min_offset >= max_offset:
        return pos, expected_base, False, scanned
    found = 0
    while True:
        length = py_batch_info(buf, pos, limit, expected_base, pos >= crc_from)[0]
        if length == 0:
            return pos, expected_base, True, scanned
        count = py_batch_info(buf, pos, limit, expected_base, False)[1]
        base, length, recs = py_decode_batch(buf, pos, limit, expected_base)
        if base + count > min_offset:
            for i, (off, ts, key, value, headers) in enumerate(recs):
                if off < min_offset:
                    continue
                if off >= max_offset:
                    return pos, base, False, scanned
                scanned = off + 1
                subject = headers.get(SUBJECT_HEADER)
                if subject is not None and flt.matches(subject):
                    out.append(_ext.Record(topic, partition, off, ts, key, value, headers))
                    found += 1
                    if found >= max_matches:
                        if i + 1 < len(recs):
                            return pos, base, False, scanned
                        return pos + length, base + count, pos + length >= limit, scanned
            scanned = max(scanned, min(base + count, max_offset))
        pos += length
        expected_base = base + count
        if expected_base >= max_offset:
            return pos, expected_base, pos >= limit, scanned


# The reference under the compiled sibling's names, so that a test can hold the
# two side by side (``{"ext": _ext, "reference": codec.reference}``).
reference = types.SimpleNamespace(
    BATCH_FIELDS=BATCH_FIELDS, RECORD_FIELDS=RECORD_FIELDS, BATCH_OFFSETS=BATCH_OFFSETS,
    RECORD_OFFSETS=RECORD_OFFSETS, HEADER_SIZE=HEADER_SIZE, RECORD_HEADER_SIZE=RECORD_HEADER_SIZE,
    CRC_START=CRC_START, MAGIC=MAGIC, VERSION=VERSION, LENGTH_CHECK_XOR=LENGTH_CHECK_XOR,
    ATTR_GAP=ATTR_GAP,
    _HEADER=_HEADER, _encode_headers=_encode_headers,
    crc32c=py_crc32c, encode_batch=py_encode_batch, encode_record=py_encode_record,
    set_base_offset=py_set_base_offset, batch_info=py_batch_info, decode_batch=py_decode_batch,
    decode_headers=py_decode_headers, murmur2=py_murmur2, partition_for_key=py_partition_for_key,
    read_span=py_read_span, hop=py_hop, time_search=py_time_search, scan=py_scan,
    read_columns=py_read_columns, encode_columns=py_encode_columns,
    SubjectFilter=PySubjectFilter, match_span=py_match_span,
    subject_matches=py_subject_matches,
)

# ---------------------------------------------------------------- selection
# The names the engine calls: the compiled twin, or the reference above.
if NATIVE:
    from streamlog._ext import (  # noqa: F401
        SubjectFilter,
        batch_info,
        crc32c,
        decode_batch,
        decode_headers,
        encode_batch,
        encode_columns,
        encode_record,
        hop,
        match_span,
        murmur2,
        partition_for_key,
        read_columns,
        read_span,
        scan,
        set_base_offset,
        time_search,
    )
else:
    (batch_info, crc32c, decode_batch, decode_headers, encode_batch, encode_record, hop,
     murmur2, partition_for_key, read_columns, read_span, scan, set_base_offset,
     time_search, encode_columns, match_span) = (
        py_batch_info, py_crc32c, py_decode_batch, py_decode_headers, py_encode_batch,
        py_encode_record, py_hop, py_murmur2, py_partition_for_key, py_read_columns,
        py_read_span, py_scan, py_set_base_offset, py_time_search, py_encode_columns,
        py_match_span)
    SubjectFilter = PySubjectFilter  # type: ignore[misc,assignment]
