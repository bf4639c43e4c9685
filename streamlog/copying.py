"""Copying a store to another store, of either backend: ``streamlog.copy(src, dst)``.

What a copy keeps: every topic (or the ones named) with its partition count,
retention, dedupe window and compaction (a compacted topic's removed offsets
become gaps); every record at its own offset, with its
timestamp, key and headers (a partition whose start retention moved starts
at the same offset in the copy); each consumer group's options and committed
position per partition; event stores with their stream versions and
positions (an event store's log is a topic whose records carry each event's
stream and version, so copying it record by record keeps both).

It is resumable: each partition continues from where the destination ends,
and every destination batch is stored only if the partition still ends where
the batch starts (``Topic.append_copies``), so a rerun after an interruption,
SIGKILL included, duplicates nothing. Before a partition continues, its last
copied record is compared with the source's record at that offset: a
destination that holds other records is refused, never extended. Group
positions are read before the records are copied (so every record below them
is copied) and set after, on every run.

docs/backends.md lists what a copy keeps and what it leaves behind.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any, NamedTuple

from streamlog import _validate
from streamlog._limits import COPY_READ_RECORDS
from streamlog.backends import open_store
from streamlog.errors import (
    ConfigMismatch,
    OffsetOutOfRange,
    StreamlogError,
    TopicNotFound,
    WrongExpectedVersion,
)

__all__ = ["CopyProgress", "CopyResult", "copy"]

#: The consumer name a copy uses while it sets a group's positions.
COPY_CONSUMER = "streamlog-copy"
# How often a partition's copy continues from a destination end that moved under it
# (batches of a killed earlier run still landing), and the pause before each time.
_RESUME_ATTEMPTS = 5
_RESUME_PAUSE_S = 0.5
# Group options a copy carries over (as ``Topic.group`` takes them).
_GROUP_OPTIONS = ("mode", "ack_wait_s", "max_deliver", "backoff_s", "start", "dead_letter")


class CopyProgress(NamedTuple):
    """How far a copy is: records and bytes (values, keys and headers) copied so far in
    this run, the records it has to copy in all, and the topic it is at."""

    records: int
    records_total: int
    bytes: int
    topic: str


class CopyResult(NamedTuple):
    """What a copy did: the topics copied, the records that reached the destination during
    this run (0 on a rerun that found everything copied; batches a killed earlier run had
    sent and the server stored meanwhile count too) and the bytes this run wrote, and the
    groups whose positions were set."""

    topics: list[str]
    records: int
    bytes: int
    groups: int


class _Plan(NamedTuple):
    name: str
    config: dict
    bounds: list[tuple[int, int]]  # per partition: the source's (start, end)
    groups: dict[str, tuple[dict, dict[int, int]]]  # name -> (options, positions)


def copy(src: Any, dst: Any, topics: Sequence[str] | None = None,
         progress: Callable[[CopyProgress], None] | None = None,
         **dst_options: Any) -> CopyResult:
    """Copy store ``src`` to store ``dst`` (each a directory, a ``file://``, ``nats://``
    or ``tls://`` URL, or a store opened with ``streamlog.open``); returns a CopyResult.

    ``topics`` limits the copy to those topics (TopicNotFound, before anything
    is written, if one is missing from the source). ``progress`` is called
    with a CopyProgress after every batch. ``dst_options`` go to
    ``streamlog.open`` for the destination (``replicas=3``...). The source is
    opened read-only. Run it again after an interruption: it continues where
    the destination ends. A destination partition that holds records the
    source does not have at the same offsets raises StreamlogError naming
    it, before anything more is written there.
    """
    if topics is not None:
        if isinstance(topics, str):
            raise TypeError("topics must be a sequence of topic names, not a str")
        topics = [_validate.name(t, "topic name") for t in topics]
    if progress is not None and not callable(progress):
        raise TypeError("progress must be callable")
    if _place(src) is not None and _place(src) == _place(dst):
        raise ValueError(f"source and destination are the same store: {src}")
    with ExitStack() as stack:
        s = _opened(src, stack, read_only=True)
        plans = _plan(s, topics)  # every check of the source before the destination exists
        d = _opened(dst, stack, **dst_options)
        if s.url == d.url:
            raise ValueError(f"source and destination are the same store: {s.url}")
        return _run(s, d, plans, progress)


def _place(where: Any) -> str | None:
    """Where a store named by a path or URL lives, comparably (None: an open store)."""
    if not isinstance(where, str | os.PathLike):
        return None
    text = os.fspath(where)
    if isinstance(text, bytes):
        return None
    if "://" in text and not text.startswith("file://"):
        return text.rstrip("/")
    return os.path.realpath(text.removeprefix("file://"))


def _opened(where: Any, stack: ExitStack, **options: Any) -> Any:
    """A store: ``where`` itself when it is an open store, else opened (and closed when
    the copy ends)."""
    if isinstance(where, str | os.PathLike):
        store = open_store(where, **options)
        stack.callback(store.close)
        return store
    if hasattr(where, "topics") and hasattr(where, "existing_topic"):
        return where
    raise TypeError(f"a store must be a path, a URL or an open store, not "
                    f"{type(where).__name__}")


def _plan(s: Any, names: list[str] | None) -> list[_Plan]:
    """What to copy, read from the source before anything is written: each topic's
    options, partition bounds, and its groups' options and committed positions."""
    have = s.topics()
    if names is None:
        names = have
    missing = [n for n in names if n not in have]
    if missing:
        raise TopicNotFound(f"topic {missing[0]!r} does not exist in {s.url}")
    plans = []
    for name in names:
        t = s.existing_topic(name)
        cfg = dict(t.config)
        grps = {}
        for g in t.groups():
            opts = t.group_config(g)
            if opts is None:  # deleted meanwhile
                continue
            grps[g] = (opts, t.group_positions(g))
        bounds = [(t.start_offset(p), t.end_offset(p)) for p in range(t.partitions)]
        plans.append(_Plan(name, cfg, bounds, grps))
    return plans


def _dst_topic(d: Any, plan: _Plan) -> Any:
    """The destination topic: created with the source's options, or the existing one
    when its partition count is the source's (ConfigMismatch otherwise)."""
    n = len(plan.bounds)
    if plan.name in d.topics():
        t = d.existing_topic(plan.name)
        if t.partitions != n:
            raise ConfigMismatch(f"topic {plan.name!r} of {d.url} has {t.partitions} "
                                 f"partitions; the source's has {n}")
        return t
    cfg = plan.config
    options: dict[str, Any] = {"partitions": n}
    retention = cfg.get("retention")
    if retention is not None:
        from streamlog._types import Retention

        if isinstance(retention, dict):
            retention = Retention(**retention)
        elif isinstance(retention, list | tuple):
            retention = Retention(*retention)
        if any(v is not None for v in retention):
            options["retention"] = retention
    if cfg.get("compact"):
        options["compact"] = True  # NotImplementedError where the backend has none
        if cfg.get("delete_retention_s") is not None and \
                "delete_retention_s" in inspect.signature(d.topic).parameters:
            options["delete_retention_s"] = cfg["delete_retention_s"]
    if cfg.get("dedupe_window_s") is not None:
        options["dedupe_window_s"] = cfg["dedupe_window_s"]
    if cfg.get("max_record_bytes") is not None:
        options["max_record_bytes"] = cfg["max_record_bytes"]
    try:
        return d.topic(plan.name, **options)
    except ValueError as e:
        if "max_record_bytes" not in options or isinstance(e, ConfigMismatch):
            raise
        # The source's record limit is more than the destination's server allows
        # (JetStream's max_payload): the destination's own limit then; a record over it
        # is RecordTooLarge, naming itself, when it comes.
        del options["max_record_bytes"]
        return d.topic(plan.name, **options)


def _run(s: Any, d: Any, plans: list[_Plan],
         progress: Callable[[CopyProgress], None] | None) -> CopyResult:
    dsts = [_dst_topic(d, plan) for plan in plans]
    for plan, t in zip(plans, dsts, strict=True):
        for g, (opts, _) in plan.groups.items():
            if opts.get("subjects") and \
                    "subjects" not in inspect.signature(t.group).parameters:
                raise NotImplementedError(
                    f"group {g!r} of topic {plan.name!r} filters by subjects, which groups "
                    f"of {d.url} do not offer: no record was copied")
    todo = 0
    starts: list[list[int]] = []
    for plan, t in zip(plans, dsts, strict=True):
        row = []
        for p, (start, end) in enumerate(plan.bounds):
            at = _resume_at(s, t, plan.name, p, start, end)
            row.append(at)
            todo += max(end - at, 0)
        starts.append(row)
    records = nbytes = groups = 0
    for plan, t, row in zip(plans, dsts, starts, strict=True):
        src_topic = s.existing_topic(plan.name)
        for p, (start, end) in enumerate(plan.bounds):
            at = row[p]
            attempts = 0
            compacted = bool(plan.config.get("compact"))
            while at < end:
                try:
                    for piece in _pieces(src_topic, p, at, end, compacted):
                        if isinstance(piece, _Gap):
                            at = t.append_gap(p, piece.offset, piece.count, piece.timestamp_ms)
                            records += piece.count
                        else:
                            t.append_copies(p, piece[0].offset, piece)
                            at = piece[-1].offset + 1
                            records += len(piece)
                            nbytes += sum(_size(r) for r in piece)
                        if progress is not None:
                            progress(CopyProgress(records, todo, nbytes, plan.name))
                    break
                except WrongExpectedVersion:
                    # The destination's end moved under the copy: batches an earlier,
                    # killed run had sent may still be landing on a server. Continue from
                    # the new end once its last record proves to be the source's.
                    attempts += 1
                    if attempts > _RESUME_ATTEMPTS:
                        raise
                    time.sleep(_RESUME_PAUSE_S)
                    moved = _resume_at(s, t, plan.name, p, start, end)
                    records += max(moved - at, 0)  # landed for this copy all the same
                    at = moved
        for g, (opts, positions) in plan.groups.items():
            _set_group(t, g, opts, positions)
            groups += 1
        if progress is not None:
            progress(CopyProgress(records, todo, nbytes, plan.name))
    return CopyResult([p.name for p in plans], records, nbytes, groups)


def _resume_at(s: Any, t: Any, name: str, p: int, start: int, end: int) -> int:
    """Where partition ``p`` of the copy continues: the destination's end, after checking
    that what it holds is the source's (and moving an empty one's start to the
    source's, so that offsets are kept)."""
    d_start, d_end = t.start_offset(p), t.end_offset(p)
    where = f"topic {name!r} partition {p}"
    if d_end == d_start and d_end <= start:  # empty: starts where the source does
        if d_end != start:
            t.set_start_offset(p, start)
        return start
    if d_end > end:
        raise StreamlogError(f"{where}: the destination ends at offset {d_end}, past the "
                             f"source's end {end}: it holds records the source does not")
    if d_end < start:
        raise StreamlogError(f"{where}: the destination ends at offset {d_end}, but the "
                             f"source starts at {start} (retention removed what lies "
                             f"between): the copy cannot continue densely; delete the "
                             f"destination topic and copy again")
    if _same_at(s.existing_topic(name), p, d_end - 1) != _same_at(t, p, d_end - 1):
        raise StreamlogError(f"{where}: the destination's record at offset {d_end - 1} "
                             f"differs from the source's: it is not a copy of this source")
    return d_end


def _same_at(topic: Any, p: int, offset: int) -> tuple | None:
    """What identifies the record at ``offset`` (None: compaction removed it)."""
    try:
        r = topic.get(p, offset)
    except OffsetOutOfRange:
        return None
    return r.timestamp_ms, r.key, r.value, r.headers


class _Gap(NamedTuple):
    """Offsets of a compacted source partition whose records compaction removed."""

    offset: int
    count: int
    timestamp_ms: int


def _pieces(topic: Any, p: int, at: int, end: int, gaps: bool) -> Iterator[list | _Gap]:
    """The source's records of partition ``p`` from ``at`` to ``end``, in dense lists of
    up to COPY_READ_RECORDS; on a compacted topic (``gaps``) the offsets between them
    that compaction removed come as _Gap pieces (with the timestamp of the record
    before, which keeps the running maximum timestamp)."""
    last_ts = 0
    while at < end:
        limit = COPY_READ_RECORDS if gaps else min(COPY_READ_RECORDS, end - at)
        chunk = list(topic.read(p, at, limit=limit))
        if not gaps:
            if not chunk:
                return
            if chunk[0].offset != at or chunk[-1].offset - at != len(chunk) - 1:
                raise StreamlogError(f"topic {topic.name!r} partition {p}: offsets from {at} "
                                     f"are not dense in the source (retention removed records "
                                     f"while it was copied): run the copy again")
            yield chunk
            at = chunk[-1].offset + 1
            continue
        run: list = []
        past = False
        for r in chunk:
            if r.offset >= end:
                past = True
                break
            if r.offset != at:
                if run:
                    yield run
                    run = []
                yield _Gap(at, r.offset - at, last_ts)
            run.append(r)
            at = r.offset + 1
            last_ts = r.timestamp_ms
        if run:
            yield run
        if past or len(chunk) < limit:
            break  # nothing more in the source before ``end``: the rest is a gap
    if gaps and at < end:
        yield _Gap(at, end - at, last_ts)


def _size(r: Any) -> int:
    return (len(r.value) if r.value is not None else 0) + \
        (len(r.key) if r.key is not None else 0) + \
        sum(len(k) + len(v) for k, v in r.headers.items())


def _set_group(t: Any, name: str, opts: dict, positions: dict[int, int]) -> None:
    """Create group ``name`` on the destination topic with the source's options (or
    update them) and move it forward to the source's committed positions.

    Only forward (as Kafka's MirrorMaker syncs offsets): a rerun after consumers on
    the destination went further never takes them back."""
    kwargs = {k: opts[k] for k in _GROUP_OPTIONS if k in opts}
    if opts.get("subjects"):
        kwargs["subjects"] = opts["subjects"]
    now = t.group_positions(name) if t.group_config(name) is not None else {}
    g = t.group(name, consumer=COPY_CONSUMER, **kwargs)
    try:
        if not now:  # just created: "latest" put it at the end, "earliest" at the start
            now = t.group_positions(name)
            move = {p: off for p, off in positions.items() if off != now.get(p)}
        else:
            move = {p: off for p, off in positions.items() if off > now.get(p, 0)}
        for p, off in sorted(move.items()):
            g.seek(p, off)
    finally:
        g.close()
