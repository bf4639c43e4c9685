"""The lifecycle and operations commands on a store on JetStream, as real processes
against a real server: `create`, `alter`, `delete`, group resets and deletion with
their refusals while a consumer process is live, `metrics`, `top` (in a pipe and in a
real 80-column terminal) and `bench`."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import streamlog
from streamlog.backends.jetstream._client import Connection
from streamlog.backends.jetstream._naming import stream_name

from .test_cli_urls import _ENV, TIMEOUT_S, sl


@pytest.fixture
def url(js_url):
    """A store with topic 'orders' (2 partitions, 4 keyed records) and group 'billing'
    that acked 2 of them."""
    with streamlog.open(js_url) as log:
        t = log.topic("orders", partitions=2)
        for i in range(4):
            t.append(b"v%d" % i, key=b"k%d" % i)
        g = t.group("billing")
        got = []
        while len(got) < 2:
            got += g.poll(max_records=2 - len(got), timeout=5)
        g.ack(got)
        g.close()
    return js_url


def lag(url: str, group: str = "billing") -> int:
    with streamlog.open(url) as log:
        return log.stats()["groups"]["orders"][group]["lag"]


def stream_config(url: str, topic: str, p: int) -> dict:
    store = url.rsplit("/", 1)[1]
    c = Connection(url)
    try:
        return c.run(c.stream_info(stream_name(store, topic, p))).config
    finally:
        c.close()


class Consumer:
    """A consumer process polling group 'billing' without end (a live consumer)."""

    def __init__(self, url: str) -> None:
        script = (
            "import sys, streamlog\n"
            "log = streamlog.open(sys.argv[1])\n"
            "g = log.existing_topic('orders').group('billing', consumer='worker-1')\n"
            "g.poll(1, timeout=0)\n"
            "print('ready', flush=True)\n"
            "while True:\n"
            "    g.poll(10, timeout=0.5)\n")
        self.proc = subprocess.Popen([sys.executable, "-c", script, url], env=_ENV,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.proc.stdout.readline()
        assert line == b"ready\n", self.proc.stderr.read()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=TIMEOUT_S)


def test_create_alter_and_delete_a_topic(js_url):
    r = sl("create", js_url, "orders", "--partitions", "2", "--retention-age", "7d")
    assert r.returncode == 0, r.stderr
    assert b"created: 2 partitions" in r.stdout and js_url.encode() in r.stdout
    r = sl("alter", js_url, "orders", "--partitions", "4", "--retention-age", "1d",
           "--dedupe-window", "1m")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert re.search(r"partitions\s+│ 2\s+│ 4", out), out
    assert re.search(r"max age 1w\s+│ max - per partition, max age 1d", out), out
    assert re.search(r"dedupe window │ 2m\s+│ 1m", out), out
    assert b"keys map to partitions anew" in r.stderr
    with streamlog.open(js_url) as log:
        cfg = log.existing_topic("orders").config
    assert (cfg["partitions"], cfg["retention"], cfg["dedupe_window_s"]) == (
        4, [None, 86400.0], 60.0)
    for p in range(4):  # the servers enforce the new limits on every partition's stream
        sc = stream_config(js_url, "orders", p)
        assert sc["max_age"] == 86400 * 10**9 and sc["duplicate_window"] == 60 * 10**9
    r = sl("alter", js_url, "orders", "--partitions", "3")
    assert r.returncode == 1 and b"only grow" in r.stderr
    r = sl("alter", js_url, "orders", "--max-record-bytes", "64MiB")
    assert r.returncode == 1 and b"max_payload" in r.stderr, r.stderr
    r = sl("delete", js_url, "orders")  # not a terminal, no --yes: refused
    assert r.returncode == 1 and b"--yes" in r.stderr
    r = sl("delete", js_url, "orders", "--yes")
    assert r.returncode == 0, r.stderr
    with streamlog.open(js_url) as log:
        assert log.topics() == []


def test_group_reset_shows_the_plan_then_applies_it(url):
    r = sl("groups", url, "orders", "billing", "--to-earliest")
    assert r.returncode == 0, r.stderr
    assert b"reset plan" in r.stdout and b"nothing changed" in r.stderr
    assert lag(url) == 2
    with streamlog.open(url) as log:  # each partition's first record not acknowledged
        committed = [p["committed"] for p in
                     log.stats()["groups"]["orders"]["billing"]["partitions"]]
    r = sl("groups", url, "orders", "billing", "--to-earliest", "--yes", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["applied"] and [p["new"] for p in d["partitions"]] == [0, 0]
    assert [p["old"] for p in d["partitions"]] == committed
    assert lag(url) == 4
    r = sl("groups", url, "orders", "billing", "--to-offset", "1", "--yes", "--json")
    assert [p["new"] for p in json.loads(r.stdout)["partitions"]] == [1, 1]
    r = sl("groups", url, "orders", "billing", "--to-datetime", "2999-01-01T00:00Z", "--yes")
    assert r.returncode == 0 and lag(url) == 0, r.stderr
    r = sl("groups", url, "orders", "nope", "--to-latest")
    assert r.returncode == 1 and b"no group 'nope'" in r.stderr


def test_reset_and_delete_refuse_a_live_consumer_process_unless_forced(url):
    worker = Consumer(url)
    try:
        r = sl("groups", url, "orders", "billing", "--to-earliest", "--yes")
        assert r.returncode == 1 and b"worker-1" in r.stderr and b"--force" in r.stderr
        assert lag(url) == 2  # refused: the worker still holds the two it leased
        r = sl("groups", url, "orders", "billing", "--delete", "--yes")
        assert r.returncode == 1 and b"live consumer" in r.stderr
        r = sl("groups", url, "orders", "billing", "--to-earliest", "--yes", "--force")
        assert r.returncode == 0 and b"forced" in r.stderr, r.stderr
        r = sl("groups", url, "orders", "billing", "--delete", "--yes", "--force")
        assert r.returncode == 0, r.stderr
    finally:
        worker.kill()
    with streamlog.open(url) as log:
        assert log.existing_topic("orders").groups() == []


def test_delete_refuses_a_topic_whose_group_is_live_unless_forced(url):
    worker = Consumer(url)
    try:
        r = sl("delete", url, "orders", "--yes")
        assert r.returncode == 1 and b"worker-1" in r.stderr
        r = sl("delete", url, "orders", "--yes", "--force")
        assert r.returncode == 0, r.stderr
    finally:
        worker.kill()


def test_metrics_once_exports_group_figures(url):
    with streamlog.open(url) as log:
        t = log.existing_topic("orders")
        g = t.group("billing", max_deliver=1)
        (m,) = g.poll(1, timeout=5)
        m.nack(error="bad")  # its only delivery: dead-lettered
        g.close()
    r = sl("metrics", url, "--once")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()

    def value(prefix: str) -> float:
        line = next(x for x in lines if x.startswith(prefix + "{") and 'group="billing"' in x)
        return float(line.rsplit(" ", 1)[1])

    assert value("streamlog_group_lag") == 1.0
    assert value("streamlog_group_dead_letters") == 1.0
    assert value("streamlog_group_oldest_unacked_age_seconds") >= 0
    assert any(x.startswith("streamlog_group_partition_lag{") for x in lines)
    assert any(x.startswith("streamlog_partition_end_offset{") or
               x.startswith("streamlog_partition_appended_records") for x in lines)


def test_metrics_endpoint_serves_a_jetstream_store_until_sigint(url):
    """metrics --port 0 on a nats:// URL serves /metrics, each scrape read from the
    servers: an ack in between shows in the next scrape; SIGINT ends it with exit 0."""
    import signal
    import urllib.request

    from tests.unit.test_cli_subprocess import start, wait_for_line

    def scrape(endpoint: str) -> float:
        with urllib.request.urlopen(endpoint, timeout=TIMEOUT_S) as resp:
            body = resp.read().decode()
        line = next(x for x in body.splitlines()
                    if x.startswith("streamlog_group_lag{") and 'group="billing"' in x)
        return float(line.rsplit(" ", 1)[1])

    child = start("metrics", url, "--port", "0")
    try:
        line = wait_for_line(child.stderr, "serving metrics")
        endpoint = line.split(" at ", 1)[1].split()[0]
        assert url in line and endpoint.startswith("http://127.0.0.1:")
        assert scrape(endpoint) == 2.0
        with streamlog.open(url) as log:
            g = log.existing_topic("orders").group("billing")
            got = []
            while len(got) < 2:
                got += g.poll(2 - len(got), timeout=5)
            g.ack(got)
            g.close()
        assert scrape(endpoint) == 0.0
        child.send_signal(signal.SIGINT)
        child.communicate(timeout=TIMEOUT_S)
    finally:
        child.kill()
    assert child.returncode == 0


def test_top_once_shows_group_lag(url):
    r = sl("top", url, "--once", "--interval", "0.2")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    row = next(x for x in out.splitlines() if "orders / billing" in x)
    assert re.search(r"orders / billing\s+2\s", row), out


def test_bench_measures_against_raw_nats_in_the_same_run(js_url):
    r = sl("bench", js_url, "--records", "2000")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "JetStream" in out
    assert re.search(r"append \(one record per call\).*\d+\.\d\dx", out), out
    assert re.search(r"append_many.*\d+\.\d\dx", out), out
    with streamlog.open(js_url) as log:
        assert log.topics() == []  # the bench's store is removed afterwards


def test_top_in_a_real_80_column_terminal_shows_group_figures_of_a_jetstream_store(js_url):
    """The live view of a store on JetStream in tmux: a group's lag, leases and dead
    letters, whole cells at 80 columns, rates that follow another process's work."""
    from tests.unit.test_cli_top import _fits_80, _shell, _Tmux

    with streamlog.open(js_url) as log:
        t = log.topic("orders-eu-central-with-a-long-name", partitions=3)
        t.append_many([b"x"] * 300, keys=[b"k%d" % i for i in range(300)])
        g = t.group("billing-service-consumers", max_deliver=1)
        msgs = g.poll(max_records=50, timeout=5)
        g.ack(msgs[1:])
        msgs[0].nack(error="bad")  # max_deliver=1: dead-lettered
        g.close()
    term = _Tmux(_shell("top", js_url, "--interval", "0.5"))
    try:
        first = term.wait_for(lambda s: "billing-service" in s and "trend/s" in s,
                              "the first frame")
        _fits_80(first)
        # lag 250 (300 less 49 acked and 1 dead-lettered), none leased, 1 dead letter,
        # no lease age (JetStream lists no leases), the oldest unacked record's age
        assert re.search(r"orders-eu-centr\s+250\s+0\s+1\s+-\s+\d+s\n", first), first
        assert "billing-service" in first and "-consumers" in first
        with streamlog.open(js_url) as log:
            t = log.existing_topic("orders-eu-central-with-a-long-name")
            g = t.group("billing-service-consumers")

            def moving(s: str) -> bool:
                t.append_many([b"y"] * 50)
                g.ack(g.poll(max_records=25, timeout=0))
                return "↑" in s

            frame = term.wait_for(moving, "a rising lag")
            g.close()
        _fits_80(frame)
        assert re.search(r"orders-eu-centr\s+[\d,]+\s+↑ [\d.,k]+\s+[\d.,k]+\s", frame), frame
        term.keys("C-c")
        term.wait_for(lambda s: "EXITED 0" in s, "a clean exit on Ctrl-C")
    finally:
        term.close()
