"""The one place that chooses the codec: the Cython extension, or the Python reference.

``STREAMLOG_NO_EXTENSIONS=1`` selects ``_format`` (slow, for debugging the
format); otherwise the extension is required and a missing build is an
ImportError, never a silent fallback. The storage-facing helpers (read_span,
hop, time_search, scan, read_columns) have pure-Python twins here, ``py_*``,
built on the reference codec with the extension's contracts: selected with it,
and always importable so that tests can hold the two side by side.
"""

from __future__ import annotations

import os

import numpy as np

from . import _ext, _format
from .errors import CorruptionError, TornTail

NATIVE = os.environ.get("STREAMLOG_NO_EXTENSIONS", "") != "1"

if NATIVE:
    from ._ext import (  # noqa: F401
        HEADER_SIZE,
        RECORD_HEADER_SIZE,
        batch_info,
        crc32c,
        decode_batch,
        decode_headers,
        encode_batch,
        encode_record,
        hop,
        murmur2,
        partition_for_key,
        read_columns,
        read_span,
        scan,
        time_search,
    )
else:
    from ._format import (  # noqa: F401
        HEADER_SIZE,
        RECORD_HEADER_SIZE,
        batch_info,
        crc32c,
        decode_batch,
        decode_headers,
        encode_batch,
        encode_record,
        murmur2,
        partition_for_key,
    )


def py_read_span(buf, pos, limit, expected_base, min_offset, max_count, topic, partition,
                 out, crc_from):
    limit = min(limit, len(memoryview(buf)))
    n = 0
    while n < max_count:
        length = _format.batch_info(buf, pos, limit, expected_base, pos >= crc_from)[0]
        if length == 0:
            return pos, expected_base, True
        base, length, recs = _format.decode_batch(buf, pos, limit, expected_base)
        for off, ts, key, value, headers in recs:
            if off >= min_offset:
                out.append(_ext.Record(topic, partition, off, ts, key, value, headers))
                n += 1
        pos += length
        expected_base = base + len(recs)
    return pos, expected_base, pos >= limit


def py_hop(buf, pos, limit, expected_base, target):
    limit = min(limit, len(memoryview(buf)))
    while True:
        length, count, _, _ = _format.batch_info(buf, pos, limit, expected_base, False)
        if length == 0 or expected_base + count > target:
            return pos, expected_base
        pos += length
        expected_base += count


def py_time_search(buf, pos, limit, expected_base, running_max, target_ts):
    limit = min(limit, len(memoryview(buf)))
    while True:
        length = _format.batch_info(buf, pos, limit, expected_base, True)[0]
        if length == 0:
            return -1, pos, expected_base, running_max
        base, length, recs = _format.decode_batch(buf, pos, limit, expected_base)
        for off, ts, *_ in recs:
            running_max = max(running_max, ts)
            if running_max >= target_ts:
                return off, pos, expected_base, running_max
        pos += length
        expected_base = base + len(recs)


def py_scan(buf, pos, limit, expected_base, running_max, last_index_pos, index_out):
    limit = min(limit, len(memoryview(buf)))
    while True:
        try:
            length, _, _, max_ts = _format.batch_info(buf, pos, limit, expected_base, True)
            if length == 0:
                return pos, expected_base, running_max, None
            base, length, recs = _format.decode_batch(buf, pos, limit, expected_base)
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
        expected_base = base + len(recs)


def py_read_columns(buf, pos, limit, expected_base, min_offset, max_count, crc_from):
    limit = min(limit, len(memoryview(buf)))
    taken = []
    cont_pos, cont_base, checked = pos, expected_base, pos
    while len(taken) < max_count:
        length = _format.batch_info(buf, pos, limit, expected_base, pos >= crc_from)[0]
        if length == 0:
            break
        checked = pos + length
        base, length, recs = _format.decode_batch(buf, pos, limit, expected_base)
        wanted = [r for r in recs if r[0] >= min_offset][: max_count - len(taken)]
        taken.extend(wanted)
        if wanted and wanted[-1][0] < base + len(recs) - 1:
            cont_pos, cont_base = pos, base
            break
        pos += length
        expected_base = base + len(recs)
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
            "key_offsets": ko, "key_data": kd, "key_null": kn}
    return cols, cont_pos, cont_base, checked


if not NATIVE:
    read_span, hop, time_search, scan, read_columns = (  # noqa: F811
        py_read_span, py_hop, py_time_search, py_scan, py_read_columns)
