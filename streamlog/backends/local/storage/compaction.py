"""Log compaction of one partition: keep the newest record of every key.

Kafka's log cleaner is the model (docs/format.md, "Compaction"):

1. **Key map.** Over the *dirty* section (closed segments written since the
   last compaction, from the checkpoint ``compact.checkpoint`` on) build a map
   of key hash (BLAKE2b, 16 bytes) -> newest offset. The map holds at most
   ``COMPACTION_MAX_KEYS`` keys: when the next segment would take it past that,
   the map stops at that segment, this compaction covers what the map covers,
   and the next one goes on from there (as Kafka's dedupe buffer does). A
   single segment is always taken whole, so the bound is the larger of the
   limit and one segment's keys.
2. **Rewrite.** Every closed segment from the partition's start to the end of
   the map's section is rewritten: a record goes when the map holds a newer
   offset of its key, and a tombstone (``value=None``) also goes once it is
   older than ``delete_retention_s``. Offsets never change: each run of
   removed records becomes a *gap batch* (a bare header covering those
   offsets, format.md). Batches kept whole are copied byte for byte. Each
   segment keeps its name, its base and its end offset.
3. **Swap.** Rewritten segments are written as ``<base>.cleaned`` (and their
   indexes as ``<base>.cleaned.index``/``.cleaned.timeindex``) and synced; then,
   under the partition's append lock (so no roll or retention step runs
   meanwhile), renamed to ``<base>.swap`` in offset order, then each over its
   ``<base>.log`` (one atomic rename: readers see the old file or the new
   one), indexes after it; a new generation is published so other processes
   drop their maps of the old files.

Recovery (before every compaction and when a partition is opened for
writing, always under the compaction lock): ``.swap`` files are installed,
``.cleaned`` ones deleted. Segments are swapped oldest first, and a record is
only removed in favour of a newer one at a higher offset, so whatever prefix
of a compaction was installed when a process died leaves every key's newest
record in place: the partition is as before, as after, or as after a
compaction of fewer segments, never with a lost newest value.

One compaction per partition at a time, across processes: an ``flock`` on
``compact.lock`` in the partition's directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable

import numpy as np

from streamlog.backends.local import codec as _codec
from streamlog.backends.local.storage import files
from streamlog.errors import CorruptionError, TornTail

# A key in the map: the key itself when it has at most 16 bytes, else its 17-byte
# BLAKE2b digest (the lengths differ, so the two kinds never collide). Kafka's
# cleaner keeps an MD5 of every key.
_SHORT_KEY_BYTES = 16
_HASH_BYTES = 17


class CompactionLock:
    """The partition's compaction lock (``flock`` on ``compact.lock``).

    ``blocking=False``: ``acquired`` is False when another process (or thread)
    holds it. Held until ``release()`` / the end of the ``with`` block.
    """

    def __init__(self, part_dir: str, blocking: bool = True) -> None:
        self._fd = os.open(os.path.join(part_dir, files.COMPACT_LOCK_FILE),
                           os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            self.acquired = True
        except BlockingIOError:
            self.acquired = False

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1

    def __enter__(self) -> CompactionLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def key_hash(key: bytes) -> bytes:
    if len(key) <= _SHORT_KEY_BYTES:
        return key
    return hashlib.blake2b(key, digest_size=_HASH_BYTES).digest()


# ------------------------------------------------------------------ recovery
def needs_recovery(part_dir: str) -> bool:
    if not os.path.exists(os.path.join(part_dir, files.COMPACT_LOCK_FILE)):
        return False  # never compacted (the lock file is made by the first compaction)
    try:
        swaps, cleaned = files.compaction_leftovers(part_dir)
    except FileNotFoundError:
        return False
    return bool(swaps or cleaned)


def recover(part) -> None:
    """Finish or undo a compaction that a killed process left (compaction lock held):
    install every ``.swap``, delete every ``.cleaned``."""
    swaps, cleaned = files.compaction_leftovers(part.path)
    if swaps:
        part.ctl.lock()
        try:
            for base in swaps:
                swap = os.path.join(part.path, files.segment_name(base, files.SWAP_SUFFIX))
                live = os.path.join(part.path, files.segment_name(base))
                if not os.path.exists(live):
                    os.unlink(swap)  # retention removed the segment meanwhile
                    continue
                os.rename(swap, live)
                _write_index_files(part, base, *_index_entries_of_file(part, base))
            files.fsync_dir(part.path)
            part.ctl.publish(generation=part.ctl.view()[0] + 1)
        finally:
            part.ctl.unlock()
    for name in files.compaction_leftovers(part.path)[1]:
        try:
            os.unlink(os.path.join(part.path, name))
        except FileNotFoundError:
            pass


def recover_if_needed(part) -> None:
    """At open for writing: finish a dead process's compaction, unless one is running."""
    if not needs_recovery(part.path):
        return
    lock = CompactionLock(part.path, blocking=False)
    try:
        if lock.acquired:
            recover(part)
    finally:
        lock.release()


