"""Interleaved A/B of storage paths between two source trees, one fresh process per run.

    python bench/ab_storage.py A_TREE B_TREE CASE [--rounds 8]

CASE is one of:

* ``append_batch``: 12 rounds of 200,000 records as RecordBatches of 1,000
  (``durability="never"``, 64 MiB segments, so rounds roll segments as in steady
  state); prints the median process CPU time per round (user + system of every
  thread, the prefault thread's included) and the median wall time per round.
* ``append_many``: the same with ``append_many`` of lists of 1,000 bytes values
  and keys.
* ``roll``: the ``append_batch`` loop of 12 rounds, timing each call; prints the
  median wall ms of the calls that rolled a segment (the roll is inside them) and
  the wall ms of all 12 rounds (rolls included: a median round leaves them out).
* ``group_commit``: 7 rounds of 8 threads x 250 ``append`` calls with
  ``durability="always"``; prints the median appends per second (wall) and the
  median appends served by each ``fdatasync`` (counted by the partition's group
  commit).

Each round runs A and B once, alternating which goes first, so that a drift in
the machine's load moves both; the summary gives both medians and the median
of the per-round ratios B/A. The trees are directories holding a built
``streamlog`` package (a worktree after ``python setup.py build_ext --inplace``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile

_PRELUDE = r"""
import os, sys, statistics, tempfile, threading, time
import numpy as np
import streamlog
"""

_CASES = {
    "append_batch": _PRELUDE + r"""
n = 200_000
rng = np.random.default_rng(1)
keys = rng.integers(0, 256, (n, 16), dtype=np.uint8)
vals = rng.integers(0, 256, (n, 100), dtype=np.uint8)
batches = [streamlog.RecordBatch.from_arrays(vals[i:i + 1000], keys=keys[i:i + 1000],
                                             timestamps_ms=1) for i in range(0, n, 1000)]
cpu, wall = [], []
with tempfile.TemporaryDirectory() as d, streamlog.open(d, durability="never") as log:
    t = log.topic("bench")
    for _ in range(12):
        c0, w0 = time.process_time(), time.perf_counter()
        for b in batches:
            t.append_batch(0, b)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
print(statistics.median(cpu) * 1e3, statistics.median(wall) * 1e3)
""",
    "append_many": _PRELUDE + r"""
values = [os.urandom(100) for _ in range(1000)]
keys = [os.urandom(16) for _ in range(1000)]
cpu, wall = [], []
with tempfile.TemporaryDirectory() as d, streamlog.open(d, durability="never") as log:
    t = log.topic("bench")
    for _ in range(12):
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(200):
            t.append_many(values, keys)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
print(statistics.median(cpu) * 1e3, statistics.median(wall) * 1e3)
""",
    "roll": _PRELUDE + r"""
n = 200_000
rng = np.random.default_rng(1)
keys = rng.integers(0, 256, (n, 16), dtype=np.uint8)
vals = rng.integers(0, 256, (n, 100), dtype=np.uint8)
batches = [streamlog.RecordBatch.from_arrays(vals[i:i + 1000], keys=keys[i:i + 1000],
                                             timestamps_ms=1) for i in range(0, n, 1000)]
rolls = []
with tempfile.TemporaryDirectory() as d, streamlog.open(d, durability="never") as log:
    t = log.topic("bench")
    ctl = t._parts[0].ctl
    clock = time.perf_counter
    w0 = clock()
    for _ in range(12):
        for b in batches:
            base, c0 = ctl.view()[1], clock()
            t.append_batch(0, b)
            if ctl.view()[1] != base:
                rolls.append(clock() - c0)
    total = clock() - w0
print(statistics.median(rolls) * 1e3, total * 1e3)
""",
    "group_commit": _PRELUDE + r"""
value, key = b"v" * 100, b"k" * 16
rates, served = [], []
with tempfile.TemporaryDirectory() as d, streamlog.open(d, durability="always") as log:
    t = log.topic("bench")
    part = t._parts[0]
    for _ in range(7):
        go = threading.Event()

        def worker():
            go.wait()
            append = t.append
            for _ in range(250):
                append(value, key=key)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for th in threads:
            th.start()
        syncs = part._commit.syncs
        w0 = time.perf_counter()
        go.set()
        for th in threads:
            th.join()
        rates.append(2000 / (time.perf_counter() - w0))
        served.append(2000 / ((part._commit.syncs - syncs) & 0xFFFFFFFF))
print(statistics.median(rates), statistics.median(served))
""",
}

_COLUMNS = {
    "append_batch": ("CPU ms/round", "wall ms/round"),
    "append_many": ("CPU ms/round", "wall ms/round"),
    "roll": ("wall ms/rolling call", "wall ms/12 rounds"),
    "group_commit": ("appends/s", "appends/fdatasync"),
}


def _run(tree: str, case: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as cwd:  # import the tree's package, not the cwd's
        out = subprocess.run([sys.executable, "-c", _CASES[case]], env={"PYTHONPATH": tree,
                             "PATH": "/usr/bin:/bin"}, cwd=cwd, capture_output=True,
                             text=True, check=True)
    first, second = out.stdout.split()
    return float(first), float(second)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("case", choices=sorted(_CASES))
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    one, two = _COLUMNS[args.case]
    print(f"round  A {one}  B {one}  B/A  |  A {two}  B {two}  B/A")
    got: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}
    for r in range(args.rounds):
        order = [("a", args.a), ("b", args.b)] if r % 2 == 0 else [("b", args.b), ("a", args.a)]
        for name, tree in order:
            got[name].append(_run(tree, args.case))
        (a1, a2), (b1, b2) = got["a"][-1], got["b"][-1]
        print(f"{r + 1:5}  {a1:10,.2f}  {b1:10,.2f}  {b1 / a1:.3f}  |  {a2:10,.2f}  {b2:10,.2f}"
              f"  {b2 / a2:.3f}")
    for i, label in enumerate((one, two)):
        a = [x[i] for x in got["a"]]
        b = [x[i] for x in got["b"]]
        ratios = [y / x for x, y in zip(a, b, strict=True)]
        print(f"{label}: median A {statistics.median(a):,.2f} ({min(a):,.2f}-{max(a):,.2f}), "
              f"B {statistics.median(b):,.2f} ({min(b):,.2f}-{max(b):,.2f}); B/A per round: "
              f"median {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
