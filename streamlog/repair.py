"""Repair of a damaged store: each damaged partition is cut at its first bad batch.

What ``streamlog repair`` does, as a public function. Corruption (a failed
CRC32C, a broken offset chain; see ``Log.verify``) is never returned as data,
so a damaged partition cannot be read past the damage. ``repair`` makes the
partition usable again by truncating it just before its first bad batch. It
never deletes: everything from the cut on (the rest of the damaged segment
and every later segment) is first copied or moved into
``DIR/quarantine/<topic>/<partition>/<stamp>/`` beside a ``repair.json``
manifest, and made durable, before the partition is shortened.

Order of the steps, each crash-safe (segments are the source of truth, I1):

1. copy the damaged segment's bytes from the cut on into the quarantine
   folder; fsync the copy and the folders;
2. mark the partition's control block stale (another boot's id: it is
   derived state), so the next open rebuilds it from the segments, whatever
   happens next, and keeps its recovery point: without one, recovery would
   re-validate every segment and cut at the damage itself;
3. move the later segments (and their index files) into the quarantine
   folder, newest first, so the segments left are always a prefix;
4. truncate the damaged segment at the cut (or move it whole when the cut is
   at its first byte and an earlier segment remains); fsync.

Then every consumer group whose position on the partition lay past the cut
is sought back to it, so that the records appended at the reused offsets are
delivered (as Kafka consumers reset on an out-of-range offset).

A crash before step 2 leaves the store as it was (plus a copy); after it, the
next open recovers from whatever prefix of segments is left and running
repair again finishes the job. Repair needs the store to itself: it refuses
while another process has the store's files mapped (``store_holders``) and
holds each partition's append lock while it works on it.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import NamedTuple

from streamlog.backends.local import codec as _codec
from streamlog.backends.local.log import Log, open_here
from streamlog.backends.local.storage import files
from streamlog.errors import StreamlogError, TopicNotFound

QUARANTINE_DIR = "quarantine"
MANIFEST_FILE = "repair.json"
_COPY_CHUNK_BYTES = 1 << 20  # copy a damaged tail in 1 MiB pieces: bounded memory
# docs/format.md, control block: bytes 16-31 are the boot id of the boot that built it
_CONTROL_BOOT_ID_AT = 16
_CONTROL_BOOT_ID_BYTES = 16


class RepairAction(NamedTuple):
    """One partition cut (planned or done).

    ``segment`` is the damaged segment file and ``file_pos`` the byte where
    the cut is; ``first_offset`` is the first offset removed (the
    partition's new end offset) and ``end_offset`` its end before the repair;
    ``bytes`` counts the bytes moved aside; ``quarantine`` is the folder they
    went to (None in a dry run); ``rewound_groups`` names the consumer groups
    whose position on the partition lay past the cut and was (or would be)
    moved back to it.
    """

    topic: str
    partition: int
    segment: str
    file_pos: int
    reason: str
    first_offset: int
    end_offset: int
    bytes: int
    moved_segments: list[str]
    quarantine: str | None
    rewound_groups: tuple[str, ...] = ()

    @property
    def records(self) -> int:
        """How many offsets the cut removes from the partition."""
        return max(0, self.end_offset - self.first_offset)


def store_holders(path: str | os.PathLike) -> list[int]:
    """Process ids, other than this one, that have files of the store at ``path`` mapped.

    Every process with the store open maps its LMDB environment and its
    partitions' control blocks, so ``/proc/<pid>/maps`` shows it (Linux).
    Processes whose maps this user may not read are not seen: best effort.
    """
    root = os.path.realpath(os.fspath(path)) + os.sep
    me = os.getpid()
    out = []
    try:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []
    for pid in pids:
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
                for line in f:
                    i = line.find("/")
                    if i >= 0 and line[i:].startswith(root):
                        out.append(pid)
                        break
        except OSError:  # gone, or not ours to read
            continue
    return sorted(out)


def _partition_segments(root: str, topic: str, partition: int) -> list[tuple[int, str]]:
    pdir = files.partition_dir(root, topic, partition)
    return [(b, os.path.join(pdir, files.segment_name(b))) for b in files.list_segments(pdir)]


def _end_after(path: str, base: int, upto: int) -> int:
    """The offset that follows the good batches in the first ``upto`` bytes of a segment."""
    with open(path, "rb") as f:
        data = f.read(upto)
    _, next_off, _, _ = _codec.scan(data, 0, len(data), base, -1, 0, None)
    return next_off


def _data_end(seg: dict) -> int:
    """Bytes of a segment that hold data: the published end of an active segment, else its size."""
    return int(seg["bytes"])


def plan(path: str | os.PathLike) -> list[RepairAction]:
    """What ``repair`` would do, without changing anything (``repair(path, dry_run=True)``)."""
    return repair(path, dry_run=True)


def repair(path: str | os.PathLike, dry_run: bool = False) -> list[RepairAction]:
    """Cut every damaged partition of the store at ``path`` at its first bad batch.

    Returns one RepairAction per damaged partition ([] for a healthy store).
    With ``dry_run`` nothing is changed. Otherwise the store must not be open
    in any other process (StreamlogError naming the process ids if it is)
    nor elsewhere in this one; afterwards ``Log.verify()`` finds nothing and
    every record before each cut reads as before. Only "corrupt" problems
    are cut: a torn tail is truncated by recovery on its own.
    """
    root = os.path.abspath(os.fspath(path))
    if not os.path.isfile(os.path.join(root, files.FORMAT_FILE)):
        raise StreamlogError(f"{root} is not a streamlog store (no {files.FORMAT_FILE})")
    if not dry_run:
        if open_here(root):
            raise StreamlogError(f"{root} is open in this process: close it before repairing")
        holders = store_holders(root)
        if holders:
            raise StreamlogError(
                f"{root} is open in other processes (pids {', '.join(map(str, holders))}): "
                "stop them before repairing")
    log = Log(root, durability="never")
    try:
        firsts: dict[tuple[str, int], object] = {}
        for pr in log.verify():
            if pr.kind != "corrupt":
                continue
            key = (pr.topic, pr.partition)
            rank = (files.parse_segment(os.path.basename(pr.path)) or 0, pr.file_pos)
            cur = firsts.get(key)
            if cur is None or rank < cur[0]:
                firsts[key] = (rank, pr)
        # Group positions are read before anything moves (stats reads the partitions).
        group_figures = _group_figures(log) if firsts else {}
        actions = []
        for (topic, partition), (_, pr) in sorted(firsts.items()):
            try:
                t = log.existing_topic(topic)
            except TopicNotFound:
                continue
            part = t._parts[partition]
            part.ctl.lock()
            try:
                action = _cut(root, part, pr, dry_run)
            finally:
                part.ctl.unlock()
            past = _groups_past(group_figures.get(topic, {}), action)
            actions.append(action._replace(rewound_groups=tuple(past)))
    finally:
        log.close()
    if not dry_run and any(a.rewound_groups for a in actions):
        _rewind_groups(root, actions, group_figures)
    if not dry_run and actions:
        # Rebuild the control blocks marked stale now: a read-only open (verify,
        # dump, consume) cannot, and must find the store ready.
        with Log(root, durability="never") as again:
            for a in actions:
                try:
                    again.existing_topic(a.topic)
                except TopicNotFound:
                    pass
    return actions


def _group_figures(log: Log) -> dict:
    """``{topic: {group: figures}}`` from the groups feature's stats, when it is present."""
    from streamlog.metrics import stats  # imports the groups feature's stats hook when present

    return stats(log).get("groups", {})


def _groups_past(groups: dict, action: RepairAction) -> list[str]:
    """Groups whose position on the action's partition lies past the cut.

    Group state lives only in LMDB and repair reuses the offsets it cuts: a
    group left past the cut would take the records appended there next for
    records it already processed.
    """
    out = []
    for name, info in sorted(groups.items()):
        for p in info.get("partitions") or []:
            if p.get("partition") == action.partition and \
                    max(p.get("committed", 0), p.get("next", 0)) > action.first_offset:
                out.append(name)
    return out


def _rewind_groups(root: str, actions: list[RepairAction], figures: dict) -> None:
    """Seek every group past a cut back to it (on a fresh open: the store is rebuilt)."""
    with Log(root, durability="always") as log:
        for a in actions:
            if not a.rewound_groups:
                continue
            t = log.existing_topic(a.topic)
            for name in a.rewound_groups:
                mode = figures[a.topic][name].get("mode", "shared")
                g = t.group(name, mode=mode, consumer="streamlog-repair")
                try:
                    g.seek(a.partition, a.first_offset)
                finally:
                    g.close()


def _cut(root: str, part, problem, dry_run: bool) -> RepairAction:
    """Plan, and unless ``dry_run`` carry out, the cut of one partition (lock held)."""
    topic, partition = problem.topic, problem.partition
    infos = part.segments_info()
    bases = [s["base_offset"] for s in infos]
    end_offset = part.end_offset()
    seg_path = problem.path
    seg_base = files.parse_segment(os.path.basename(seg_path))
    i = bases.index(seg_base)
    cut = problem.file_pos
    # A cut at the first byte of a segment that is not the first moves the
    # whole segment aside: an empty segment left behind would break I2.
    whole = cut == 0 and i > 0
    if whole:
        prev = infos[i - 1]
        first_offset = _end_after(prev["path"], prev["base_offset"], _data_end(prev))
    else:
        first_offset = _end_after(seg_path, seg_base, cut)
    tail_bytes = max(0, _data_end(infos[i]) - cut)
    later = infos[i + 1:]
    moved = [s["path"] for s in ([infos[i]] if whole else []) + later]
    total = tail_bytes + sum(_data_end(s) for s in later)
    if dry_run:
        return RepairAction(topic, partition, seg_path, cut, problem.reason, first_offset,
                            end_offset, total, moved, None)

    qdir = _new_quarantine_dir(root, topic, partition, first_offset)
    pdir = os.path.dirname(seg_path)
    # Step 1: a durable copy of the damaged tail (the whole segment moves in step 3).
    tail_name = None
    if not whole:
        tail_name = files.segment_name(seg_base, f"{files.LOG_SUFFIX}.from-{cut}")
        _copy_range(seg_path, cut, cut + tail_bytes, os.path.join(qdir, tail_name))
    manifest = {
        "topic": topic, "partition": partition, "segment": os.path.basename(seg_path),
        "file_pos": cut, "reason": problem.reason, "first_offset": first_offset,
        "end_offset": end_offset, "tail_file": tail_name,
        "moved_segments": [os.path.basename(p) for p in moved],
        "repaired_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "note": "files named <base>.log.from-<pos> hold a segment's bytes from byte <pos> on; "
                "`streamlog dump FILE` reads them",
    }
    _write_durably(os.path.join(qdir, MANIFEST_FILE), json.dumps(manifest, indent=2).encode())
    files.fsync_dir(qdir)
    # Step 2: the control block is derived state: make the next open rebuild it, as
    # after a reboot (a block from another boot), so that the rebuild keeps its
    # recovery point (an invalid block has none: every segment would be re-validated).
    fd = os.open(os.path.join(pdir, files.CONTROL_FILE), os.O_RDWR)
    try:
        os.pwrite(fd, bytes(_CONTROL_BOOT_ID_BYTES), _CONTROL_BOOT_ID_AT)
    finally:
        os.close(fd)
    # Step 3: later segments move aside, newest first (what stays is a prefix).
    for p in reversed(moved):
        base = files.parse_segment(os.path.basename(p))
        for suffix in (files.LOG_SUFFIX, files.INDEX_SUFFIX, files.TIMEINDEX_SUFFIX):
            name = files.segment_name(base, suffix)
            try:
                os.rename(os.path.join(pdir, name), os.path.join(qdir, name))
            except FileNotFoundError:  # index files are derived and may be missing
                continue
    files.fsync_dir(qdir)
    files.fsync_dir(pdir)
    # Step 4: cut the damaged segment; recovery on the next open rebuilds its indexes.
    if not whole:
        fd = os.open(seg_path, os.O_RDWR)
        try:
            os.ftruncate(fd, cut)
            os.fsync(fd)
        finally:
            os.close(fd)
    files.fsync_dir(pdir)
    return RepairAction(topic, partition, seg_path, cut, problem.reason, first_offset,
                        end_offset, total, moved, qdir)


def _new_quarantine_dir(root: str, topic: str, partition: int, first_offset: int) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    parent = os.path.join(root, QUARANTINE_DIR, topic, str(partition))
    os.makedirs(parent, exist_ok=True)
    n = 0
    while True:
        name = f"{stamp}-from-offset-{first_offset}" + (f"-{n}" if n else "")
        try:
            os.mkdir(os.path.join(parent, name))
            break
        except FileExistsError:
            n += 1
    # Every new directory entry up to the store root must survive a crash.
    d = os.path.join(parent, name)
    while True:
        up = os.path.dirname(d)
        files.fsync_dir(up)
        if os.path.samefile(up, root):
            break
        d = up
    return os.path.join(parent, name)


def _copy_range(src: str, start: int, end: int, dst: str) -> None:
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fi.seek(start)
        left = end - start
        while left > 0:
            chunk = fi.read(min(left, _COPY_CHUNK_BYTES))
            if not chunk:
                break
            fo.write(chunk)
            left -= len(chunk)
        fo.flush()
        os.fsync(fo.fileno())


def _write_durably(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


__all__ = ["QUARANTINE_DIR", "RepairAction", "plan", "repair", "store_holders"]
