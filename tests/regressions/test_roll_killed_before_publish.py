"""Regression: a roll killed between creating the next segment file and publishing it left
that file behind; once appends went on in the old segment, the stale file was taken for a
closed segment and every read through it failed the I2 check (the partition was unreadable
from offset 0), in this boot and after a reboot."""

import multiprocessing
import os
import signal

import pytest

import streamlog
from streamlog.backends.local.storage import files
from streamlog.backends.local.storage import partition as partition_module


def _roll_and_die(path):
    original = partition_module.Partition._create_segment_files

    def create_then_die(self, *args, **kwargs):
        original(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    partition_module.Partition._create_segment_files = create_then_die
    with streamlog.open(path) as log:
        log.topic("t").append(b"B" * 600)  # does not fit: roll, create, die
    os._exit(3)


@pytest.mark.parametrize("then", ["same boot", "reboot", "reboot before any roll"])
def test_roll_killed_before_publish_I2_I6(tmp_path, then):
    """After the kill, appends continue in the old segment; every record stays readable,
    offsets dense, verify() clean; the stale file is gone after the next roll or rebuild."""
    path = str(tmp_path / "s")
    values = [b"a%d" % i + b"." * 100 for i in range(5)]
    with streamlog.open(path) as log:
        t = log.topic("t", segment_bytes=1024)
        for v in values:
            t.append(v)
    child = multiprocessing.get_context("fork").Process(target=_roll_and_die, args=(path,))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    pdir = files.partition_dir(path, "t", 0)
    assert files.list_segments(pdir) == [0, 5]  # the unpublished segment
    with streamlog.open(path) as log:
        t = log.topic("t")
        values.append(b"small")
        t.append(b"small")  # fits in the old segment: offset 5 is now in segment 0
        more = 0 if then == "reboot before any roll" else 20
        for i in range(more):
            values.append(b"c%d" % i + b"." * 100)
            t.append(values[-1])
    if then != "same boot":
        with open(os.path.join(pdir, files.CONTROL_FILE), "r+b") as f:
            f.seek(16)
            f.write(b"\x02" * 16)
    with streamlog.open(path) as log:
        t = log.topic("t")
        assert [r.value for r in t.read(0)] == values
        assert t.end_offset(0) == len(values)
        assert log.verify() == []
        t.append(b"last" + b"." * 700)
        t.append(b"last2" + b"." * 700)
        assert [r.offset for r in t.read(0)] == list(range(len(values) + 2))
        assert log.verify() == []
    segs = files.list_segments(pdir)
    assert 5 not in segs
