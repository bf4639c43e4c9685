"""One partition: its segment files, sparse indexes, control block, appends and reads.

Segments are the source of truth (docs/format.md, I1-I8). The control block in
the partition's ``control`` file holds the robust process-shared append lock
and the published end of the log; it is derived state, rebuilt from the
segments when it is missing or was written before the last boot.
"""

from __future__ import annotations

import fcntl
import functools
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamlog import _ext
from streamlog._limits import (
    INDEX_INTERVAL_BYTES,
    RECOVERY_POINT_SYNC_S,
    SEGMENT_ALLOCATION_CHUNK_BYTES,
    SUBJECT_INDEX_SEGMENTS,
    WRITEBACK_STEP_BYTES,
)
from streamlog.backends.local import codec as _codec
from streamlog.backends.local.codec import BATCH_OFFSETS, HEADER_SIZE, MAGIC
from streamlog.backends.local.storage import files, prefault
from streamlog.errors import (
    CorruptionError,
    ReadOnlyStore,
    StoreClosed,
    StreamlogError,
    TopicNotFound,
    TornTail,
)

log = logging.getLogger("streamlog")

_INDEX_ENTRY = _ext.INDEX_ENTRY_BYTES
_TIMEINDEX_ENTRY = _ext.TIMEINDEX_ENTRY_BYTES
_NO_TIMESTAMP = -1  # running maximum before any record (timestamps are >= 0)
_READ_CHUNK = 1024  # records decoded per refill of a read iterator
# Filtered polls index the subjects of each segment they walk (the compiled store only).
_SubjectIndex = _ext.SubjectIndex if _codec.NATIVE else None
# A batch header's magic (0x4C53, little-endian), version 1 and zero attributes,
# found at this byte of every batch: how a scan finds valid batches after damage.
_BATCH_MARKER = b"SL\x01\x00"
_MARKER_AT = 20

assert INDEX_INTERVAL_BYTES == _ext.INDEX_INTERVAL_BYTES


