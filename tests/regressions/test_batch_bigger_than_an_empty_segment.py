"""Regression: a first batch bigger than segment_bytes, appended to an empty active
segment, replaced the segment file under its own mapping; the next store into it killed
the process with SIGBUS (and another process's writes went to the replaced file)."""

import multiprocessing
import os

import streamlog


def _big_then_small(path):
    with streamlog.open(path) as log:
        t = log.topic("t")
        assert t.append(b"X" * 5000).offset == 0
        assert t.append(b"y").offset == 1
        assert [len(r.value) for r in t.read(0)] == [5000, 1]
    os._exit(0)


def _mapped_then_append(path, ready, go):
    with streamlog.open(path) as log:
        t = log.topic("t2")
        assert list(t.read(0)) == []  # maps the empty active segment
        t.end_offset(0)
        ready.set()
        go.wait(30)
        assert t.append(b"after").offset == 1
        assert [len(r.value) for r in t.read(0)] == [7000, 5]
    os._exit(0)


def _big_in_other_process(path):
    with streamlog.open(path) as log:
        assert log.topic("t2").append(b"Z" * 7000).offset == 0
    os._exit(0)


def test_first_batch_bigger_than_the_segment(tmp_path):
    """The big record lands, the process survives, and the store reads back whole."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        log.topic("t", segment_bytes=1024)
        log.topic("t2", segment_bytes=1024)
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_big_then_small, args=(path,))
    child.start()
    child.join(60)
    assert child.exitcode == 0  # -7 was SIGBUS

    ready, go = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_mapped_then_append, args=(path, ready, go))
    holder.start()
    assert ready.wait(30)
    writer = ctx.Process(target=_big_in_other_process, args=(path,))
    writer.start()
    writer.join(60)
    go.set()
    holder.join(60)
    assert (writer.exitcode, holder.exitcode) == (0, 0)
    with streamlog.open(path) as log:
        assert [len(r.value) for r in log.topic("t").read(0)] == [5000, 1]
        assert [r.value[:1] for r in log.topic("t2").read(0)] == [b"Z", b"a"]
        assert log.verify() == []
