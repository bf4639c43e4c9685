"""verify, dump and repair on damaged stores: the CLI and the streamlog.inspection/repair API,
including a repair killed with SIGKILL part-way through."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time

import pytest
from typer.testing import CliRunner

import streamlog
from streamlog import inspection as sl_inspect
from streamlog import repair as sl_repair
from streamlog.backends.local.codec import HEADER_SIZE, RECORD_HEADER_SIZE
from streamlog.cli import app

VALUE = b"v" * 40


def run(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def _fill(path, count: int, segment_bytes: int) -> None:
    with streamlog.open(path) as log:
        t = log.topic("t", segment_bytes=segment_bytes)
        for i in range(count):
            t.append(VALUE + b"%05d" % i, key=b"k%d" % i)


def make_store(path, count: int = 300, segment_bytes: int = 4096) -> None:
    """One partition of ``count`` records, rolled into several small segments."""
    _fill(path, count, segment_bytes)


def damage(path, segment_index: int, batch_index: int) -> tuple[str, int, int]:
    """Flip one value byte of a batch: a CRC failure. Returns (segment, file_pos, offset)."""
    seg = sl_inspect.segment_files(path, "t", 0)[segment_index]
    batch = list(sl_inspect.dump_segment(seg, records=False))[batch_index]
    pos = batch.file_pos + HEADER_SIZE + RECORD_HEADER_SIZE + 3
    with open(seg, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x5A]))
    return seg, batch.file_pos, batch.base_offset


def snapshot(path) -> dict[str, bytes]:
    """The bytes of every segment file of partition t/0, by file name."""
    out = {}
    for seg in sl_inspect.segment_files(path, "t", 0):
        with open(seg, "rb") as f:
            out[os.path.basename(seg)] = f.read()
    return out


def check_intact_prefix(path, cut: int) -> None:
    """Offsets 0..cut-1 read back as written, the end is the cut, and appends continue densely."""
    with streamlog.open(path) as log:
        assert log.verify() == []
        t = log.existing_topic("t")
        assert t.end_offset(0) == cut
        got = list(t.read(0))
        assert [r.value for r in got] == [VALUE + b"%05d" % i for i in range(cut)]
        assert t.append(b"after repair").offset == cut
        assert t.get(0, cut).value == b"after repair"


def quarantined_bytes(path) -> dict[str, bytes]:
    """Every file under DIR/quarantine, by name (later copies win; they are identical)."""
    out = {}
    root = os.path.join(path, sl_repair.QUARANTINE_DIR)
    for dirpath, _, names in os.walk(root):
        for n in names:
            with open(os.path.join(dirpath, n), "rb") as f:
                out[n] = f.read()
    return out


def assert_nothing_lost(before: dict[str, bytes], path, seg_name: str, file_pos: int) -> None:
    """The damaged segment's tail and every later segment are in quarantine, byte for byte."""
    q = quarantined_bytes(path)
    names = sorted(before)
    i = names.index(seg_name)
    if file_pos > 0 or i == 0:
        tail = before[seg_name][file_pos:].rstrip(b"\0")
        assert q[f"{seg_name}.from-{file_pos}"].rstrip(b"\0") == tail
    for later in names[i + 1:] if file_pos > 0 or i == 0 else names[i:]:
        assert q[later].rstrip(b"\0") == before[later].rstrip(b"\0")


# --------------------------------------------------------------- the CLI
def test_verify_names_the_file_and_byte_then_repair_yes_makes_it_pass(tmp_path):
    """A flipped byte: verify exits 1 naming file and byte; repair --yes quarantines what
    follows; verify then passes and every record before the damage is still readable."""
    d = tmp_path / "s"
    make_store(d)
    seg, file_pos, cut = damage(d, 1, 5)
    before = snapshot(d)
    bad = run("verify", d)
    assert bad.exit_code == 1
    assert f"{seg} at byte {file_pos}" in bad.stdout and "CRC32C" in bad.stdout
    dumped = run("dump", d, "t")
    assert dumped.exit_code == 1 and f"position={file_pos} " in dumped.stdout
    assert "CORRUPT" in dumped.stdout
    fixed = run("repair", d, "--yes")
    assert fixed.exit_code == 0, fixed.output
    assert f"cut at offset {cut}" in fixed.stdout
    good = run("verify", d)
    assert good.exit_code == 0 and good.stdout.startswith("ok:")
    check_intact_prefix(d, cut)
    assert_nothing_lost(before, d, os.path.basename(seg), file_pos)
    manifest = json.loads(quarantined_bytes(d)["repair.json"])
    assert manifest["first_offset"] == cut and manifest["file_pos"] == file_pos


