"""SIGKILL mid-append: every acknowledged append survives, offsets stay dense, no garbage.

Children append in a loop and report each acknowledged position to the parent
over a pipe only after ``append`` returned; the parent kills them at random
moments (while another live process keeps appending), then reopens the store
and checks the partitions against the acknowledgements.
"""

from __future__ import annotations

import logging
import mmap
import multiprocessing
import os
import random
import signal
import struct
import threading
import time
import zlib

import pytest

import streamlog
from streamlog.backends.local.codec import reference as _format
from streamlog.backends.local.storage import files
from streamlog.backends.local.storage import partition as partition_module
from tests.strategies import parse_value, record_value

CTX = multiprocessing.get_context("fork")
ACK = struct.Struct("<IIIQ")  # writer, seq, partition, offset: 20 bytes, atomic in a pipe
PENDING_END_POS = 136  # control block field offsets (docs/format.md)
END_POS_POS = 128
BOOT_ID_POS = 16


# --------------------------------------------------------------- children

def _append_loop(path, topic, writer, ack_fd, sizes, durability, many, stop):
    """Append self-describing records until killed (or ``stop`` is set); ack each one."""
    log = streamlog.open(path, durability=durability)
    t = log.topic(topic)
    rnd = random.Random(writer)
    seq = call = 0
    while stop is None or not stop.is_set():
        if not many:
            pos = t.append(record_value(writer, seq, rnd.choice(sizes)), key=b"w%d" % writer)
            os.write(ack_fd, ACK.pack(writer, seq, pos.partition, pos.offset))
            seq += 1
            continue
        n = rnd.randint(2, 30)
        keys = [b"k%d" % rnd.randint(0, 99) for _ in range(n)]
        parts = [_format.partition_for_key(k, t.partitions) for k in keys]
        hdrs = [{"call": b"%d:%d" % (writer, call), "share": b"%d" % parts.count(p)}
                for p in parts]
        vals = [record_value(writer, seq + i, rnd.choice(sizes)) for i in range(n)]
        positions = t.append_many(vals, keys=keys, headers=hdrs)
        os.write(ack_fd, b"".join(ACK.pack(writer, seq + i, p.partition, p.offset)
                                  for i, p in enumerate(positions)))
        seq += n
        call += 1
    log.close()
    os._exit(0)


