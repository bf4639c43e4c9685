"""The quick benchmark behind ``streamlog bench``: streamlog against plain files, same run.

Each measurement has a baseline measured right beside it on the same
filesystem: the plain-file way to do the same job without framing, CRCs,
offsets or indexes (a buffered ``write`` per record, one ``write`` per
chunk, iterating lines, ``fdatasync`` per record). The ratio says how
streamlog compares on this machine today; absolute rates vary with the
machine and its load. ``bench/`` holds the full pytest-benchmark suite.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable

import numpy as np

import streamlog

_CHUNK = 1000  # records per append_many call and per baseline write
_TICK = 10_000  # records between progress updates
# fsync-bound measurements are capped: each record costs a disk flush.
_DURABLE_MAX = 500

Progress = Callable[[str, int, int], None]


def _timed(fn: Callable[[], int]) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = fn()
    return n, max(time.perf_counter() - t0, 1e-9)


def _row(name: str, n: int, secs: float, nbytes: int, base: tuple[int, float] | None,
         baseline: str) -> dict:
    rate = n / secs
    ratio = float("nan")
    if base is not None:
        ratio = rate / (base[0] / base[1])
    return {"name": name, "records": n, "seconds": secs, "records_per_s": rate,
            "mb_per_s": nbytes / secs / 1e6, "ratio": ratio, "baseline": baseline}


def run(directory: str | None = None, records: int = 200_000, value_bytes: int = 100,
        progress: Progress | None = None) -> list[dict]:
    """Run the benchmark in a fresh subdirectory of ``directory`` (or a temporary one).

    Returns one dict per measurement: name, records, seconds, records_per_s,
    mb_per_s, ratio (rate / baseline rate) and baseline (what it was compared to).
    The subdirectory is removed afterwards.
    """
    if records < 1:
        raise ValueError(f"records must be >= 1, not {records}")
    if value_bytes < 0:
        raise ValueError(f"value_bytes must be >= 0, not {value_bytes}")
    if directory is not None:
        os.makedirs(directory, exist_ok=True)
    root = tempfile.mkdtemp(prefix="streamlog-bench-", dir=directory)
    tick = progress or (lambda name, done, total: None)
    value = (b"0123456789abcdef" * (value_bytes // 16 + 1))[:value_bytes]
    payload = records * value_bytes
    out = []
    try:
        plain = os.path.join(root, "plain.txt")
        with streamlog.open(os.path.join(root, "store")) as log:
            t = log.topic("bench", partitions=1)

            # 1. one append per record
            name = "append (one record per call)"

            def appends() -> int:
                app = t.append
                for i in range(0, records, _TICK):
                    for _ in range(min(_TICK, records - i)):
                        app(value)
                    tick(name, min(i + _TICK, records), records)
                return records

            def plain_writes() -> int:
                line = value + b"\n"
                with open(plain, "wb") as f:
                    w = f.write
                    for _ in range(records):
                        w(line)
                return records

            base = _timed(plain_writes)
            out.append(_row(name, *_timed(appends), payload, base, "buffered file write"))

            # 2. append_many in chunks
            name = "append_many (1000 per call)"
            t2 = log.topic("bench-many", partitions=1)

            def many() -> int:
                chunk = [value] * _CHUNK
                for i in range(0, records, _CHUNK):
                    n = min(_CHUNK, records - i)
                    t2.append_many(chunk if n == _CHUNK else chunk[:n])
                    if (i + n) % _TICK == 0 or i + n == records:
                        tick(name, i + n, records)
                return records

            def plain_chunks() -> int:
                blob = (value + b"\n") * _CHUNK
                with open(plain, "wb") as f:
                    for i in range(0, records, _CHUNK):
                        n = min(_CHUNK, records - i)
                        f.write(blob if n == _CHUNK else blob[:n * (value_bytes + 1)])
                return records

            base = _timed(plain_chunks)
            out.append(_row(name, *_timed(many), payload, base, "one file write per chunk"))

            # 3. iterate records
            name = "read (iterate Records)"

            def reads() -> int:
                n = 0
                for _r in t.read(0):
                    n += 1
                    if n % _TICK == 0:
                        tick(name, n, records)
                tick(name, n, records)
                return n

            def plain_lines() -> int:
                n = 0
                with open(plain, "rb") as f:
                    for _ in f:
                        n += 1
                return n

            base = _timed(plain_lines)
            out.append(_row(name, *_timed(reads), payload, base, "iterate file lines"))

            # 4. columnar reads
            name = "read_batch (numpy columns)"

            def batches() -> int:
                n, off = 0, 0
                while True:
                    b = t.read_batch(0, off, 65536)
                    if not len(b):
                        break
                    n += len(b)
                    off = int(b.offsets[-1]) + 1
                    tick(name, n, records)
                return n

            def plain_numpy() -> int:
                with open(plain, "rb") as f:
                    arr = np.frombuffer(f.read(), dtype=np.uint8)
                return int(np.count_nonzero(arr == 10))

            base = _timed(plain_numpy)
            out.append(_row(name, *_timed(batches), payload, base, "file read into numpy"))

        # 5. durable appends (fsync before return; group commit has one appender here)
        n_durable = max(1, min(_DURABLE_MAX, records // 400))
        name = 'append, durability="always"'
        with streamlog.open(os.path.join(root, "durable"), durability="always") as log:
            t3 = log.topic("bench", partitions=1)

            def durable() -> int:
                for i in range(n_durable):
                    t3.append(value)
                    if i % 50 == 49:
                        tick(name, i + 1, n_durable)
                tick(name, n_durable, n_durable)
                return n_durable

            def plain_fsync() -> int:
                line = value + b"\n"
                fd = os.open(plain, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o644)
                try:
                    for _ in range(n_durable):
                        os.write(fd, line)
                        os.fdatasync(fd)
                finally:
                    os.close(fd)
                return n_durable

            base = _timed(plain_fsync)
            out.append(_row(name, *_timed(durable), n_durable * value_bytes, base,
                            "file write + fdatasync per record"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out