def test_repair_asks_first_and_no_changes_nothing(tmp_path):
    """Without --yes, repair shows the plan and asks; answering no leaves every byte alone."""
    d = tmp_path / "s"
    make_store(d)
    seg, file_pos, _ = damage(d, 0, 3)
    before = snapshot(d)
    result = run("repair", d, input="n\n")
    assert result.exit_code == 1
    assert f"damaged at byte {file_pos} of {seg}" in result.stdout
    assert snapshot(d) == before
    assert not os.path.exists(os.path.join(d, sl_repair.QUARANTINE_DIR))


def test_repair_of_a_healthy_store_does_nothing(tmp_path):
    """repair on a healthy store says so and creates no quarantine folder."""
    d = tmp_path / "s"
    make_store(d, count=20)
    result = run("repair", d, "--yes")
    assert result.exit_code == 0 and "nothing to repair" in result.stdout
    assert not os.path.exists(os.path.join(d, sl_repair.QUARANTINE_DIR))


def test_a_quarantined_tail_can_be_dumped(tmp_path):
    """dump reads a quarantined tail file: its first batch is the damaged one."""
    d = tmp_path / "s"
    make_store(d)
    seg, file_pos, cut = damage(d, 1, 2)
    assert run("repair", d, "--yes").exit_code == 0
    tails = [os.path.join(dp, n) for dp, _, ns in os.walk(d / sl_repair.QUARANTINE_DIR)
             for n in ns if ".from-" in n]
    result = run("dump", tails[0])
    assert result.exit_code == 1
    first = result.stdout.splitlines()[1]
    assert first.startswith(f"batch position=0 base_offset={cut} ") and "CORRUPT" in first


# ----------------------------------------------------------------- the API
def test_dump_segment_reports_crc_failures_and_goes_on(tmp_path):
    """dump_segment flags a CRC failure on its batch and still walks the batches after it."""
    d = tmp_path / "s"
    make_store(d, count=50, segment_bytes=1 << 20)
    seg, file_pos, off = damage(d, 0, 10)
    batches = list(sl_inspect.dump_segment(seg))
    assert len(batches) == 50
    bad = [b for b in batches if not b.crc_ok]
    assert [(b.file_pos, b.base_offset, b.kind) for b in bad] == [(file_pos, off, "corrupt")]
    assert bad[0].records is None
    assert [r.value for b in batches if b.crc_ok for r in b.records] == \
        [VALUE + b"%05d" % i for i in range(50) if i != off]


def test_repair_in_the_active_segment(tmp_path):
    """Damage in the last (active) segment: the cut keeps what precedes it, appends resume."""
    d = tmp_path / "s"
    make_store(d, count=100, segment_bytes=1 << 20)
    seg, file_pos, cut = damage(d, -1, 60)
    plan = sl_repair.plan(d)
    assert [(a.segment, a.file_pos, a.first_offset, a.end_offset) for a in plan] == \
        [(seg, file_pos, cut, 100)]
    assert plan[0].quarantine is None and plan[0].records == 100 - cut
    done = sl_repair.repair(d)
    assert len(done) == 1 and os.path.isdir(done[0].quarantine)
    check_intact_prefix(d, cut)


def test_repair_at_the_first_batch_of_a_later_segment_moves_that_segment_whole(tmp_path):
    """A cut at byte 0 of a later segment moves it whole; the segment before becomes the end."""
    d = tmp_path / "s"
    make_store(d)
    before = snapshot(d)
    seg, file_pos, cut = damage(d, 2, 0)
    assert file_pos == 0
    [action] = sl_repair.repair(d)
    assert action.first_offset == cut == sl_inspect.segment_base_offset(seg)
    assert seg in action.moved_segments
    assert not os.path.exists(seg)
    check_intact_prefix(d, cut)
    q = quarantined_bytes(d)
    for later in sorted(before)[3:]:
        assert q[later].rstrip(b"\0") == before[later].rstrip(b"\0")


def test_repair_at_the_first_byte_of_the_first_segment_empties_the_partition(tmp_path):
    """Damage in the very first batch leaves an empty partition that still accepts appends."""
    d = tmp_path / "s"
    make_store(d, count=30)
    damage(d, 0, 0)
    [action] = sl_repair.repair(d)
    assert action.first_offset == 0 and action.records == 30
    check_intact_prefix(d, 0)


