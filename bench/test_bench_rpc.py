"""Request-reply round trips (``log.rpc``): in one process and across processes, p50 and p99.

A round is 500 sequential requests of 100 random bytes to an echo handler;
every request's round trip is timed on its own (``perf_counter_ns``), and
p50/p99 are taken over all measured requests of all rounds. The servers (and
the baselines' echo threads and processes) live for the whole module, so
neither start-up nor the first LMDB transactions are timed. Every streamlog
round is preceded by one round of its baseline (bench/conftest.py):

* in one process: the same 500 round trips to an echo thread over two
  ``queue.Queue`` objects, the floor of a thread hand-over in Python;
* across processes: the same round trips to an echo process over a pair of
  pipes (``os.write`` / blocking ``os.read``), the floor of a cross-process
  wake-up.

Figures: the in-process hand-over path (the default: a requester in the
server's process gets the reply handed over), the durable reply path in one
process (every reply a record on ``<name>.replies`` found through the
correlation index, as between processes), and the path across processes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import shutil
import tempfile
import threading
import time

import pytest
from conftest import FIGURES, Contender, Figure, Goal, paired_rounds, report, spread

import streamlog
from streamlog.backends.local import replybox as rb_mod

REQUESTS = 500  # sequential round trips per round
ROUNDS = 5
VALUE_BYTES = 100
CTX = mp.get_context("spawn")


def _percentile(samples: list[int], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] / 1000  # ns -> µs


def _timed_contender(name: str, call, samples: list[int]) -> Contender:
    """A round of REQUESTS calls to ``call(value)``, each timed into ``samples``."""
    value = os.urandom(VALUE_BYTES)
    perf = time.perf_counter_ns

    def run(_state):
        for _ in range(REQUESTS):
            t0 = perf()
            reply = call(value)
            samples.append(perf() - t0)
        assert reply == value

    return Contender(name, run)


def _report_latency(benchmark, test: str, label: str, ours: list[int], base_name: str,
                    base: list[int], goal_us: float | None, times: list[float]) -> None:
    """Two figures (p50, p99) with the baseline's; all four also in extra_info."""
    p50, p99 = _percentile(ours, 0.50), _percentile(ours, 0.99)
    b50, b99 = _percentile(base, 0.50), _percentile(base, 0.99)
    lat = spread([x / 1000 for x in ours])
    f50 = Figure(test, f"{label} p50", p50, "µs", {base_name: b50}, rounds=len(times),
                 spread=lat, note=f"{len(ours)} round trips")
    if goal_us is not None:
        f50.goals = [Goal(f"p50 < {goal_us:g} µs", p50, goal_us, higher_is_better=False)]
    report(benchmark, f50)
    # The p99 goes into the summary table beside the p50 (extra_info has both below).
    FIGURES.append(Figure(test, f"{label} p99", p99, "µs", {base_name: b99},
                          rounds=len(times), spread=lat))
    info = benchmark.extra_info
    info.update({"p50_us": round(p50, 1), "p99_us": round(p99, 1),
                 "baseline": base_name, "baseline_p50_us": round(b50, 1),
                 "baseline_p99_us": round(b99, 1), "round_trips": len(ours),
                 "ratio_p50": round(p50 / b50, 2) if b50 else None,
                 "ratio_p99": round(p99 / b99, 2) if b99 else None})


# ------------------------------------------------------------- in process
@pytest.fixture(scope="module")
def local_rpc():
    """A store with an echo server (one worker, the default) running in this process."""
    path = tempfile.mkdtemp(prefix="streamlog-bench-rpc-")
    log = streamlog.open(path)
    rpc = log.rpc("bench")
    server = rpc.serve(lambda m: m.value)
    for _ in range(200):  # warm up both reply paths
        rpc.request(b"warm", timeout=10)
    yield rpc
    server.stop()
    log.close()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def echo_thread():
    """The in-process baseline: an echo thread fed through queue.Queue."""
    inbox: queue.Queue = queue.Queue()
    outbox: queue.Queue = queue.Queue()

    def echo():
        while (item := inbox.get()) is not None:
            outbox.put(item)

    t = threading.Thread(target=echo, daemon=True)
    t.start()

    def call(value):
        inbox.put(value)
        return outbox.get()

    yield call
    inbox.put(None)
    t.join(10)


