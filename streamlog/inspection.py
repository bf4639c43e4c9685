"""Read-only inspection of a store's files: is a directory a store, its segments, their batches.

What ``streamlog dump`` prints, as public functions: like ``kafka-dump-log``,
``dump_segment`` walks a segment file batch by batch and reports each batch
header, whether its CRC32C matches and (optionally) its records, without an
open store and without ever modifying a byte. The batch layout is the one of
docs/format.md; decoding goes through ``streamlog._codec``, so the checks are
the same as a read's.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import NamedTuple

from streamlog.backends.local import codec as _codec
from streamlog.backends.local.codec import (
    BATCH_FIELDS,
    CRC_START,
    HEADER_SIZE,
    LENGTH_CHECK_XOR,
    MAGIC,
    VERSION,
)
from streamlog.backends.local.storage import files
from streamlog.errors import CorruptionError, TornTail

# One struct over the whole batch header, built from the field table so the
# dump cannot drift from the format (docs/format.md, "Record batch").
_HEADER = struct.Struct("<" + "".join(code for _, code in BATCH_FIELDS))


class DumpedRecord(NamedTuple):
    """One record of a dumped batch."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


class DumpedBatch(NamedTuple):
    """One batch of a segment file, as found at ``file_pos``.

    ``crc_ok`` says whether the stored CRC32C matches the bytes; ``records`` is
    None when they were not asked for or cannot be trusted. ``error`` is set
    when the batch fails a check (``kind`` "corrupt") or runs past the end of
    the file ("torn"); the walk stops after a batch whose length cannot be
    trusted.
    """

    file_pos: int
    base_offset: int
    batch_length: int
    record_count: int
    first_timestamp_ms: int
    max_timestamp_ms: int
    crc: int
    crc_ok: bool
    records: list[DumpedRecord] | None
    error: str | None = None
    kind: str | None = None  # None, "corrupt" or "torn"


def is_store(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory that holds a streamlog store.

    Read-only tools check this first so that they never create a store by
    accident (``streamlog.open`` creates the directory).
    """
    p = os.fspath(path)
    return os.path.isdir(p) and os.path.isfile(os.path.join(p, files.FORMAT_FILE))


def segment_files(store_path: str | os.PathLike, topic: str, partition: int) -> list[str]:
    """Paths of the ``.log`` segment files of one partition, oldest first.

    Lists the directory as it is now: a segment that retention removes while
    the caller looks at it may be gone by the time it is opened.
    """
    pdir = files.partition_dir(os.path.abspath(os.fspath(store_path)), topic, partition)
    if not os.path.isdir(pdir):
        return []
    return [os.path.join(pdir, files.segment_name(b)) for b in files.list_segments(pdir)]


def segment_base_offset(path: str | os.PathLike) -> int | None:
    """The base offset a segment file's name gives (``{base_offset:020d}.log``), or None."""
    return files.parse_segment(os.path.basename(os.fspath(path)))


def is_segment(path: str | os.PathLike) -> bool:
    """True when the file at ``path`` is a segment, whole or a quarantined part of one.

    A file named like one (``.log`` in its name: ``{base_offset:020d}.log``, or
    a quarantined ``.log.from-<pos>``) is one, damaged or not, so that a
    damaged first batch is reported as damage. Any other file is one only if
    it starts with a batch header whose length check word, magic and version
    are right: an empty or all-zero file, or one of text, is not, and dumping
    it must not invent a batch. Reads at most one header; never writes.
    """
    p = os.fspath(path)
    if files.LOG_SUFFIX in os.path.basename(p):
        return True
    with open(p, "rb") as f:
        head = f.read(HEADER_SIZE)
    if len(head) < HEADER_SIZE:
        return False
    (_base, length, check, _crc, magic, version, *_rest) = _HEADER.unpack(head)
    return length ^ check == LENGTH_CHECK_XOR and magic == MAGIC and version == VERSION


def dump_segment(path: str | os.PathLike, records: bool = True) -> Iterator[DumpedBatch]:
    """Walk the segment file at ``path`` and yield every batch, in file order.

    Stops at the end of the written data (the end of the file, or the all-zero
    header that ends the preallocated active segment). A batch whose CRC fails
    is yielded with ``crc_ok=False`` and the walk goes on (its length is
    guarded by the length check word); a batch that fails a structural check
    or runs past the end of the file is yielded with ``error`` set and ends
    the walk. Reads the file once into memory; never writes.
    """
    with open(os.fspath(path), "rb") as f:
        data = f.read()
    limit = len(data)
    mv = memoryview(data)
    pos = 0
    while pos < limit:
        if limit - pos >= HEADER_SIZE:
            fields = _HEADER.unpack_from(data, pos)
        else:
            fields = (0,) * len(BATCH_FIELDS)
        (base, length, _check, crc, _magic, _version, _attrs, count, first_ts,
         max_ts) = fields
        try:
            # Structure first (length check word, magic, bounds), without the CRC.
            info = _codec.batch_info(data, pos, limit, -1, False)
        except TornTail as e:
            yield DumpedBatch(pos, base, length, count, first_ts, max_ts, crc, False, None,
                              e.reason, "torn")
            return
        except CorruptionError as e:
            yield DumpedBatch(pos, base, length, count, first_ts, max_ts, crc, False, None,
                              e.reason, "corrupt")
            return
        if info[0] == 0:  # end marker: the rest of a preallocated segment
            return
        actual = _codec.crc32c(mv[pos + CRC_START:pos + length])
        crc_ok = actual == crc
        recs = None
        error = kind = None
        if not crc_ok:
            error, kind = (f"CRC32C mismatch (stored {crc:#010x}, computed {actual:#010x})",
                           "corrupt")
        elif records:
            try:
                _, _, raw = _codec.decode_batch(data, pos, limit, -1)
                recs = [DumpedRecord(o, ts, k, v, dict(h)) for o, ts, k, v, h in raw]
            except (CorruptionError, TornTail) as e:
                error, kind = e.reason, "corrupt"
        yield DumpedBatch(pos, base, length, count, first_ts, max_ts, crc, crc_ok, recs,
                          error, kind)
        pos += length


__all__ = ["DumpedBatch", "DumpedRecord", "dump_segment", "is_segment", "is_store",
           "segment_base_offset", "segment_files"]
