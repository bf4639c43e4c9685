"""Lifecycle verbs on JetStream where the backend shows its own mechanism: liveness by
heartbeats in the group's state on the servers (a consumer process killed with SIGKILL),
a growth interrupted half-way, and a producer process whose topic handle was opened
before the change (real processes against a real server)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

import streamlog
from streamlog.backends.jetstream import _naming
from streamlog.backends.jetstream._client import Connection
from streamlog.errors import GroupActive
from tests.conformance.suite import kafka_partition, keys_for

from .test_cli_urls import _ENV, TIMEOUT_S


def child(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_ENV)


def line(proc: subprocess.Popen) -> str:
    out = proc.stdout.readline().decode().strip()
    assert out, proc.stderr.read().decode()
    return out


def test_a_killed_consumer_stops_being_live_after_its_ack_wait(js_url):
    """SIGKILL leaves the consumer's last heartbeat behind: it counts as live until
    ack_wait_s and one heartbeat interval have passed, then a reset goes ahead and the
    records it held are delivered again from the new position."""
    with streamlog.open(js_url) as log:
        log.topic("orders", partitions=1).append_many([b"a", b"b", b"c"])
    proc = child("""
        import sys, streamlog
        log = streamlog.open(sys.argv[1])
        g = log.existing_topic("orders").group("g", consumer="doomed", ack_wait_s=1)
        print(len(g.poll(10, timeout=5)), flush=True)
        sys.stdin.readline()
    """, js_url)
    try:
        assert line(proc) == "3"
        with streamlog.open(js_url) as log:
            t = log.existing_topic("orders")
            assert t.group_consumers("g") == ["doomed"]
            proc.kill()
            proc.wait(TIMEOUT_S)
            killed = time.monotonic()
            with pytest.raises(GroupActive):
                t.reset_group("g", "earliest")  # its heartbeat is still fresh
            while t.group_consumers("g"):
                assert time.monotonic() - killed < 5, "the heartbeat never aged out"
                time.sleep(0.05)
            assert time.monotonic() - killed <= 1.25 + 0.5
            rows = t.reset_group("g", 1)
            assert [(r.old, r.new) for r in rows] == [(0, 1)]
            g = t.group("g", ack_wait_s=1)
            got = []
            end = time.monotonic() + 10
            while len(got) < 2 and time.monotonic() < end:
                got += g.poll(10, timeout=1)
            assert [(m.value, m.delivery_count) for m in got] == [(b"b", 1), (b"c", 1)]
            g.ack(got)
            g.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT_S)


def test_a_growth_interrupted_after_its_new_streams_is_finished_by_the_next(js_url):
    """An alter that died after creating a new partition's stream but before partition
    0 named the new count: the topic keeps its old count (the stream is no part of it),
    and the next alter takes the stream over."""
    with streamlog.open(js_url) as log:
        t = log.topic("orders", partitions=2)
        t.group("g").close()
        store = log.store_name
        conn = Connection(js_url)
        try:  # what alter_topic does first, and nothing after it
            conn.run(conn.ensure_stream(
                _naming.stream_name(store, "orders", 2),
                _naming.stream_subjects(store, "orders", 2),
                metadata=_naming.stream_metadata(store, "orders", 2)))
        finally:
            conn.close()
        assert log.existing_topic("orders").partitions == 2
        assert [p["partition"] for p in log.stats()["topics"]["orders"]["partitions"]] == [0, 1]
        assert log.verify() == []
        t3 = log.alter_topic("orders", partitions=3, retention=streamlog.Retention(None, 3600))
        assert t3.partitions == 3 and log.existing_topic("orders").partitions == 3
        key = keys_for(2, 3)[0]
        assert t3.append(b"v", key=key).partition == 2
        g = t3.group("g")
        got = g.poll(10, timeout=5)
        assert [(m.partition, m.offset) for m in got] == [(2, 0)]
        g.ack(got)
        g.close()
        assert log.verify() == []


def test_a_producer_process_takes_the_new_partitions_and_record_limit(js_url):
    """A producer process whose topic handle was opened before the change appends by
    the new partition count and record limit within about a second, without reopening."""
    with streamlog.open(js_url) as log:
        log.topic("orders", partitions=2)
    key = keys_for(4, 5)[0]
    proc = child("""
        import sys, streamlog
        log = streamlog.open(sys.argv[1])
        t = log.existing_topic("orders")
        print("ready", flush=True)
        for cmd in sys.stdin:
            cmd, arg = cmd.split()
            try:
                print(t.append(b"x" * int(arg), key=sys.argv[2].encode()).partition, flush=True)
            except streamlog.RecordTooLarge:
                print("too-large", flush=True)
    """, js_url, key.decode())

    def append(size: int) -> str:
        proc.stdin.write(b"append %d\n" % size)
        proc.stdin.flush()
        return line(proc)

    try:
        assert line(proc) == "ready"
        assert append(10) == str(kafka_partition(key, 2))
        with streamlog.open(js_url) as log:
            log.alter_topic("orders", partitions=5, max_record_bytes=100)
        end = time.monotonic() + 10
        while append(10) != "4":
            assert time.monotonic() < end, "the producer never took the new partitions"
            time.sleep(0.1)
        assert append(200) == "too-large"
    finally:
        proc.kill()
        proc.communicate(timeout=TIMEOUT_S)


def test_lease_ages_are_unknown_on_jetstream(js_url):
    """JetStream does not list a consumer's outstanding messages or when they were
    delivered, so stats() has no lease age (None) where the embedded store has one."""
    with streamlog.open(js_url) as log:
        t = log.topic("orders", partitions=1)
        t.append(b"a")
        g = t.group("g")
        (m,) = g.poll(1, timeout=5)
        figures = log.stats()["groups"]["orders"]["g"]
        assert figures["pending"] == 1 and figures["oldest_lease_age_seconds"] is None
        assert figures["partitions"][0]["oldest_lease_age_seconds"] is None
        m.ack()
        g.close()


def test_two_alters_at_once_both_land(js_url):
    """Two processes' alters of one topic at the same moment: one grows it, the other
    sets retention; each claims the next generation of the options before touching the
    servers, so the later is built on the earlier and neither change is lost."""
    import threading

    with streamlog.open(js_url) as log:
        log.topic("orders", partitions=2)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def alter(**kwargs) -> None:
        try:
            with streamlog.open(js_url) as log:
                start.wait()
                log.alter_topic("orders", **kwargs)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    for _ in range(3):
        with streamlog.open(js_url) as log:
            n = log.existing_topic("orders").partitions
        threads = [threading.Thread(target=alter, kwargs={"partitions": n + 1}),
                   threading.Thread(target=alter,
                                    kwargs={"retention": streamlog.Retention(None, 600 + n)})]
        for th in threads:
            th.start()
        for th in threads:
            th.join(TIMEOUT_S)
        assert not errors, errors
        with streamlog.open(js_url) as log:
            cfg = log.existing_topic("orders").config
            assert cfg["partitions"] == n + 1 and cfg["retention"] == [None, 600 + n], cfg
            assert log.verify() == []
            for p in range(n + 1):  # every stream holds the final limits
                st = log._conn.run(log._conn.stream_info(
                    _naming.stream_name(log.store_name, "orders", p)))
                assert st.config["max_age"] == (600 + n) * 10**9


def test_an_alter_that_died_after_its_claim_is_finished_by_the_next(js_url):
    """The claimed options of an alter that died before it changed anything on the
    servers are applied by the next alter, under its own change."""
    from streamlog.backends.jetstream import groups

    with streamlog.open(js_url) as log:
        t = log.topic("orders", partitions=1)
        claimed = dict(t.config, partitions=3, generation=1)
        kv = groups._kv(t)
        assert log._conn.run(kv.cas("orders.alter", {"config": claimed}, 0))
        assert log.existing_topic("orders").partitions == 1  # nothing applied yet
        t2 = log.alter_topic("orders", max_record_bytes=4096)
        assert (t2.partitions, t2.config["max_record_bytes"], t2.config["generation"]) == (
            3, 4096, 2)
        assert log.existing_topic("orders").config == t2.config
        assert log.verify() == []


def test_new_partitions_are_replicated_as_the_topic_whatever_the_altering_client(
        nats_cluster, store_name):
    """A topic made with replicas=3 grows with R3 streams even when the client that
    grows it (the command line, say) opened the store with the default replicas=1;
    the servers hold the new limits on every replica's leader."""
    url = f"{nats_cluster.url}/{store_name}"
    with streamlog.open(url, replicas=3) as log:
        log.topic("orders", partitions=1).append(b"a")
    with streamlog.open(url) as log:  # replicas=1
        t = log.alter_topic("orders", partitions=3, retention=streamlog.Retention(None, 3600))
        assert t.partitions == 3
        parts = log.stats()["topics"]["orders"]["partitions"]
        assert [p["replicas"] for p in parts] == [3, 3, 3]
        assert log.verify() == []
        info = log._conn.run(log._conn.stream_info(f"KV_SLG_{log.store_name}"))
        assert info.config["num_replicas"] == 3  # the group state bucket it made, too


def test_a_reset_removes_generations_a_dead_reset_left_behind(js_url):
    """A reset whose process died after its new consumers were made leaves the old
    generation's consumer on the stream; the next reset of the group removes every
    generation but its own."""
    from streamlog.backends.jetstream import groups

    with streamlog.open(js_url) as log:
        t = log.topic("orders", partitions=1)
        t.append_many([b"a", b"b"])
        t.group("g").close()
        cfg = t.group_config("g")
        leftover = dict(cfg, parts=[[7, 1]])  # as a consumer of generation 7 would be
        log._conn.run(groups._ensure_consumer(t, "g", leftover, 0))
        t.reset_group("g", "latest")
        resp = log._conn.run(log._conn.api(f"CONSUMER.NAMES.{t.stream_name(0)}", {}))
        mine = [c for c in resp.get("consumers") or [] if c.startswith("G_")]
        assert mine == [groups.consumer_name("g", 1)], mine
