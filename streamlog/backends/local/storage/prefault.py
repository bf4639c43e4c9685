"""Fault fresh segment pages in ahead of the appends, from a background thread.

The first store into each fresh page of the active segment's mapping faults,
and the kernel allocates and zeroes a page-cache page while the appender
waits: appends went 12-33 % faster without those faults in an A/B run on the
development machine (docs/performance.md).
When an append reserves the next chunk of a segment (``Partition._reserve_locked``),
the chunk is handed to this process's prefault thread, which asks the kernel
to populate it (``Mapping.prefault``: ``MADV_POPULATE_READ``, without the GIL)
while the appender goes on, as Chronicle Queue's pretoucher does. It is only a
hint: a page the thread has not reached yet faults in the appender as before,
and nothing is written.

The same thread also starts the kernel's writeback of the full pages written
before each reserved chunk (``request_writeback``: ``sync_file_range`` with
``SYNC_FILE_RANGE_WRITE``, which does not wait), so that the ``fdatasync``
with which a roll closes a full segment, under the partition's lock, finds
its pages already on their way instead of writing all 64 MiB then.

A second thread, the closed-segment syncer (``request_sync``), runs the
``fdatasync`` of a segment that a roll closed in ``durability="never"`` or
``"interval"``, and the directory ``fsync`` of the new segment's name, after
the roll has published the switch and let go of the partition's lock
(``Partition._sync_closed``). It is a thread of its own so that a sync of up to
64 MiB (tens of milliseconds when other processes sync too) never delays the
prefaults the next segment's appends wait for.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable

from streamlog import _ext

_lock = threading.Lock()
_queue: queue.SimpleQueue | None = None
_pid = -1
_sync_queue: queue.SimpleQueue | None = None
_sync_pid = -1


def _run(q: queue.SimpleQueue) -> None:
    while True:
        job = q.get()
        if len(job) == 1:  # (event,): everything queued before it is done
            job[0].set()
            continue
        if len(job) == 4:  # ("writeback", fd of our own, start, end)
            _, fd, start, end = job
            try:
                _ext.writeback(fd, start, end)
            finally:
                os.close(fd)
            continue
        mapping, start, end = job
        mapping.prefault(start, end)
        del mapping, job  # let a retired segment's mapping go


def request(mapping, start: int, end: int) -> None:
    """Populate bytes [start, end) of ``mapping`` soon, in the background."""
    if end > start:
        _queue_of().put((mapping, start, end))


def request_writeback(fd: int, start: int, end: int) -> None:
    """Start writing bytes [start, end) of the file behind ``fd`` back to disk soon, in the
    background (the thread works on a duplicate of ``fd``, closed when done), so that the
    fsync that closes a full segment finds its pages already clean or on their way,
    instead of writing the whole segment while the appender waits under the partition's
    lock. As RocksDB's ``bytes_per_sync``; no promise: nothing waits for it."""
    if end > start:
        _queue_of().put(("writeback", os.dup(fd), start, end))


def request_sync(job: Callable[[], None]) -> None:
    """Run ``job`` (a partition's sync of the segments a roll closed) soon, in this
    process's closed-segment syncer thread. ``job`` handles its own errors: one that
    raises is dropped, and the next sync of the partition covers what it did not."""
    global _sync_queue, _sync_pid
    q = _sync_queue
    if q is None or _sync_pid != os.getpid():  # first use, or a child after fork()
        with _lock:
            if _sync_queue is None or _sync_pid != os.getpid():
                _sync_queue = queue.SimpleQueue()
                _sync_pid = os.getpid()
                threading.Thread(target=_run_sync, args=(_sync_queue,),
                                 name="streamlog-closed-sync", daemon=True).start()
            q = _sync_queue
    q.put((job, None))


def _run_sync(q: queue.SimpleQueue) -> None:
    while True:
        job, done = q.get()
        if done is not None:  # (None, event): everything queued before it is done
            done.set()
            continue
        try:
            job()
        except Exception:  # noqa: BLE001 - a lost background sync is redone by the next
            pass
        del job


def drain(timeout: float = 30.0) -> None:
    """Wait until the jobs queued so far are done, in both threads: a closing partition
    calls it so that no duplicate of its descriptors stays open in this process after
    ``close()``, and no sync of its closed segments runs after it."""
    waits = []
    q = _queue
    if q is not None and _pid == os.getpid():
        done = threading.Event()
        q.put((done,))
        waits.append(done)
    sq = _sync_queue
    if sq is not None and _sync_pid == os.getpid():
        done = threading.Event()
        sq.put((None, done))
        waits.append(done)
    for done in waits:
        done.wait(timeout)


def _queue_of() -> queue.SimpleQueue:
    global _queue, _pid
    q = _queue
    if q is None or _pid != os.getpid():  # first use, or a child after fork()
        with _lock:
            if _queue is None or _pid != os.getpid():
                _queue = queue.SimpleQueue()
                _pid = os.getpid()
                threading.Thread(target=_run, args=(_queue,), name="streamlog-prefault",
                                 daemon=True).start()
            q = _queue
    return q
