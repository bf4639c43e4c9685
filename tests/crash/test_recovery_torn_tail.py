"""Recovery from the segments (I1): a torn last batch is cut off and logged, nothing else is
lost, after the control file is deleted or comes from another boot (power loss)."""

from __future__ import annotations

import logging
import os

import pytest

import streamlog
from streamlog.backends.local.storage import files
from streamlog.backends.local.storage.partition import boot_id


def _pdir(path, topic="t", partition=0) -> str:
    return files.partition_dir(str(path), topic, partition)


def _active_segment(path, topic="t", partition=0) -> str:
    pdir = _pdir(path, topic, partition)
    return os.path.join(pdir, files.segment_name(files.list_segments(pdir)[-1]))


def _make_store(path, segment_bytes=4096):
    """Records 0..5 in single appends, then a last batch of two records (offsets 6, 7).
    Returns (values, data_end, last_batch_pos)."""
    with streamlog.open(path) as log:
        t = log.topic("t", segment_bytes=segment_bytes)
        values = [b"first-%d" % i for i in range(6)]
        for i, v in enumerate(values):
            t.append(v, key=b"k", timestamp_ms=1000 + i)
        p = t._parts[0]
        last_pos = p.ctl.view()[3]
        t.append_many([b"last-a", b"last-b"], keys=[b"k", None], headers=[{"h": b"1"}, None])
        data_end = p.ctl.view()[3]
    return values, data_end, last_pos


def _set_boot_id(path, topic="t", partition=0, boot=b"\x01" * 16) -> None:
    with open(os.path.join(_pdir(path, topic, partition), files.CONTROL_FILE), "r+b") as f:
        f.seek(16)
        f.write(boot)


def _check_recovered(path, values, caplog, expect_warning=True):
    with caplog.at_level(logging.WARNING, logger="streamlog"):
        caplog.clear()
        with streamlog.open(path) as log:
            t = log.topic("t")
            assert t.end_offset(0) == len(values)
            assert [r.value for r in t.read(0)] == values
            assert log.verify() == []
            # appends continue densely where the good data ended
            assert t.append(b"after").offset == len(values)
            assert [r.value for r in t.read(0)] == values + [b"after"]
    warned = [r for r in caplog.records if r.name == "streamlog" and r.levelno == logging.WARNING]
    if expect_warning:
        assert warned and "truncated" in warned[0].getMessage()
    return warned


def test_truncated_tail_at_every_byte_with_control_removed_I1_I5(tmp_path, caplog):
    """Cutting the segment file anywhere inside its last batch, then deleting the control
    file: reopening keeps records 0..5, drops the torn batch and logs a warning."""
    path = tmp_path / "s"
    values, data_end, last_pos = _make_store(path)
    seg = _active_segment(path)
    original = open(seg, "rb").read()
    control = os.path.join(_pdir(path), files.CONTROL_FILE)
    assert data_end - last_pos > 60
    for cut in range(last_pos + 1, data_end):
        with open(seg, "wb") as f:
            f.write(original[:cut])
        os.unlink(control)
        warned = _check_recovered(path, values, caplog)
        assert any(seg in r.getMessage() for r in warned), cut
        # I5: nothing but zeros after the recovered data (plus the one new record)
        data = open(seg, "rb").read()
        assert data[:last_pos] == original[:last_pos]
        assert not any(data[last_pos + 200:])
    # cutting exactly at the batch boundary is a clean end: no warning
    with open(seg, "wb") as f:
        f.write(original[:last_pos])
    os.unlink(control)
    assert _check_recovered(path, values, caplog, expect_warning=False) == []


def test_partly_written_tail_at_every_byte_after_power_loss_I5(tmp_path, caplog):
    """A last batch written only up to some byte (zeros after it, as in a preallocated file
    when power fails) is dropped when the control block is from another boot."""
    path = tmp_path / "s"
    values, data_end, last_pos = _make_store(path)
    seg = _active_segment(path)
    original = open(seg, "rb").read()
    for written in range(1, data_end - last_pos):
        damaged = bytearray(original)
        damaged[last_pos + written:data_end] = bytes(data_end - last_pos - written)
        with open(seg, "wb") as f:
            f.write(damaged)
        _set_boot_id(path)
        _check_recovered(path, values, caplog)


def test_reboot_rebuilds_the_control_block_and_keeps_everything_I1(tmp_path, caplog):
    """After a simulated reboot (another boot id) or a deleted control file, every record,
    the sparse index and the time index are rebuilt from the segments."""
    path = tmp_path / "s"
    n = 600
    with streamlog.open(path) as log:
        t = log.topic("t", segment_bytes=8192)
        for i in range(n):
            t.append(b"r%04d" % i + b"." * 30, timestamp_ms=10_000 + i * 10)
        t.append_many([b"m1", b"m2", b"m3"])
        assert log.verify() == []
    for damage in ("boot", "delete", "zero"):
        control = os.path.join(_pdir(path), files.CONTROL_FILE)
        if damage == "boot":
            _set_boot_id(path)
        elif damage == "delete":
            os.unlink(control)
        else:
            with open(control, "r+b") as f:
                f.write(bytes(4096))
        with caplog.at_level(logging.WARNING, logger="streamlog"):
            caplog.clear()
            with streamlog.open(path) as log:
                t = log.topic("t")
                assert t.end_offset(0) == n + 3
                recs = list(t.read(0))
                assert [r.offset for r in recs] == list(range(n + 3))
                assert recs[-1].value == b"m3"
                for off in (0, 1, 137, 299, 300, 511, n - 1):
                    assert t.get(0, off).value == b"r%04d" % off + b"." * 30
                    assert t.offset_for_time(0, 10_000 + off * 10) == off
                assert log.verify() == []
                with open(control, "rb") as f:
                    assert f.read(32)[16:32] == boot_id()
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_cold_start_removes_leftovers_of_unfinished_steps_I6(tmp_path):
    """A .swap (segment being created), a .deleted (being deleted) and orphan index files are
    removed when the control block is rebuilt; the log itself is untouched."""
    path = tmp_path / "s"
    values, _, _ = _make_store(path)
    values += [b"last-a", b"last-b"]
    pdir = _pdir(path)
    junk = [files.segment_name(999) + files.SWAP_SUFFIX,
            files.segment_name(3) + files.DELETED_SUFFIX,
            files.segment_name(500, files.INDEX_SUFFIX),
            files.segment_name(500, files.TIMEINDEX_SUFFIX)]
    for name in junk:
        with open(os.path.join(pdir, name), "wb") as f:
            f.write(b"\x07" * 100)
    _set_boot_id(path)
    with streamlog.open(path) as log:
        t = log.topic("t")
        assert [r.value for r in t.read(0)] == values
    left = set(os.listdir(pdir))
    assert not left & set(junk)


@pytest.mark.parametrize("garbage_at", ["header", "body"])
def test_garbage_after_the_last_batch_is_cut_at_cold_start(tmp_path, caplog, garbage_at):
    """Non-zero bytes after the data in a preallocated segment (a write that never got
    published) are truncated and logged when the block is rebuilt."""
    path = tmp_path / "s"
    values, data_end, _ = _make_store(path)
    values += [b"last-a", b"last-b"]
    seg = _active_segment(path)
    with open(seg, "r+b") as f:
        f.seek(data_end + (0 if garbage_at == "header" else 50))
        f.write(b"\xAB" * 30)
    _set_boot_id(path)
    _check_recovered(path, values, caplog)