# ------------------------------------------------------------------- indexes
def _running_before(part, base: int) -> int:
    path = os.path.join(part.path, files.segment_name(base, files.TIMEINDEX_SUFFIX))
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
        if len(raw) == 8:
            return int(np.frombuffer(raw, dtype="<i8")[0])
    except FileNotFoundError:
        pass
    return part._running_max_before(base, files.list_segments(part.path))


def _index_entries(data, base: int, running: int) -> tuple[bytes, bytes]:
    """The trimmed .index/.timeindex of a closed segment holding ``data`` (I4, I8)."""
    entries: list = []
    pos, _, _, problem = _codec.scan(data, 0, len(data), base, running, 0, entries)
    if problem is not None:
        raise CorruptionError(None, problem[1], problem[2])
    idx = np.zeros((len(entries) + 1, 2), dtype="<u4")
    tidx = np.zeros(len(entries) + 1, dtype=[("ts", "<i8"), ("rel", "<u4")])
    tidx[0] = (running, 0)
    for i, (off, file_pos, run_before) in enumerate(entries, start=1):
        idx[i] = (off - base, file_pos)
        tidx[i] = (run_before, off - base)
    return idx.tobytes(), tidx.tobytes()


def _index_entries_of_file(part, base: int) -> tuple[bytes, bytes]:
    with open(os.path.join(part.path, files.segment_name(base)), "rb") as f:
        data = f.read()
    return _index_entries(data, base, _running_before(part, base))


def _write_index_files(part, base: int, idx: bytes, tidx: bytes) -> None:
    """Write index files under temporary names and rename them into place."""
    for suffix, data in ((files.TIMEINDEX_SUFFIX, tidx), (files.INDEX_SUFFIX, idx)):
        final = os.path.join(part.path, files.segment_name(base, suffix))
        tmp = os.path.join(part.path, files.segment_name(base, files.CLEANED_SUFFIX + suffix))
        _write_file(tmp, data)
        os.rename(tmp, final)


