"""A local pipeline across processes: producer -> topic -> group of 4 -> topic -> reader.

One producer process appends records (``append_many`` of 1,000) to topic
``in``; four worker processes share group ``stage`` on it and, for each
``poll``, append what they got to topic ``out`` (``append_many``) and ack it
(``g.ack(msgs)``); a reader process follows ``out`` (``read`` from where it
stopped, waiting on the topic's wake-up word between reads) until it has seen
every record. Each value starts with the producer's ``time.monotonic_ns()``
(one clock for every process on Linux) just before its append, so the reader
knows each record's append -> final read latency.

Figures, measured in the same rounds (each pipeline round is preceded by one
round of the baseline):

* throughput: records through the whole pipeline per second (from the
  producer's first append to the reader's last record) beside the producer's
  ``append_many`` rate alone (the same process, records and batches, into a
  fresh topic with nobody reading). Goal: >= 0.5x.
* latency: p50 / p99 append -> final read with the producer paced at
  ``PACED_RATE`` records/s (batches of ``PACED_BATCH``), so that the figure is
  the pipeline's own delay, not a backlog's. Goal: p99 <= 5 ms.

Processes are spawned once per round before the clock starts; durability is
``never`` (the default ``interval`` adds a background sync per process).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import pytest
from conftest import Contender, Figure, Goal, paired_rounds, rate, report, spread

import streamlog

WORKERS = 4
RECORDS = 200_000
BATCH = 1_000
POLL = 1_000
VALUE_BYTES = 100
ROUNDS = 3
PACED_RECORDS = 4_000
PACED_BATCH = 10
PACED_RATE = 10_000  # records/s while the latency is measured
CTX = mp.get_context("spawn")



def _producer(path, topic, count, batch, pace_s, go, out):
    with streamlog.open(path, durability="never") as log:
        t = log.topic(topic)
        pad = os.urandom(VALUE_BYTES - 8)
        go.wait()
        start = time.monotonic_ns()
        for _ in range(0, count, batch):
            stamp = time.monotonic_ns().to_bytes(8, "little")
            t.append_many([stamp + pad] * batch)
            if pace_s:
                time.sleep(pace_s)
        out.put(("producer", start, time.monotonic_ns()))


def _worker(path, stop, ready, columnar):
    with streamlog.open(path, durability="never") as log:
        src, dst = log.topic("in"), log.topic("out")
        g = src.group("stage", ack_wait_s=60)
        ready.put("worker")
        while not stop.is_set():
            if columnar:  # leased as columns, forwarded whole: no Python object per record
                b = g.poll_batch(POLL, timeout=0.05)
                if len(b):
                    dst.append_batch(0, b)
                    g.ack_batch(b)
                continue
            msgs = g.poll(max_records=POLL, timeout=0.05)
            if msgs:
                dst.append_many([m.value for m in msgs])
                g.ack(msgs)
        g.close()


def _reader(path, count, out, ready, columnar):
    with streamlog.open(path, durability="never") as log:
        t = log.topic("out")
        offset, seen, lat = 0, 0, []
        ready.put("reader")
        stamp = np.arange(8)
        while seen < count and columnar:
            seq = t.notify_seq(0)
            b = t.read_batch(0, offset, 10_000)
            n = len(b)
            if n == 0:
                t.wait(0, seq, 0.05)
                continue
            now = time.monotonic_ns()
            at = b.value_offsets[:-1].astype(np.int64)[:, None] + stamp
            sent = np.ascontiguousarray(b.value_data[at]).view("<i8").ravel()
            lat.extend((now - sent).tolist())
            offset = int(b.offsets[-1]) + 1
            seen += n
        while seen < count:
            seq = t.notify_seq(0)
            now = None
            for r in t.read(0, offset):
                if now is None:
                    now = time.monotonic_ns()
                lat.append(now - int.from_bytes(r.value[:8], "little"))
                offset = r.offset + 1
                seen += 1
            if now is None:
                t.wait(0, seq, 0.05)
        out.put(("reader", time.monotonic_ns(), lat))


def _pipeline_round(count: int, batch: int, pace_s: float,
                    columnar: bool = False) -> tuple[float, list[int]]:
    """One run of the whole pipeline on a fresh store: (seconds, latencies in ns).
    ``columnar``: the workers lease with ``poll_batch``, forward with ``append_batch``
    and settle with ``ack_batch``, and the reader takes ``read_batch``es (no Python
    object per record anywhere after the producer)."""
    path = tempfile.mkdtemp(prefix="pipeline-")
    try:
        with streamlog.open(path, durability="never") as log:
            log.topic("in")
            log.topic("out")
        go, stop = CTX.Event(), CTX.Event()
        out, ready = CTX.Queue(), CTX.Queue()
        procs = [CTX.Process(target=_worker, args=(path, stop, ready, columnar))
                 for _ in range(WORKERS)]
        procs.append(CTX.Process(target=_reader, args=(path, count, out, ready, columnar)))
        procs.append(CTX.Process(target=_producer,
                                 args=(path, "in", count, batch, pace_s, go, out)))
        for p in procs:
            p.start()
        for _ in range(WORKERS + 1):
            ready.get(timeout=60)
        go.set()
        results = {}
        for _ in range(2):
            item = out.get(timeout=300)
            results[item[0]] = item
        stop.set()
        for p in procs:
            p.join(timeout=60)
        start = results["producer"][1]
        end, lat = results["reader"][1], results["reader"][2]
        return (end - start) / 1e9, lat
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _producer_alone(count: int) -> float:
    path = tempfile.mkdtemp(prefix="producer-")
    try:
        with streamlog.open(path, durability="never") as log:
            log.topic("alone")
        go, out = CTX.Event(), CTX.Queue()
        p = CTX.Process(target=_producer, args=(path, "alone", count, BATCH, 0.0, go, out))
        p.start()
        time.sleep(0.5)  # the process has opened the store and waits on go
        go.set()
        _, start, end = out.get(timeout=300)
        p.join(timeout=60)
        return (end - start) / 1e9
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.benchmark(group="pipeline")
def test_pipeline_throughput_and_latency(benchmark):
    """Records through producer -> group of 4 -> output topic -> reader, beside the
    producer alone; then the append -> final read latency at a paced rate."""
    alone: list[float] = []
    lat_all: list[int] = []

    def baseline_run(_):
        alone.append(_producer_alone(RECORDS))

    def pipeline_run(_):
        seconds, _lat = _pipeline_round(RECORDS, BATCH, 0.0)
        benchmark.extra_info.setdefault("pipeline_s", []).append(seconds)

    def columnar_run(_):
        seconds, _lat = _pipeline_round(RECORDS, BATCH, 0.0, columnar=True)
        benchmark.extra_info.setdefault("columnar_s", []).append(seconds)

    times = paired_rounds(benchmark, Contender("pipeline", pipeline_run),
                          [Contender("producer append_many alone", baseline_run),
                           Contender("pipeline, columnar stages", columnar_run)], ROUNDS,
                          warmup_rounds=0)
    pipe_s = benchmark.extra_info["pipeline_s"]
    fig = Figure(benchmark.name, f"pipeline: producer -> group of {WORKERS} -> topic -> reader",
                 rate(RECORDS, pipe_s), "records/s",
                 {"producer append_many alone": rate(RECORDS, alone)},
                 rounds=len(pipe_s), spread=spread(pipe_s),
                 note=f"{RECORDS:,} records of {VALUE_BYTES} B, append_many x{BATCH}, "
                      f"poll({POLL}) + append_many + g.ack per worker; durability=never; "
                      f"times from the producer's first append to the reader's last record "
                      f"(process start-up not timed; wall time of a round: "
                      f"{statistics.median(times['pipeline']):.1f} s)")
    fig.goals = [Goal(">= 0.5x the producer's append_many rate alone",
                      fig.ratio("producer append_many alone"), 0.5)]
    report(benchmark, fig)

    col_s = benchmark.extra_info["columnar_s"]
    cfig = Figure(benchmark.name, f"pipeline, columnar stages: producer -> group of {WORKERS} "
                  f"-> append_batch -> read_batch",
                  rate(RECORDS, col_s), "records/s",
                  {"producer append_many alone": rate(RECORDS, alone)},
                  rounds=len(col_s), spread=spread(col_s),
                  note=f"as above, but each worker leases with g.poll_batch({POLL}) "
                       "(one partition's records as numpy columns), forwards the batch "
                       "whole with append_batch and settles it with g.ack_batch; the "
                       "reader follows 'out' with read_batch, taking the stamps with numpy")
    cfig.goals = [Goal(">= 0.5x the producer's append_many rate alone",
                       cfig.ratio("producer append_many alone"), 0.5)]
    report(benchmark, cfig)

    for _ in range(ROUNDS):
        _s, lat = _pipeline_round(PACED_RECORDS, PACED_BATCH, PACED_BATCH / PACED_RATE)
        lat_all.extend(lat)
    us = [x / 1e3 for x in lat_all]
    p50, p99 = statistics.median(us), statistics.quantiles(us, n=100)[98]
    lfig = Figure(benchmark.name, f"pipeline: append -> final read p99 at {PACED_RATE:,}/s",
                  p99, "us", rounds=ROUNDS, spread=spread(us),
                  note=f"p50 {p50:.0f} us, p99 {p99:.0f} us over {len(us):,} records "
                       f"({ROUNDS} runs of {PACED_RECORDS:,}, batches of {PACED_BATCH})")
    lfig.goals = [Goal("p99 <= 5 ms", p99, 5_000.0, higher_is_better=False)]
    report(benchmark, lfig)
