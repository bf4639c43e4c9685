"""Operational figures of a store (the append rate of Log.stats(), Prometheus export).

``Log.stats()`` gives per-partition counts (records, bytes, segments,
offsets); and ``append_rate_per_s`` of every partition and topic; this module
computes that rate (``append_rate``) and turns the whole dict into
Prometheus metrics for ``streamlog metrics DIR``. The exporter needs the
``metrics`` extra (``pip install 'streamlog-embedded[metrics]'``, i.e.
``prometheus_client``); the rate does not.

The append rate is computed from record timestamps, so it costs one
time-index lookup per partition and no state: the records whose timestamp
falls in the last ``RATE_WINDOW_S`` seconds (by the running maximum, as
``offset_for_time`` defines it), divided by the window. Records appended with
explicit old ``timestamp_ms`` values do not count as recent. A partition whose
time lookup hits damaged data gets None (``Log.verify`` reports the damage).
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from streamlog._limits import RATE_WINDOW_S as _RATE_WINDOW_S
from streamlog.backends.local import log as _local_log
from streamlog.backends.local.log import Log, Topic

RATE_WINDOW_S = _RATE_WINDOW_S  # one minute: smooths bursts, still shows a stall
DEFAULT_PORT = 9464  # the port OpenTelemetry's Prometheus exporter uses by default
DEFAULT_ADDR = "127.0.0.1"  # loopback: exposing figures to the network is opt-in


def append_rate(topic: Topic, partition: int, window_s: float = RATE_WINDOW_S,
                end_offset: int | None = None, now_ms: int | None = None) -> float:
    """Records per second appended to ``partition`` over the last ``window_s`` seconds.

    Counted from record timestamps: ``end_offset - offset_for_time(now - window)``.
    """
    return _local_log.append_rate(topic, partition, window_s, end_offset, now_ms)


# ---------------------------------------------------------------- Prometheus
def _prometheus():
    try:
        import prometheus_client  # noqa: F401
        from prometheus_client import core
    except ImportError as e:
        raise ImportError("the Prometheus exporter needs prometheus_client: "
                          "pip install 'streamlog-embedded[metrics]'") from e
    return core


_PARTITION_GAUGES = (
    # (stats key, metric name, help)
    ("records", "streamlog_partition_records", "Records retained in the partition."),
    ("bytes", "streamlog_partition_size_bytes", "Bytes of segment data in the partition."),
    ("segments", "streamlog_partition_segments", "Segment files of the partition."),
    ("start_offset", "streamlog_partition_start_offset", "First retained offset."),
    ("end_offset", "streamlog_partition_end_offset", "Next offset to be written."),
    ("append_rate_per_s", "streamlog_partition_append_rate",
     "Records per second appended over the last minute (from record timestamps)."),
)
# Group figures exported per group and per partition (the groups feature's stats hook).
_GROUP_FIELDS = ("lag", "pending", "redeliveries", "dead_letters", "consumers", "committed",
                 "oldest_unacked_age_seconds", "oldest_lease_age_seconds")
_GROUP_HELP = {
    "oldest_unacked_age_seconds": "Seconds since the oldest record the group has not settled "
                                  "was appended (absent when caught up)",
    "oldest_lease_age_seconds": "Seconds since the oldest lease still held was taken or "
                                "renewed (absent when none is held)",
}
# Retention runs per topic (counted by every process that applies retention).
_RETENTION_COUNTERS = (
    ("runs", "streamlog_retention_runs", "Retention runs applied to the topic."),
    ("segments", "streamlog_retention_removed_segments", "Segments retention removed."),
    ("records", "streamlog_retention_removed_records", "Records retention removed."),
    ("bytes", "streamlog_retention_removed_bytes", "Bytes retention removed."),
)
# Compaction runs per topic (counted by every process that compacts, in the background too).
_COMPACTION_COUNTERS = (
    ("runs", "streamlog_compaction_runs", "Partition compactions of the topic."),
    ("records", "streamlog_compaction_removed_records", "Records compaction removed."),
    ("bytes", "streamlog_compaction_freed_bytes", "Bytes compaction freed."),
    ("segments", "streamlog_compaction_rewritten_segments", "Segments compaction rewrote."),
)
# Features that add figures to Log.stats() when imported; imported before reading stats.
_FEATURE_MODULES = ("streamlog.backends.local.groups",)


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def stats(log: Log) -> dict:
    """``log.stats()`` with the figures of every feature in this build (groups included).

    A feature adds its figures through a stats hook registered when its
    module is imported; this imports those modules first, so the figures do
    not depend on what the program happened to use before.
    """
    for name in _FEATURE_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
    return log.stats()


def group_rows(stats: dict) -> Iterator[dict]:
    """Flatten ``stats["groups"]`` (``[topic][group]``) into rows for tables and metrics.

    One row per group (``topic``, ``group``, ``mode`` and its numeric
    figures), followed by one row per partition (with ``partition``).
    """
    for topic, groups in sorted((stats.get("groups") or {}).items()):
        if not isinstance(groups, dict):
            continue
        for group, info in sorted(groups.items()):
            if not isinstance(info, dict):
                continue
            row = {"topic": topic, "group": group, "mode": info.get("mode")}
            row.update({k: v for k, v in info.items() if _numeric(v)})
            yield row
            for p in info.get("partitions") or []:
                if isinstance(p, dict) and "partition" in p:
                    prow = {"topic": topic, "group": group}
                    prow.update({k: v for k, v in p.items() if _numeric(v)})
                    yield prow


class StoreCollector:
    """A Prometheus collector that reads ``log.stats()`` at every scrape.

    Thread-safe as ``Log.stats()`` is; holds no state between scrapes.
    """

    def __init__(self, log: Log) -> None:
        self.log = log

    def describe(self) -> list:
        return []  # no fixed set: families depend on the store's topics and groups

    def collect(self) -> Iterator[Any]:
        core = _prometheus()
        t0 = time.perf_counter()
        figures = stats(self.log)
        labels = ["topic", "partition"]
        fams = {key: core.GaugeMetricFamily(name, doc, labels=labels)
                for key, name, doc in _PARTITION_GAUGES}
        newest = core.GaugeMetricFamily(
            "streamlog_partition_max_timestamp_seconds",
            "Largest record timestamp in the partition (Unix seconds).", labels=labels)
        appended = core.CounterMetricFamily(
            "streamlog_partition_appended_records",
            "Records ever appended to the partition (its end offset).", labels=labels)
        topics = core.GaugeMetricFamily("streamlog_topics", "Topics in the store.")
        topics.add_metric([], len(figures["topics"]))
        for tname, tinfo in figures["topics"].items():
            for part in tinfo["partitions"]:
                lv = [tname, str(part["partition"])]
                for key, _, _ in _PARTITION_GAUGES:
                    if _numeric(part.get(key)):
                        fams[key].add_metric(lv, part[key])
                if part.get("max_timestamp_ms") is not None:
                    newest.add_metric(lv, part["max_timestamp_ms"] / 1000.0)
                appended.add_metric(lv, part["end_offset"])
        yield topics
        yield from fams.values()
        yield newest
        yield appended
        gfams: dict[tuple[str, bool], Any] = {}
        for row in group_rows(figures):
            per_part = "partition" in row
            for field in _GROUP_FIELDS:
                if field not in row:
                    continue
                k = (field, per_part)
                if k not in gfams:
                    name = f"streamlog_group_{'partition_' if per_part else ''}{field}"
                    what = _GROUP_HELP.get(field, f"Consumer group {field.replace('_', ' ')}")
                    gfams[k] = core.GaugeMetricFamily(
                        name, f"{what}{' per partition' if per_part else ''}.",
                        labels=["topic", "group"] + (["partition"] if per_part else []))
                lv = [row["topic"], row["group"]] + ([str(row["partition"])] if per_part else [])
                gfams[k].add_metric(lv, row[field])
        yield from gfams.values()
        rfams = {key: core.CounterMetricFamily(name, doc, labels=["topic"])
                 for key, name, doc in _RETENTION_COUNTERS}
        last = core.GaugeMetricFamily("streamlog_retention_last_run_timestamp_seconds",
                                      "When retention last ran on the topic (Unix seconds).",
                                      labels=["topic"])
        for tname, c in sorted((figures.get("retention") or {}).items()):
            for key, _, _ in _RETENTION_COUNTERS:
                rfams[key].add_metric([tname], c.get(key, 0))
            if c.get("last_run_ms") is not None:
                last.add_metric([tname], c["last_run_ms"] / 1000.0)
        yield from rfams.values()
        yield last
        cfams = {key: core.CounterMetricFamily(name, doc, labels=["topic"])
                 for key, name, doc in _COMPACTION_COUNTERS}
        clast = core.GaugeMetricFamily("streamlog_compaction_last_run_timestamp_seconds",
                                       "When compaction last ran on the topic (Unix seconds).",
                                       labels=["topic"])
        for tname, c in sorted((figures.get("compaction") or {}).items()):
            for key, _, _ in _COMPACTION_COUNTERS:
                cfams[key].add_metric([tname], c.get(key, 0))
            if c.get("last_run_ms") is not None:
                clast.add_metric([tname], c["last_run_ms"] / 1000.0)
        yield from cfams.values()
        yield clast
        took = core.GaugeMetricFamily("streamlog_stats_duration_seconds",
                                      "Time the last scrape spent reading the store's figures.")
        took.add_metric([], time.perf_counter() - t0)
        yield took


def render(log: Log) -> bytes:
    """The store's metrics in the Prometheus text exposition format (one scrape)."""
    _prometheus()
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(log))
    return generate_latest(registry)


class MetricsServer:
    """A running Prometheus endpoint for one store; ``close()`` stops it.

    ``port`` is the bound port (useful with port 0). Serves from a background
    thread; each scrape reads ``log.stats()``, which is thread-safe. ``close()``
    is idempotent.
    """

    def __init__(self, log: Log, port: int = DEFAULT_PORT, addr: str = DEFAULT_ADDR) -> None:
        _prometheus()
        from prometheus_client import CollectorRegistry, start_http_server

        self.log = log
        self.addr = addr
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StoreCollector(log))
        self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)
        self.port: int = self._server.server_address[1]
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve(log: Log, port: int = DEFAULT_PORT, addr: str = DEFAULT_ADDR) -> MetricsServer:
    """Serve ``log``'s metrics at ``http://addr:port/metrics`` (loopback by default)."""
    return MetricsServer(log, port=port, addr=addr)


__all__ = ["DEFAULT_ADDR", "DEFAULT_PORT", "MetricsServer", "RATE_WINDOW_S", "StoreCollector",
           "append_rate", "group_rows", "render", "serve", "stats"]