def boot_id() -> bytes:
    """16 bytes naming this boot of the kernel: a control block from another boot is stale."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return bytes.fromhex(f.read().strip().replace("-", ""))[:16].ljust(16, b"\0")
    except OSError:  # pragma: no cover - Linux always has it
        return b"\0" * 16


def open_notifier(topic_path: str) -> _ext.Notifier:
    """The topic's wake-up word (``notify`` file), created on first use."""
    os.makedirs(topic_path, exist_ok=True)
    fd = os.open(os.path.join(topic_path, files.NOTIFY_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size < 4096:
            os.posix_fallocate(fd, 0, 4096)
        return _ext.Notifier(_ext.Mapping(fd, 4096, True))
    finally:
        os.close(fd)


def index_capacity(segment_capacity: int) -> int:
    """Entries an index file needs: one at the start, then at most one per interval."""
    return segment_capacity // INDEX_INTERVAL_BYTES + 2


@dataclass
class Segment:
    """A segment as this process sees it. ``size`` is the file size of a closed segment."""

    base: int
    path: str
    size: int = -1
    mapping: _ext.Mapping | None = None
    index: np.ndarray | None = None  # (n, 2) uint32: relative offset, file_pos
    timeindex: np.ndarray | None = None  # (n,) int64 running max before, aligned with index
    index_maps: tuple | None = None
    verified_to: int = 0  # bytes from 0 whose CRCs this process has checked
    active_mapped: bool = False  # mapped at capacity while active: remap once closed
    ino: int = 0  # inode of the file mapped: compaction replaces a closed segment's file
    gaps: list | None = None  # (base, count) of its gap batches, once looked up
    # The subjects of its records for filtered polls (_ext.SubjectIndex), built as they
    # walk it; False once it cannot be indexed. Dropped with verified_to when its bytes
    # may change (a torn tail cut, a file replaced by compaction).
    subjects: Any = None


class Partition:
    """A partition of a topic, shared by every handle of one Log in this process.

    Thread-safe: appends serialise on the robust process-shared lock in the
    control block; reads need no lock (they see the published end through a
    seqlock); the in-process segment cache is guarded by ``_cache_lock``.
    """

    def __init__(self, root: str, topic: str, partition: int, segment_bytes: int,
                 durability: str, boot: bytes, retention=None, notifier=None,
                 on_cut=None, read_only: bool = False) -> None:
        self.topic = topic
        self.partition = partition
        self.path = files.partition_dir(root, topic, partition)
        self.segment_bytes = segment_bytes
        self.durability = durability
        self.retention = retention
        # Called as on_cut(topic, partition, new_end) when a torn tail is cut, before
        # the new end is published: the Log moves its groups back to it.
        self.on_cut = on_cut
        self.compacted = False  # set by a compacted topic's handle (background compaction)
        self.compacted_topic = False  # the topic is compacted (set by every handle)
        # called after a roll (wakes background compaction)
        self.on_roll: Callable[[], None] | None = None
        self._boot = boot
        self._cache_lock = threading.RLock()
        self._segments: dict[int, Segment] = {}
        self._bases: list[int] = []
        self._gen_seen = -1
        # Bases of the segments holding a subject index, least recently used first: at
        # most SUBJECT_INDEX_SEGMENTS are kept, so the memory indexes take is bounded.
        self._indexed: dict[int, None] = {}
        self._fds: dict[int, int] = {}
        self._closed = False
        self._chunks: weakref.WeakSet = weakref.WeakSet()  # live read iterators' buffers
        self._sync_seen: set[int] = set()  # threads that asked for a sync (up to two)
        self._ctl_synced_at = 0.0  # monotonic time the control file was last synced
        # read-only: (generation, active_base, end_offset, end_pos) of a torn tail
        # that reads skip instead of cutting
        self._skip: tuple | None = None
        # read_only: every file is opened and mapped read-only, the append lock is
        # never taken, and nothing is created, rebuilt, truncated or deleted.
        self.read_only = read_only
        if read_only:
            self._open_control_read_only()
        else:
            if not os.path.isdir(self.path):
                os.makedirs(self.path, exist_ok=True)
                files.fsync_dir(os.path.dirname(self.path))
            self._open_control()
        self.writer = _ext.Writer(self.ctl)  # refuses appends when ctl is read-only
        if read_only:
            self.writer.closed = True  # (a control block rebuilt in private memory is writable)
        if notifier is not None and not read_only:
            self.writer.set_topic_notify(notifier.mapping)
        self._commit = _ext.GroupCommit(self.ctl.end_offset())
        # Retention: a half-done deletion is finished now; the size/age policy
        # runs when the Log opens (Log._retain_idle), at every roll, on
        # apply_retention(), and at this process's first append here. A
        # read-only partition never removes anything.
        # (active segment base, bytes handed to the kernel's writeback so far)
        self._written_back = (-1, 0)
        self._wrote_back = False  # handed a descriptor to the writeback thread (prefault)
        self._synced_behind = False  # handed a closed segment to the background syncer
        # closed segments whose trim the background syncer has not run yet: base -> the
        # size they will have (closed_size reports that, in this process, meanwhile)
        self._untrimmed: dict[int, int] = {}
        self._retain_on_attach = not read_only and retention is not None and \
            any(limit is not None for limit in retention)
        if self._retain_on_attach:
            self.ctl.lock()
            try:
                view = self.ctl.view()
                self._refresh(view)
                self._finish_deletions_locked(self._bases[0])
            finally:
                self.ctl.unlock()
        self._check_file_size()
        if not read_only:
            # a compaction that a killed process left half-installed (storage/compaction.py)
            from streamlog.backends.local.storage import compaction
            compaction.recover_if_needed(self)

    # ----------------------------------------------------------------- open
    def _check_file_size(self) -> None:
        """A newest segment shorter than its published data (a file cut by a crash or
        by hand) is a torn tail: cut it now, before anything reads or maps past the
        file's end. One fstat; the bytes themselves are checked when read."""
        view = self.ctl.view()
        try:
            size = os.stat(os.path.join(self.path, files.segment_name(view[1]))).st_size
        except FileNotFoundError:
            return
        if size < view[4]:
            self._tail_damaged(view)

    def _open_control(self) -> None:
        path = os.path.join(self.path, files.CONTROL_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # flock serialises the (rare) rebuild of the control block between
            # processes opening the partition at the same time.
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size < _ext.CONTROL_BYTES:
                    os.posix_fallocate(fd, 0, _ext.CONTROL_BYTES)
                self._ctl_map = _ext.Mapping(fd, _ext.CONTROL_BYTES, True)
                self.ctl: _ext.Control = _ext.Control(self._ctl_map)
                state = self.ctl.state(self._boot)
                if state != "ok":
                    self._cold_start(state)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _open_control_read_only(self) -> None:
        """Map the control block without write access (a read-only open).

        A missing or invalid block, or one from before the last boot, is rebuilt
        from the segments in private memory (a copy-on-write mapping that never
        reaches the file): the files stay as they are, and a torn tail is
        skipped in this process's views, not cut.
        """
        path = os.path.join(self.path, files.CONTROL_FILE)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            fd = -1
        try:
            whole = fd >= 0 and os.fstat(fd).st_size >= _ext.CONTROL_BYTES
            state, synced, start = "invalid", 0, None
            if whole:
                self._ctl_map = _ext.Mapping(fd, _ext.CONTROL_BYTES, False)
                self.ctl = _ext.Control(self._ctl_map)
                state = self.ctl.state(self._boot)
                if state == "ok":
                    return
                if state == "stale":
                    synced, start = self.ctl.synced_offset, self.ctl.view()[5]
            self._ctl_map = _ext.Mapping(fd if whole else -1, _ext.CONTROL_BYTES, True,
                                         private=True)
            self.ctl = _ext.Control(self._ctl_map)
        finally:
            if fd >= 0:
                os.close(fd)
        self._rebuild_in_memory(synced, start)

    def _rebuild_in_memory(self, synced: int, start: int | None) -> None:
        """A read-only cold start: the view a rebuild would publish, nothing written.
        The index files may be stale, so only entry 0 is used (lookups hop)."""
        bases = files.list_segments(self.path) if os.path.isdir(self.path) else []
        while len(bases) > 1 and not (start is not None and bases[-1] <= start) and \
                self._orphan_segment(bases[-2], bases[-1]):
            bases.pop()
        if not bases:
            base = start or 0
            self.ctl.initialize(self._boot, 1, base, base, 0, 0, _NO_TIMESTAMP, base, 1, 0)
            return
        start = max(start if start is not None else 0, bases[0])
        bases, _ = self._revalidate_closed(bases, synced, read_only=True)
        active = bases[-1]
        log_path = os.path.join(self.path, files.segment_name(active))
        fd = os.open(log_path, os.O_RDONLY)
        try:
            size, _, _, _, pos, next_off, running_end, problem = self._scan_newest(
                fd, active, bases, synced, [], None)
        finally:
            os.close(fd)
        if problem is not None:
            log.warning("streamlog: torn tail of %s at byte %d skipped (%s): the store is "
                        "open read-only; the next writer cuts it", log_path, pos, problem[2])
        self.ctl.initialize(self._boot, 1, active, next_off, pos, max(size, pos), running_end,
                            start, 1, 0)

    def _scan_newest(self, fd: int, active: int, bases: list[int], synced: int,
                     entries: list, damage: list | None):
        """Scan the newest segment's file up to its last non-zero byte by the
        recovery rule (``_scan_tail``). Returns ``(size, mapping, data_end,
        running_max_before, end_pos, end_offset, running_max, problem)``."""
        size = os.fstat(fd).st_size
        running = self._running_max_before(active, bases)
        m = _ext.Mapping(fd, size, False) if size else None
        data_end = _last_nonzero_end(fd, m, 0, size) if m is not None else 0
        pos, next_off, running_end, problem = _scan_tail(
            m if m is not None else b"", size, active, running, synced, entries, damage,
            data_end)
        return size, m, data_end, running, pos, next_off, running_end, problem

    def _read_only_error(self) -> ReadOnlyStore:
        return ReadOnlyStore(f"{self.path} is open read-only: nothing can be written")

    def _cold_start(self, state: str) -> None:
        """Rebuild the control block from the segments (I1): the source of truth.

        Runs when the block is missing or invalid, or was written during an
        earlier boot; in both cases no live process can hold the append lock.
        Every segment from the one holding the recovery point on is checked
        batch by batch (``_revalidate_closed``, then the last one); a torn tail
        is truncated and logged, and the segments after it are removed.
        """
        for name in files.leftovers(self.path):
            os.unlink(os.path.join(self.path, name))
        bases = files.list_segments(self.path)
        prev_view = self.ctl.view() if state == "stale" else None
        # I6: an empty last segment that does not continue the one before it was
        # made by a roll that died before publishing it, and appends went on in
        # the segment before. It holds nothing: drop it. One at or below the
        # published start is not such a segment: ``start_empty_at`` published it
        # as the start of an empty partition (a roll's is always above the start).
        while len(bases) > 1 and not (prev_view and bases[-1] <= prev_view[5]) and \
                self._orphan_segment(bases[-2], bases[-1]):
            self._unlink_segment(bases.pop())
        # The recovery point (Kafka's): every offset below it was covered by a
        # completed fsync. It is read from the stale block only; a missing or
        # invalid block proves nothing was synced but what the roll's rule
        # guarantees (below the newest closed segment, see there).
        synced = self.ctl.synced_offset if prev_view else 0
        start = prev_view[5] if prev_view else 0
        if not bases:
            base = prev_view[2] if prev_view else 0
            self._create_segment_files(base, self.segment_bytes, _NO_TIMESTAMP)
            bases = [base]
            start = base
        # Segments that retention had already given up (I7) go now.
        live = [b for b in bases if b >= start] or bases[-1:]
        for b in bases:
            if b < live[0] and (b == bases[-1] or bases[bases.index(b) + 1] <= start):
                self._unlink_segment(b)
        bases = [b for b in bases if b >= live[0]]
        start = max(start, bases[0])
        if len(bases) >= 2:
            # A roll publishes only after every segment before the one it closes is
            # synced (_roll_locked): below the newest closed segment nothing can be torn,
            # even when the block (and its recorded point) is lost or lags.
            synced = max(synced, bases[-2])
        # Closed segments past the recovery point (a roll in never/interval leaves
        # their sync to the background) may hold pages that never reached the disk.
        bases, dropped = self._revalidate_closed(bases, synced, read_only=False)
        active = bases[-1]
        log_path = os.path.join(self.path, files.segment_name(active))
        fd = os.open(log_path, os.O_RDWR)
        try:
            entries: list = []
            damage: list = []
            size, m, data_end, running, pos, next_off, running_end, problem = self._scan_newest(
                fd, active, bases, synced, entries, damage)
            for file_pos, reason in damage:
                log.error("streamlog: %s is corrupt at byte %d (%s), before the recovery point "
                          "and with valid data after it: kept as it is; reads there raise "
                          "CorruptionError until `streamlog repair`", log_path, file_pos, reason)
            if problem is not None:
                saved = "nowhere (nothing but zeros)"
                if data_end > pos:  # never delete: what is cut is kept in quarantine
                    saved = self._quarantine(active, pos, bytes(memoryview(m)[pos:data_end]))
                kind, file_pos, reason = problem
                log.warning("streamlog: torn tail of %s truncated at byte %d of %d (%s): a "
                            "writer died mid-append or the machine lost power before it "
                            "synced; the bytes cut are kept in %s", log_path, file_pos,
                            data_end, reason, saved)
            del m
            if (problem is not None or dropped) and self.on_cut is not None:
                self.on_cut(self.topic, self.partition, next_off)
            capacity = max(self.segment_bytes, size if problem is None and pos == size else 0,
                           pos)
            # Zero everything after the last good batch (I5): the torn bytes
            # and any stale pages, then preallocate to capacity.
            os.ftruncate(fd, pos)  # zeros after the data; appends reserve blocks ahead
            os.ftruncate(fd, capacity)
            os.fsync(fd)
        finally:
            os.close(fd)
        # The names of the segments kept, and the removals: durable before the rebuilt
        # block's recovery point (the recovered end) is.
        files.fsync_dir(self.path)
        # Rebuild the active segment's sparse indexes from the scan.
        self._write_index_files(active, *_index_bytes(active, running, entries,
                                                      index_capacity(capacity)))
        count = len(entries) + 1
        last_index_pos = entries[-1][1] if entries else 0
        generation = (prev_view[0] + 1) if prev_view else 1
        self.ctl.initialize(self._boot, generation, active, next_off, pos, capacity,
                            running_end, start, count, last_index_pos)

    def _revalidate_closed(self, bases: list[int], synced: int,
                           read_only: bool) -> tuple[list[int], bool]:
        """Check the closed segments from the one holding ``synced`` on, after a reboot.

        A roll in ``never`` and ``interval`` publishes the new segment before the
        closed one is synced, so a power loss can leave damage in closed segments
        past the recovery point (pages never written back, or written back out of
        order; a segment ending short of the next one's base), not only in the
        newest. Each is scanned batch by batch (CRC included) by the rule of
        ``_scan_tail``. At the first damage that is a torn tail, that segment
        becomes the newest: the later segments' bytes are quarantined and their
        files removed (read-only: only left out of this process's view), and the
        caller cuts the tail. Damage before the recovery point with valid data
        after it is corruption and stays. A segment found whole is trimmed to its
        data, gets index files rebuilt from the scan, and is synced.

        Returns the bases that remain and whether segments were dropped.
        """
        first = max((i for i, b in enumerate(bases) if b <= synced), default=0)
        for i in range(first, len(bases) - 1):
            b, nxt = bases[i], bases[i + 1]
            path = os.path.join(self.path, files.segment_name(b))
            fd = os.open(path, os.O_RDONLY if read_only else os.O_RDWR)
            try:
                entries: list = []
                damage: list = []
                size, m, _, running, pos, next_off, _, problem = self._scan_newest(
                    fd, b, bases, synced, entries, damage)
                del m
                if problem is None and next_off != nxt:
                    problem = ("torn", pos, f"the segment ends at offset {next_off}, the "
                               f"next one starts at {nxt}")
                if problem is None:
                    for file_pos, reason in damage:
                        log.error("streamlog: %s is corrupt at byte %d (%s), before the "
                                  "recovery point and with valid data after it: kept as it "
                                  "is; reads there raise CorruptionError until `streamlog "
                                  "repair`", path, file_pos, reason)
                    if not read_only:
                        if size > pos:  # a roll's trim that never reached the disk
                            os.ftruncate(fd, pos)
                        os.fdatasync(fd)
                        count = len(entries) + 1
                        self._write_index_files(b, *_index_bytes(b, running, entries, count))
                    continue
            finally:
                os.close(fd)
            later = bases[i + 1:]
            if read_only:
                log.warning("streamlog: torn tail of %s at byte %d (%s) skipped, and the "
                            "segments after it (from offset %d): the store is open "
                            "read-only; the next writer cuts them", path, pos, problem[2], nxt)
                return bases[:i + 1], True
            saved = []
            for nb in later:
                nb_path = os.path.join(self.path, files.segment_name(nb))
                nfd = os.open(nb_path, os.O_RDONLY)
                try:
                    nsize = os.fstat(nfd).st_size
                    if nsize:
                        nm = _ext.Mapping(nfd, nsize, False)
                        end = _last_nonzero_end(nfd, nm, 0, nsize)
                        if end:
                            saved.append(self._quarantine(nb, 0, bytes(memoryview(nm)[:end])))
                        del nm
                finally:
                    os.close(nfd)
                self._unlink_segment(nb)
            log.warning("streamlog: %s is damaged past the recovery point at byte %d (%s): "
                        "the machine lost power before the segment was synced; it is now the "
                        "newest segment and its torn tail is cut; the %d segment(s) after it "
                        "(offsets from %d) are removed, their bytes kept in %s", path, pos,
                        problem[2], len(later), nxt, ", ".join(saved) or
                        "nowhere (nothing but zeros)")
            return bases[:i + 1], True
        return bases, False

    def _quarantine(self, base: int, file_pos: int, data: bytes) -> str:
        """Keep bytes that recovery cuts, in DIR/quarantine/<topic>/<partition>/."""
        root = os.path.dirname(os.path.dirname(os.path.dirname(self.path)))
        qdir = os.path.join(root, files.QUARANTINE_DIR, self.topic, str(self.partition))
        os.makedirs(qdir, exist_ok=True)
        name = f"{files.segment_name(base, '')}.{file_pos}.{time.time_ns()}.tail"
        path = os.path.join(qdir, name)
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        files.fsync_dir(qdir)
        return path

    def _orphan_segment(self, prev: int, last: int) -> bool:
        """True when segment ``last`` is empty and ``prev``'s batches end at another offset."""
        with open(os.path.join(self.path, files.segment_name(last)), "rb") as f:
            if any(f.read(_codec.HEADER_SIZE)):
                return False
        fd = os.open(os.path.join(self.path, files.segment_name(prev)), os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            m = _ext.Mapping(fd, size, False) if size else b""
            try:
                _, end = _codec.hop(m, 0, size, prev, 1 << 62)
            except (CorruptionError, TornTail):
                return False  # cannot tell: keep it (verify reports the damage)
        finally:
            os.close(fd)
        return end != last

    def _running_max_before(self, base: int, bases: list[int]) -> int:
        """Running maximum timestamp before segment ``base``: its timeindex entry 0."""
        path = os.path.join(self.path, files.segment_name(base, files.TIMEINDEX_SUFFIX))
        try:
            with open(path, "rb") as f:
                raw = f.read(_TIMEINDEX_ENTRY)
            if len(raw) == _TIMEINDEX_ENTRY:
                return int(np.frombuffer(raw[:8], dtype="<i8")[0])
        except FileNotFoundError:
            pass
        # No usable index: take the previous segment's largest batch timestamp.
        i = bases.index(base)
        if i == 0:
            return _NO_TIMESTAMP
        prev = os.path.join(self.path, files.segment_name(bases[i - 1]))
        running = _NO_TIMESTAMP
        with open(prev, "rb") as f:
            data = f.read()
        pos, _, running, _ = _codec.scan(data, 0, len(data), -1, running, 0, None)
        return running

    def _write_index_files(self, base: int, idx: bytes, tidx: bytes) -> None:
        for suffix, data in ((files.INDEX_SUFFIX, idx), (files.TIMEINDEX_SUFFIX, tidx)):
            path = os.path.join(self.path, files.segment_name(base, suffix))
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    def _create_segment_files(self, base: int, capacity: int, running_max: int,
                              sync_dir: bool = True) -> None:
        """Create an empty, preallocated segment and its indexes (entry 0 set).

        The .log is written as ``.swap`` and renamed into place so a complete
        segment file is the only kind recovery ever sees (I6). The directory is
        synced after the rename unless ``sync_dir`` is False: a roll in ``never``
        or ``interval`` leaves it to the next sync, which syncs the directory
        before the recovery point may pass into the new segment (``_sync_now``).
        """
        icap = index_capacity(capacity)
        idx = np.zeros((icap, 2), dtype="<u4")
        tidx = np.zeros(icap, dtype=[("ts", "<i8"), ("rel", "<u4")])
        tidx[0] = (running_max, 0)
        self._write_index_files(base, idx.tobytes(), tidx.tobytes())
        final = os.path.join(self.path, files.segment_name(base))
        swap = final + files.SWAP_SUFFIX
        fd = os.open(swap, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            # Sparse to capacity; appends reserve blocks ahead of the data
            # (_reserve_locked), so a full disk is an OSError, never a SIGBUS.
            os.ftruncate(fd, capacity)
            os.posix_fallocate(fd, 0, min(capacity, SEGMENT_ALLOCATION_CHUNK_BYTES))
        except OSError:
            os.close(fd)
            os.unlink(swap)
            raise
        os.close(fd)
        os.rename(swap, final)
        if sync_dir:
            files.fsync_dir(self.path)

    def _unlink_segment(self, base: int) -> None:
        """Delete a segment: rename to .deleted first so a crash leaves no half segment."""
        log_path = os.path.join(self.path, files.segment_name(base))
        try:
            os.rename(log_path, log_path + files.DELETED_SUFFIX)
        except FileNotFoundError:
            pass
        for suffix in (files.INDEX_SUFFIX, files.TIMEINDEX_SUFFIX):
            try:
                os.unlink(os.path.join(self.path, files.segment_name(base, suffix)))
            except FileNotFoundError:
                pass
        try:
            os.unlink(log_path + files.DELETED_SUFFIX)
        except FileNotFoundError:
            pass

    # -------------------------------------------------------------- caching
    def _check(self) -> None:
        if self._closed:
            # delete_topic closes the partition: its handles must say why (TopicNotFound)
            if self.ctl.deleted:
                raise TopicNotFound(f"topic {self.topic!r} was deleted")
            raise StoreClosed("the store is closed")

    def _refresh(self, view) -> None:
        """Bring the segment cache up to the published generation (roll, retention)."""
        gen = view[0]
        if gen == self._gen_seen:
            return
        with self._cache_lock:
            # Rebuild from the newest published state, never from the caller's view:
            # another thread may have refreshed past it already, and going back would
            # drop (and close the fds of) segments that thread is using.
            view = self.ctl.view()
            gen = view[0]
            if gen == self._gen_seen:
                return
            if self.ctl.deleted:
                raise TopicNotFound(f"topic {self.topic!r} was deleted")
            bases = [b for b in files.list_segments(self.path) if b <= view[1]]
            start = view[5]
            # keep only segments that still hold offsets >= start
            keep = [b for i, b in enumerate(bases)
                    if i + 1 == len(bases) or bases[i + 1] > start]
            for b in list(self._segments):
                if b not in keep:
                    seg = self._segments.pop(b)
                    seg.mapping = None
                    fd = self._fds.pop(b, None)
                    if fd is not None:
                        os.close(fd)
            for b in keep:
                if b not in self._segments:
                    self._segments[b] = Segment(b, os.path.join(self.path, files.segment_name(b)))
            # A formerly active segment is closed now and its files were trimmed:
            # drop the capacity-sized maps (touching past the new end would fault).
            for b in keep[:-1]:
                seg = self._segments[b]
                if seg.active_mapped:
                    seg.mapping = None
                    seg.index_maps = None
                    seg.index = seg.timeindex = None
                    seg.size = -1
                    seg.active_mapped = False
            # A closed segment whose file compaction replaced (a new inode under
            # the same name): map the new file, with its own indexes.
            if self.compacted_topic:
                for b in keep[:-1]:
                    self._forget_if_replaced(self._segments[b])
            # The active segment's bytes past its end may have been cut and
            # written again (a torn tail): check its CRCs anew.
            self._segments[keep[-1]].verified_to = 0
            self._segments[keep[-1]].subjects = None
            self._bases = keep
            self._gen_seen = gen

    def _forget_if_replaced(self, seg: Segment) -> bool:
        """Drop this process's map, descriptor and indexes of a segment whose file was
        replaced by compaction since it was mapped (cache lock held). True if so."""
        fd = self._fds.get(seg.base)
        if fd is None and seg.mapping is None:
            return False
        try:
            ino = os.stat(seg.path).st_ino
        except FileNotFoundError:
            return False
        mapped = seg.ino if seg.mapping is not None else (os.fstat(fd).st_ino if fd is not None
                                                          else ino)
        if ino == mapped and (fd is None or os.fstat(fd).st_ino == ino):
            return False
        seg.mapping = None
        seg.index_maps = None
        seg.index = seg.timeindex = None
        seg.size = -1
        seg.verified_to = 0
        seg.subjects = None
        seg.ino = 0
        seg.gaps = None
        fd = self._fds.pop(seg.base, None)
        if fd is not None:
            os.close(fd)
        return True

    def _closed_error(self) -> Exception:
        if self.ctl.deleted:
            return TopicNotFound(f"topic {self.topic!r} was deleted")
        return StoreClosed("the store is closed")

    def _fd(self, base: int) -> int:
        fd = self._fds.get(base)
        if fd is None:
            # (a descriptor opened after close() let go of them would stay open)
            self._check()
            fd = os.open(os.path.join(self.path, files.segment_name(base)),
                         os.O_RDONLY if self.read_only else os.O_RDWR)
            self._fds[base] = fd
        return fd

    def _map(self, seg: Segment, active: bool, capacity: int) -> _ext.Mapping:
        """Map a segment: the active one at its capacity, a closed one at its size.

        A closed segment never reuses a map made while it was active (a thread
        with an older view may have made one after the roll): past its trimmed
        end, that map would fault.
        """
        m = seg.mapping
        if m is not None and (m.length >= capacity if active else not seg.active_mapped):
            return m
        with self._cache_lock:
            m = seg.mapping
            if m is not None and (m.length >= capacity if active else not seg.active_mapped):
                return m
            if not active:
                seg.index_maps = None
                seg.index = seg.timeindex = None
                seg.active_mapped = False
            try:
                fd = self._fd(seg.base)
            except FileNotFoundError:
                raise _SegmentGone() from None
            if active:
                seg.mapping = _ext.Mapping(fd, capacity, not self.read_only)
                seg.active_mapped = True
                seg.ino = os.fstat(fd).st_ino
            else:
                st = os.fstat(fd)
                # (while this process's background syncer has not trimmed a segment its
                # roll closed, only the data: the file's tail goes at the trim)
                end = self._untrimmed.get(seg.base)
                seg.size = st.st_size if end is None else min(st.st_size, end)
                seg.ino = st.st_ino
                seg.mapping = _ext.Mapping(fd, seg.size, False)
            seg.index = None
            return seg.mapping

    def _indexes(self, seg: Segment, active: bool, count: int):
        """The segment's (index, timeindex) arrays; ``count`` entries when active.

        index is (n, 2) uint32 (relative offset, file_pos); timeindex is the
        (n,) int64 running maximum before each indexed batch (I8). (None, None)
        when the files are missing (they are derived; lookups then scan).
        """
        if not active and seg.index is not None:
            return seg.index, seg.timeindex
        with self._cache_lock:
            if seg.index_maps is None or (not active and seg.active_mapped):
                # (index files mapped while active are trimmed now: map them again)
                seg.index_maps = self._map_index_files(seg.base)
                seg.active_mapped = seg.active_mapped or active
            imap, tmap = seg.index_maps
            if imap is None or tmap is None or len(imap) < 8 or len(tmap) < 12:
                return None, None
            idx = np.frombuffer(imap, dtype="<u4").reshape(-1, 2)
            tidx = np.ndarray((len(tmap) // _TIMEINDEX_ENTRY,), dtype="<i8", buffer=tmap,
                              strides=(_TIMEINDEX_ENTRY,))
            n = min(len(idx), len(tidx))
            if active:
                return idx[:min(n, count)], tidx[:min(n, count)]
            # A closed segment not yet trimmed has zero entries after its real
            # ones; every entry after entry 0 has file_pos > 0.
            zeros = np.flatnonzero(idx[1:n, 1] == 0)
            if len(zeros):
                n = int(zeros[0]) + 1
            seg.index, seg.timeindex = idx[:n], tidx[:n]
            return seg.index, seg.timeindex

    def _map_index_files(self, base: int):
        self._check()  # (files mapped after close() let go of them would stay mapped)
        maps: list[_ext.Mapping | None] = []
        for suffix in (files.INDEX_SUFFIX, files.TIMEINDEX_SUFFIX):
            p = os.path.join(self.path, files.segment_name(base, suffix))
            try:
                fd = os.open(p, os.O_RDONLY if self.read_only else os.O_RDWR)
            except FileNotFoundError:
                maps.append(None)
                continue
            try:
                maps.append(_ext.Mapping(fd, os.fstat(fd).st_size, not self.read_only))
            finally:
                os.close(fd)
        return maps[0], maps[1]

    # --------------------------------------------------------------- append
    def append(self, data: bytes, count: int, max_ts: int) -> int:
        """Append one encoded batch; returns its base offset (the first record's offset)."""
        r = self.writer.append(data, count, max_ts)
        if r < 0:
            r = self._append_slow(data, count, max_ts)
        if self.durability == "always":
            self.sync_to(r + count)
        return r

    def _append_slow(self, data: bytes, count: int, max_ts: int) -> int:
        self._check()
        if self.read_only:
            raise self._read_only_error()
        self.ctl.lock()
        try:
            return self._write_locked(data, count, max_ts)
        finally:
            self.ctl.unlock()

    def _prepare_locked(self) -> None:
        """Bring this process's writer in line with the control block (lock held):
        refuse a deleted topic, zero a dead writer's bytes (I5), follow a roll."""
        while True:
            if self.ctl.deleted:
                raise TopicNotFound(f"topic {self.topic!r} was deleted")
            if self.ctl.pending_end != self.ctl.end_pos:
                self._recover_locked()
            elif self.writer.generation != self.ctl.generation:
                self._attach_locked()
            else:
                return

    def _write_locked(self, data: bytes, count: int, max_ts: int) -> int:
        """Append an encoded batch (lock held), reserving blocks or rolling as needed."""
        while True:
            self._prepare_locked()
            r = self.writer.append_locked(data, count, max_ts)
            if r >= 0:
                return r
            if r == _ext.APPEND_ALLOC:
                self._reserve_locked(len(data))
            elif r == _ext.APPEND_FULL:
                self._roll_locked(len(data))
            elif r == _ext.APPEND_IOERR:
                err = self.writer.last_errno
                raise OSError(err, f"{os.strerror(err)} writing {self.path}")

    def append_with(self, build):
        """Run ``build(end_offset)`` under the append lock and append what it returns.

        ``build`` returns ``(data, count, max_ts, result)`` to append an encoded
        batch, or ``(None, 0, 0, result)`` to write nothing. It may read and
        write LMDB (lock order: partition lock, then LMDB write transaction),
        and sees every record appended before it by any process. Returns
        ``(base_offset or -1, result)``. The event store's expected-version
        check and msg_id dedupe are made this way.
        """
        self._check()
        if self.read_only:
            raise self._read_only_error()
        self.ctl.lock()
        try:
            self._prepare_locked()
            data, count, max_ts, result = build(self.ctl.end_offset())
            if data is None:
                return -1, result
            r = self._write_locked(data, count, max_ts)
        finally:
            self.ctl.unlock()
        if self.durability == "always":
            self.sync_to(r + count)
        return r, result

    def _attach_locked(self) -> None:
        view = self.ctl.view()
        self._refresh(view)
        seg = self._segments[view[1]]
        m = self._map(seg, True, view[4])
        idx, tidx = self._index_maps_for_write(seg)
        self.writer.attach(view[0], m, idx, tidx, self._fd(seg.base))
        if self._retain_on_attach:  # this process's first append since opening
            self._retain_on_attach = False
            self._apply_retention_locked(False)

    def _index_maps_for_write(self, seg: Segment):
        seg.index_maps = self._map_index_files(seg.base)
        seg.active_mapped = True
        return seg.index_maps

    def _recover_locked(self) -> None:
        """A writer died between reserving and publishing: zero its bytes (I5) and log it."""
        view = self.ctl.view()
        self._refresh(view)
        seg = self._segments[view[1]]
        m = self._map(seg, True, view[4])
        start, end = self.ctl.end_pos, self.ctl.pending_end
        end = min(end, len(m))
        if end > start:
            memoryview(m)[start:end] = bytes(end - start)
        log.warning("streamlog: torn tail of %s truncated at byte %d (%d bytes): a writer died "
                    "mid-append", seg.path, start, max(end - start, 0))
        self.ctl.publish(end_pos=start)

    def _tail_damaged(self, seen) -> bool:
        """A read found damage in the newest segment as of view ``seen``: sort it out.

        Takes the append lock (so never under a live writer) and scans the
        newest segment. A torn tail (the rule in ``_scan_tail``) is cut: its
        bytes go to quarantine, the end moves back to the last whole batch, and
        appends continue densely from there. True when the caller should read
        again (a tail was cut, or the end moved meanwhile); False when the damage
        is corruption that stays (the caller raises ``CorruptionError``).
        """
        self._check()
        if self.read_only:
            try:
                return self._skip_torn_tail()
            except _SegmentGone:  # retention (another process) removed it: read again
                self._gen_seen = -1
                return True
        self.ctl.lock()
        try:
            self._prepare_locked()
            if self.ctl.view()[:4] != seen[:4]:
                return True
            return self._cut_torn_tail_locked()
        finally:
            self.ctl.unlock()

    def _skip_torn_tail(self) -> bool:
        """Read-only: a torn tail is skipped, not cut. This process's views end before
        it (``view()``), and the files stay as they are. True if newly skipped."""
        view = self.ctl.view()
        self._refresh(view)
        seg = self._segments[view[1]]
        m = self._map(seg, True, view[4])
        limit = self._limit(seg, True, view, m)
        pos, next_off, _, problem = _scan_tail(
            m, limit, view[1], -1, self.ctl.synced_offset, [])
        if problem is None and pos >= view[3]:
            return False
        skip = (view[0], view[1], next_off, pos)
        if skip == self._skip:
            return False
        self._skip = skip
        log.warning("streamlog: torn tail of %s at byte %d skipped (the store is open "
                    "read-only; the next writer cuts it): reads end at offset %d",
                    seg.path, pos, next_off)
        return True

    def _cut_torn_tail_locked(self) -> bool:
        """Scan the newest segment (lock held); cut a torn tail. True if one was cut."""
        view = self.ctl.view()
        self._refresh(view)
        gen, base, _, end_pos, capacity = view[:5]
        seg = self._segments[base]
        m = self._map(seg, True, capacity)
        fd = self._fd(base)
        size = os.fstat(fd).st_size
        limit = min(end_pos, size)
        synced = self.ctl.synced_offset
        pos, next_off, running, problem = _scan_tail(
            m, limit, base, self._running_max_before(base, self._bases), synced, [])
        if problem is None and pos >= end_pos:
            if size < capacity:  # only zeros were cut off: give the file its size back
                self._restore_size_locked(fd, capacity, end_pos)
            return False  # whole: the damage the reader saw is elsewhere
        if problem is None:
            problem = ("torn", pos, f"the file ends at byte {size}, inside the data")
        cut = bytes(memoryview(m)[pos:limit])
        saved = self._quarantine(base, pos, cut) if any(cut) else \
            "nowhere (nothing but zeros, or the file ended there)"
        if size < capacity:
            self._restore_size_locked(fd, capacity, pos)
        memoryview(m)[pos:end_pos] = bytes(end_pos - pos)  # I5: zeros past the end
        os.fdatasync(fd)
        idx, _ = self._indexes(seg, True, view[7])
        count, last_index_pos = 1, 0
        if idx is not None and len(idx) > 1:
            keep = idx[1:][idx[1:, 1] < pos]
            count = 1 + len(keep)
            last_index_pos = int(keep[-1, 1]) if len(keep) else 0
        if self.on_cut is not None:
            self.on_cut(self.topic, self.partition, next_off)
        self.ctl.publish(generation=gen + 1, end_offset=next_off, end_pos=pos,
                         max_timestamp_ms=running, index_count=count,
                         last_index_pos=last_index_pos, synced_offset=min(synced, next_off))
        seg.verified_to = min(seg.verified_to, pos)
        seg.subjects = None
        log.warning("streamlog: torn tail of %s truncated at byte %d of %d (%s): pages written "
                    "after the last sync were lost, or the file was cut; offsets from %d on "
                    "will be written again; the bytes cut are kept in %s", seg.path, pos,
                    end_pos, problem[2], next_off, saved)
        return True

    def _restore_size_locked(self, fd: int, capacity: int, pos: int) -> None:
        """The file shrank under its mapping: give it its size and reserved blocks back
        before anything touches those pages again (a store past its end is a SIGBUS)."""
        os.ftruncate(fd, capacity)
        allocated = self.ctl.allocated_end
        if allocated > pos:
            os.posix_fallocate(fd, pos, allocated - pos)

    def _roll_locked(self, need: int, retain: bool = True) -> None:
        """Close the full active segment and start a new one (caller holds the lock).

        Order (crash-safe at every step, I6): create the new segment files;
        in ``always``, sync the directory and the old segment; publish the
        switch; trim the old files to their data. A crash before the switch
        leaves an unused file the next roll recreates; after it, an untrimmed
        closed segment readers tolerate.

        In ``never`` and ``interval`` the switch is published without waiting
        for either sync: the trim, the closed segment's ``fdatasync`` and the
        directory's ``fsync`` run in the background (``_sync_closed``), and the
        recovery point stays below the closed segment until the syncs have
        completed, so recovery after a power loss re-validates it
        (``_cold_start``).
        """
        view = self.ctl.view()
        gen, old_base, end_offset, end_pos, _, start, max_ts, icount = view
        capacity = max(self.segment_bytes, need)
        if end_pos == 0:
            # Nothing in the active segment yet, but the batch is bigger than it:
            # grow it in place. A new file of the same name would pull the mapped
            # one from under every process (stores into the old inode, SIGBUS).
            self._grow_active_locked(gen, old_base, capacity)
            return
        # I6: a roll that died before publishing left a segment file past the
        # active one, and appends went on here since, so its name is no longer
        # the next base. Remove it before anyone takes it for a closed segment.
        for b in files.list_segments(self.path):
            if b > old_base and b != end_offset:
                self._unlink_segment(b)
        wait = self.durability == "always"
        self._create_segment_files(end_offset, capacity, max_ts, sync_dir=wait)
        old_fd = self._fd(old_base)
        # The recovery point is an offset: everything below it is durable, whichever
        # segment holds it. ``always`` syncs the closing segment here (every append
        # it acknowledged is durable already; this keeps the roll's files so too);
        # the other modes leave it to the background.
        if wait:
            os.fdatasync(old_fd)
        else:
            synced = self.ctl.synced_offset
            if synced < old_base:
                # At most one closed segment ever waits for its sync (the one this roll
                # closes): the segments closed before it are made durable here if their
                # background sync has not completed yet (rare: a segment takes longer to
                # fill than its sync). So everything below the newest closed segment is
                # durable whatever the control block says, and recovery after a power
                # loss re-validates at most that segment and the newest (_cold_start).
                self._sync_closed_below(synced, old_base)
                if self.ctl.synced_offset < old_base:
                    self.ctl.synced_offset = old_base
        self.ctl.publish(generation=gen + 1, active_base=end_offset, end_pos=0,
                         capacity=capacity, index_count=1, last_index_pos=0, recovery_point=0,
                         allocated_end=min(capacity, SEGMENT_ALLOCATION_CHUNK_BYTES))
        # The trim: the old segment and its indexes cut to their data (I6). It frees the
        # blocks reserved past the data; ext4 mounted with ``discard`` discards blocks
        # allocated in the still-open journal transaction synchronously (2-22 ms a roll
        # when no sync came first), so in never/interval the background syncer trims,
        # through descriptors of its own taken now: under this lock no
        # compaction can have replaced the files, and a later one replaces the name,
        # never these inodes. Until then the closed segment holds zeros after its
        # data, as after a crash between the publish and the trim.
        trims = [(os.dup(old_fd), end_pos)]
        try:
            for suffix, size in ((files.INDEX_SUFFIX, icount * _INDEX_ENTRY),
                                 (files.TIMEINDEX_SUFFIX, icount * _TIMEINDEX_ENTRY)):
                path = os.path.join(self.path, files.segment_name(old_base, suffix))
                try:
                    trims.append((os.open(path, os.O_RDWR), size))
                except FileNotFoundError:  # derived files: a missing one needs no trim
                    pass
            if wait:
                _trim(trims)
        except BaseException:
            _close_all(trims)
            raise
        if wait:
            _close_all(trims)
        else:  # (the job owns the descriptors from here on)
            self._synced_behind = True
            self._untrimmed[old_base] = end_pos
            prefault.request_sync(functools.partial(self._sync_closed, old_base, trims))
        self._attach_locked()
        if retain and self.retention is not None:
            self._apply_retention_locked(False)
        if self.on_roll is not None:
            self.on_roll()

    def _reserve_locked(self, need: int) -> None:
        """Allocate the active segment's blocks a chunk past the next ``need`` bytes.

        posix_fallocate raises OSError (ENOSPC) on a full disk: the append
        fails cleanly with nothing written, instead of a SIGBUS on a store into
        a mapped hole.
        """
        end_pos, capacity, allocated = self.ctl.end_pos, self.ctl.capacity, \
            self.ctl.allocated_end
        target = min(capacity, end_pos + need + SEGMENT_ALLOCATION_CHUNK_BYTES)
        if target > allocated:
            view = self.ctl.view()
            os.posix_fallocate(self._fd(view[1]), allocated, target - allocated)
            self.ctl.publish(allocated_end=target)
            # the appends about to fill this chunk should not wait for its pages, when
            # they store through the mapping. A batch of PWRITE_MIN_BYTES or more (as
            # the one reserving this chunk) goes through pwrite, which needs no page
            # there first: populating would have the kernel zero every page only to
            # have the write overwrite it, on a core the appender may need
            # (docs/performance.md, "Prefault only for stores through the mapping").
            if need < _ext.PWRITE_MIN_BYTES:
                prefault.request(self._map(self._segments[view[1]], True, view[4]),
                                 max(allocated, end_pos + need), target)
            # and the roll that closes this segment should not wait for all of it to
            # reach the disk (its fdatasync, under this lock): start the written full
            # pages on their way now, in the background.
            base, done = self._written_back
            if base != view[1]:
                done = 0
            upto = end_pos & ~(WRITEBACK_STEP_BYTES - 1)
            if upto - done >= WRITEBACK_STEP_BYTES:
                prefault.request_writeback(self._fd(view[1]), done, upto)
                self._wrote_back = True
                done = upto
            self._written_back = (view[1], done)

    def _grow_active_locked(self, gen: int, base: int, capacity: int) -> None:
        """Grow the (empty) active segment and its indexes to ``capacity``."""
        os.ftruncate(self._fd(base), capacity)
        icap = index_capacity(capacity)
        for suffix, entry in ((files.INDEX_SUFFIX, _INDEX_ENTRY),
                              (files.TIMEINDEX_SUFFIX, _TIMEINDEX_ENTRY)):
            fd = os.open(os.path.join(self.path, files.segment_name(base, suffix)), os.O_RDWR)
            try:
                os.posix_fallocate(fd, 0, icap * entry)
            finally:
                os.close(fd)
        self.ctl.publish(generation=gen + 1, capacity=capacity)
        self._attach_locked()

    def start_empty_at(self, offset: int) -> None:
        """Make this empty partition's next offset (and its start) ``offset``.

        For a copy of a partition whose start retention moved: its offsets are
        kept, as a Kafka partition keeps its log start offset. Under the append
        lock: a new empty active segment named ``offset`` is created, then
        published as the active segment with start = end = ``offset`` (and the
        control block synced), then the empty segments below it are removed.
        A crash before the publish leaves an unused file that the next roll,
        recovery or call removes; after it, files below the start that
        recovery removes (I7). Idempotent when the partition is empty at
        ``offset`` already; StreamlogError when it holds records or its end is
        past ``offset``; nothing changes then.
        """
        self._check()
        if self.read_only:
            raise self._read_only_error()
        self.ctl.lock()
        try:
            self._prepare_locked()
            gen, active, end, end_pos, _, start, max_ts, _ = self.ctl.view()
            if start == end == offset:
                return
            if start != end or end > offset:
                raise StreamlogError(
                    f"{self.path}: cannot start at offset {offset}: the partition holds "
                    f"offsets [{start}, {end}) (only an empty partition whose end is at or "
                    f"below it can)")
            for b in files.list_segments(self.path):
                if b > active:  # left by a roll or a start that died before publishing
                    self._unlink_segment(b)
            self._create_segment_files(offset, self.segment_bytes, max_ts)
            self.ctl.publish(generation=gen + 1, active_base=offset, end_offset=offset,
                             start_offset=offset, end_pos=0, capacity=self.segment_bytes,
                             index_count=1, last_index_pos=0, recovery_point=0,
                             allocated_end=min(self.segment_bytes,
                                               SEGMENT_ALLOCATION_CHUNK_BYTES),
                             synced_offset=offset)
            self._sync_control()  # the new start is durable before anything lands on it
            for b in files.list_segments(self.path):
                if b < offset:
                    self._unlink_segment(b)
            files.fsync_dir(self.path)
            self._attach_locked()
        finally:
            self.ctl.unlock()

    # ------------------------------------------------------------ durability
    def sync_to(self, target_offset: int) -> None:
        """Group commit: return once everything below ``target_offset`` is on disk.

        The first thread to arrive syncs for every thread queued behind it
        (``_ext.GroupCommit``; followers sleep without the GIL).
        """
        if self.ctl.synced_offset < self._commit.synced:
            # A torn tail was cut below what this process had synced: offsets
            # there are written again and need syncing again.
            self._commit = _ext.GroupCommit(self.ctl.synced_offset)
        me = threading.get_ident()
        if me not in self._sync_seen and len(self._sync_seen) < 2:
            self._sync_seen.add(me)
        self._commit.sync_to(target_offset, self._sync_now, len(self._sync_seen) > 1)

    def _sync_now(self) -> int:
        view = self.ctl.view()
        self._refresh(view)
        synced = self.ctl.synced_offset
        if synced < view[1]:
            # A roll in never/interval left closed segments (and the directory entry of
            # the active one) to a background sync that has not completed: make them
            # durable first, or the recovery point would pass offsets that are not.
            self._sync_closed_below(synced, view[1])
        os.fdatasync(self._fd(view[1]))
        # The recovery point moves only after the data it covers is on disk, so
        # it is never ahead of what is durable. It reaches the disk with the
        # control block at most RECOVERY_POINT_SYNC_S later (or earlier, by the
        # kernel's writeback): a lag costs re-validation after a crash, never data.
        self.ctl.synced_offset = view[2]
        now = time.monotonic()
        if now - self._ctl_synced_at >= RECOVERY_POINT_SYNC_S:
            self._ctl_synced_at = now
            self._sync_control()
        return view[2]

    def _sync_closed_below(self, synced: int, active: int) -> None:
        """Make the closed segments holding offsets in ``[synced, active)`` durable, and
        the directory (their names and the active segment's): an ``fdatasync`` of each
        (one of a segment already synced costs no write), then an ``fsync`` of the
        directory. A segment that retention removed meanwhile needs nothing."""
        bases = [b for b in files.list_segments(self.path) if b < active]
        first = max((b for b in bases if b <= synced), default=-1)
        for b in bases:
            if b < first:
                continue
            try:
                fd = os.open(os.path.join(self.path, files.segment_name(b)), os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        files.fsync_dir(self.path)

    def _sync_closed(self, base: int, trims: list[tuple[int, int]]) -> None:
        """The background half of a roll in never/interval (the closed-segment syncer
        thread, ``prefault.request_sync``): trim the closed segment ``base`` and its
        indexes (``trims``: descriptors of this job's own and sizes), sync the segments
        the roll closed and the directory, then move the recovery point up to the
        active segment's base. It never moves the point down, and a close waits for it
        (``prefault.drain``)."""
        try:
            _trim(trims)
        except OSError:
            pass  # untrimmed: zeros after the data, which readers and recovery allow (I6)
        finally:
            _close_all(trims)
            self._untrimmed.pop(base, None)
        if self._closed:
            return
        try:
            view = self.ctl.view()
            active = view[1]
            if self.ctl.synced_offset >= active:
                return  # a sync of this or another process got there first
            self._sync_closed_below(self.ctl.synced_offset, active)
            if self.ctl.synced_offset < active:
                self.ctl.synced_offset = active
            # The control file too, each time (one page, off the appender's path): a
            # recorded point that lagged by a second of rolls would have recovery after
            # a power loss re-validate a second's worth of segments.
            self._ctl_synced_at = time.monotonic()
            self._sync_control()
        except (OSError, StoreClosed, TopicNotFound):
            pass  # the next sync (or roll) covers these segments: see _sync_now

    def _sync_control(self) -> None:
        fd = os.open(os.path.join(self.path, files.CONTROL_FILE), os.O_RDWR)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def flush(self) -> None:
        """Durable up to the current end, whatever the mode."""
        self._check()
        if self.read_only:
            return  # nothing was written
        self.writer.dirty = False
        self.sync_to(self.ctl.end_offset())

    def sync_if_dirty(self) -> None:
        """The interval syncer's step: sync if this process appended since the last one."""
        if self.writer.dirty and not self._closed:
            self.writer.dirty = False
            self.sync_to(self.ctl.end_offset())

    # ----------------------------------------------------------------- reads
    def view(self):
        self._check()
        v = self.ctl.view()
        if self.ctl.deleted:
            raise TopicNotFound(f"topic {self.topic!r} was deleted")
        self._refresh(v)
        skip = self._skip
        if skip is not None and skip[:2] == v[:2] and v[2] > skip[2]:
            v = (v[0], v[1], skip[2], skip[3]) + tuple(v[4:])  # read-only: end before it
        return v

    def start_offset(self) -> int:
        return self.view()[5]

    def end_offset(self) -> int:
        self._check()
        if self.ctl.deleted:
            raise TopicNotFound(f"topic {self.topic!r} was deleted")
        if self._skip is not None:
            return self.view()[2]
        return self.ctl.end_offset()

    def _segment_for(self, offset: int, view) -> tuple[Segment, bool]:
        bases = self._bases
        lo, hi = 0, len(bases) - 1
        while lo < hi:  # last base <= offset
            mid = (lo + hi + 1) // 2
            if bases[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        seg = self._segments.get(bases[lo])
        if seg is None:  # dropped meanwhile by another thread's refresh (retention)
            raise _SegmentGone()
        return seg, bases[lo] == view[1]

    def _limit(self, seg: Segment, active: bool, view, m) -> int:
        """Bytes of ``seg`` a read may touch: its published data, and never past the
        file's real size (a read of a mapped page past the end of a file that
        shrank is a SIGBUS). In the newest segment a file that shrank is a torn
        tail (the read finds a partial batch); in an older one, corruption."""
        end = view[3] if active else len(m)
        # By path, not by the cached fd: another thread's refresh may close that fd
        # (retention removed the segment) and the number may name another file.
        # (A closed segment mapped before the roll trimmed it is longer than the
        # file; a closed one that lost data fails the read's own checks, I2.)
        try:
            st = os.stat(seg.path)
        except FileNotFoundError:
            raise _SegmentGone() from None
        if not active and seg.ino and st.st_ino != seg.ino:
            raise _SegmentGone()  # compaction replaced the file: map the new one
        return min(end, st.st_size)

    def _locate(self, seg: Segment, active: bool, view, m, offset: int,
                limit: int) -> tuple[int, int]:
        """(file_pos, base_offset) of the batch holding ``offset``: index, then hop (I4)."""
        idx, _ = self._indexes(seg, active, view[7])
        pos, base = 0, seg.base
        if idx is not None and len(idx) > 1:
            rel = offset - seg.base
            i = int(np.searchsorted(idx[:, 0], rel, side="right")) - 1
            if i > 0:
                pos, base = int(idx[i, 1]), seg.base + int(idx[i, 0])
        try:
            return _codec.hop(m, pos, limit, base, offset)
        except (CorruptionError, TornTail) as e:
            err = e
            if pos and not active:
                # The index files belong to another version of this segment (compaction
                # replaced the .log and its indexes one rename at a time while this
                # process mapped them): hop from the segment's start instead, and
                # load the indexes again next time. Byte 0 is always a batch start.
                seg.index = seg.timeindex = None
                seg.index_maps = None
                try:
                    return _codec.hop(m, 0, limit, seg.base, offset)
                except (CorruptionError, TornTail) as e2:
                    err = e2
            raise CorruptionError(seg.path, err.file_pos, err.reason) from None

    def read_into(self, offset: int, max_count: int, out: list, cursor=None):
        """Append records from ``offset`` on to ``out`` (whole batches, about ``max_count``).

        Returns a cursor ``(segment_base, file_pos, batch_base)`` that makes the
        next call start without a lookup, or None at the end of the data.
        """
        while True:
            view = self.view()
            if offset < view[5]:
                offset = view[5]
                cursor = None
            if offset >= view[2]:
                return None
            try:
                seg, active = self._segment_for(offset, view)
                m = self._map(seg, active, view[4])
                limit = self._limit(seg, active, view, m)
            except _SegmentGone:
                self._gen_seen = -1  # retention removed it: refresh and retry
                cursor = None
                continue
            try:
                if cursor is not None and cursor[0] == seg.base and \
                        (cursor[1] == 0 or len(cursor) < 4 or cursor[3] == seg.ino):
                    pos, base = cursor[1], cursor[2]
                else:
                    pos, base = self._locate(seg, active, view, m, offset, limit)
                new_pos, next_base, ended = _codec.read_span(
                    m, pos, limit, base, offset, max_count, self.topic, self.partition, out,
                    seg.verified_to if pos <= seg.verified_to else 0)
                if active and ended and next_base < view[2] and new_pos < view[3]:
                    raise CorruptionError(seg.path, new_pos, "zero header inside the written "
                                          "part of the active segment")
            except (CorruptionError, TornTail) as e:
                if active and not out and self._tail_damaged(view):
                    cursor = None
                    continue  # a torn tail was cut (or skipped): read the new end
                raise CorruptionError(seg.path, e.file_pos,
                                      getattr(e, "reason", str(e))) from None
            if pos <= seg.verified_to < new_pos:
                seg.verified_to = new_pos
            if not ended:
                return (seg.base, new_pos, next_base, seg.ino)
            if active:
                return (seg.base, new_pos, next_base, seg.ino) if new_pos == view[3] else None
            # end of a closed segment: the next one must continue the offsets (I2)
            bases = self._bases
            if seg.base not in bases:  # another thread's retention removed it meanwhile
                self._gen_seen = -1
                if out:
                    return None
                offset, cursor = max(offset, next_base), None
                continue
            i = bases.index(seg.base)
            nxt = bases[i + 1] if i + 1 < len(bases) else None
            if nxt is not None and next_base != nxt:
                raise CorruptionError(seg.path, new_pos, f"segment ends at offset {next_base} "
                                      f"but the next segment starts at {nxt} (I2)")
            if out:
                return (nxt, 0, nxt) if nxt is not None else None
            offset = max(offset, next_base)
            cursor = (nxt, 0, nxt) if nxt is not None else None

    def read(self, offset: int = 0, limit: int | None = None):
        """Iterate records from ``offset`` until the end of the data (or ``limit``).

        The records of each refill are handed out by a C-level chain over the
        refilled lists, so a record costs no generator resume of its own."""
        return itertools.chain.from_iterable(self._read_chunks(offset, limit))

    def _read_chunks(self, offset: int, limit: int | None):
        """The lists of records ``read`` hands out, one refill each; after each list is
        consumed, a store closed meanwhile raises StoreClosed."""
        remaining = limit
        cursor = None
        while remaining is None or remaining > 0:
            out: list = []
            box = _Chunk(out)  # lives as long as this frame: close() can empty ``out``
            self._chunks.add(box)
            chunk = _READ_CHUNK if remaining is None else min(_READ_CHUNK, remaining)
            try:
                cursor = self.read_into(offset, chunk, out, cursor)
            except CorruptionError:
                if not out:
                    raise
                # Hand out the good records decoded before the damaged batch; the
                # next refill starts at the damage and raises there.
                cursor = None
            if not out:
                return
            if remaining is not None:
                if len(out) > remaining:
                    del out[remaining:]
                remaining -= len(out)
            yield out
            if self._closed:  # close() emptied ``out`` under us: stop here
                self._check()
            offset = out[-1].offset + 1
            if cursor is None:
                if remaining is None or remaining > 0:
                    continue
                return

    def get(self, offset: int):
        out: list = []
        self.read_into(offset, 1, out)
        for r in out:
            if r.offset == offset:
                return r
        return None

    def _note_indexed(self, seg: Segment) -> None:
        """``seg`` was just indexed or used: the most recently used; the least recently
        used index past SUBJECT_INDEX_SEGMENTS is dropped (rebuilt if a poll walks its
        segment again)."""
        indexed = self._indexed
        with self._cache_lock:
            indexed.pop(seg.base, None)
            indexed[seg.base] = None
            while len(indexed) > SUBJECT_INDEX_SEGMENTS:
                old = next(iter(indexed))
                del indexed[old]
                other = self._segments.get(old)
                if other is not None and other.subjects:
                    other.subjects = None

    def read_matching(self, offset: int, max_offset: int, max_matches: int, flt,
                      out: list) -> int:
        """Append to ``out`` the records of ``[offset, max_offset)`` whose subject ``flt``
        (a ``SubjectFilter``) matches, at most ``max_matches``, in offset order.

        The subjects are matched in the mapped segments without an object per
        record looked at. Returns the offset after the last record looked at:
        every record of ``[offset, returned)`` not in ``out`` does not match (or
        was removed by retention or compaction).
        """
        want = len(out) + max_matches
        while True:
            view = self.view()
            if offset < view[5]:
                offset = view[5]  # removed by retention: nothing left to match
            hi = min(max_offset, view[2])
            if offset >= hi or len(out) >= want:
                return offset
            try:
                seg, active = self._segment_for(offset, view)
                m = self._map(seg, active, view[4])
                limit = self._limit(seg, active, view, m)
            except _SegmentGone:
                self._gen_seen = -1  # retention removed it: refresh and retry
                continue
            had = len(out)
            idx = seg.subjects
            if idx is None and _SubjectIndex is not None:
                idx = seg.subjects = _SubjectIndex(seg.base)
                self._note_indexed(seg)
            elif idx:
                self._note_indexed(seg)
            try:
                got = idx.match(m, limit, offset, hi, want - had, flt, self.topic,
                                self.partition, out, seg.verified_to) if idx else None
                if got is None:
                    if idx is not None and idx is not False and idx.overflowed:
                        seg.subjects = False  # too many distinct subjects: walk the bytes
                    pos, base = self._locate(seg, active, view, m, offset, limit)
                    got = _codec.match_span(
                        m, pos, limit, base, offset, hi, want - had, flt, self.topic,
                        self.partition, out, seg.verified_to if pos <= seg.verified_to else 0)
                else:
                    pos = 0
                    seg.verified_to = max(seg.verified_to, idx.end_pos)
                new_pos, next_base, ended, scanned = got
                if active and ended and max(scanned, next_base) < hi:
                    raise CorruptionError(seg.path, new_pos, "the data ends before the "
                                          "published end")
            except (CorruptionError, TornTail) as e:
                if active and self._tail_damaged(view):
                    del out[had:]
                    continue  # a torn tail was cut (or skipped): read the new end
                raise CorruptionError(seg.path, e.file_pos,
                                      getattr(e, "reason", str(e))) from None
            if pos <= seg.verified_to < new_pos:
                seg.verified_to = new_pos
            offset = max(offset, scanned)
            if not ended or active:
                return offset
            # the end of a closed segment: go on in the next one
            nxt = self._next_base(seg)
            if nxt == seg.base:
                return offset
            offset = max(offset, next_base)

    def read_columns(self, offset: int, max_records: int):
        """Columnar read of up to ``max_records`` from ``offset`` (one segment's worth)."""
        view = self.view()
        offset = max(offset, view[5])
        if offset >= view[2] or max_records <= 0:
            return _codec.read_columns(b"", 0, 0, 0, 0, 0, 0)[0]
        try:
            seg, active = self._segment_for(offset, view)
            m = self._map(seg, active, view[4])
            limit = self._limit(seg, active, view, m)
        except _SegmentGone:  # retention removed it: refresh and retry from the start
            self._gen_seen = -1
            return self.read_columns(offset, max_records)
        try:
            pos, base = self._locate(seg, active, view, m, offset, limit)
            cols, _, _, checked = _codec.read_columns(
                m, pos, limit, base, offset, max_records,
                seg.verified_to if pos <= seg.verified_to else 0)
            if active and len(cols["offsets"]) < max_records and \
                    (cols["offsets"][-1] + 1 if len(cols["offsets"]) else offset) < view[2]:
                # the data ended before the published end: damage
                raise CorruptionError(seg.path, checked, "the data ends before the published end")
        except (CorruptionError, TornTail) as e:
            if active and self._tail_damaged(view):
                return self.read_columns(offset, max_records)
            raise CorruptionError(seg.path, e.file_pos, getattr(e, "reason", str(e))) from None
        if pos <= seg.verified_to < checked:
            seg.verified_to = checked
        n = len(cols["offsets"])
        if n < max_records and not active:
            more = self.read_columns(offset + n if n else self._next_base(seg), max_records - n)
            if len(more["offsets"]):
                cols = _concat_columns(cols, more)
        return cols

    def removed_between(self, lo: int, hi: int) -> int:
        """How many offsets of ``[lo, hi)`` compaction removed (covered by gap batches).
        Only closed segments can hold gaps; each one's are looked up once per file."""
        view = self.view()
        bases = self._bases
        total = 0
        for i, b in enumerate(bases[:-1]):
            if bases[i + 1] <= lo or b >= hi:
                continue
            seg = self._segments.get(b)
            if seg is None:
                continue
            try:
                m = self._map(seg, False, view[4])
                if seg.gaps is None:
                    gaps, pos, base, limit = [], 0, b, len(m)
                    attr = BATCH_OFFSETS["attributes"]
                    mv = memoryview(m)
                    while True:
                        length, count, _, _ = _codec.batch_info(m, pos, limit, base, False)
                        if length == 0:
                            break
                        if mv[pos + attr] == _codec.ATTR_GAP:
                            gaps.append((base, count))
                        pos += length
                        base += count
                    seg.gaps = gaps
            except (_SegmentGone, CorruptionError, TornTail):
                continue
            for g, n in seg.gaps:
                total += max(0, min(g + n, hi) - max(g, lo))
        return total

    def _next_base(self, seg: Segment) -> int:
        bases = self._bases
        if seg.base not in bases:  # removed meanwhile: the caller moves to the start
            return seg.base
        i = bases.index(seg.base)
        return bases[i + 1] if i + 1 < len(bases) else seg.base

    def offset_for_time(self, timestamp_ms: int) -> int:
        """Earliest offset whose running-maximum timestamp is >= ``timestamp_ms``."""
        while True:
            try:
                return self._offset_for_time(timestamp_ms)
            except (_SegmentGone, KeyError):  # retention removed a segment meanwhile
                self._gen_seen = -1

    def _offset_for_time(self, timestamp_ms: int) -> int:
        view = self.view()
        if view[6] < timestamp_ms:
            return view[2]
        # Last segment whose running max at its start is below the target (I8).
        chosen = self._bases[0]
        for b in self._bases[1:]:
            seg = self._segments[b]
            active = b == view[1]
            _, tidx = self._indexes(seg, active, view[7])
            if tidx is None or len(tidx) == 0 or int(tidx[0]) >= timestamp_ms:
                break
            chosen = b
        seg = self._segments[chosen]
        active = chosen == view[1]
        m = self._map(seg, active, view[4])
        idx, tidx = self._indexes(seg, active, view[7])
        pos, base, running = 0, seg.base, _NO_TIMESTAMP
        if idx is not None and len(idx):
            i = int(np.searchsorted(tidx, timestamp_ms, side="left")) - 1
            if i >= 0:
                pos, base, running = int(idx[i, 1]), seg.base + int(idx[i, 0]), int(tidx[i])
        try:
            limit = self._limit(seg, active, view, m)
            try:
                off, _, _, _ = _codec.time_search(m, pos, limit, base, running, timestamp_ms)
            except (CorruptionError, TornTail):
                if active or not pos:
                    raise
                # index files of another version of this segment (see _locate)
                seg.index = seg.timeindex = None
                seg.index_maps = None
                off, _, _, _ = _codec.time_search(m, 0, limit, seg.base, _NO_TIMESTAMP if
                                                  tidx is None else int(tidx[0]), timestamp_ms)
        except (CorruptionError, TornTail) as e:
            if active and self._tail_damaged(view):
                return self._offset_for_time(timestamp_ms)
            raise CorruptionError(seg.path, e.file_pos, getattr(e, "reason", str(e))) from None
        if off < 0:
            return self._next_base(seg) if not active else view[2]
        return max(off, view[5])

    # -------------------------------------------------------------- retention
    def apply_retention(self, dry_run: bool = False) -> list[dict]:
        """Apply the retention policy now; returns what was (or would be) deleted.

        An active segment whose first record is older than ``max_age_s`` is
        rolled first (Kafka's segment.ms), so an idle partition's old records
        can go too. A read-only partition only answers a dry run.
        """
        if self.retention is None:
            return []
        self._check()
        if self.read_only:
            if not dry_run:
                raise self._read_only_error()
            return self._apply_retention_locked(True) + self._idle_active_doomed(True)
        self.ctl.lock()
        try:
            if dry_run:
                return self._apply_retention_locked(True) + self._idle_active_doomed(True)
            if self._idle_active_doomed(False):
                self._retain_on_attach = False  # applied just below, with its result
                self._prepare_locked()
                self._roll_locked(0, retain=False)
            return self._apply_retention_locked(False)
        finally:
            self.ctl.unlock()

    def _idle_active_doomed(self, whole: bool) -> list[dict]:
        """The active segment, when its first record is older than ``max_age_s`` (it is
        then rolled). ``whole``: only when all of it is that old and every closed
        segment goes too (what a dry run reports as deleted). Never an empty one."""
        max_age_s = self.retention[1] if self.retention else None
        if max_age_s is None:
            return []
        view = self.ctl.view()
        if view[3] == 0 or view[2] <= view[1]:
            return []  # empty: never rolled
        try:
            head = os.pread(self._fd(view[1]), HEADER_SIZE, 0)
        except FileNotFoundError:
            return []
        if len(head) < HEADER_SIZE or \
                int.from_bytes(head[BATCH_OFFSETS["magic"]:][:2], "little") != MAGIC:
            return []  # not a batch header: leave it to verify/recovery
        pos = BATCH_OFFSETS["first_timestamp_ms"]
        first_ts = int.from_bytes(head[pos:pos + 8], "little", signed=True)
        limit_ms = int(time.time() * 1000) - max_age_s * 1000
        if first_ts >= limit_ms:
            return []
        if whole:
            self._refresh(view)
            closed = self._bases[:-1]
            if view[6] >= limit_ms or len(self._apply_retention_locked(True)) != len(closed):
                return []
        return [{"topic": self.topic, "partition": self.partition,
                 "segment": files.segment_name(view[1]), "base_offset": view[1],
                 "end_offset": view[2], "bytes": view[3], "reason": "age"}]

    def _apply_retention_locked(self, dry_run: bool) -> list[dict]:
        """Delete whole closed segments past max_bytes / max_age_s (I7). Holds the lock."""
        max_bytes, max_age_s = self.retention
        if max_bytes is None and max_age_s is None:
            return []
        view = self.ctl.view()
        self._refresh(view)
        bases = self._bases
        if not dry_run:
            self._finish_deletions_locked(bases[0])
        closed = bases[:-1]
        if not closed:
            return []
        sizes = {}
        for b in closed:
            try:
                sizes[b] = self.closed_size(b)
            except FileNotFoundError:
                sizes[b] = 0
        total = sum(sizes.values()) + view[3]
        now_ms = int(time.time() * 1000)
        doomed: list[dict[str, Any]] = []
        for i, b in enumerate(closed):
            nxt = bases[i + 1]
            reason = None
            if max_bytes is not None and total > max_bytes:
                reason = "size"
            elif max_age_s is not None:
                newest = self._running_max_before(nxt, bases)
                if newest >= 0 and now_ms - newest > max_age_s * 1000:
                    reason = "age"
            if reason is None:
                break
            doomed.append({"topic": self.topic, "partition": self.partition,
                           "segment": files.segment_name(b), "base_offset": b,
                           "end_offset": nxt, "bytes": sizes[b], "reason": reason})
            total -= sizes[b]
        if dry_run or not doomed:
            return doomed
        new_start = doomed[-1]["end_offset"]
        self.ctl.publish(start_offset=max(new_start, view[5]), generation=view[0] + 1)
        for d in doomed:
            self._unlink_segment(d["base_offset"])
            log.info("streamlog: retention removed %s/%s (%s, offsets %d..%d)", self.path,
                     d["segment"], d["reason"], d["base_offset"], d["end_offset"] - 1)
        files.fsync_dir(self.path)
        self._attach_locked()
        return doomed

    def _finish_deletions_locked(self, first_base: int) -> None:
        """Finish deletions a killed process left half-done (I7): segments wholly below
        the published start, renamed ``.deleted`` files, their indexes. Holds the lock,
        so no roll or retention step of another process is in progress."""
        for b in files.list_segments(self.path):
            if b < first_base:
                self._unlink_segment(b)
        for name in files.leftovers(self.path):
            try:
                os.unlink(os.path.join(self.path, name))
            except FileNotFoundError:
                pass

    # -------------------------------------------------------------- verify
    def closed_size(self, base: int) -> int:
        """Bytes of closed segment ``base``: its file's size, or, while the background
        syncer has not yet trimmed it after its roll, the size the trim will leave (the
        file holds zeros after its data until then). FileNotFoundError once removed."""
        size = os.stat(os.path.join(self.path, files.segment_name(base))).st_size
        end = self._untrimmed.get(base)
        return size if end is None else min(size, end)

    def segments_info(self) -> list[dict]:
        """Base offset, path and size of every segment (the active one by its data end)."""
        view = self.view()
        out = []
        for b in self._bases:
            path = os.path.join(self.path, files.segment_name(b))
            active = b == view[1]
            try:
                size = view[3] if active else self.closed_size(b)
            except FileNotFoundError:
                continue
            out.append({"base_offset": b, "path": path, "bytes": size, "active": active})
        return out

    def verify(self) -> list[dict]:
        """Check every batch of every segment (CRC included). Returns problems found.

        A write left half done by a dead writer (beyond the published end, so
        never readable) is reported with kind "torn": it is not corruption, and
        the next append zeroes it.
        """
        view = self.view()
        problems = []
        if self.ctl.pending_end != self.ctl.end_pos:
            problems.append({"path": os.path.join(self.path, files.segment_name(view[1])),
                             "file_pos": self.ctl.end_pos, "kind": "torn",
                             "reason": "a writer died mid-append; the next append truncates it",
                             "topic": self.topic, "partition": self.partition})
        raw = self.ctl.view() if self._skip is not None else view
        bases = list(self._bases)
        expected = bases[0]
        for i, b in enumerate(bases):
            seg = self._segments[b]
            active = b == view[1]
            path = seg.path
            try:
                m = self._map(seg, active, view[4])
                # a torn tail that a read-only view skips is still reported
                limit = self._limit(seg, active, raw if active else view, m)
            except _SegmentGone:
                continue
            if active:
                problems.extend(self._verify_newest(seg, m, limit, raw))
                continue
            pos, next_off, _, problem = _codec.scan(m, 0, limit, b, -1, 0, None)
            if problem is not None:
                kind, file_pos, reason = problem
                problems.append(self._problem(path, file_pos, reason, "corrupt"))
                expected = bases[i + 1]
                continue
            if b != expected and i > 0:
                problems.append(self._problem(
                    path, 0, f"segment starts at {b}, previous ended at {expected}", "corrupt"))
            if i + 1 < len(bases) and next_off != bases[i + 1]:
                problems.append(self._problem(path, pos, f"segment ends at offset {next_off}, "
                                              f"the next starts at {bases[i + 1]}", "corrupt"))
            expected = next_off
            seg.verified_to = max(seg.verified_to, pos)
        return problems

    def _verify_newest(self, seg: Segment, m, limit: int, view) -> list[dict]:
        """Problems of the newest segment: torn tails (reported, not corruption; the
        next read or append cuts them) and corruption, by the rule of ``_scan_tail``."""
        damage: list = []
        pos, next_off, _, problem = _scan_tail(m, limit, seg.base, -1, self.ctl.synced_offset,
                                               [], damage)
        out = [self._problem(seg.path, p, reason, "corrupt") for p, reason in damage]
        if problem is not None:
            out.append(self._problem(seg.path, problem[1], problem[2] + "; the partition ends "
                                     f"at offset {next_off} once it is cut", "torn"))
        elif pos < view[3]:
            out.append(self._problem(seg.path, pos, f"the file ends at byte {limit}, inside "
                                     "the data", "torn"))
        elif next_off != view[2]:
            out.append(self._problem(seg.path, pos, f"data ends at offset {next_off}, the "
                                     f"control block says {view[2]}", "corrupt"))
        if not out:
            seg.verified_to = max(seg.verified_to, pos)
        return out

    def _problem(self, path: str, file_pos: int, reason: str, kind: str) -> dict:
        return {"path": path, "file_pos": file_pos, "reason": reason, "kind": kind,
                "topic": self.topic, "partition": self.partition}

    # ---------------------------------------------------------------- close
    def mark_deleted(self) -> None:
        if self.read_only:
            raise self._read_only_error()
        self.ctl.mark_deleted()

    def wait(self, seen: int, timeout: float) -> bool:
        return self.ctl.wait(seen, timeout)

    @property
    def notify_seq(self) -> int:
        return self.ctl.notify_seq

    def close(self) -> None:
        """Sync per the durability mode, then let go of every file of the partition:
        descriptors closed, mappings released (nothing stays held in this process)."""
        if self._closed:
            return
        if self.durability != "never" and self.writer.dirty:
            try:
                self.sync_to(self.ctl.end_offset())
            except OSError:
                pass
        self._closed = True
        self.writer.closed = True
        # From here no thread takes the lock (it raises StoreClosed/TopicNotFound): one
        # that did after the wait below would lock, and map files of, released memory.
        self.ctl.closed_error = self._closed_error
        for box in list(self._chunks):  # iterators stop instead of yielding these
            box.records.clear()
        idle = _wait_lock_idle(self.ctl)
        if not self.read_only:  # (a read-only mapping cannot bump the futex word)
            self.ctl.notify()  # waiters in this process wake up and find the store closed
        if self._wrote_back or self._synced_behind:
            # the writeback thread's duplicates of our descriptors, and the background
            # sync of the segments a roll closed
            prefault.drain()
        with self._cache_lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            maps = [m for seg in self._segments.values()
                    for m in (seg.mapping, *(seg.index_maps or ())) if m is not None]
            self._segments.clear()
        if idle:  # else a thread still holds the lock (inside append_with): leave it be
            deleted = self.ctl.deleted
            self.writer.release()
            for m in maps:
                m.release()  # refused while a caller still holds a view of it
            self._ctl_map.release()
            # A stand-in that refuses every use with StoreClosed/TopicNotFound.
            self.ctl = _ClosedControl(self.topic, deleted)  # type: ignore[assignment]


class _ClosedControl:
    """Stands in for a closed partition's released control block: says whether the
    topic was deleted, and refuses everything else."""

    def __init__(self, topic: str, deleted: bool) -> None:
        self.topic = topic
        self.deleted = deleted

    def __getattr__(self, name: str):
        if self.deleted:
            raise TopicNotFound(f"topic {self.topic!r} was deleted")
        raise StoreClosed("the store is closed")


def _wait_lock_idle(ctl, timeout: float = 5.0) -> bool:
    """Wait until no thread of this process takes or holds ``ctl``'s append lock.

    A mapping may only be released when no thread is inside the lock: one
    that unlocked the released (private) copy would leave the shared lock
    held for every other process. False if that does not happen in time.
    """
    deadline = time.monotonic() + timeout
    while ctl.users > 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


class _Chunk:
    """Records a read iterator decoded ahead; weakly tracked so close() can empty them."""

    __slots__ = ("records", "__weakref__")

    def __init__(self, records: list) -> None:
        self.records = records


def _trim(trims: list[tuple[int, int]]) -> None:
    """Cut each file (descriptor, size) to its size."""
    for fd, size in trims:
        os.ftruncate(fd, size)


def _close_all(trims: list[tuple[int, int]]) -> None:
    for fd, _ in trims:
        os.close(fd)


def _index_bytes(base: int, running: int, entries: list, capacity: int) -> tuple[bytes, bytes]:
    """A segment's ``.index`` and ``.timeindex`` contents, ``capacity`` entries each, from
    a scan's sparse entries ``(base_offset, file_pos, running_max_before)`` (I4, I8)."""
    idx = np.zeros((capacity, 2), dtype="<u4")
    tidx = np.zeros(capacity, dtype=[("ts", "<i8"), ("rel", "<u4")])
    tidx[0] = (running, 0)
    for i, (base_off, file_pos, run_before) in enumerate(entries, start=1):
        idx[i] = (base_off - base, file_pos)
        tidx[i] = (run_before, base_off - base)
    return idx.tobytes(), tidx.tobytes()


def _last_nonzero_end(fd: int, m, pos: int, size: int) -> int:
    """End of the last non-zero byte at or after ``pos`` (``pos`` if none).

    Looks only at the file's data ranges (SEEK_DATA/SEEK_HOLE), newest first
    and backwards in 1 MiB steps: a new segment is mostly a hole, and reading
    64 MiB of zeros per partition at every rebuild would make opening slow.
    """
    ranges = []
    cur = pos
    while cur < size:
        try:
            start = os.lseek(fd, cur, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after cur
            break
        stop = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        ranges.append((start, stop))
        cur = stop
    view = np.frombuffer(m, dtype=np.uint8)
    step = 1 << 20
    for start, stop in reversed(ranges):
        hi = stop
        while hi > start:
            lo = max(start, hi - step)
            nz = np.flatnonzero(view[lo:hi])
            if len(nz):
                return lo + int(nz[-1]) + 1
            hi = lo
    return pos


def _scan_tail(m, limit: int, base: int, running: int, synced: int, entries: list,
               damage: list | None = None, data_end: int | None = None):
    """Check the newest segment's bytes ``[0, limit)`` and sort out its damage.

    The rule (docs/guarantees.md, Integrity): damage whose first offset is at or
    past ``synced`` (the recovery point: below it, a completed fsync made every
    byte durable) is a torn tail, and so is damage with no valid batch after
    it. Anything else is corruption: it stays where it is (reads raise
    ``CorruptionError`` there, ``verify`` reports it) and the data after it is
    kept. Returns ``(end_pos, end_offset, running_max, problem)``: ``problem``
    is ``("torn", file_pos, reason)`` when the tail from ``end_pos`` on is to be
    cut, else None. ``entries`` receives sparse index entries, including one at
    each batch where the scan resumed after corruption.
    """
    # The data ends at ``data_end`` (the last non-zero byte of a file scanned to its
    # size: a batch may itself end in zero bytes, so the scan runs to ``limit``),
    # or exactly at ``limit`` (the published end).
    end = limit if data_end is None else data_end
    pos, last_index = 0, 0
    while True:
        pos, next_off, running, problem = _codec.scan(m, pos, limit, base, running, last_index,
                                                      entries)
        if problem is None:
            if pos >= end:
                return pos, next_off, running, None
            # A zero header, then more data: a page that never reached the disk.
            problem = ("torn", pos, "zero bytes inside the data")
        if next_off >= synced:
            return pos, next_off, running, ("torn", pos, problem[2])
        found = _valid_batch_after(m, pos, limit, next_off)
        if found is None:
            return pos, next_off, running, ("torn", pos, problem[2] + ", nothing valid after it")
        if damage is not None:
            damage.append((pos, problem[2]))
        pos, base = found
        entries.append((base, pos, running))
        last_index = pos


def _valid_batch_after(m, pos: int, limit: int, min_base: int) -> tuple[int, int] | None:
    """(file_pos, base_offset) of the first whole, CRC-valid batch after ``pos``.

    Batches are found by their magic, version and attribute bytes; each
    candidate must pass every check of a read (length word, CRC) and continue
    the offsets (base >= ``min_base``). Runs only when damage was found.
    """
    mv = memoryview(m)
    limit = min(limit, len(mv))
    marker = _BATCH_MARKER
    data = bytes(mv[pos + 1:limit])
    i = data.find(marker)
    while i >= 0:
        q = pos + 1 + i - _MARKER_AT
        if q > pos:
            candidate = int.from_bytes(mv[q:q + 8], "little")
            if candidate >= min_base:
                try:
                    if _codec.batch_info(m, q, limit, candidate, True)[0]:
                        return q, candidate
                except (CorruptionError, TornTail):
                    pass
        i = data.find(marker, i + 1)
    return None


class _SegmentGone(Exception):
    """A segment file vanished under a reader (retention); refresh and retry."""


def _concat_columns(a: dict, b: dict) -> dict:
    out = {}
    for k in ("offsets", "timestamps_ms", "value_null", "key_null", "value_data", "key_data"):
        out[k] = np.concatenate([a[k], b[k]])
    for k, data in (("value_offsets", "value_data"), ("key_offsets", "key_data")):
        out[k] = np.concatenate([a[k][:-1], b[k] + len(a[data])])
    out["headers"] = a.get("headers", 0) + b.get("headers", 0)
    return out
