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

import functools
import os
import queue
import threading
from collections.abc import Callable

from streamlog import _ext


class _Worker:
    """A daemon thread of this process fed by a queue, started at first use (and again
    in a child after ``fork()``, which inherits no threads). A job is a callable;
    ``drain`` queues an event after the jobs so far and waits for it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue | None = None
        self._pid = -1

    def put(self, job: Callable[[], None]) -> None:
        q = self._queue
        if q is None or self._pid != os.getpid():
            with self._lock:
                if self._queue is None or self._pid != os.getpid():
                    self._queue = queue.SimpleQueue()
                    self._pid = os.getpid()
                    threading.Thread(target=_run, args=(self._queue,), name=self.name,
                                     daemon=True).start()
                q = self._queue
        q.put(job)

    def drained(self) -> threading.Event | None:
        """An event set once the jobs queued so far are done (None: no thread here)."""
        q = self._queue
        if q is None or self._pid != os.getpid():
            return None
        done = threading.Event()
        q.put(done.set)
        return done


def _run(q: queue.SimpleQueue) -> None:
    while True:
        job = q.get()
        try:
            job()
        except Exception:  # noqa: BLE001 - each job is a hint or is redone by the next sync
            pass
        del job  # let a retired segment's mapping (or a partition) go


# Prefaults and writebacks share one thread; the syncs of closed segments have their own,
# so that a long sync never holds back the prefault the next appends wait for.
_prefaulter = _Worker("streamlog-prefault")
_syncer = _Worker("streamlog-closed-sync")


def _writeback(fd: int, start: int, end: int) -> None:
    try:
        _ext.writeback(fd, start, end)
    finally:
        os.close(fd)


def request(mapping, start: int, end: int) -> None:
    """Populate bytes [start, end) of ``mapping`` soon, in the background."""
    if end > start:
        _prefaulter.put(functools.partial(mapping.prefault, start, end))


def request_writeback(fd: int, start: int, end: int) -> None:
    """Start writing bytes [start, end) of the file behind ``fd`` back to disk soon, in the
    background (the thread works on a duplicate of ``fd``, closed when done), so that the
    fsync that closes a full segment finds its pages already clean or on their way,
    instead of writing the whole segment while the appender waits under the partition's
    lock. As RocksDB's ``bytes_per_sync``; no promise: nothing waits for it."""
    if end > start:
        _prefaulter.put(functools.partial(_writeback, os.dup(fd), start, end))


def request_sync(job: Callable[[], None]) -> None:
    """Run ``job`` (a partition's sync of the segments a roll closed) soon, in this
    process's closed-segment syncer thread. ``job`` handles its own errors: one that
    raises is dropped, and the next sync of the partition covers what it did not."""
    _syncer.put(job)


def drain(timeout: float = 30.0) -> None:
    """Wait until the jobs queued so far are done, in both threads: a closing partition
    calls it so that no duplicate of its descriptors stays open in this process after
    ``close()``, and no sync of its closed segments runs after it."""
    for done in (_prefaulter.drained(), _syncer.drained()):
        if done is not None:
            done.wait(timeout)