def _write_file(path: str, data) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fdatasync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- checkpoint
def _checkpoint(part) -> int:
    try:
        with open(os.path.join(part.path, files.COMPACT_CHECKPOINT_FILE)) as f:
            return int(json.load(f)["cleaned_to"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return 0


def _set_checkpoint(part, offset: int) -> None:
    path = os.path.join(part.path, files.COMPACT_CHECKPOINT_FILE)
    tmp = path + f".{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"cleaned_to": offset}, f)
    os.replace(tmp, path)


# ------------------------------------------------------------------ the pass
def _read_segment(part, base: int) -> bytes:
    """A closed segment's bytes (not the zeros after its data while its trim is pending)."""
    with open(os.path.join(part.path, files.segment_name(base)), "rb") as f:
        return f.read(part.closed_size(base))


def _columns(data: bytes, base: int, path: str) -> tuple:
    """The records of a segment for the cleaner, from one columnar decode (CRCs
    checked): ``(offsets, ukeys, inverse, keyless, value_null, timestamps)`` where
    ``ukeys`` are the distinct map keys and ``inverse`` (numpy) gives each record's
    index in them; the others are numpy columns. Deciding per distinct key
    instead of per record is what makes a pass cheap when keys repeat."""
    try:
        cols = _codec.read_columns(data, 0, len(data), base, base, 1 << 62, 0)[0]
    except (CorruptionError, TornTail) as e:
        raise CorruptionError(path, e.file_pos, getattr(e, "reason", str(e))) from None
    kd, ko, kn = cols["key_data"], cols["key_offsets"], cols["key_null"]
    n = len(kn)
    lens = np.diff(ko)
    if n and int(lens.max()) <= _SHORT_KEY_BYTES:
        # short keys are their own map key: group them in C as 17-byte rows
        # (length byte + key, zero-padded; a keyless record gets length 255)
        rows = np.zeros((n, _SHORT_KEY_BYTES + 1), dtype=np.uint8)
        rows[:, 0] = np.where(kn, 255, lens)
        width = int(lens[0])
        if width and not kn.any() and int(lens.min()) == int(lens.max()) == width:
            rows[:, 1:1 + width] = kd.reshape(n, width)
        elif len(kd):
            rec = np.repeat(np.arange(n), lens)
            rows[rec, np.arange(len(kd)) - np.repeat(ko[:-1], lens) + 1] = kd
        uniq, inverse = np.unique(rows.view(np.dtype((np.void, _SHORT_KEY_BYTES + 1))).ravel(),
                                  return_inverse=True)
        ukeys = [None if u[0] == 255 else u[1:1 + u[0]] for u in (x.tobytes() for x in uniq)]
    else:
        raw = kd.tobytes()
        ko_l = ko.tolist()
        index: dict = {}
        inverse = np.fromiter(
            (index.setdefault(None if kn[i] else key_hash(raw[ko_l[i]:ko_l[i + 1]]),
                              len(index)) for i in range(n)), dtype=np.int64, count=n)
        ukeys = list(index)
    return (cols["offsets"], ukeys, inverse.ravel(), kn, cols["value_null"],
            cols["timestamps_ms"])


def _segment_keys(data: bytes, base: int, path: str, cols: tuple | None = None
                  ) -> dict[bytes, int]:
    offs, ukeys, inverse, _, _, _ = cols if cols is not None else _columns(data, base, path)
    newest = np.full(len(ukeys), -1, dtype=np.int64)
    np.maximum.at(newest, inverse, offs)
    out = dict(zip(ukeys, newest.tolist(), strict=True))
    out.pop(None, None)
    return out


# The key-map pass keeps the bytes and decoded columns (about 26 bytes a record) of
# its first segments, up to these bounds, for the rewrite pass instead of reading
# and decoding them twice.
_REUSE_RECORDS = 500_000
_REUSE_BYTES = 64 * 1024 * 1024


def _rewrite(data: bytes, base: int, path: str, keymap: dict[bytes, int],
             tombstone_before_ms: int, cols: tuple | None = None
             ) -> tuple[bytearray, int] | None:
    """The segment without superseded records and expired tombstones, or None when
    nothing goes. Returns (new bytes, records removed)."""
    out = bytearray()
    removed = 0
    gap: list[int] | None = None  # [base, count, first_ts, max_ts] of the pending gap

    def flush_gap() -> None:
        nonlocal gap
        if gap is not None:
            out.extend(_codec.encode_gap(*gap))
            gap = None

    def add_gap(off: int, count: int, first_ts: int, max_ts: int) -> None:
        nonlocal gap
        if gap is not None and gap[0] + gap[1] == off:
            gap[1] += count
            gap[2] = min(gap[2], first_ts)
            gap[3] = max(gap[3], max_ts)
        else:
            flush_gap()
            gap = [off, count, first_ts, max_ts]

    offs, ukeys, inverse, keyless, nulls, stamps = \
        cols if cols is not None else _columns(data, base, path)
    get = keymap.get
    newest = np.array([-1 if k is None else get(k, -1) for k in ukeys], dtype=np.int64)
    gone = ((newest[inverse] > offs) & ~keyless) | (nulls & (stamps < tombstone_before_ms))
    if not gone.any():
        return None
    keep_all = (~gone).tolist()
    j = 0  # index of the batch's first record in the columns
    pos, batch_base, n = 0, base, len(data)
    while True:
        length, count, first_ts, max_ts = _codec.batch_info(data, pos, n, batch_base, False)
        if length == 0:
            break
        is_gap = data[pos + ATTR_AT] == _codec.ATTR_GAP
        nrec = 0 if is_gap else count
        keep = keep_all[j:j + nrec]
        j += nrec
        if is_gap:  # a gap batch already
            add_gap(batch_base, count, first_ts, max_ts)
        elif all(keep):
            flush_gap()
            out.extend(data[pos:pos + length])
        elif not any(keep):
            add_gap(batch_base, count, first_ts, max_ts)
            removed += count
        else:
            removed += keep.count(False)
            _, _, recs = _codec.decode_batch(data, pos, n, batch_base)
            _split(recs, keep, out, flush_gap, add_gap)
        pos += length
        batch_base += count
    flush_gap()
    return out, removed


ATTR_AT = _codec.BATCH_OFFSETS["attributes"]


def _split(recs, keep, out, flush_gap, add_gap) -> None:
    """Re-encode the kept runs of a batch (each a batch of its own), and gaps between."""
    i = 0
    while i < len(recs):
        j = i
        while j < len(recs) and keep[j] == keep[i]:
            j += 1
        run = recs[i:j]
        if keep[i]:
            flush_gap()
            batch = bytearray(_codec.encode_batch(
                [r[2] for r in run], [r[3] for r in run],
                [[(k.encode(), v) for k, v in r[4].items()] for r in run],
                [r[1] for r in run]))
            _codec.set_base_offset(batch, 0, run[0][0])
            out.extend(batch)
        else:
            stamps = [r[1] for r in run]
            add_gap(run[0][0], len(run), min(stamps), max(stamps))
        i = j


class Stopped(Exception):
    """Raised by a progress callback to abandon a compaction (nothing is installed)."""


def compact_partition(part, delete_retention_s: float, max_keys: int,
                      progress: Callable[[int, int], None] | None = None,
                      blocking: bool = True, min_superseded: float = 0.0) -> dict | None:
    """One compaction of ``part``; returns its figures, or None when the lock was busy
    (``blocking=False``). ``min_superseded``: do nothing unless at least this share of
    the closed bytes would go (the background trigger)."""
    lock = CompactionLock(part.path, blocking=blocking)
    try:
        if not lock.acquired:
            return None
        recover(part)
        try:
            return _compact_locked(part, delete_retention_s, max_keys, progress, min_superseded)
        except (FileNotFoundError, Stopped) as e:
            # retention removed a segment under us, or the store is closing: next time
            for name in files.compaction_leftovers(part.path)[1]:
                os.unlink(os.path.join(part.path, name))
            if isinstance(e, Stopped):
                return None
            return {"records_removed": 0, "bytes_freed": 0, "segments_rewritten": 0}
    finally:
        lock.release()


def _closed_segments(part) -> tuple[list[int], int]:
    view = part.view()
    start, active = view[5], view[1]
    bases = [b for b in files.list_segments(part.path) if b < active]
    # keep the segments that hold offsets >= start (the first may start below it)
    bases = [b for i, b in enumerate(bases)
             if (bases[i + 1] if i + 1 < len(bases) else active) > start]
    return bases, active


def _compact_locked(part, delete_retention_s: float, max_keys: int, progress,
                    min_superseded: float) -> dict:
    result = {"records_removed": 0, "bytes_freed": 0, "segments_rewritten": 0}
    bases, active = _closed_segments(part)
    if not bases:
        return result
    ends = bases[1:] + [active]
    cleaned_to = _checkpoint(part)
    dirty = [i for i, b in enumerate(bases) if ends[i] > cleaned_to]
    sizes = {b: part.closed_size(b) for b in bases}
    total = sum(sizes.values())
    work = total * 2 or 1
    done = 0
    # 1. the key map over the dirty section, at most max_keys keys
    keymap: dict[bytes, int] = {}
    map_end = cleaned_to
    last = -1
    reuse: dict[int, tuple] = {}
    reused = reused_bytes = 0
    for i in dirty:
        data = _read_segment(part, bases[i])
        cols = _columns(data, bases[i], os.path.join(part.path, files.segment_name(bases[i])))
        seg_keys = _segment_keys(data, bases[i], "", cols)
        new = sum(1 for k in seg_keys if k not in keymap)
        if keymap and len(keymap) + new > max_keys:
            break
        if reused + len(cols[0]) <= _REUSE_RECORDS and reused_bytes + len(data) <= _REUSE_BYTES:
            reuse[bases[i]] = (data, cols)
            reused += len(cols[0])
            reused_bytes += len(data)
        keymap.update(seg_keys)
        map_end, last = ends[i], i
        done += sizes[bases[i]]
        if progress is not None:
            progress(done, work)
    if last < 0:
        # everything is clean: only tombstones can have expired since
        last = len(bases) - 1
        map_end = max(cleaned_to, ends[last])
    # 2. rewrite every closed segment up to the end of the map's section
    tombstone_before = int(time.time() * 1000) - int(delete_retention_s * 1000)
    plans = []
    for i in range(last + 1):
        b = bases[i]
        path = os.path.join(part.path, files.segment_name(b))
        data, cols = reuse.pop(b, None) or (_read_segment(part, b), None)
        # A tombstone goes once both it and its segment's last append (the file's
        # mtime, which a rewrite keeps) are older than delete_retention_s: a
        # timestamp set by the writer cannot make it go early.
        closed_ms = os.stat(path).st_mtime_ns // 1_000_000
        rewritten = _rewrite(data, b, path, keymap,
                       tombstone_before if closed_ms < tombstone_before else -1, cols)
        if rewritten is not None:
            # written now, so that one segment at a time is in memory
            st = os.stat(path)
            idx, tidx = _index_entries(rewritten[0], b, _running_before(part, b))
            cleaned = os.path.join(part.path, files.segment_name(b, files.CLEANED_SUFFIX))
            _write_file(cleaned, rewritten[0])
            os.utime(cleaned, ns=(st.st_atime_ns, st.st_mtime_ns))  # its last append's time
            for suffix, blob in ((files.INDEX_SUFFIX, idx), (files.TIMEINDEX_SUFFIX, tidx)):
                _write_file(cleaned + suffix, blob)
            plans.append((b, len(data), len(rewritten[0]), rewritten[1]))
        del data, rewritten
        done += sizes[b]
        if progress is not None:
            progress(min(done, work), work)
    if min_superseded and total and \
            sum(old - new for _, old, new, _ in plans) < min_superseded * total:
        for name in files.compaction_leftovers(part.path)[1]:
            os.unlink(os.path.join(part.path, name))
        return result
    if plans:
        files.fsync_dir(part.path)
        _swap(part, plans, result)
    _set_checkpoint(part, map_end)
    if progress is not None:
        progress(work, work)
    return result


def _swap(part, plans: list, result: dict) -> None:
    """Install the rewritten segments: .cleaned -> .swap (all, oldest first), then each
    .swap over its .log and its indexes after it. Under the append lock: no roll or
    retention step of any process runs meanwhile."""
    part.ctl.lock()
    try:
        view = part.ctl.view()
        live = set(files.list_segments(part.path))
        todo = []
        for b, old_size, new_size, removed in plans:
            cleaned = os.path.join(part.path, files.segment_name(b, files.CLEANED_SUFFIX))
            if b not in live or b >= view[1]:  # retention removed it meanwhile
                for suffix in ("", files.INDEX_SUFFIX, files.TIMEINDEX_SUFFIX):
                    os.unlink(cleaned + suffix)
                continue
            os.rename(cleaned, os.path.join(part.path, files.segment_name(b, files.SWAP_SUFFIX)))
            todo.append((b, old_size, new_size, removed))
        files.fsync_dir(part.path)
        for b, old_size, new_size, removed in todo:
            os.rename(os.path.join(part.path, files.segment_name(b, files.SWAP_SUFFIX)),
                      os.path.join(part.path, files.segment_name(b)))
            for suffix in (files.TIMEINDEX_SUFFIX, files.INDEX_SUFFIX):
                os.rename(os.path.join(part.path,
                                       files.segment_name(b, files.CLEANED_SUFFIX + suffix)),
                          os.path.join(part.path, files.segment_name(b, suffix)))
            result["records_removed"] += removed
            result["bytes_freed"] += old_size - new_size
            result["segments_rewritten"] += 1
        files.fsync_dir(part.path)
        if todo:
            part.ctl.publish(generation=view[0] + 1)
    finally:
        part.ctl.unlock()


def superseded_estimate(part) -> float:
    """Share of the closed bytes written since the last compaction (Kafka's dirty
    ratio): an upper bound of what a compaction could remove, read without decoding."""
    bases, active = _closed_segments(part)
    if not bases:
        return 0.0
    ends = bases[1:] + [active]
    cleaned_to = _checkpoint(part)
    total = dirty = 0
    for b, e in zip(bases, ends, strict=True):
        size = part.closed_size(b)
        total += size
        if e > cleaned_to:
            dirty += size
    return dirty / total if total else 0.0


# ------------------------------------------------------------------ the topic
def compact_topic(log, topic, progress: Callable[[int, int], None] | None = None,
                  blocking: bool = True, min_superseded: float = 0.0):
    """Compact every partition of ``topic`` (a Topic of ``log``); CompactionResult."""
    from streamlog import _limits
    from streamlog._types import CompactionResult

    # Gap batches are format 2: a store of format 1 says so before the first is written.
    files.upgrade_format(log.path)
    retention_s = float(topic.config.get("delete_retention_s",
                                         _limits.DEFAULT_DELETE_RETENTION_S))
    parts = topic._parts
    totals = [0, 0, 0]
    for i, part in enumerate(parts):
        cb = None
        if progress is not None:
            def cb(done: int, total: int, i: int = i) -> None:
                progress(i * 1000 + done * 1000 // max(total, 1), len(parts) * 1000)
        r = compact_partition(part, retention_s, _limits.COMPACTION_MAX_KEYS, cb,
                              blocking=blocking, min_superseded=min_superseded)
        if r is None:
            continue
        log._count_compaction_run(part.topic, r)
        totals[0] += r["records_removed"]
        totals[1] += r["bytes_freed"]
        totals[2] += r["segments_rewritten"]
    if progress is not None:
        progress(len(parts) * 1000, len(parts) * 1000)
    return CompactionResult(*totals)


class Background:
    """Background compaction of one Log open for writing (a thread, started when the
    store has a compacted topic). Every COMPACTION_CHECK_INTERVAL_S, and after each
    roll of a compacted partition in this process, every compacted topic of the
    store is looked at: a partition whose closed bytes are at least
    COMPACTION_MIN_SUPERSEDED dirty (written since its last compaction) is
    planned, and compacted when at least that share of its closed bytes would
    go. A partition another process is compacting is skipped (never waited for).
    """

    def __init__(self, log) -> None:
        import threading
        import weakref

        self._wake = threading.Event()
        self._halt = threading.Event()
        self._planned: dict[tuple[str, int], int] = {}  # partition -> closed end planned at
        self._thread = threading.Thread(target=self._run, args=(weakref.ref(log),),
                                        name="streamlog-compactor", daemon=True)
        self._thread.start()

    @classmethod
    def start_if_needed(cls, log) -> None:
        """At open: start when the catalogue holds a compacted topic."""
        if any(cfg.get("compact") for _, cfg in _catalogue(log)):
            cls.ensure(log)

    @classmethod
    def ensure(cls, log) -> Background:
        with log._parts_lock:
            if log._compactor is None:
                log._compactor = cls(log)
            return log._compactor

    def wake(self) -> None:
        self._wake.set()

    def _stop_check(self, done: int, total: int) -> None:
        if self._halt.is_set():  # the Log is closing: abandon, between two segments
            raise Stopped()

    def stop(self) -> None:
        import threading

        self._halt.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self, log_ref) -> None:
        from streamlog import _limits

        while not self._halt.is_set():
            self._wake.wait(_limits.COMPACTION_CHECK_INTERVAL_S)
            self._wake.clear()
            if self._halt.is_set():
                return
            log = log_ref()
            if log is None or log._closed:
                return
            try:
                self.check(log)
            except Exception as e:  # noqa: BLE001 - retried at the next check
                import logging

                logging.getLogger("streamlog").warning(
                    "streamlog: background compaction in %s failed: %s", log.path, e)
            del log

    def check(self, log) -> None:
        from streamlog import _limits

        for name, cfg in _catalogue(log):
            if cfg.get("compact") and not log._closed:
                try:
                    log.existing_topic(name)  # opens its partitions (marked compacted)
                except Exception:  # noqa: BLE001 - deleted meanwhile
                    continue
        with log._parts_lock:
            parts = [p for p in log._parts.values() if getattr(p, "compacted", False)]
        for part in parts:
            if self._halt.is_set() or log._closed or part._closed:
                return
            bases, active = _closed_segments(part)
            key = (part.topic, part.partition)
            if not bases or self._planned.get(key) == active:
                continue  # nothing new closed since the last plan
            if superseded_estimate(part) < _limits.COMPACTION_MIN_SUPERSEDED:
                continue
            self._planned[key] = active
            topic = log.existing_topic(part.topic)
            files.upgrade_format(log.path)
            r = compact_partition(part, float(topic.config.get(
                "delete_retention_s", _limits.DEFAULT_DELETE_RETENTION_S)),
                _limits.COMPACTION_MAX_KEYS, self._stop_check, blocking=False,
                min_superseded=_limits.COMPACTION_MIN_SUPERSEDED)
            if r is not None:
                log._count_compaction_run(part.topic, r)


def _catalogue(log) -> list[tuple[str, dict]]:
    """(name, options) of every topic of the store."""
    out = []
    for name in log.topics():
        cfg = log._topic_config(name)
        if cfg is not None:
            out.append((name, cfg))
    return out
