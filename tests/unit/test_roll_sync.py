"""A roll in never/interval leaves the closed segment's sync to a background thread, and
the recovery point (``synced_offset``) never passes a closed segment before its sync."""

from __future__ import annotations

import os
import threading

import pytest

import streamlog
from streamlog.backends.local.storage import files, prefault
from streamlog.backends.local.storage import partition as partition_module

VALUE = b"v" * 300


class _Spy:
    """Records the inode of every file ``fdatasync``ed and every directory ``fsync``ed by
    the test's own thread (the interval syncer's ticks are left out)."""

    def __init__(self, monkeypatch, part) -> None:
        # the control file's syncs are left out
        self.control = os.stat(os.path.join(part.path, files.CONTROL_FILE)).st_ino
        self.synced: list[int] = []
        self.dirs: list[str] = []
        real_fdatasync, real_fsync_dir = os.fdatasync, files.fsync_dir

        def fdatasync(fd: int) -> None:
            if os.fstat(fd).st_ino != self.control and _mine():
                self.synced.append(os.fstat(fd).st_ino)
            real_fdatasync(fd)

        def fsync_dir(path: str) -> None:
            if _mine():
                self.dirs.append(path)
            real_fsync_dir(path)

        monkeypatch.setattr(partition_module.os, "fdatasync", fdatasync)
        monkeypatch.setattr(files, "fsync_dir", fsync_dir)

    def clear(self) -> None:
        self.synced.clear()
        self.dirs.clear()


def _mine() -> bool:
    return threading.current_thread() is threading.main_thread()


def _ino(part, base: int) -> int:
    return os.stat(os.path.join(part.path, files.segment_name(base))).st_ino


def _roll(t, part) -> int:
    """Append until the partition rolls; returns the closed segment's base."""
    first = part.ctl.view()[1]
    while part.ctl.view()[1] == first:
        t.append(VALUE)
    return first


@pytest.mark.parametrize("mode", ["never", "interval"])
def test_the_roll_waits_for_no_sync_and_the_background_moves_the_recovery_point(
        tmp_path, monkeypatch, mode):
    held: list = []
    monkeypatch.setattr(prefault, "request_sync", held.append)
    # the interval syncer's ticks would sync (and move the point) at moments of their own
    monkeypatch.setattr(partition_module.Partition, "sync_if_dirty", lambda self: None)
    with streamlog.open(tmp_path / "s", durability=mode) as log:
        t = log.topic("t", segment_bytes=4096)
        part = log._parts[("t", 0)]
        t.append(VALUE)
        t.flush()
        point = part.ctl.synced_offset
        assert point == 1
        spy = _Spy(monkeypatch, part)
        closed = _roll(t, part)
        active = part.ctl.view()[1]
        assert spy.synced == [] and spy.dirs == []  # the roll synced nothing
        assert len(held) == 1
        assert part.ctl.synced_offset == point  # still inside the closed segment
        held.pop()()  # the background sync
        assert _ino(part, closed) in spy.synced and spy.dirs == [part.path]
        assert part.ctl.synced_offset == active
        for i in range(3):
            spy.clear()
            previous = [b for b in files.list_segments(part.path)
                        if part.ctl.synced_offset <= b < part.ctl.view()[1]]
            closing = _roll(t, part)
            # The roll syncs nothing of the segment it closes, but the closed segment
            # before it whose background sync is still held back it syncs first (with the
            # directory): at most one closed segment ever waits for its sync.
            assert _ino(part, closing) not in spy.synced
            if i == 0:  # that one's background sync ran above
                assert previous == [] and spy.synced == [] and spy.dirs == []
            else:
                assert spy.synced == [_ino(part, b) for b in previous] and spy.dirs == [part.path]
            assert part.ctl.synced_offset == closing
        spy.clear()
        closed_now = [b for b in files.list_segments(part.path)
                      if part.ctl.synced_offset <= b < part.ctl.view()[1]]
        assert len(closed_now) == 1
        t.flush()  # its sync still held back: flush syncs it first, then the active one
        assert [i for i in spy.synced if i != _ino(part, part.ctl.view()[1])] == \
            [_ino(part, b) for b in closed_now]
        assert spy.synced[-1] == _ino(part, part.ctl.view()[1])
        assert spy.dirs == [part.path]
        assert part.ctl.synced_offset == t.end_offset(0)
        for job in held:  # late background syncs: nothing to do, nothing moves back
            job()
        assert part.ctl.synced_offset == t.end_offset(0)


def test_always_syncs_the_closed_segment_in_the_roll(tmp_path, monkeypatch):
    held: list = []
    monkeypatch.setattr(prefault, "request_sync", held.append)
    with streamlog.open(tmp_path / "s", durability="always") as log:
        t = log.topic("t", segment_bytes=4096)
        part = log._parts[("t", 0)]
        t.append(VALUE)
        spy = _Spy(monkeypatch, part)
        first = part.ctl.view()[1]
        closed_ino = _ino(part, first)
        while part.ctl.view()[1] == first:
            spy.clear()
            t.append(VALUE)
        # the roll synced the directory and the closed segment before the append that
        # went into the new segment was synced
        assert held == []
        assert spy.dirs == [part.path]
        assert spy.synced[0] == closed_ino
        assert part.ctl.synced_offset == t.end_offset(0)
