"""The command line on a store on JetStream: every command that reads or writes records
takes a nats:// URL where it takes DIR (real processes against a real server), and the
commands that work on the embedded store's files refuse one, saying why."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import streamlog

TIMEOUT_S = 120

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(streamlog.__file__)))
_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)}


def sl(*args, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamlog", *map(str, args)], input=input,
                          capture_output=True, timeout=TIMEOUT_S, env=_ENV)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def url(js_url):
    """A store on the session's server with topic 'orders' (2 partitions, 4 keyed
    records) and group 'billing' that acked 2 of them."""
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


def test_topics_and_describe(url):
    r = sl("topics", url, "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(x["topic"], x["partitions"], x["records"]) for x in rows] == [("orders", 2, 4)]
    r = sl("describe", url, "orders", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["groups"] == ["billing"]
    assert sum(p["end_offset"] for p in d["partitions"]) == 4
    r = sl("describe", url, "orders")
    assert r.returncode == 0 and url.encode() in r.stdout, r.stderr


def test_produce_then_consume(url):
    r = sl("produce", url, "orders", "--key", "k9", input=b"hello\nworld\n")
    assert r.returncode == 0, r.stderr
    r = sl("consume", url, "orders", "--format", "json")
    assert r.returncode == 0, r.stderr
    values = sorted(json.loads(line)["value"] for line in r.stdout.decode().splitlines())
    assert values == sorted(["v0", "v1", "v2", "v3", "hello", "world"])


def test_consume_through_a_group_continues_where_it_was(url):
    r = sl("consume", url, "orders", "--group", "billing", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.decode().splitlines()) == 2  # the 2 the group had not acked
    with streamlog.open(url) as log:
        g = log.existing_topic("orders").group("billing")
        try:
            assert g.lag() == 0
        finally:
            g.close()


def test_tail_follows_appends_from_another_process(url):
    proc = subprocess.Popen([sys.executable, "-m", "streamlog", "tail", url, "orders"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_ENV,
                            preexec_fn=_default_sigint)
    try:
        # tail says where it starts once it is following: then append.
        while b"following" not in proc.stderr.readline():
            assert proc.poll() is None, proc.stderr.read()
        assert sl("produce", url, "orders", input=b"late\n").returncode == 0
        assert proc.stdout.readline() == b"late\n"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=TIMEOUT_S)


def test_groups_listing_names_the_groups_and_their_mode(url):
    r = sl("groups", url, "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert {(x["topic"], x["group"], x["mode"]) for x in rows if "partition" not in x} == {
        ("orders", "billing", "shared")}
    r = sl("groups", url, "orders")
    assert r.returncode == 0 and b"billing" in r.stdout, r.stderr


def test_top_once(url):
    r = sl("top", url, "--once", "--interval", "0.2")
    assert r.returncode == 0, r.stderr
    assert b"orders" in r.stdout and url.encode() in r.stdout


def test_verify_checks_the_streams(url):
    r = sl("verify", url)
    assert r.returncode == 0, r.stderr
    assert b"ok: every partition's stream of 1 topic" in r.stdout


@pytest.mark.parametrize("args", [("dump", "{u}", "orders"), ("repair", "{u}", "--yes"),
                                  ("retention", "{u}"), ("compact", "{u}", "orders"),
                                  ("describe", "{u}", "orders", "--segments")])
def test_file_commands_refuse_a_url_and_say_why(url, args):
    r = sl(*(a.format(u=url) for a in args))
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "works on the embedded store only" in err and "Traceback" not in err, err


def test_an_unreachable_server_is_one_clear_line():
    r = sl("topics", "nats://127.0.0.1:1/none")
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "nats://127.0.0.1:1" in err and "Traceback" not in err, err


def test_demo_runs_on_jetstream(nats_server, store_name):
    u = f"{nats_server.client_url}/{store_name}demo"
    r = sl("demo", u)
    assert r.returncode == 0, r.stdout.decode()[-3000:] + r.stderr.decode()
    out = r.stdout.decode()
    assert "failed" not in out
    assert "embedded store only" in out  # the retention step says why it is skipped
    r = sl("demo", u)  # the store has topics now: refused before anything is written
    assert r.returncode == 1 and b"the store has topics" in r.stderr
