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
"""

from __future__ import annotations

import os
import queue
import threading

_lock = threading.Lock()
_queue: queue.SimpleQueue | None = None
_pid = -1


def _run(q: queue.SimpleQueue) -> None:
    while True:
        mapping, start, end = q.get()
        mapping.prefault(start, end)
        del mapping  # let a retired segment's mapping go


def request(mapping, start: int, end: int) -> None:
    """Populate bytes [start, end) of ``mapping`` soon, in the background."""
    global _queue, _pid
    if end <= start:
        return
    q = _queue
    if q is None or _pid != os.getpid():  # first use, or a child after fork()
        with _lock:
            if _queue is None or _pid != os.getpid():
                _queue = queue.SimpleQueue()
                _pid = os.getpid()
                threading.Thread(target=_run, args=(_queue,), name="streamlog-prefault",
                                 daemon=True).start()
            q = _queue
    q.put((mapping, start, end))
