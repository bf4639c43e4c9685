"""SIGKILL a compacting process at random moments, the swap included: the partition opens
with every offset unchanged, every key's newest record in place, nothing but superseded
records missing, and a reader in another process never sees any other gap.

Records are deterministic in their offset (``_key``/``_value``), so the parent and the
reader know what every offset held without talking to each other.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time

import streamlog
from streamlog.backends.local.storage import compaction, files

CTX = multiprocessing.get_context("fork")
ROUNDS = 60
KEYS = 40
PER_ROUND = 70  # records appended before each compaction


def _key(off: int) -> bytes:
    return b"k%d" % (off % 7 if off % 3 else off % KEYS)


def _value(off: int) -> bytes | None:
    return None if off % 17 == 0 else b"v%d." % off + b"x" * (off % 23)


def _append(t, n: int) -> None:
    for _ in range(n):
        off = t.end_offset(0)
        assert t.append(_value(off), key=_key(off)).offset == off


def _problems(offsets: list[int], values: list, end: int) -> list[str]:
    """What is wrong with one read of offsets [0, end): a record that is not the one
    appended there, a gap that is not a superseded record, a missing newest value."""
    out = []
    present = set()
    for off, value in zip(offsets, values, strict=True):
        if off < end and value != _value(off):
            out.append(f"offset {off}: {value!r} is not what was appended")
        present.add(off)
    newest: dict[bytes, int] = {}
    for off in range(end):
        newest[_key(off)] = off
    for off in range(end):
        if off not in present and newest[_key(off)] == off:
            out.append(f"offset {off}: the newest record of {_key(off)!r} is missing")
    return out[:5]


def _compact_child(path: str, kill_at_rename: int) -> None:
    """Compact; with kill_at_rename > 0, SIGKILL itself at that rename of the pass
    (the .cleaned -> .swap -> .log steps and the index renames)."""
    if kill_at_rename:
        real = os.rename
        count = [0]

        def rename(src, dst, *a, **k):
            count[0] += 1
            if count[0] == kill_at_rename:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, *a, **k)

        compaction.os.rename = rename  # (this child process only)
    log = streamlog.open(path)
    log.compact("c")
    log.close()
    os._exit(0)


def _reader(path: str, stop, conn) -> None:
    """Read the whole partition again and again during the rounds; report problems."""
    bad: list[str] = []
    passes = 0
    with streamlog.open(path, read_only=True) as log:
        t = log.existing_topic("c")
        while not stop.is_set() and not bad:
            end = t.end_offset(0)
            recs = list(t.read(0))
            bad = _problems([r.offset for r in recs], [r.value for r in recs], end)
            passes += 1
    conn.send((passes, bad))
    conn.close()


def test_sigkill_during_compaction_never_loses_a_newest_value(tmp_path):
    path = str(tmp_path / "s")
    rnd = random.Random(13)
    with streamlog.open(path) as log:
        t = log.topic("c", compact=True, segment_bytes=2048)
        _append(t, PER_ROUND)
    stop = CTX.Event()
    r_conn, w_conn = CTX.Pipe(duplex=False)
    reader = CTX.Process(target=_reader, args=(path, stop, w_conn))
    reader.start()
    killed = at_rename = unfinished = 0
    pdir = files.partition_dir(path, "c", 0)
    try:
        for round_ in range(ROUNDS):
            with streamlog.open(path) as log:
                _append(log.existing_topic("c"), PER_ROUND)
            kill_at = rnd.randint(1, 14) if round_ % 2 == 0 else 0
            child = CTX.Process(target=_compact_child, args=(path, kill_at))
            child.start()
            if not kill_at:
                time.sleep(rnd.uniform(0, 0.06))  # a kill at a random moment of the pass
                os.kill(child.pid, signal.SIGKILL)
            child.join(30)
            assert child.exitcode is not None
            if child.exitcode == -signal.SIGKILL:
                killed += 1
                at_rename += bool(kill_at)
            # opening the store for writing finishes or undoes what the kill left
            unfinished += compaction.needs_recovery(pdir)
            with streamlog.open(path) as log:
                t = log.existing_topic("c")
                part = t._parts[0]
                assert not compaction.needs_recovery(part.path)
                end = t.end_offset(0)
                assert end == PER_ROUND * (round_ + 2)
                recs = list(t.read(0))
                assert _problems([r.offset for r in recs], [r.value for r in recs], end) == []
                assert log.verify() == []
                leftovers = files.leftovers(part.path)
                assert leftovers == [], leftovers
        stop.set()
        assert r_conn.poll(60)
        passes, bad = r_conn.recv()
    finally:
        stop.set()
        reader.join(30)
        if reader.is_alive():
            reader.kill()
    assert bad == [], bad
    assert passes > ROUNDS
    assert killed >= ROUNDS // 3 and at_rename >= ROUNDS // 4
    assert unfinished >= ROUNDS // 6  # kills that left .cleaned/.swap files behind
    # and in the end a compaction that finishes leaves only each key's newest record
    with streamlog.open(path) as log:
        t = log.existing_topic("c")
        log.compact("c")
        closed = t._parts[0].view()[1]
        newest = {_key(o): o for o in range(closed)}
        kept = [r.offset for r in t.read(0) if r.offset < closed]
        assert sorted(kept) == sorted(o for o in newest.values())
