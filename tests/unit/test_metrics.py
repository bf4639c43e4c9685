"""streamlog.metrics: the append-rate figure of Log.stats() and the Prometheus exporter."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from streamlog import metrics

pytest.importorskip("prometheus_client")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _samples(text: str, name: str) -> dict[str, float]:
    """{label string: value} of every sample of metric ``name`` in exposition text."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1:].rsplit("} ", 1)
            out[labels] = float(value)
        elif line.startswith(name + " "):
            out[""] = float(line.split(" ", 1)[1])
    return out


def test_append_rate_counts_records_of_the_last_window_by_timestamp(store):
    """Recent records count toward the rate; records stamped long ago do not."""
    t = store.topic("r")
    old = _now_ms() - 3_600_000
    for i in range(50):
        t.append(b"old", timestamp_ms=old + i)
    for _ in range(120):
        t.append(b"new")
    assert metrics.append_rate(t, 0) == pytest.approx(120 / metrics.RATE_WINDOW_S)
    assert metrics.append_rate(t, 0, window_s=7200) == pytest.approx(170 / 7200)
    idle = store.topic("idle")
    idle.append(b"x", timestamp_ms=old)
    assert metrics.append_rate(idle, 0) == 0
    with pytest.raises(ValueError, match="window_s"):
        metrics.append_rate(t, 0, window_s=0)


def test_stats_carry_the_append_rate_per_partition_and_per_topic(store):
    """Log.stats() gives append_rate_per_s for each partition and their sum for the topic."""
    t = store.topic("two", partitions=2)
    t.append_many([b"v"] * 30, keys=[b"a"] * 10 + [b"b"] * 20)
    info = store.stats()["topics"]["two"]
    rates = [p["append_rate_per_s"] for p in info["partitions"]]
    assert sum(rates) == pytest.approx(30 / metrics.RATE_WINDOW_S)
    assert info["append_rate_per_s"] == pytest.approx(sum(rates))
    assert sorted(round(r * metrics.RATE_WINDOW_S) for r in rates) in ([10, 20], [0, 30])


def test_render_exports_partition_and_group_figures(store):
    """One scrape holds per-partition gauges, the appended-records counter and group lag."""
    t = store.topic("orders", partitions=2)
    t.append_many([b"x"] * 7, keys=[b"k1"] * 3 + [b"k2"] * 4)
    g = t.group("billing")
    msgs = g.poll(max_records=2, timeout=1.0)
    g.ack(msgs)
    g.close()
    text = metrics.render(store).decode()
    records = _samples(text, "streamlog_partition_records")
    assert sum(records.values()) == 7 and len(records) == 2
    appended = _samples(text, "streamlog_partition_appended_records_total")
    assert sum(appended.values()) == 7
    assert _samples(text, "streamlog_topics") == {"": 1.0}
    lag = _samples(text, "streamlog_group_lag")
    assert lag == {'group="billing",topic="orders"': 5.0}
    per_part = _samples(text, "streamlog_group_partition_lag")
    assert sum(per_part.values()) == 5 and len(per_part) == 2
    assert "# TYPE streamlog_partition_size_bytes gauge" in text


def test_group_rows_flatten_groups_then_their_partitions():
    """group_rows yields a row per group, then one per partition, numeric figures only."""
    stats = {"groups": {"t": {"g": {"mode": "shared", "lag": 3, "pending": 1,
                                    "dead_letter": "t.g.dlq",
                                    "partitions": [{"partition": 0, "lag": 3, "owner": None}]}}}}
    rows = list(metrics.group_rows(stats))
    assert rows == [{"topic": "t", "group": "g", "mode": "shared", "lag": 3, "pending": 1},
                    {"topic": "t", "group": "g", "partition": 0, "lag": 3}]


def test_server_serves_on_loopback_and_stops_on_close(store):
    """serve() answers /metrics on 127.0.0.1 (port 0: any free port) until close()."""
    store.topic("s").append(b"x")
    with metrics.serve(store, port=0) as server:
        assert server.addr == "127.0.0.1" and server.port > 0
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            body = resp.read().decode()
        assert resp.status == 200
        assert _samples(body, "streamlog_partition_end_offset") == {
            'partition="0",topic="s"': 1.0}
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=2)