@pytest.mark.parametrize("handover", [True, False], ids=["handover", "durable"])
def test_rpc_round_trip_in_process(benchmark, local_rpc, echo_thread, handover, monkeypatch):
    """Round trips to a server in the same process (hand-over, or the durable reply path)."""
    monkeypatch.setattr(rb_mod, "IN_PROCESS_HANDOVER", handover)
    ours: list[int] = []
    base: list[int] = []
    target = _timed_contender("streamlog rpc", lambda v: local_rpc.request(v, timeout=10), ours)
    baseline = _timed_contender("queue.Queue echo thread", echo_thread, base)
    times = paired_rounds(benchmark, target, [baseline], rounds=ROUNDS)
    if not benchmark.disabled:  # drop the warm-up round's samples
        ours[:] = ours[REQUESTS:]
        base[:] = base[REQUESTS:]
    label = "rpc in one process, " + ("hand-over" if handover else "durable replies")
    _report_latency(benchmark, f"test_rpc_round_trip_in_process[{handover}]", label, ours,
                    baseline.name, base, 100.0 if handover else None,
                    times[target.name])


# -------------------------------------------------------- across processes
def _serve(path: str, ready, stop) -> None:
    with streamlog.open(path) as log:
        with log.rpc("bench").serve(lambda m: m.value):
            ready.set()
            stop.wait(3600)


def _pipe_echo(rfd: int, wfd: int) -> None:
    while True:
        data = os.read(rfd, VALUE_BYTES)
        if not data:
            return
        os.write(wfd, data)


@pytest.fixture(scope="module")
def remote_rpc():
    """A store whose echo server (one worker, the default) runs in another process."""
    path = tempfile.mkdtemp(prefix="streamlog-bench-rpc-")
    ready, stop = CTX.Event(), CTX.Event()
    proc = CTX.Process(target=_serve, args=(path, ready, stop), daemon=True)
    proc.start()
    assert ready.wait(60)
    log = streamlog.open(path)
    rpc = log.rpc("bench")
    for _ in range(200):
        rpc.request(b"warm", timeout=10)
    yield rpc
    stop.set()
    proc.join(30)
    log.close()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def echo_process():
    """The cross-process baseline: an echo process on a pair of pipes."""
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    # fork: the child inherits the pipes and runs no streamlog code
    proc = mp.get_context("fork").Process(target=_pipe_echo, args=(to_child_r, to_parent_w),
                                          daemon=True)
    proc.start()

    def call(value):
        os.write(to_child_w, value)
        got = b""
        while len(got) < len(value):
            got += os.read(to_parent_r, len(value) - len(got))
        return got

    assert call(b"x" * VALUE_BYTES) == b"x" * VALUE_BYTES
    yield call
    os.close(to_child_w)
    proc.join(10)
    for fd in (to_child_r, to_parent_r, to_parent_w):
        os.close(fd)


def test_rpc_round_trip_across_processes(benchmark, remote_rpc, echo_process):
    """Round trips to a server in another process (the durable reply path)."""
    ours: list[int] = []
    base: list[int] = []
    target = _timed_contender("streamlog rpc", lambda v: remote_rpc.request(v, timeout=10),
                              ours)
    baseline = _timed_contender("pipe echo process", echo_process, base)
    times = paired_rounds(benchmark, target, [baseline], rounds=ROUNDS)
    if not benchmark.disabled:
        ours[:] = ours[REQUESTS:]
        base[:] = base[REQUESTS:]
    _report_latency(benchmark, "test_rpc_round_trip_across_processes",
                    "rpc across processes", ours, baseline.name, base, 200.0,
                    times[target.name])
