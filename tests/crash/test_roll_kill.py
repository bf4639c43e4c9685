"""SIGKILL while appends roll small segments whose sync runs in the background.

In ``never`` and ``interval`` a roll publishes the new segment without waiting for
the closed segment's ``fdatasync`` (a background thread runs it, then moves the
recovery point past it). A killed process leaves the page cache whole, so every
acknowledged record must be there after reopening, in this boot and after a
simulated reboot (which re-validates every closed segment past the recovery
point: they are whole, so nothing may be cut).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

import streamlog
from tests.crash.test_append_kill import ACK, CTX, Child, _reboot, check_topic
from tests.strategies import parse_value, record_value


@pytest.mark.parametrize("durability", ["never", "interval"])
def test_kill_an_appender_that_rolls_segments_at_random_points(tmp_path, durability):
    """A writer appending into 4 KiB segments (a roll every few appends) is killed at a
    random moment, round after round; every other round the store is then reopened as
    after a reboot. Every acknowledged record is there at its offset, offsets are dense,
    verify is clean, appends continue."""
    path = str(tmp_path / "s")
    rnd = random.Random(durability)
    with streamlog.open(path) as log:
        for rnd_i in range(8):
            topic = f"r{rnd_i}"
            log.topic(topic, segment_bytes=4096)
            victim = Child(path, topic, rnd_i + 1, [50, 400, 1500], durability,
                           many=bool(rnd_i % 3 == 2))
            victim.wait_acks(1)
            time.sleep(rnd.uniform(0.0, 0.15))
            victim.kill()
            if rnd_i % 2:
                _reboot(path, topic, 1)
            with streamlog.open(path) as fresh:
                seen = check_topic(fresh, topic, [victim], many=bool(rnd_i % 3 == 2))
                # Killed inside an append, the writer leaves its unfinished bytes past the
                # end (pending_end): a torn tail, which the next append cuts. No writer
                # came after it here, so verify may report that, and nothing else.
                assert [p for p in fresh.verify() if p.kind != "torn"] == []
                t = fresh.topic(topic)
                end = t.end_offset(0)
                assert t.append(b"after").offset == end
                assert fresh.verify() == []
            assert len(seen) >= len(victim.acks)


def _append_until_the_sync_dies(path: str, ack_fd: int, where: str) -> None:
    """Append into small segments; the background sync of a closed segment kills the
    process at ``where`` (before its fdatasyncs, or after them, before the recovery point
    moves), the third time it runs."""
    from streamlog.backends.local.storage import partition as partition_module

    P = partition_module.Partition
    calls = {"n": 0}
    real_below = P._sync_closed_below

    def die_here() -> None:
        if threading.current_thread().name == "streamlog-closed-sync":
            calls["n"] += 1
            if calls["n"] >= 3:
                os.kill(os.getpid(), signal.SIGKILL)

    def below(self, synced, active):
        if where == "before":
            die_here()
        real_below(self, synced, active)
        if where == "after":
            die_here()

    P._sync_closed_below = below
    log = streamlog.open(path, durability="never")
    t = log.topic("t")
    seq = 0
    while True:
        pos = t.append(record_value(9, seq, 700))
        os.write(ack_fd, ACK.pack(9, seq, pos.partition, pos.offset))
        seq += 1


@pytest.mark.parametrize("where", ["before", "after"])
def test_kill_inside_the_background_sync_of_a_closed_segment(tmp_path, where):
    """The process dies inside the background sync of a segment a roll closed (before
    its fdatasync, or after it and before the recovery point moved): every acknowledged
    record is there, in this boot and after a reboot, and a later sync covers the closed
    segments the dead process did not."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        log.topic("t", segment_bytes=4096)
    r, w = os.pipe()
    child = CTX.Process(target=_append_until_the_sync_dies, args=(path, w, where))
    child.start()
    os.close(w)
    buf = b""
    while chunk := os.read(r, 65536):
        buf += chunk
    os.close(r)
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    acks = [a for a in ACK.iter_unpack(buf[:len(buf) // ACK.size * ACK.size])]
    assert len(acks) >= 6
    for reboot in (False, True):
        if reboot:
            _reboot(path, "t", 1)
        with streamlog.open(path, durability="never") as log:
            t = log.topic("t")
            recs = list(t.read(0))
            assert [r.offset for r in recs] == list(range(len(recs)))
            assert [parse_value(r.value) for r in recs[:len(acks)]] == \
                [(9, s) for _, s, _, _ in acks]
            assert len(recs) <= len(acks) + 1
            assert log.verify() == []
            part = log._parts[("t", 0)]
            if not reboot:
                # the dead process's closed segments are left below the recovery point;
                # a flush syncs them first, then moves it to the end
                t.flush()
                assert part.ctl.synced_offset == t.end_offset(0)