def test_group_ages_and_dead_letters_are_exported_per_group_and_partition(store):
    """Oldest unsettled record's age (from its timestamp), oldest lease's age, dead letters."""
    t = store.topic("jobs", partitions=2)
    old = _now_ms() - 120_000
    t.append(b"a", key=b"k1", timestamp_ms=old)
    t.append(b"b", key=b"k1", timestamp_ms=old + 1000)
    g = t.group("workers", ack_wait_s=30, max_deliver=1)
    (m,) = g.poll(max_records=1, timeout=1.0)  # leased, not acked
    stats = metrics.stats(store)
    info = stats["groups"]["jobs"]["workers"]
    assert info["oldest_unacked_age_seconds"] >= 120
    assert 0 <= info["oldest_lease_age_seconds"] < 30
    text = metrics.render(store).decode()
    ages = _samples(text, "streamlog_group_oldest_unacked_age_seconds")
    assert list(ages) == ['group="workers",topic="jobs"'] and ages[list(ages)[0]] >= 120
    per_part = _samples(text, "streamlog_group_partition_oldest_unacked_age_seconds")
    assert len(per_part) == 1  # only the partition that holds the records has an age
    assert _samples(text, "streamlog_group_oldest_lease_age_seconds")
    m.nack(error="boom")  # max_deliver=1: dead-lettered
    g.ack(g.poll(max_records=10, timeout=1.0))
    text = metrics.render(store).decode()
    assert _samples(text, "streamlog_group_dead_letters") == {'group="workers",topic="jobs"': 1.0}
    assert _samples(text, "streamlog_group_oldest_unacked_age_seconds") == {}  # caught up
    assert _samples(text, "streamlog_group_oldest_lease_age_seconds") == {}
    g.close()


def test_retention_runs_are_counted_across_processes_and_exported(tmp_path):
    """Each retention pass adds to per-topic counters in the store, seen by any process."""
    import streamlog
    from streamlog import Retention

    path = tmp_path / "s"
    with streamlog.open(path) as log:
        t = log.topic("t", segment_bytes=1024)
        old = _now_ms() - 3_600_000
        for i in range(200):
            t.append(b"x" * 50, timestamp_ms=old + i)
        t.append(b"fresh")
        log.alter_topic("t", retention=Retention(max_age_s=60))
        before = metrics.stats(log)["retention"].get("t", {"runs": 0, "records": 0})
        removed = log.apply_retention()
        log.apply_retention(dry_run=True)  # a dry run is not a run
        assert removed
    with streamlog.open(path, read_only=True) as log:
        c = metrics.stats(log)["retention"]["t"]
        assert c["runs"] == before["runs"] + 1
        assert c["records"] - before["records"] == sum(
            d["end_offset"] - d["base_offset"] for d in removed)
        text = metrics.render(log).decode()
    assert _samples(text, "streamlog_retention_runs_total")['topic="t"'] == c["runs"]
    assert _samples(text, "streamlog_retention_removed_records_total")['topic="t"'] == c["records"]
    assert _samples(text, "streamlog_retention_last_run_timestamp_seconds")['topic="t"'] > 0


def test_the_grafana_dashboard_uses_only_metrics_the_exporter_serves(store):
    """Every metric name in docs/grafana-dashboard.json is one a real scrape carries."""
    import json
    import pathlib
    import re

    from streamlog import Retention

    dash = json.loads((pathlib.Path(__file__).resolve().parents[2] / "docs"
                       / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"\bstreamlog_[a-z_]+", e)}
    assert len(names) >= 10
    t = store.topic("orders", retention=Retention(max_age_s=3600))
    t.append_many([b"x"] * 5)
    g = t.group("billing")
    g.poll(max_records=2, timeout=1.0)  # a lease and unsettled records: the ages exist
    store.apply_retention()
    served = set(re.findall(r"^(streamlog_[a-z_]+)", metrics.render(store).decode(), re.M))
    assert names <= served, names - served
    g.close()


def test_compaction_runs_are_counted_and_exported(tmp_path):
    """Each partition compaction adds to per-topic counters in the store, seen by a
    read-only process and served by the exporter."""
    import streamlog

    path = tmp_path / "s"
    with streamlog.open(path) as log:
        t = log.topic("c", compact=True, segment_bytes=4096, partitions=1)
        for i in range(400):
            t.append(b"v%d" % i, key=b"k%d" % (i % 5))
        # (the background compactor, woken by the rolls, may have removed some or all of
        # the superseded records first: its runs count the same way)
        res = log.compact("c")
    with streamlog.open(path, read_only=True) as log:
        c = metrics.stats(log)["compaction"]["c"]
        assert c["runs"] >= 1 and c["records"] >= max(res.records_removed, 1)
        assert "compaction" not in metrics.stats(log)["retention"].get("c", {})
        text = metrics.render(log).decode()
    assert _samples(text, "streamlog_compaction_runs_total")['topic="c"'] == c["runs"]
    assert _samples(text, "streamlog_compaction_removed_records_total")['topic="c"'] == \
        c["records"]
    assert _samples(text, "streamlog_compaction_last_run_timestamp_seconds")['topic="c"'] > 0
