"""Interleaved A/B of the per-record append loop between two source trees.

    python bench/ab_append.py A_TREE B_TREE [--rounds 5] [--records 50000] [--passes 15]

Each round runs one fresh process per tree, alternating which goes first, each timing
the same ``Topic.append(value, key=key)`` loop as ``test_append_per_record`` (durability
``never``, best of ``--passes`` passes: the best pass is the one least disturbed by
other load on the machine), timed in process CPU time (user + system) so that
time the process spends waiting for a core does not count; prints records per
CPU-second per round and the median ratio B/A.
Used to check that a change (e.g. tracing support with no tracer provider set) costs
the append fast path nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

_CHILD = r"""
import os, sys, tempfile, time
try:
    import opentelemetry.trace  # importable, no provider set: the "tracing off" case
except ImportError:
    pass
import streamlog
n = int(sys.argv[1])
keys = [b"key-%08d" % i for i in range(n)]
values = [os.urandom(100) for _ in range(1000)] * (n // 1000)
with tempfile.TemporaryDirectory() as d:
    with streamlog.open(d, durability="never") as log:
        t = log.topic("bench")
        best = float("inf")
        for _ in range(int(sys.argv[2])):
            append = t.append
            t0 = time.process_time()
            for k, v in zip(keys, values):
                append(v, key=k)
            best = min(best, time.process_time() - t0)
print(n / best)
"""


def _run(tree: str, n: int, passes: int) -> float:
    env = {**os.environ, "PYTHONPATH": tree}
    with tempfile.TemporaryDirectory() as cwd:  # import the tree's package, not the cwd's
        out = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(passes)], env=env, cwd=cwd,
                             capture_output=True, text=True, check=True)
    return float(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--passes", type=int, default=15)
    args = ap.parse_args()
    a_rates, b_rates = [], []
    print("round  A records/CPU-s  B records/CPU-s  B/A")
    for r in range(args.rounds):
        order = [("a", args.a), ("b", args.b)] if r % 2 == 0 else [("b", args.b), ("a", args.a)]
        got = {name: _run(tree, args.records, args.passes) for name, tree in order}
        a_rates.append(got["a"])
        b_rates.append(got["b"])
        print(f"{r + 1:5}  {got['a']:15,.0f}  {got['b']:15,.0f}  {got['b'] / got['a']:.3f}")
    ma, mb = statistics.median(a_rates), statistics.median(b_rates)
    print(f"median {ma:15,.0f}  {mb:15,.0f}  {mb / ma:.3f}  (difference {abs(mb / ma - 1):.1%})")


if __name__ == "__main__":
    main()
