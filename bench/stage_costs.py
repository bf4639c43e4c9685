"""Per-record cost of one pipeline stage in one process: ``poll`` + ``append_many`` +
``ack`` against ``poll_batch`` + ``append_batch`` + ``ack_batch``.

    PYTHONPATH=. python bench/stage_costs.py [--records 400000] [--poll 1000] [--passes 3]

(``PYTHONPATH=.``: the checkout's streamlog, not an installed one.)

A topic of ``--records`` records of 100 B (appended in batches of 1,000) is consumed
by a fresh shared group per pass, each poll's records forwarded to a second topic and
acked, as a worker of ``test_bench_pipeline.py`` does; prints nanoseconds per record
for the poll, the forwarding and the ack of each form (the calling thread's CPU
time, so that the store's background threads do not count; best of ``--passes``
passes: the pass least disturbed by other load), and ``read_batch`` alone over the
same records as the floor of a columnar read.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import streamlog


def _stage(log, t, out, columnar: bool, poll: int) -> tuple[int, float, float, float]:
    g = t.group(f"g{time.monotonic_ns()}")
    n = 0
    tp = tf = ta = 0.0
    clock = time.thread_time
    while True:
        a = clock()
        if columnar:
            b = g.poll_batch(poll, timeout=0)
            k = len(b)
        else:
            msgs = g.poll(poll, timeout=0)
            k = len(msgs)
        c = clock()
        tp += c - a
        if not k:
            return n, tp, tf, ta
        if columnar:
            out.append_batch(0, b)
        else:
            out.append_many([m.value for m in msgs])
        d = clock()
        tf += d - c
        if columnar:
            g.ack_batch(b)
        else:
            g.ack(msgs)
        ta += clock() - d
        n += k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=400_000)
    ap.add_argument("--poll", type=int, default=1000)
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, streamlog.open(d, durability="never") as log:
        t, out = log.topic("in"), log.topic("out")
        pad = os.urandom(100)
        for _ in range(0, args.records, 1000):
            t.append_many([pad] * 1000)
        for name, columnar in (("poll + append_many + ack", False),
                               ("poll_batch + append_batch + ack_batch", True)):
            best = None
            for _ in range(args.passes):
                n, tp, tf, ta = _stage(log, t, out, columnar, args.poll)
                if best is None or tp + tf + ta < sum(best[1:]):
                    best = (n, tp, tf, ta)
            assert best is not None
            n, tp, tf, ta = best
            print(f"{name:40s} poll {tp / n * 1e9:5.0f}  forward {tf / n * 1e9:5.0f}  "
                  f"ack {ta / n * 1e9:4.0f}  total {(tp + tf + ta) / n * 1e9:5.0f} ns/record")
        best_rb = None
        for _ in range(args.passes):
            a, off = time.thread_time(), 0
            while len(b := t.read_batch(0, off, args.poll)):
                off = int(b.offsets[-1]) + 1
            s = time.thread_time() - a
            best_rb = s if best_rb is None else min(best_rb, s)
        print(f"{'read_batch alone':40s} {best_rb / args.records * 1e9:5.0f} ns/record")


if __name__ == "__main__":
    main()
