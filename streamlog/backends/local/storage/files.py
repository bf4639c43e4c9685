"""Names of the files in a store directory: the only module that builds or parses them."""

from __future__ import annotations

import os

FORMAT_FILE = "streamlog.json"
# 2: gap batches (offsets removed by compaction). A store of format 1 is read as
# it is and marked 2 before its first compaction writes a gap (upgrade_format).
FORMAT_VERSION = 2
META_DIR = "meta"
TOPICS_DIR = "topics"
CONTROL_FILE = "control"
NOTIFY_FILE = "notify"  # topic-wide wake-up word
TRASH_PREFIX = ".trash-"
QUARANTINE_DIR = "quarantine"  # bytes that recovery or repair cut, never deleted

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIMEINDEX_SUFFIX = ".timeindex"
# Steps in progress (Kafka's names): a segment being created, or being deleted.
SWAP_SUFFIX = ".swap"
DELETED_SUFFIX = ".deleted"
# Compaction (storage/compaction.py): ``<base>.cleaned`` is a rewritten segment being
# written (recovery deletes it); ``<base>.swap`` a complete one that recovery installs
# as ``<base>.log``; ``<base>.cleaned.index`` / ``.cleaned.timeindex`` its indexes.
CLEANED_SUFFIX = ".cleaned"
COMPACT_LOCK_FILE = "compact.lock"  # flock: one compaction per partition at a time
COMPACT_CHECKPOINT_FILE = "compact.checkpoint"  # {"cleaned_to": offset}: derived, optional


def compaction_leftovers(part_dir: str) -> tuple[list[int], list[str]]:
    """(bases of ``<base>.swap`` files to install, names of ``.cleaned*`` files to delete)."""
    swaps, cleaned = [], []
    for n in os.listdir(part_dir):
        if len(n) == 25 and n.endswith(SWAP_SUFFIX) and n[:20].isdigit():
            swaps.append(int(n[:20]))
        elif n[:20].isdigit() and n[20:].startswith(CLEANED_SUFFIX):
            cleaned.append(n)
    return sorted(swaps), sorted(cleaned)


def segment_name(base_offset: int, suffix: str = LOG_SUFFIX) -> str:
    """``{base_offset:020d}.log`` (or .index/.timeindex/...)."""
    return f"{base_offset:020d}{suffix}"


def parse_segment(name: str) -> int | None:
    """Base offset of a ``.log`` file name, or None for any other file."""
    if len(name) == 20 + len(LOG_SUFFIX) and name.endswith(LOG_SUFFIX) and name[:20].isdigit():
        return int(name[:20])
    return None


def list_segments(part_dir: str) -> list[int]:
    """Sorted base offsets of the partition's complete segment files."""
    out = []
    for name in os.listdir(part_dir):
        base = parse_segment(name)
        if base is not None:
            out.append(base)
    out.sort()
    return out


def leftovers(part_dir: str) -> list[str]:
    """Files of unfinished steps (creations, deletions) that recovery removes."""
    names = set(os.listdir(part_dir))
    logs = {n[:20] for n in names if parse_segment(n) is not None}
    out = []
    for n in names:
        if len(n) == 25 and n.endswith(SWAP_SUFFIX):
            continue  # a compacted segment to install (compaction_leftovers), not a leftover
        if n.endswith(SWAP_SUFFIX) or n.endswith(DELETED_SUFFIX):
            out.append(n)
        elif (n.endswith(INDEX_SUFFIX) or n.endswith(TIMEINDEX_SUFFIX)) and n[:20] not in logs:
            out.append(n)
    return sorted(out)


def topic_dir(root: str, topic: str) -> str:
    return os.path.join(root, TOPICS_DIR, topic)


def partition_dir(root: str, topic: str, partition: int) -> str:
    return os.path.join(root, TOPICS_DIR, topic, str(partition))


def fsync_dir(path: str) -> None:
    """Make a creation, rename or removal inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def format_of(root: str) -> int:
    """The on-disk format a store directory declares (0 when it has no format file)."""
    import json

    try:
        with open(os.path.join(root, FORMAT_FILE)) as f:
            return int(json.load(f).get("format", 0))
    except FileNotFoundError:
        return 0


def upgrade_format(root: str) -> None:
    """Mark a store as written in ``FORMAT_VERSION`` (before writing what older releases
    cannot read): a new file renamed over the old one, so a crash leaves either."""
    import json

    path = os.path.join(root, FORMAT_FILE)
    try:
        with open(path) as f:
            info = json.load(f)
    except FileNotFoundError:
        info = {}
    if int(info.get("format", 0)) >= FORMAT_VERSION:
        return
    info["format"] = FORMAT_VERSION
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(info, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(root)
