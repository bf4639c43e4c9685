"""Names of the files in a store directory: the only module that builds or parses them."""

from __future__ import annotations

import os

FORMAT_FILE = "streamlog.json"
FORMAT_VERSION = 1
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
