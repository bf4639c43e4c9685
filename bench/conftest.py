"""Machinery of the storage benchmarks: workload data, baselines paired round by round, summary.

These machines are shared and noisy, so no figure stands alone: every
measured round of streamlog is preceded by one round of each baseline (same
records, same bytes), and figures are reported as ratios of medians taken
from the same interleaved rounds. A drift in machine load then moves both
sides of a ratio together. The session ends with a table of every figure,
its baselines, the ratios and the goals (met or missed).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

import streamlog
from streamlog import _ext
from streamlog.backends.local import codec as _codec

KEY_BYTES = 16
VALUE_BYTES = 100
RECORD_BYTES = KEY_BYTES + VALUE_BYTES  # the payload a baseline writes per record
WRITE_CHUNK_BYTES = 1 << 20  # the raw os.write baseline writes 1 MiB at a time

# A benchmark of the Python reference codec would be meaningless: say which runs.
if os.environ.get("STREAMLOG_NO_EXTENSIONS") == "1":
    assert not _codec.NATIVE
else:
    assert _codec.NATIVE and _codec.encode_record is _ext.encode_record


def pytest_addoption(parser):
    parser.addoption("--bench-summary-json", default=None, metavar="PATH",
                     help="also write the streamlog summary (figures, ratios, goals) as JSON")


def pytest_report_header(config):
    return (f"streamlog bench: codec {'Cython extension' if _codec.NATIVE else 'Python reference'}"
            f", {source_state()}, {os.cpu_count()} CPUs, load average {_loadavg()}")


def source_state() -> str:
    """The commit measured, and whether library sources differed from it (shared tree)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "ext",
                                "streamlog"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown commit"
    if not head:
        return "unknown commit"
    return f"commit {head}" + (" + uncommitted changes in ext/ or streamlog/" if dirty else "")


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ------------------------------------------------------------------ workload
@dataclass
class Workload:
    """The records every contender writes: 16-byte keys, 100-byte values, distinct objects.

    ``lmdb_keys`` (8-byte big-endian integers) and ``lmdb_values`` (key +
    value) are prepared here, outside any timed region, so the LMDB baseline
    does the least work it could: ratios against it are conservative.
    """

    keys: list[bytes]
    values: list[bytes]
    lmdb_keys: list[bytes]
    lmdb_values: list[bytes]

    def chunks(self, count: int) -> list[bytes]:
        """The key + value bytes of the first ``count`` records, in 1 MiB pieces."""
        data = b"".join(self.lmdb_values[:count])
        return [data[i:i + WRITE_CHUNK_BYTES] for i in range(0, len(data), WRITE_CHUNK_BYTES)]


def make_workload(count: int) -> Workload:
    """``count`` records; values are slices of random bytes so none compress or repeat."""
    noise = os.urandom(count + VALUE_BYTES)
    keys = [b"key-%012d" % i for i in range(count)]
    values = [noise[i:i + VALUE_BYTES] for i in range(count)]
    assert all(len(k) == KEY_BYTES for k in keys[:1]) and len(values[-1]) == VALUE_BYTES
    return Workload(keys, values, [i.to_bytes(8, "big") for i in range(count)],
                    [k + v for k, v in zip(keys, values, strict=True)])


@pytest.fixture(scope="session")
def workload() -> Workload:
    """One million records, shared by every benchmark (built once, ~2 s)."""
    return make_workload(1_000_000)


@pytest.fixture(scope="session")
def bench_dir():
    """A scratch directory for the whole run, removed at the end (stores reach 1 GiB).

    Not pytest's tmp_path: pytest keeps the last three runs' temporary
    directories, which would leave gigabytes behind.
    """
    root = os.environ.get("STREAMLOG_BENCH_TMPDIR") or None
    path = tempfile.mkdtemp(prefix="streamlog-bench-", dir=root)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -------------------------------------------------------- paired measurement
@dataclass
class Contender:
    """One thing timed per round: ``setup()`` and ``teardown(state)`` are not timed,
    ``run(state)`` is. ``setup`` returns the state handed to the other two."""

    name: str
    run: Callable[[Any], Any]
    setup: Callable[[], Any] = lambda: None
    teardown: Callable[[Any], None] = lambda state: None


def paired_rounds(benchmark, target: Contender, baselines: list[Contender], rounds: int,
                  warmup_rounds: int = 1) -> dict[str, list[float]]:
    """Time ``target`` with pytest-benchmark, each round preceded by one round of every
    baseline. Returns the round times in seconds, warm-up rounds left out, by name."""
    samples: dict[str, list[float]] = {b.name: [] for b in baselines}
    samples[target.name] = []
    perf = time.perf_counter
    live: list[Any] = []  # target states the harness has not torn down (disabled mode)

    def setup():
        for b in baselines:
            state = b.setup()
            try:
                t0 = perf()
                b.run(state)
                samples[b.name].append(perf() - t0)
            finally:
                b.teardown(state)
        state = target.setup()
        live.append(state)
        return (state,), {}

    def run(state):
        t0 = perf()
        target.run(state)
        samples[target.name].append(perf() - t0)

    def teardown(state):
        live.remove(state)
        target.teardown(state)

    try:
        benchmark.pedantic(run, setup=setup, teardown=teardown, rounds=rounds,
                           warmup_rounds=warmup_rounds, iterations=1)
    finally:
        for state in live:
            target.teardown(state)
    skip = 0 if benchmark.disabled else warmup_rounds
    out = {name: times[skip:skip + rounds] for name, times in samples.items()}
    # pytest-benchmark's own times for the target when it kept them (same rounds).
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is not None and len(stats.data) == len(out[target.name]):
        out[target.name] = list(stats.data)
    return out


