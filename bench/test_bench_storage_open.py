"""Opening a 1 GiB, 16-segment partition: after a clean close, after a SIGKILLed writer,
and (for the record) after a reboot, when the control block is rebuilt from the segments.

"Open" is what a restarted application does before its first useful call:
``streamlog.open(dir)``, ``log.topic(name)``, ``end_offset``, a ``get`` of the
last record and one ``append`` (the first append is where a writer's torn
tail is repaired, under the append lock). The log is built once per session
with ``append_many``; the page cache is warm (dropping it would disturb every
other user of this shared machine).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import lmdb
import pytest
from conftest import Contender, Figure, Goal, Workload, paired_rounds, report

import streamlog
from streamlog.backends.local import codec as _codec
from streamlog.backends.local.storage import files

SEGMENTS = 16
SEGMENT_BYTES = 64 << 20  # 16 x 64 MiB = 1 GiB
BATCH = 1_000
ROUNDS = 7
TOPIC = "big"
BOOT_ID_FILE_POS = 16  # sl_control.boot_id (ext/native.h): 16 bytes

CHILD = r"""
import sys
import streamlog
log = streamlog.open(sys.argv[1])
t = log.topic(sys.argv[2])
key, value = b"k" * 16, b"v" * 100
t.append(value, key=key)
print("appending", flush=True)
while True:
    t.append(value, key=key)
"""


@pytest.fixture(scope="module")
def big_log(workload: Workload, bench_dir):
    """A partition of SEGMENTS segments filled by append_many (default durability).

    The segment size shrinks when the scratch disk has less than three times
    the log's size free; the figure's note says so.
    """
    path = os.path.join(bench_dir, "big")
    free = shutil.disk_usage(bench_dir).free
    segment_bytes, note = SEGMENT_BYTES, ""
    if free < 3 * SEGMENTS * SEGMENT_BYTES:
        segment_bytes = max(1 << 20, (free // 3 // SEGMENTS) & ~((1 << 20) - 1))
        note = (f"only {free >> 20} MiB free on the scratch disk: segments of "
                f"{segment_bytes >> 20} MiB instead of {SEGMENT_BYTES >> 20} MiB")
    values, keys = workload.values[:BATCH], workload.keys[:BATCH]
    batch_bytes = len(_codec.encode_batch(keys, values, None, [0] * BATCH))
    # Whole batches per segment; stop one batch short of a 17th segment.
    batches = SEGMENTS * (segment_bytes // batch_bytes) - 1
    started = time.perf_counter()
    with streamlog.open(path) as log:
        t = log.topic(TOPIC, segment_bytes=segment_bytes)
        for _ in range(batches):
            t.append_many(values, keys)
        records = t.end_offset(0)
    elapsed = time.perf_counter() - started
    segments = len(files.list_segments(files.partition_dir(path, TOPIC, 0)))
    assert segments == SEGMENTS and records == batches * BATCH, (segments, records)
    size = batches * batch_bytes
    build = (f"{size / 2**30:.2f} GiB, {records:,} records in {segments} segments, "
             f"built by append_many x{BATCH} in {elapsed:.1f} s "
             f"({size / elapsed / 1e6:,.0f} MB/s incl. {SEGMENTS - 1} rolls)")
    yield path, "; ".join(x for x in (build, note) if x)


@pytest.fixture(scope="module")
def small_stores(workload: Workload, bench_dir):
    """Baselines of the same open: a store holding one batch, and an LMDB environment."""
    path = os.path.join(bench_dir, "small")
    with streamlog.open(path) as log:
        log.topic(TOPIC).append_many(workload.values[:BATCH], workload.keys[:BATCH])
    lpath = os.path.join(bench_dir, "open-lmdb")
    env = lmdb.open(lpath, map_size=1 << 30)
    with env.begin(write=True) as txn:
        txn.cursor().putmulti(zip(workload.lmdb_keys[:100_000],
                                  workload.lmdb_values[:100_000], strict=True), append=True)
    env.close()
    return path, lpath


def open_and_use(path: str):
    """Open the store and make the calls a restarted application makes first."""
    log = streamlog.open(path)
    t = log.topic(TOPIC)
    end = t.end_offset(0)
    last = t.get(0, end - 1)
    assert last.offset == end - 1
    t.append(last.value or b"", key=last.key)
    return log


def lmdb_open_and_get(path: str) -> None:
    env = lmdb.open(path, map_size=1 << 30)
    with env.begin() as txn:
        cur = txn.cursor()
        assert cur.last() and cur.value()
    env.close()


def kill_a_writer(path: str) -> None:
    """Start a process appending to the log, SIGKILL it mid-stream, reap it."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, path, TOPIC],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "appending"
        time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()


def forget_boot(path: str) -> None:
    """Make the control block look written during an earlier boot (as after a reboot or
    power loss): the next open rebuilds it from the segments."""
    ctl = os.path.join(files.partition_dir(path, TOPIC, 0), files.CONTROL_FILE)
    fd = os.open(ctl, os.O_RDWR)
    try:
        os.pwrite(fd, b"\xff" * 16, BOOT_ID_FILE_POS)
    finally:
        os.close(fd)


# after-reboot runs before after-sigkill, whose writers add single-record batches
# to the active segment that a rebuild would then have to scan as well.
SCENARIOS = {
    "clean-close": (lambda path: None, 50.0),
    "after-reboot": (forget_boot, None),
    "after-sigkill": (kill_a_writer, 50.0),
}


@pytest.mark.benchmark(group="open")
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_open_big_partition(benchmark, big_log, small_stores, scenario):
    """Open + first calls on the 1 GiB partition beside the same on a small store and LMDB."""
    path, build_note = big_log
    small, lpath = small_stores
    prepare, goal_ms = SCENARIOS[scenario]

    opened = []  # the timed run opens; teardown (not timed) closes

    def run(_):
        opened.append(open_and_use(path))

    def teardown(_):
        while opened:
            opened.pop().close()

    target = Contender("streamlog", run, lambda: prepare(path), teardown)

    def small_run(held):
        held.append(open_and_use(small))

    def small_close(held):
        while held:
            held.pop().close()

    # Closing (it syncs) is not part of an open: untimed, as for the target.
    baselines = [Contender("store holding one batch", small_run, list, small_close),
                 Contender("lmdb open + last get", lambda _: lmdb_open_and_get(lpath))]
    times = paired_rounds(benchmark, target, baselines, ROUNDS)
    ms = {name: sorted(t * 1e3 for t in ts) for name, ts in times.items()}
    med = {name: ts[len(ts) // 2] for name, ts in ms.items()}
    fig = Figure(benchmark.name, f"open 1 GiB / {SEGMENTS} segments, {scenario}",
                 med["streamlog"], "ms", {b.name: med[b.name] for b in baselines},
                 rounds=len(ms["streamlog"]),
                 spread=(ms["streamlog"][-1] - ms["streamlog"][0]) / med["streamlog"],
                 note=build_note if scenario == "clean-close" else "")
    if goal_ms is not None:
        fig.goals = [Goal(f"under {goal_ms:.0f} ms", fig.value, goal_ms,
                          higher_is_better=False)]
    report(benchmark, fig)
