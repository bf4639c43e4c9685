"""Damage a power loss leaves in the newest segment is a torn tail, in this boot too.

A machine that crashed with ``durability="interval"`` or ``"never"`` loses the
pages written after the last sync: they read as zeros, hold stale bytes, or
the file is shorter than its last batch. The partition must open, keep every
batch before the damage, move the cut bytes to ``DIR/quarantine/``, warn, and
append densely from there; ``verify`` reports it and exits 0. Damage before
the recovery point with valid batches after it stays ``CorruptionError``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

import streamlog
from streamlog import _ext

PAGE = 4096


def _newest_segment(store, topic="t", partition=0) -> str:
    d = os.path.join(store, "topics", topic, str(partition))
    return os.path.join(d, sorted(n for n in os.listdir(d) if n.endswith(".log"))[-1])


def _data_end(store) -> int:
    with streamlog.open(store) as log:
        return log.stats()["topics"]["t"]["partitions"][0]["bytes"]


def _fill(store, n=200, last_value=None, durability="interval"):
    with streamlog.open(store, durability=durability) as log:
        t = log.topic("t")
        for i in range(n):
            t.append(b"record-%d" % i)
        if last_value is not None:
            t.append(last_value)


def _batch_starts(path: str, end: int) -> list[int]:
    with open(path, "rb") as f:
        data = f.read(end)
    starts, pos = [], 0
    while pos < end:
        length = int.from_bytes(data[pos + 8:pos + 12], "little")
        if length == 0:
            break
        starts.append(pos)
        pos += length
    return starts


def _flip(path: str, pos: int) -> None:
    """Invert the byte at ``pos`` of ``path`` (bit rot in place)."""
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0xFF]))


def _quarantined(store) -> list[str]:
    q = os.path.join(store, "quarantine")
    return [os.path.join(r, f) for r, _, fs in os.walk(q) for f in fs] if os.path.isdir(q) else []


def test_zeroed_last_page_is_a_torn_tail_not_corruption(tmp_path, caplog):
    store = str(tmp_path / "s")
    _fill(store)
    seg = _newest_segment(store)
    end = _data_end(store)
    page = (end - 1) // PAGE * PAGE
    starts = _batch_starts(seg, end)
    with open(seg, "r+b") as f:
        f.seek(page)
        f.write(bytes(min(PAGE, end - page)))
    first_damaged = max(s for s in starts if s <= page)
    expected = sum(1 for s in starts if s < first_damaged)
    with caplog.at_level(logging.WARNING, logger="streamlog"):
        with streamlog.open(store) as log:
            t = log.topic("t")
            values = [r.value for r in t.read(0)]
            assert values == [b"record-%d" % i for i in range(expected)]
            assert t.end_offset(0) == expected
            assert t.append(b"after").offset == expected  # dense from the cut
            assert [r.value for r in t.read(0, expected)] == [b"after"]
    assert any("torn tail" in r.getMessage() for r in caplog.records)
    assert _quarantined(store), "the cut bytes are kept in DIR/quarantine/"


def test_verify_reports_a_zeroed_tail_as_torn_and_exits_0(tmp_path):
    store = str(tmp_path / "s")
    _fill(store)
    seg = _newest_segment(store)
    end = _data_end(store)
    with open(seg, "r+b") as f:
        f.seek(end - 100)
        f.write(bytes(100))
    with streamlog.open(store) as log:
        problems = log.verify()
    assert [p.kind for p in problems] == ["torn"]
    r = subprocess.run([sys.executable, "-m", "streamlog", "verify", store],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "torn" in (r.stdout + r.stderr).lower()


def test_file_cut_inside_the_last_batch_is_no_sigbus(tmp_path):
    """A file that shrank under its mapping: reads, verify and appends never touch
    a page past its end (SIGBUS); the partial batch is a torn tail."""
    store = str(tmp_path / "s")
    _fill(store, n=50, last_value=os.urandom(3 * PAGE))
    seg = _newest_segment(store)
    end = _data_end(store)
    last = _batch_starts(seg, end)[-1]
    os.truncate(seg, last + (end - last) // 2)
    r = subprocess.run([sys.executable, "-m", "streamlog", "verify", store],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stdout + r.stderr)
    for cmd in (["describe", store, "t"], ["consume", store, "t"], ["dump", store, "t"]):
        r = subprocess.run([sys.executable, "-m", "streamlog", *cmd],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode >= 0, (cmd, r.returncode, r.stderr)  # never killed by a signal
    with streamlog.open(store) as log:
        t = log.topic("t")
        assert [r.value for r in t.read(0)] == [b"record-%d" % i for i in range(50)]
        assert t.append(b"x").offset == 50
        assert t.append_many([os.urandom(5000) for _ in range(20)])[-1].offset == 70
        assert len(list(t.read(0))) == 71
        assert log.verify() == []


def test_file_cut_at_a_batch_boundary_under_a_live_reader(tmp_path):
    store = str(tmp_path / "s")
    with streamlog.open(store) as log:
        t = log.topic("t")
        for i in range(100):
            t.append(b"v%d" % i)
        assert len(list(t.read(0))) == 100
        seg = _newest_segment(store)
        end = t.read_batch(0, 0, 1)  # noqa: F841 - maps the segment in this process
        starts = _batch_starts(seg, log.stats()["topics"]["t"]["partitions"][0]["bytes"])
        os.truncate(seg, starts[60])
        assert [r.value for r in t.read(0)] == [b"v%d" % i for i in range(60)]
        assert len(t.read_batch(0, 0, 1000)) == 60
        assert t.append(b"new").offset == 60
        assert t.get(0, 60).value == b"new"


def test_damage_before_the_recovery_point_with_valid_data_after_is_corruption(tmp_path):
    store = str(tmp_path / "s")
    _fill(store, durability="always")
    seg = _newest_segment(store)
    end = _data_end(store)
    starts = _batch_starts(seg, end)
    victim = starts[len(starts) // 2]
    _flip(seg, victim + 30)
    with streamlog.open(store) as log:
        t = log.topic("t")
        with pytest.raises(streamlog.CorruptionError) as e:
            list(t.read(0))
        assert e.value.file_pos == victim
        assert t.end_offset(0) == 200  # nothing was cut
        assert [p.kind for p in log.verify()] == ["corrupt"]
    assert not _quarantined(store)


def test_damage_after_a_reboot_before_the_recovery_point_is_kept(tmp_path):
    """After a reboot (another boot id in the control block) the same rule holds:
    damage before the recorded sync point with valid batches after it is not cut."""
    store = str(tmp_path / "s")
    _fill(store, durability="always")
    seg = _newest_segment(store)
    end = _data_end(store)
    starts = _batch_starts(seg, end)
    victim = starts[len(starts) // 2]
    with open(seg, "r+b") as f:
        f.seek(victim + 30)
        f.write(b"\xff\xfe")
    _pretend_reboot(store)
    with streamlog.open(store) as log:
        t = log.topic("t")
        assert t.end_offset(0) == 200
        with pytest.raises(streamlog.CorruptionError):
            list(t.read(0))
        assert t.get(0, 199).value == b"record-199"  # the valid batches after it are kept
        assert [p.kind for p in log.verify()] == ["corrupt"]


def test_torn_tail_after_a_reboot_past_the_recovery_point(tmp_path):
    store = str(tmp_path / "s")
    with streamlog.open(store, durability="never") as log:
        t = log.topic("t")
        for i in range(100):
            t.append(b"a%d" % i)
        t.flush()  # the recovery point: 100
        for i in range(100):
            t.append(b"b%d" % i)
    seg = _newest_segment(store)
    end = _data_end(store)
    starts = _batch_starts(seg, end)
    # a page written back out of order: zeros in the middle of the unsynced part,
    # valid batches after it
    with open(seg, "r+b") as f:
        f.seek(starts[150])
        f.write(bytes(starts[151] - starts[150]))
    _pretend_reboot(store)
    with streamlog.open(store) as log:
        t = log.topic("t")
        assert t.end_offset(0) == 150
        assert [r.value for r in t.read(0)][-1] == b"b49"
        assert log.verify() == []


def test_group_positions_past_a_cut_are_clamped(tmp_path):
    store = str(tmp_path / "s")
    with streamlog.open(store) as log:
        t = log.topic("t")
        for i in range(100):
            t.append(b"v%d" % i)
        g = t.group("g")
        msgs = g.poll(100, timeout=1)
        g.ack(msgs)
        assert g.lag() == 0
    seg = _newest_segment(store)
    starts = _batch_starts(seg, _data_end(store))
    os.truncate(seg, starts[80])
    with streamlog.open(store) as log:
        t = log.topic("t")
        assert t.end_offset(0) == 80
        for i in range(5):
            t.append(b"new%d" % i)
        g = t.group("g")
        got = [(m.offset, m.value) for m in g.poll(100, timeout=1)]
        assert got == [(80 + i, b"new%d" % i) for i in range(5)]


def _pretend_reboot(store: str) -> None:
    """Write another boot id into every control block, as a reboot leaves them."""
    for root, _, names in os.walk(os.path.join(store, "topics")):
        if "control" in names:
            with open(os.path.join(root, "control"), "r+b") as f:
                f.seek(16)
                f.write(b"\x01" * 16)
    assert _ext.CONTROL_BYTES == 4096


def test_read_only_open_skips_a_torn_tail_and_changes_nothing(tmp_path):
    store = str(tmp_path / "s")
    _fill(store)
    seg = _newest_segment(store)
    end = _data_end(store)
    starts = _batch_starts(seg, end)
    with open(seg, "r+b") as f:
        f.seek(starts[-3])
        f.write(bytes(end - starts[-3]))
    before = open(seg, "rb").read()
    with streamlog.open(store, read_only=True) as log:
        t = log.topic("t")
        values = [r.value for r in t.read(0)]
        assert values == [b"record-%d" % i for i in range(len(starts) - 3)]
        assert t.end_offset(0) == len(starts) - 3
        assert [p.kind for p in log.verify()] == ["torn"]
    assert open(seg, "rb").read() == before and not _quarantined(store)


# ------------------------------------------------ closed segments past the recovery point
#
# In ``never`` and ``interval`` a roll publishes the new segment before the closed one is
# synced (a background thread syncs it, then moves the recovery point past it). Holding
# that background sync back leaves what a power loss right after the roll leaves: a
# closed segment past the recovery point whose pages may never have reached the disk.

SMALL_SEGMENT = 8 * 1024


def _segments(store: str) -> list[str]:
    d = os.path.join(store, "topics", "t", "0")
    return [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith(".log")]


def _fill_across_rolls(store: str, monkeypatch, synced: int, unsynced: int,
                       hold_back: bool = True) -> None:
    """``synced`` records made durable by flush(), then ``unsynced`` more that roll several
    small segments with their background syncs held back (``hold_back``)."""
    from streamlog.backends.local.storage import prefault

    held: list = []
    with monkeypatch.context() as mp:
        if hold_back:
            mp.setattr(prefault, "request_sync", held.append)
        with streamlog.open(store, durability="never") as log:
            t = log.topic("t", segment_bytes=SMALL_SEGMENT)
            for i in range(synced):
                t.append(b"s%04d" % i + b"." * 200)
            t.flush()
            g = t.group("g")
            for i in range(unsynced):
                t.append(b"u%04d" % i + b"." * 200)
            msgs = g.poll(synced + unsynced, timeout=1)
            g.ack(msgs)
            assert len(msgs) == synced + unsynced
    assert not hold_back or held


def test_damage_in_a_closed_segment_past_the_recovery_point_is_a_torn_tail(
        tmp_path, monkeypatch, caplog):
    """A page of a closed segment that never reached the disk (zeros) past the recovery
    point, after a reboot: that segment becomes the newest and is cut at the damage, the
    later segments' bytes go to quarantine and their files away, a warning says so, the
    group that had consumed past the cut moves back to it, and appends continue densely."""
    store = str(tmp_path / "s")
    _fill_across_rolls(store, monkeypatch, synced=20, unsynced=150)
    segs = _segments(store)
    assert len(segs) >= 4
    # the newest closed segment (the only one a roll leaves unsynced), mid-segment
    victim = segs[-2]
    assert int(os.path.basename(victim)[:20]) >= 20
    later = segs[segs.index(victim) + 1:]
    size = os.path.getsize(victim)
    starts = _batch_starts(victim, size)
    hit = starts[len(starts) // 2]
    with open(victim, "r+b") as f:
        f.seek(hit)
        f.write(bytes(starts[len(starts) // 2 + 1] - hit))
    expected = int(os.path.basename(victim)[:20]) + len(starts) // 2
    _pretend_reboot(store)
    with caplog.at_level(logging.WARNING, logger="streamlog"):
        with streamlog.open(store) as log:
            t = log.topic("t")
            values = [r.value for r in t.read(0)]
            assert len(values) == expected
            assert values == [b"s%04d" % i + b"." * 200 for i in range(20)] + \
                [b"u%04d" % i + b"." * 200 for i in range(expected - 20)]
            assert t.end_offset(0) == expected
            g = t.group("g")
            assert t.append(b"after").offset == expected  # dense from the cut
            got = g.poll(10, timeout=1)
            assert [(m.offset, m.value) for m in got] == [(expected, b"after")]
            assert log.verify() == []
    assert all(not os.path.exists(p) for p in later)
    assert _segments(store)[-1] == victim
    messages = [r.getMessage() for r in caplog.records]
    assert any("past the recovery point" in m and "removed" in m for m in messages), messages
    q = _quarantined(store)
    for p in later:  # every later segment's bytes are kept
        base = os.path.basename(p)[:20]
        assert any(os.path.basename(x).startswith(base) for x in q), (base, q)
    r = subprocess.run([sys.executable, "-m", "streamlog", "verify", store],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_closed_segment_ending_short_of_the_next_is_a_torn_tail(tmp_path, monkeypatch):
    """A closed segment whose last pages were lost (the file cut at a batch boundary, its
    data ending before the next segment's base) past the recovery point: cut there, the
    later segments dropped, nothing returned twice or out of order."""
    store = str(tmp_path / "s")
    _fill_across_rolls(store, monkeypatch, synced=5, unsynced=120)
    segs = _segments(store)
    victim = segs[-2]
    starts = _batch_starts(victim, os.path.getsize(victim))
    os.truncate(victim, starts[-2])
    expected = int(os.path.basename(victim)[:20]) + len(starts) - 2
    _pretend_reboot(store)
    with streamlog.open(store) as log:
        t = log.topic("t")
        assert [r.offset for r in t.read(0)] == list(range(expected))
        assert t.append(b"x").offset == expected
        assert log.verify() == []


def test_damage_in_a_closed_segment_before_the_recovery_point_is_corruption(
        tmp_path, monkeypatch):
    """Every segment synced (the recovery point past them all): a flipped byte in a closed
    segment with valid batches after it is CorruptionError after a reboot, and nothing is
    cut or quarantined."""
    store = str(tmp_path / "s")
    _fill_across_rolls(store, monkeypatch, synced=100, unsynced=0, hold_back=False)
    with streamlog.open(store, durability="never") as log:
        log.topic("t").flush()
    segs = _segments(store)
    assert len(segs) >= 3
    victim = segs[1]
    starts = _batch_starts(victim, os.path.getsize(victim))
    hit = starts[len(starts) // 2]
    _flip(victim, hit + 30)
    _pretend_reboot(store)
    with streamlog.open(store) as log:
        t = log.topic("t")
        assert t.end_offset(0) == 100
        with pytest.raises(streamlog.CorruptionError) as e:
            list(t.read(0))
        assert e.value.file_pos == hit
        assert t.get(0, 99).value.startswith(b"s0099")
        assert [p.kind for p in log.verify()] == ["corrupt"]
    assert _segments(store) == segs and not _quarantined(store)


def test_damage_in_a_closed_segment_in_the_same_boot_is_corruption(tmp_path, monkeypatch):
    """No power loss: the page cache kept every closed segment whole, so damage found in
    one (even past the recovery point) is corruption, never cut."""
    store = str(tmp_path / "s")
    _fill_across_rolls(store, monkeypatch, synced=5, unsynced=120)
    segs = _segments(store)
    victim = segs[2]
    starts = _batch_starts(victim, os.path.getsize(victim))
    _flip(victim, starts[1] + 30)
    with streamlog.open(store) as log:
        t = log.topic("t")
        assert t.end_offset(0) == 125
        with pytest.raises(streamlog.CorruptionError):
            list(t.read(0))
        assert [p.kind for p in log.verify()] == ["corrupt"]
    assert _segments(store) == segs and not _quarantined(store)


def test_read_only_open_skips_a_torn_closed_segment_and_changes_nothing(tmp_path, monkeypatch):
    """Read-only after a reboot: a closed segment damaged past the recovery point ends the
    partition's view there (the later segments left out), and no file changes."""
    store = str(tmp_path / "s")
    _fill_across_rolls(store, monkeypatch, synced=20, unsynced=150)
    segs = _segments(store)
    victim = segs[-2]
    starts = _batch_starts(victim, os.path.getsize(victim))
    hit = starts[3]
    with open(victim, "r+b") as f:
        f.seek(hit)
        f.write(bytes(starts[4] - hit))
    expected = int(os.path.basename(victim)[:20]) + 3
    _pretend_reboot(store)
    before = {p: open(p, "rb").read() for p in segs}
    with streamlog.open(store, read_only=True) as log:
        t = log.topic("t")
        assert [r.offset for r in t.read(0)] == list(range(expected))
        assert t.end_offset(0) == expected
        assert [p.kind for p in log.verify()] == []
    assert {p: open(p, "rb").read() for p in segs} == before and not _quarantined(store)
    with streamlog.open(store) as log:  # the next writer cuts it
        assert log.topic("t").end_offset(0) == expected
        assert log.verify() == []


def test_a_roll_leaves_at_most_one_closed_segment_unsynced(tmp_path, monkeypatch):
    """With every background sync held back, each roll first syncs the segments before
    the one it closes: the recovery point stands at the newest closed segment's base."""
    store = str(tmp_path / "s")
    _fill_across_rolls(store, monkeypatch, synced=5, unsynced=150)
    segs = _segments(store)
    assert len(segs) >= 4
    with streamlog.open(store, durability="never") as log:
        log.topic("t")
        part = log._parts[("t", 0)]
        assert part.ctl.synced_offset >= int(os.path.basename(segs[-2])[:20])


@pytest.mark.parametrize("block", ["lost", "stale"])
def test_damage_before_the_newest_closed_segment_is_corruption_even_without_a_block(
        tmp_path, monkeypatch, block):
    """Background syncs held back over several rolls, then the control block lost (or
    from another boot, its point lagging): damage in a closed segment older than the
    newest closed one was synced before the newest segment was published, so it is
    CorruptionError, kept as it is, and the records after it stay readable; nothing is
    cut or quarantined."""
    store = str(tmp_path / "s")
    _fill_across_rolls(store, monkeypatch, synced=5, unsynced=150)
    segs = _segments(store)
    assert len(segs) >= 4
    victim = segs[1]
    starts = _batch_starts(victim, os.path.getsize(victim))
    hit = starts[len(starts) // 2]
    _flip(victim, hit + 30)
    if block == "lost":
        os.unlink(os.path.join(store, "topics", "t", "0", "control"))
    else:
        _pretend_reboot(store)
    with streamlog.open(store) as log:
        t = log.topic("t")
        assert t.end_offset(0) == 155
        with pytest.raises(streamlog.CorruptionError) as e:
            list(t.read(0))
        assert e.value.file_pos == hit
        assert t.get(0, 154).value.startswith(b"u0149")
        assert [p.kind for p in log.verify()] == ["corrupt"]
    assert _segments(store) == segs and not _quarantined(store)


def test_without_a_block_damage_in_the_newest_closed_segment_is_a_torn_tail(
        tmp_path, monkeypatch):
    """The control block lost after a power loss that took pages of the newest closed
    segment (its sync was still pending): cut there, the newest segment quarantined."""
    store = str(tmp_path / "s")
    _fill_across_rolls(store, monkeypatch, synced=5, unsynced=150)
    segs = _segments(store)
    victim = segs[-2]
    starts = _batch_starts(victim, os.path.getsize(victim))
    hit = starts[2]
    with open(victim, "r+b") as f:
        f.seek(hit)
        f.write(bytes(starts[3] - hit))
    expected = int(os.path.basename(victim)[:20]) + 2
    os.unlink(os.path.join(store, "topics", "t", "0", "control"))
    with streamlog.open(store) as log:
        t = log.topic("t")
        assert [r.offset for r in t.read(0)] == list(range(expected))
        assert t.append(b"x").offset == expected
        assert log.verify() == []
    assert not os.path.exists(segs[-1]) and _quarantined(store)