# ------------------------------------------------------------------- figures
@dataclass
class Goal:
    """A goal of the storage engine: ``figure`` compared with ``threshold``."""

    text: str
    value: float
    threshold: float
    higher_is_better: bool = True

    @property
    def met(self) -> bool:
        if self.higher_is_better:
            return self.value >= self.threshold
        return self.value <= self.threshold


@dataclass
class Figure:
    """One reported figure with its baselines (name -> value, same unit) and goals."""

    test: str
    label: str
    value: float
    unit: str
    baselines: dict[str, float] = field(default_factory=dict)
    goals: list[Goal] = field(default_factory=list)
    note: str = ""
    rounds: int = 0
    spread: float = 0.0  # (max - min) / median of the figure's rounds: the noise

    def ratio(self, baseline: str) -> float:
        """value / baseline: above 1 means faster for a rate, slower for a latency."""
        b = self.baselines[baseline]
        return self.value / b if b else float("inf")


FIGURES: list[Figure] = []


def rate(count: float, times: list[float]) -> float:
    """Per-second rate from the median round time."""
    return count / statistics.median(times)


def spread(times: list[float]) -> float:
    """The noise of a figure: (max - min) / median of its rounds; (p95 - p5) / median when
    there are many (latency samples), so that one scheduler hiccup does not dominate."""
    m = statistics.median(times)
    if not m:
        return 0.0
    if len(times) >= 20:
        cuts = statistics.quantiles(times, n=20)
        return (cuts[-1] - cuts[0]) / m
    return (max(times) - min(times)) / m


def report(benchmark, figure: Figure) -> Figure:
    """Keep ``figure`` for the summary and put it in the benchmark's extra_info."""
    FIGURES.append(figure)
    info = benchmark.extra_info
    info["figure"] = figure.label
    info["value"] = figure.value
    info["unit"] = figure.unit
    info["rounds"] = figure.rounds
    info["spread"] = round(figure.spread, 3)
    for name, value in figure.baselines.items():
        info[f"baseline[{name}]"] = value
        info[f"ratio_vs[{name}]"] = round(figure.ratio(name), 4)
    for g in figure.goals:
        info[f"goal[{g.text}]"] = "met" if g.met else "missed"
    if figure.note:
        info["note"] = figure.note
    return figure


def _fmt(value: float, unit: str) -> str:
    if unit in ("records/s", "appends/s"):
        return f"{value / 1e6:.2f} M" if value >= 1e5 else f"{value / 1e3:.1f} k"
    if unit == "MB/s":
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """At the end of the session: every figure beside its baselines, and the goals."""
    if not FIGURES:
        return
    tr = terminalreporter
    tr.section("streamlog storage benchmarks: figures, baselines (same rounds), ratios")
    tr.write_line(f"{source_state()}; python {platform.python_version()}, {os.cpu_count()} CPUs, "
                  f"load average now {_loadavg()}; spread = (max - min) / median of the "
                  "figure's rounds, (p95 - p5) / median for latency samples")
    rows = [("figure", "value", "unit", "rounds", "spread", "baseline", "baseline value",
             "ratio")]
    for f in FIGURES:
        first = (f.label, _fmt(f.value, f.unit), f.unit, str(f.rounds), f"{f.spread:.0%}")
        if not f.baselines:
            rows.append(first + ("", "", ""))
        for i, (name, b) in enumerate(f.baselines.items()):
            lead = first if i == 0 else ("",) * 5
            rows.append(lead + (name, _fmt(b, f.unit), f"{f.ratio(name):.2f}x"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        tr.write_line("  ".join(c.ljust(w) if i in (0, 2, 5) else c.rjust(w)
                                for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if j == 0:
            tr.write_line("-" * (sum(widths) + 2 * (len(widths) - 1)))
    tr.section("streamlog storage goals")
    for f in FIGURES:
        for g in f.goals:
            mark = "met   " if g.met else "MISSED"
            tr.write_line(f"{mark} {f.label}: {g.text} (measured {g.value:,.2f})")
    for f in FIGURES:
        if f.note:
            tr.write_line(f"note: {f.label}: {f.note}")
    path = config.getoption("--bench-summary-json")
    if path:
        with open(path, "w") as fh:
            json.dump({"source": source_state(), "python": platform.python_version(),
                       "cpus": os.cpu_count(),
                       "loadavg_end": os.getloadavg(), "streamlog": streamlog.__name__,
                       "figures": [_figure_json(f) for f in FIGURES]}, fh, indent=1)


def _figure_json(f: Figure) -> dict:
    return {"test": f.test, "label": f.label, "value": f.value, "unit": f.unit,
            "rounds": f.rounds, "spread": f.spread, "baselines": f.baselines,
            "ratios": {n: f.ratio(n) for n in f.baselines}, "note": f.note,
            "goals": [{"text": g.text, "value": g.value, "threshold": g.threshold,
                       "met": g.met} for g in f.goals]}