def _hold_store_open(path: str, ready, stop) -> None:
    with streamlog.open(path) as log:
        log.existing_topic("t").end_offset(0)
        ready.set()
        stop.wait(30)


def test_repair_refuses_while_another_process_has_the_store_open(tmp_path):
    """repair names the pids that hold the store and changes nothing; a dry run still works."""
    d = tmp_path / "s"
    make_store(d, count=50)
    damage(d, 0, 5)
    before = snapshot(d)
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_store_open, args=(str(d), ready, stop))
    child.start()
    try:
        assert ready.wait(30)
        assert child.pid in sl_repair.store_holders(d)
        with pytest.raises(streamlog.StreamlogError, match=str(child.pid)):
            sl_repair.repair(d)
        assert len(sl_repair.plan(d)) == 1
        cli = run("repair", d, "--yes")
        assert cli.exit_code == 1 and str(child.pid) in cli.stderr
    finally:
        stop.set()
        child.join(30)
    assert snapshot(d) == before
    assert len(sl_repair.repair(d)) == 1


# -------------------------------------------------------- crash safety
def _repair_and_die_at(path: str, fn_name: str) -> None:
    """Run repair, SIGKILLing this process at the first call of ``os.<fn_name>``."""
    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)

    setattr(os, fn_name, die)
    sl_repair.repair(path)


@pytest.mark.parametrize("step", ["rename", "ftruncate"])
def test_a_repair_killed_part_way_loses_nothing_and_a_rerun_finishes(tmp_path, step):
    """SIGKILL during repair (before the moves, or before the truncation): the store opens,
    a second repair completes, and every byte past the cut is in quarantine."""
    d = tmp_path / "s"
    make_store(d)
    seg, file_pos, cut = damage(d, 1, 5)
    before = snapshot(d)  # taken after the damage: quarantine must hold these bytes
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_repair_and_die_at, args=(str(d), step))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    with streamlog.open(d) as log:  # reopening after the crash works
        assert log.topics() == ["t"]
    sl_repair.repair(d)  # finishes the job (or finds nothing left to do)
    check_intact_prefix(d, cut)
    assert_nothing_lost(before, d, os.path.basename(seg), file_pos)


def _consume_all(path, group: str) -> int:
    with streamlog.open(path) as log:
        g = log.existing_topic("t").group(group)
        n = 0
        while msgs := g.poll(max_records=500, timeout=0.2):
            g.ack(msgs)
            n += len(msgs)
        g.close()
    return n


def test_repair_seeks_groups_that_were_past_the_cut_back_to_it(tmp_path):
    """A group that had consumed past the cut is moved back to it, so the records appended
    at the reused offsets are delivered to it; a group behind the cut is left alone."""
    d = tmp_path / "s"
    make_store(d, count=100)
    assert _consume_all(d, "done") == 100
    with streamlog.open(d) as log:
        log.existing_topic("t").group("idle").close()  # at offset 0, behind any cut
    _, _, cut = damage(d, 1, 3)
    assert sl_repair.plan(d)[0].rewound_groups == ("done",)
    [action] = sl_repair.repair(d)
    assert action.rewound_groups == ("done",)
    with streamlog.open(d) as log:
        t = log.existing_topic("t")
        t.append_many([b"new %d" % i for i in range(5)])
        g = t.group("done")
        got = g.poll(max_records=100, timeout=1.0)
        assert [(m.offset, m.value) for m in got] == [(cut + i, b"new %d" % i)
                                                      for i in range(5)]
        g.ack(got)
        g.close()
        assert t.group("idle").lag() == cut + 5


def test_figures_of_a_damaged_store_still_show(tmp_path):
    """topics and describe work on a damaged store (verify is what reports the damage)."""
    d = tmp_path / "s"
    make_store(d, count=100, segment_bytes=1 << 20)
    # a batch with valid batches after it: corruption (the last one alone would be
    # a torn tail, which verify reports with exit 0)
    damage(d, 0, 90)
    assert run("topics", d).exit_code == 0
    result = run("describe", d, "t")
    assert result.exit_code == 0, result.output
    assert run("verify", d).exit_code == 1


def test_consume_stops_at_damage_naming_file_and_byte(tmp_path):
    """consume prints the records before a damaged batch, then fails naming file and byte."""
    d = tmp_path / "s"
    make_store(d, count=50, segment_bytes=1 << 20)
    seg, file_pos, off = damage(d, 0, 20)
    result = run("consume", d, "t")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [(VALUE + b"%05d" % i).decode() for i in range(off)]
    assert f"{seg} at byte {file_pos}" in result.stderr and "Traceback" not in result.output
