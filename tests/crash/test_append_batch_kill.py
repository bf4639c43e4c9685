"""SIGKILL during append_batch: each batch is there whole or not at all, every
acknowledged batch survives, and offsets stay dense.

A forked child appends RecordBatches (from_arrays, 2-400 records of 60-3,000 bytes,
so batches both below and above the size at which the writer switches from a copy
into the mapping to pwrite) and acknowledges each returned first offset over a pipe;
the parent kills it at random moments, reopens the store and reads every batch back.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import struct
import time

import numpy as np

import streamlog

CTX = multiprocessing.get_context("fork")
ACK = struct.Struct("<IQI")  # batch number, first offset, count


def _rows(batch: int, count: int, width: int) -> np.ndarray:
    """Record i of batch b: 4-byte batch number, index and count, then filler."""
    rows = np.full((count, width), batch & 0xFF, np.uint8)
    rows[:, 0:4] = np.frombuffer(np.uint32(batch).tobytes(), np.uint8)
    rows[:, 4:8] = np.arange(count, dtype="<u4").view(np.uint8).reshape(count, 4)
    rows[:, 8:12] = np.frombuffer(np.uint32(count).tobytes(), np.uint8)
    return rows


def _appender(path, ack_fd, seed):
    log = streamlog.open(path, durability="never")
    t = log.topic("cols", segment_bytes=1 << 20)
    rnd = random.Random(seed)
    b = seed * 1_000_000
    while True:
        count, width = rnd.randint(2, 400), rnd.randint(60, 3_000)
        first = t.append_batch(0, streamlog.RecordBatch.from_arrays(
            _rows(b, count, width), keys=[b"b%d" % b] * count))
        os.write(ack_fd, ACK.pack(b, first, count))
        b += 1


def test_killed_append_batch_leaves_whole_batches_only(tmp_path):
    """After SIGKILLs at random moments, the partition is a dense run of whole batches
    (every record of a batch, in order, at consecutive offsets), and every batch whose
    append returned is among them."""
    path = tmp_path / "store"
    acked: dict[int, tuple[int, int]] = {}
    for round_ in range(6):
        r, w = os.pipe()
        p = CTX.Process(target=_appender, args=(path, w, round_ + 1))
        p.start()
        os.close(w)
        time.sleep(random.uniform(0.2, 0.6))
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        buf = b""
        while chunk := os.read(r, 1 << 16):
            buf += chunk
        os.close(r)
        for i in range(len(buf) // ACK.size):
            b, first, count = ACK.unpack_from(buf, i * ACK.size)
            acked[b] = (first, count)
    assert acked
    with streamlog.open(path) as log:
        t = log.topic("cols")
        end = t.end_offset(0)
        offset, batches, sizes = 0, {}, {}
        for rec in t.read(0):
            assert rec.offset == offset
            offset += 1
            b = int.from_bytes(rec.value[0:4], "little")
            i = int.from_bytes(rec.value[4:8], "little")
            first, seen = batches.setdefault(b, (rec.offset - i, 0))
            assert rec.offset == first + i and i == seen and rec.key == b"b%d" % b
            sizes[b] = int.from_bytes(rec.value[8:12], "little")
            assert rec.value[12:] == bytes([b & 0xFF]) * (len(rec.value) - 12)
            batches[b] = (first, seen + 1)
        assert offset == end
        for b, (first, count) in acked.items():
            assert batches.get(b) == (first, count)
        # every batch there is whole, acknowledged or not (killed after its write)
        assert all(seen == sizes[b] for b, (_first, seen) in batches.items())
