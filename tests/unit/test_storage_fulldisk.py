"""A full disk: appends raise OSError and the log stays readable, nothing half-written."""

from __future__ import annotations

import errno
import multiprocessing
import subprocess

import pytest

import streamlog
from tests.strategies import parse_value, record_value

CTX = multiprocessing.get_context("fork")
TMPFS_BYTES = 256 * 1024


@pytest.fixture
def small_disk(tmp_path):
    """A store whose topic "t" lives on a 256 KiB tmpfs (LMDB stays on the real disk)."""
    path = tmp_path / "s"
    streamlog.open(path).close()
    mnt = path / "topics" / "t"
    mnt.mkdir(parents=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs",
                            str(mnt)], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a small tmpfs here ({e}): needs root")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def _fill(path, result):
    """Append until the disk is full, then try more; report what was acknowledged."""
    acked = []
    try:
        with streamlog.open(path, durability="never") as log:
            t = log.topic("t", segment_bytes=64 * 1024)
            err = None
            for seq in range(10_000):
                try:
                    acked.append(t.append(record_value(1, seq, 1000)).offset)
                except OSError as e:
                    err = e.errno
                    break
            assert err is not None, "the disk never filled up"
            # still full: more appends fail the same way, single or batched
            end = t.end_offset(0)
            for _ in range(3):
                with pytest.raises(OSError):
                    t.append(record_value(1, len(acked), 30_000))
                with pytest.raises(OSError):
                    t.append_many([record_value(2, i, 20_000) for i in range(4)])
            assert t.end_offset(0) == end
            # and what is there reads back in this process
            assert [parse_value(r.value) for r in t.read(0)] == [(1, s) for s in
                                                                 range(len(acked))]
        result.put(("ok", err, acked))
    except BaseException as e:  # report instead of hanging the parent
        result.put(("error", repr(e), acked))


def test_full_disk_raises_oserror_and_leaves_the_log_readable(small_disk):
    """Appending on a full filesystem raises OSError (ENOSPC), never kills the process
    (no SIGBUS from a mapped hole), and every acknowledged record reads back afterwards
    with nothing half-written after them."""
    result = CTX.Queue()
    child = CTX.Process(target=_fill, args=(small_disk, result))
    child.start()
    status, err, acked = result.get(timeout=120)
    child.join(60)
    assert child.exitcode == 0, f"appender died with {child.exitcode} (SIGBUS is -7)"
    assert status == "ok", err
    assert err == errno.ENOSPC
    assert acked == list(range(len(acked))) and len(acked) > 50
    with streamlog.open(small_disk) as log:
        t = log.topic("t")
        assert t.end_offset(0) == len(acked)
        assert [parse_value(r.value) for r in t.read(0)] == [(1, s) for s in range(len(acked))]
        assert log.verify() == []
