"""Many processes appending to one store: dense offsets, each record exactly once and whole,
readers in other processes see new records without reopening, group commit under
``always`` durability."""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time

import pytest

import streamlog
from streamlog.backends.local.codec import reference as _format
from tests.strategies import parse_value, record_value

CTX = multiprocessing.get_context("fork")


def _writer(path, topic, writer, count, barrier, keyed):
    """Append ``count`` self-describing records: singles, headers, and append_many batches,
    sizes from a few bytes to past the pwritev threshold."""
    rnd = random.Random(writer)
    with streamlog.open(path, durability="never") as log:
        t = log.topic(topic)
        barrier.wait(30)
        seq = 0
        while seq < count:
            kind = rnd.random()
            size = rnd.choice([3, 40, 200, 1500, 9000, 70_000 if rnd.random() < 0.05 else 100])
            key = (b"key-%d" % rnd.randint(0, 20)) if keyed else None
            if kind < 0.15:
                n = min(rnd.randint(2, 20), count - seq)
                vals = [record_value(writer, seq + i, rnd.choice([10, 300])) for i in range(n)]
                keys = None if not keyed else [b"key-%d" % rnd.randint(0, 20) for _ in range(n)]
                t.append_many(vals, keys=keys)
                seq += n
            elif kind < 0.3:
                t.append(record_value(writer, seq, size), key=key, headers={"w": b"%d" % writer})
                seq += 1
            else:
                t.append(record_value(writer, seq, size), key=key)
                seq += 1
    os._exit(0)


def _check(t, writers, count, keyed):
    seen = {}
    for p in range(t.partitions):
        recs = list(t.read(p))
        assert [r.offset for r in recs] == list(range(len(recs))), "offsets not dense"
        assert t.end_offset(p) == len(recs)
        last: dict[int, int] = {}
        for r in recs:
            writer, seq = parse_value(r.value)  # whole, never interleaved with another
            assert (writer, seq) not in seen, "a record twice"
            seen[(writer, seq)] = p
            assert seq > last.get(writer, -1), "one writer's records out of order"
            last[writer] = seq
            if keyed:
                assert r.key is not None
                assert _format.partition_for_key(r.key, t.partitions) == p
    assert sorted(seen) == [(w, s) for w in writers for s in range(count)]


@pytest.mark.parametrize("partitions, keyed", [(1, False), (3, True), (3, False)])
def test_four_processes_append_at_once(tmp_path, partitions, keyed):
    """4 processes appending at the same time (small segments, so rolls race too): offsets
    dense per partition, every record present exactly once, bytes never interleaved."""
    path = str(tmp_path / "s")
    count = 600
    with streamlog.open(path) as log:
        log.topic("t", partitions=partitions, segment_bytes=64 * 1024)
    barrier = CTX.Barrier(4)
    procs = [CTX.Process(target=_writer, args=(path, "t", w, count, barrier, keyed))
             for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 4
    with streamlog.open(path) as log:
        t = log.topic("t")
        _check(t, range(4), count, keyed)
        assert log.verify() == []
        segments = sum(len(p.segments_info()) for p in t._parts)
        assert segments > partitions  # the writers raced through rolls


def _reader(path, topic, expected, ready, result):
    """Open once, then follow the partition as another process appends: wait for wake-ups,
    read what is new, never reopen."""
    try:
        with streamlog.open(path) as log:
            t = log.topic(topic)
            got = []
            ready.set()
            while len(got) < expected:
                seen = t.notify_seq(0)
                new = list(t.read(0, len(got)))
                got.extend(new)
                if not new:
                    t.wait(0, seen, 5.0)
            batch = t.read_batch(0, 0, expected)
            result.put(("ok", [r.value for r in got], [r.offset for r in got],
                        bytes(batch.value_data), len(batch)))
    except BaseException as e:  # report, do not hang the parent
        result.put(("error", repr(e)))


def test_reader_in_another_process_sees_new_records_without_reopening(tmp_path):
    """A reader that opened the store before the records existed sees every record as it
    is appended, across segment rolls, with wake-ups instead of polling."""
    path = str(tmp_path / "s")
    n = 400
    with streamlog.open(path) as log:
        t = log.topic("t", segment_bytes=2048)
        ready, result = CTX.Event(), CTX.Queue()
        reader = CTX.Process(target=_reader, args=(path, "t", n, ready, result))
        reader.start()
        assert ready.wait(30)
        values = []
        for i in range(n):
            v = record_value(1, i, 64)
            values.append(v)
            if i % 50 == 49:
                t.append_many([v])
            else:
                t.append(v)
        status = result.get(timeout=60)
        reader.join(30)
    assert status[0] == "ok", status
    _, got, offsets, value_data, batch_len = status
    assert got == values and offsets == list(range(n))
    assert value_data == b"".join(values) and batch_len == n


def test_always_durability_group_commit_with_eight_threads(tmp_path, monkeypatch):
    """8 threads appending with durability="always": every record present, dense, in each
    thread's order, and appends share fdatasync calls (group commit)."""
    syncs = []
    real = os.fdatasync
    per_thread = 60
    appends = 8 * per_thread
    box = {}

    def counting(fd):
        # A slow disk: a sync lasts until two more appends have landed (or every
        # append has, or 50 ms passed), so the next sync has several appenders to
        # serve however the threads are scheduled. (A longer bound makes the last
        # thread alone wait it out on every append.)
        syncs.append(fd)
        t = box.get("t")
        if t is not None:
            target = min(t._parts[0].ctl.end_offset() + 2, appends)
            deadline = time.monotonic() + 0.05
            while t._parts[0].ctl.end_offset() < target and time.monotonic() < deadline:
                time.sleep(0.0005)
        return real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    with streamlog.open(tmp_path / "s", durability="always") as log:
        t = log.topic("t")
        box["t"] = t
        errors = []
        start = threading.Barrier(8)

        def run(w):
            try:
                start.wait(30)
                for i in range(per_thread):
                    if i % 3:
                        t.append(record_value(w, i, 50))
                    else:
                        t.append(record_value(w, i, 50), headers={"h": b"x"})
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=run, args=(w,)) for w in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert not any(th.is_alive() for th in threads)
        assert not errors
        box.clear()
        _check(t, range(8), per_thread, keyed=False)
        part = t._parts[0]
        assert part.ctl.synced_offset == t.end_offset(0) == appends
    assert 0 < len(syncs) < appends, f"{len(syncs)} fdatasync calls for {appends} appends"