class Child:
    """A forked appender and the acknowledgements it sent before it died."""

    def __init__(self, path, topic, writer, sizes, durability="never", many=False,
                 live=False):
        r, w = os.pipe()
        self.writer = writer
        self.stop = CTX.Event() if live else None
        self.proc = CTX.Process(target=_append_loop, args=(
            path, topic, writer, w, sizes, durability, many, self.stop))
        self.proc.start()
        os.close(w)
        self.acks: list[tuple[int, int, int, int]] = []
        self._buf = b""
        self._reader = threading.Thread(target=self._drain, args=(r,), daemon=True)
        self._reader.start()

    def _drain(self, fd):
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self._buf += chunk
            n = len(self._buf) // ACK.size * ACK.size
            self.acks.extend(ACK.iter_unpack(self._buf[:n]))
            self._buf = self._buf[n:]
        os.close(fd)

    def wait_acks(self, count, timeout=20.0):
        deadline = time.monotonic() + timeout
        while len(self.acks) < count:
            assert self.proc.is_alive() or len(self.acks) >= count, "appender died early"
            assert time.monotonic() < deadline, f"writer {self.writer} made no progress"
            time.sleep(0.001)

    def kill(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(20)
        self._reader.join(20)
        assert self.proc.exitcode == -signal.SIGKILL
        assert self._buf == b"", "a torn acknowledgement"

    def finish(self):
        self.stop.set()
        self.proc.join(30)
        self._reader.join(20)
        assert self.proc.exitcode == 0


# ----------------------------------------------------------------- checks

def check_topic(log, topic, children, many=False):
    """Every acknowledged record is at its offset with its value; offsets dense; every
    record whole; a writer's unacknowledged records only after its last ack (its one
    in-flight call); append_many calls whole per partition."""
    t = log.topic(topic)
    acked = {}
    for c in children:
        for writer, seq, p, off in c.acks:
            acked[(writer, seq)] = (p, off)
    seen = {}
    calls: dict[tuple[bytes, int], list[int]] = {}
    for p in range(t.partitions):
        recs = list(t.read(p))
        assert [r.offset for r in recs] == list(range(len(recs))), "offsets not dense"
        assert t.end_offset(p) == len(recs)
        last_seq: dict[int, int] = {}
        for r in recs:
            writer, seq = parse_value(r.value)
            assert (writer, seq) not in seen, f"record {writer}/{seq} twice"
            seen[(writer, seq)] = (p, r.offset)
            assert seq > last_seq.get(writer, -1), "a writer's records out of order"
            last_seq[writer] = seq
            if many:
                calls.setdefault((r.headers["call"], p), []).append(int(r.headers["share"]))
    for key, where in acked.items():
        assert seen.get(key) == where, f"acknowledged record {key} missing or moved"
    for c in children:
        mine = sorted(s for (w, s) in seen if w == c.writer)
        acked_seqs = sorted(s for (w, s) in acked if w == c.writer)
        top = acked_seqs[-1] if acked_seqs else -1
        assert mine[:len(acked_seqs)] == acked_seqs
        extra = mine[len(acked_seqs):]
        assert all(s > top for s in extra)
        assert len(extra) <= (30 if many else 1), "unacknowledged records beyond one call"
    for (call, p), shares in calls.items():
        assert len(shares) == shares[0], f"append_many call {call} torn in partition {p}"
    return seen


def _control_path(path, topic, partition=0):
    return os.path.join(files.partition_dir(path, topic, partition), files.CONTROL_FILE)


def _reboot(path, topic, partitions):
    """Simulate power loss + reboot: the control blocks now carry another boot's id."""
    for p in range(partitions):
        with open(_control_path(path, topic, p), "r+b") as f:
            f.seek(BOOT_ID_POS)
            f.write(os.urandom(16))


# ------------------------------------------------------------------ tests

@pytest.mark.parametrize("scenario", [
    dict(name="small", sizes=[8, 40, 300], segment_bytes=1 << 20, rounds=6),
    dict(name="rolls", sizes=[100, 400, 900], segment_bytes=2048, rounds=6),
    dict(name="big", sizes=[2000, 70_000, 300_000], segment_bytes=256 * 1024, rounds=4),
    dict(name="interval", sizes=[50, 500], segment_bytes=8192, rounds=3,
         durability="interval"),
], ids=lambda s: s["name"])
def test_kill_appender_while_another_keeps_appending(tmp_path, scenario):
    """SIGKILL one appender at a random moment while a second process keeps appending: the
    survivor is never blocked by the dead one (robust lock), and after reopening (every
    other round after a simulated reboot) every acknowledged append is present."""
    path = str(tmp_path / "s")
    rnd = random.Random(zlib.crc32(scenario["name"].encode()))
    durability = scenario.get("durability", "never")
    with streamlog.open(path) as log:
        writer = 0
        for rnd_i in range(scenario["rounds"]):
            topic = f"{scenario['name']}{rnd_i}"
            log.topic(topic, segment_bytes=scenario["segment_bytes"])
            victim = Child(path, topic, writer + 1, scenario["sizes"], durability)
            live = Child(path, topic, writer + 2, scenario["sizes"], durability, live=True)
            writer += 2
            victim.wait_acks(1)
            live.wait_acks(1)
            time.sleep(rnd.uniform(0, 0.03))
            victim.kill()
            progress = len(live.acks)
            live.wait_acks(progress + 20)  # the survivor goes on past the dead writer
            live.finish()
            if rnd_i % 2:
                _reboot(path, topic, 1)
            with streamlog.open(path) as fresh:
                seen = check_topic(fresh, topic, [victim, live])
                assert fresh.verify() == []
                t = fresh.topic(topic)
                end = t.end_offset(0)
                assert t.append(b"after").offset == end
            assert len(seen) >= len(victim.acks) + len(live.acks)


def test_kill_during_append_many_is_all_or_nothing_per_partition(tmp_path):
    """SIGKILL during append_many on a 3-partition topic: each call's share of a partition
    is there whole or not at all, and every acknowledged call is complete everywhere."""
    path = str(tmp_path / "s")
    rnd = random.Random(7)
    with streamlog.open(path) as log:
        for rnd_i in range(5):
            topic = f"many{rnd_i}"
            log.topic(topic, partitions=3, segment_bytes=16384)
            victim = Child(path, topic, 10 + rnd_i * 2, [20, 200, 1500], many=True)
            live = Child(path, topic, 11 + rnd_i * 2, [20, 200], many=True, live=True)
            victim.wait_acks(1)
            time.sleep(rnd.uniform(0, 0.02))
            victim.kill()
            live.wait_acks(len(live.acks) + 30)
            live.finish()
            if rnd_i % 2:
                _reboot(path, topic, 3)
            with streamlog.open(path) as fresh:
                check_topic(fresh, topic, [victim, live], many=True)
                assert fresh.verify() == []


def _die_in_the_middle_of_a_copy(path, topic, half):
    """Take the append lock, write half a batch after the end, record it as in progress
    (pending_end) as the writer does, and die holding the lock."""
    with streamlog.open(path) as log:
        t = log.topic(topic)
        part = t._parts[0]
        batch = _format.encode_batch(None, [b"torn" * 100], None, [1])
        part.ctl.lock()
        view = part.ctl.view()
        end_pos = view[3]
        seg_path = os.path.join(part.path, files.segment_name(view[1]))
        with open(seg_path, "r+b") as f:
            f.seek(end_pos)
            f.write(bytes(batch[:half]) if half else b"")
        with open(_control_path(path, topic), "r+b") as f:
            m = mmap.mmap(f.fileno(), 4096)
            m[PENDING_END_POS:PENDING_END_POS + 8] = struct.pack("<Q", end_pos + len(batch))
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("half", [0, 1, 30, 44, 200])
def test_writer_dead_while_holding_the_lock_I5(tmp_path, caplog, half):
    """A writer that died holding the lock mid-copy: the next appender (another process)
    gets the lock (robust mutex), zeroes the partial batch, logs a torn tail, and appends
    at the old end; the bytes after the end are zero again (I5)."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        t = log.topic("t", segment_bytes=4096)
        for i in range(10):
            t.append(b"before-%d" % i)
    child = CTX.Process(target=_die_in_the_middle_of_a_copy, args=(path, "t", half))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    with caplog.at_level(logging.WARNING, logger="streamlog"):
        with streamlog.open(path) as log:
            t = log.topic("t")
            part = t._parts[0]
            assert part.ctl.pending_end != part.ctl.end_pos  # the dead writer's trace
            assert t.end_offset(0) == 10
            assert t.append(b"after", headers={"h": b"1"}).offset == 10
            assert part.ctl.pending_end == part.ctl.end_pos
            assert [r.value for r in t.read(0)] == [b"before-%d" % i for i in range(10)] + \
                [b"after"]
            view = part.ctl.view()
            seg = os.path.join(part.path, files.segment_name(view[1]))
            with open(seg, "rb") as f:
                assert not any(f.read()[view[3]:])
            assert log.verify() == []
    assert any("torn tail" in r.getMessage() for r in caplog.records if r.name == "streamlog")
    # and the lock works for everyone afterwards, in another process too
    c = Child(path, "t", 99, [10], live=True)
    c.wait_acks(50)
    c.finish()
    with streamlog.open(path) as log:
        tail = list(log.topic("t").read(0, 11))
        assert [parse_value(r.value) for r in tail] == [(99, i) for i in range(len(tail))]
        assert len(tail) == len(c.acks)


def _big_appends(path, topic, ack_fd):
    with streamlog.open(path, durability="never") as log:
        t = log.topic(topic)
        seq = 0
        while True:
            size = 3_000_000 if seq % 2 else 60_000  # pwritev and mapped-copy paths
            pos = t.append(record_value(7, seq, size))
            os.write(ack_fd, ACK.pack(7, seq, pos.partition, pos.offset))
            seq += 1


def test_kill_caught_inside_the_copy(tmp_path, caplog):
    """Kill an appender at the moment its write is in progress (pending_end != end_pos seen
    through the shared control block): the torn write is zeroed by the next appender and
    every acknowledged record is intact."""
    path = str(tmp_path / "s")
    caught = 0
    with streamlog.open(path) as log:
        for attempt in range(12):
            topic = f"copy{attempt}"
            t = log.topic(topic, segment_bytes=16 << 20)
            ctl = t._parts[0].ctl
            r, w = os.pipe()
            proc = CTX.Process(target=_big_appends, args=(path, topic, w))
            proc.start()
            os.close(w)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if ctl.pending_end != ctl.end_pos:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            else:
                os.kill(proc.pid, signal.SIGKILL)
            proc.join(20)
            acks = []
            while chunk := os.read(r, 65536):
                acks.extend(ACK.iter_unpack(chunk))
            os.close(r)
            torn = ctl.pending_end != ctl.end_pos
            caught += torn
            with caplog.at_level(logging.WARNING, logger="streamlog"):
                caplog.clear()
                end = t.end_offset(0)
                assert t.append(b"after").offset == end
            if torn:
                assert any("torn tail" in m for m in caplog.messages)
            recs = list(t.read(0))
            assert [r.offset for r in recs] == list(range(end + 1))
            assert [parse_value(r.value) for r in recs[:-1]] == [(7, i) for i in range(end)]
            assert end >= len(acks)
            for _, seq, _, off in acks:
                assert off == seq
            if caught >= 3:
                break
        assert log.verify() == []
    assert caught >= 1, "never killed a writer inside its copy"


@pytest.mark.parametrize("stage", ["created", "published", "trimmed"])
def test_kill_at_each_step_of_a_roll_I6(tmp_path, stage):
    """A writer killed at each step of a segment roll (new file created; switch published;
    old segment trimmed but not its indexes) leaves a store that reads completely, and
    the next appender (and a rebuild after a reboot) carries on."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        t = log.topic("t", segment_bytes=1024)
        for i in range(5):  # 5 x 182 bytes: the next 560-byte batch rolls
            t.append(b"r%d" % i + b"." * 120)
        assert t._parts[0].ctl.view()[1] == 0

    def roll_and_die():
        P = partition_module.Partition
        if stage == "created":
            orig = P._create_segment_files

            def hook(self, *a, **k):
                orig(self, *a, **k)
                os.kill(os.getpid(), signal.SIGKILL)
            P._create_segment_files = hook
        elif stage == "published":
            # published, nothing trimmed or synced yet (the roll hands both to the
            # background in interval mode, the mode of this store)
            def hook(*a, **k):
                os.kill(os.getpid(), signal.SIGKILL)
            partition_module.prefault.request_sync = hook
        else:
            def hook(trims):  # the background trim: the segment cut, not its indexes
                os.ftruncate(*trims[0])
                os.kill(os.getpid(), signal.SIGKILL)
            partition_module._trim = hook
        with streamlog.open(path) as log2:
            log2.topic("t").append(b"x" * 500)
        os._exit(5)

    child = CTX.Process(target=roll_and_die)
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    expected = [b"r%d" % i + b"." * 120 for i in range(5)]
    for reboot in (False, True):
        if reboot:
            _reboot(path, "t", 1)
        with streamlog.open(path) as log:
            t = log.topic("t")
            got = [r.value for r in t.read(0)]
            if not reboot:
                assert got[:5] == expected
                assert got[5:] in ([], [b"x" * 500])  # published before the kill, or not
                expected = got
            assert got == expected
            assert log.verify() == []
            for i in range(8):
                expected.append(b"n%d" % i + b"." * 200)
                t.append(expected[-1])
            assert [r.value for r in t.read(0)] == expected
            assert log.verify() == []
