"""Changing a topic and moving a group while the store is in use: ``Log.alter_topic``,
``Topic.reset_group``, ``Topic.group_consumers`` and ``Topic.delete_group(force=False)``,
in one process and across real processes."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import streamlog
from streamlog.backends.local import codec as _codec
from streamlog.errors import GroupActive

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(streamlog.__file__)))
_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)}
TIMEOUT_S = 60


def keys_for(partition: int, partitions: int, count: int = 1) -> list[bytes]:
    """Keys that murmur2 sends to ``partition`` of ``partitions``."""
    out, i = [], 0
    while len(out) < count:
        k = b"key-%d" % i
        if _codec.partition_for_key(k, partitions) == partition:
            out.append(k)
        i += 1
    return out


class Child:
    """A Python child process that runs ``script`` and talks in lines (stdin/stdout)."""

    def __init__(self, script: str, *args) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script),
                                      *map(str, args)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_ENV)

    def line(self) -> str:
        out = self.proc.stdout.readline().decode().strip()
        if not out:
            raise AssertionError(f"child ended: {self.proc.stderr.read().decode()}")
        return out

    def say(self, text: str) -> str:
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()
        return self.line()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(TIMEOUT_S)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            f.close()


@pytest.fixture
def log(tmp_path):
    with streamlog.open(tmp_path / "data") as lg:
        yield lg


# ------------------------------------------------------------------ alter_topic
def test_growing_partitions_maps_keys_anew_and_groups_start_new_partitions_at_zero(log):
    t = log.topic("orders", partitions=2)
    g = t.group("billing")
    key = keys_for(3, 4)[0]
    before = t.append(b"before", key=key)
    assert before.partition == _codec.partition_for_key(key, 2)
    g.ack(g.poll(10, timeout=0))
    t2 = log.alter_topic("orders", partitions=4)
    assert t2.partitions == 4 and t.partitions == 4  # the old handle follows
    after = t.append(b"after", key=key)  # the C fast path notices the change
    assert after.partition == 3  # murmur2(key) % 4: the key maps anew
    got = g.poll(10, timeout=0)
    assert [(m.partition, m.offset, m.value) for m in got] == [(3, 0, b"after")]
    assert g.lag() == 1
    g.ack(got)
    assert g.lag() == 0
    assert [x["partition"] for x in log.stats()["groups"]["orders"]["billing"]["partitions"]] \
        == [0, 1, 2, 3]


def test_fewer_partitions_are_refused_before_anything_changes(log, tmp_path):
    t = log.topic("orders", partitions=3)
    with pytest.raises(ValueError, match="only grow"):
        log.alter_topic("orders", partitions=2, retention=streamlog.Retention(1 << 20, None))
    assert t.config["partitions"] == 3 and t.config["retention"] is None
    assert "generation" not in t.config
    assert sorted(os.listdir(tmp_path / "data" / "topics" / "orders")) == ["0", "1", "2",
                                                                          "notify"]


@pytest.mark.parametrize("kwargs, error, match", [
    ({}, ValueError, "nothing to alter"),
    ({"partitions": 0}, ValueError, "partitions"),
    ({"partitions": "4"}, TypeError, "partitions"),
    ({"retention": (1, 2)}, TypeError, "Retention"),
    ({"max_record_bytes": 0}, ValueError, "max_record_bytes"),
    ({"dedupe_window_s": -1}, ValueError, "dedupe_window_s"),
    ({"dedupe_window_s": 600, "retention": streamlog.Retention(None, 60)}, ValueError,
     "longer than the retention"),
])
def test_bad_arguments_change_nothing(log, kwargs, error, match):
    t = log.topic("orders", partitions=2)
    before = dict(t.config)
    with pytest.raises(error, match=match):
        log.alter_topic("orders", **kwargs)
    assert t.config == before


def test_unknown_topic_and_read_only_store_are_refused(log, tmp_path):
    with pytest.raises(streamlog.TopicNotFound):
        log.alter_topic("nope", partitions=2)
    log.topic("orders")
    with streamlog.open(tmp_path / "data", read_only=True) as ro:
        with pytest.raises(streamlog.ReadOnlyStore):
            ro.alter_topic("orders", partitions=2)


def test_retention_limits_and_dedupe_window_change(log):
    t = log.topic("orders", dedupe_window_s=300)
    t2 = log.alter_topic("orders", retention=streamlog.Retention(None, 60),
                         max_record_bytes=1000)
    # the window left as it was follows the shorter retention, as at creation
    assert t2.config["dedupe_window_s"] == 60.0
    assert t.config["retention"] == [None, 60] and t.config["max_record_bytes"] == 1000
    with pytest.raises(streamlog.RecordTooLarge):
        t.append(b"x" * 2000)
    assert all(p.retention == (None, 60) for p in t._parts)
    log.alter_topic("orders", retention=streamlog.Retention(None, None))
    assert t.config["retention"] is None and all(p.retention is None for p in t._parts)


def test_dedupe_still_finds_a_retry_after_the_topic_grew(log):
    t = log.topic("orders", partitions=2)
    first = t.append(b"pay", msg_id="order-1")
    log.alter_topic("orders", partitions=7)
    assert t.append(b"pay", msg_id="order-1") == first  # the index is topic-wide
    assert sum(t.end_offset(p) for p in range(7)) == 1


def test_exclusive_group_claims_the_new_partitions(log):
    t = log.topic("orders", partitions=1)
    g = t.group("ex", mode="exclusive")
    g.poll(10, timeout=0)
    log.alter_topic("orders", partitions=3)
    for p in (1, 2):
        t.append(b"v%d" % p, key=keys_for(p, 3)[0])
    got = g.poll(10, timeout=0)
    assert sorted(m.partition for m in got) == [1, 2]


def test_event_store_topic_keeps_one_partition_and_every_event(log):
    es = log.event_store("bank")
    es.append("acct-1", [b"opened"])
    with pytest.raises(ValueError, match="event store 'bank'.*partitions"):
        log.alter_topic("bank", partitions=2)
    with pytest.raises(ValueError, match="event store 'bank'.*retention"):
        log.alter_topic("bank", retention=streamlog.Retention(None, 3600))
    log.alter_topic("bank", max_record_bytes=1 << 20)  # harmless for it
    assert [e.value for e in log.event_store("bank").read("acct-1")] == [b"opened"]


def test_another_process_sees_new_partitions_and_limits(tmp_path):
    """A producer process with the topic open appends by the new partition count and
    record limit once the parent altered the topic, without reopening anything."""
    data = tmp_path / "data"
    with streamlog.open(data) as log:
        log.topic("orders", partitions=2)
    child = Child("""
        import sys, streamlog
        log = streamlog.open(sys.argv[1])
        t = log.existing_topic("orders")
        t.append(b"warm-up", key=b"k")
        print("ready", flush=True)
        for line in sys.stdin:
            cmd, arg = line.split()
            if cmd == "append":
                try:
                    print(t.append(b"x" * int(arg), key=b"k").partition, flush=True)
                except streamlog.RecordTooLarge:
                    print("too-large", flush=True)
            elif cmd == "keyed":
                print(t.append(b"v", key=arg.encode()).partition, flush=True)
            elif cmd == "config":
                print(t.partitions, t.config["max_record_bytes"], flush=True)
    """, data)
    try:
        assert child.line() == "ready"
        key = keys_for(4, 5)[0].decode()
        assert child.say(f"keyed {key}") == str(_codec.partition_for_key(key.encode(), 2))
        with streamlog.open(data) as log:
            log.alter_topic("orders", partitions=5, max_record_bytes=100)
        assert child.say("config -") == "5 100"
        assert child.say(f"keyed {key}") == "4"
        assert child.say("append 200") == "too-large"
        with streamlog.open(data) as log:
            log.alter_topic("orders", max_record_bytes=1000)
        assert child.say("append 200") == str(_codec.partition_for_key(b"k", 5))
    finally:
        child.close()


# ------------------------------------------------------------------ reset_group
def test_reset_targets_and_dry_run(log):
    t = log.topic("orders", partitions=2)
    for p in range(2):
        for k in keys_for(p, 2, 5):
            t.append(b"v", key=k, timestamp_ms=1_000_000 + len(k))
    g = t.group("g")
    g.ack(g.poll(100, timeout=0))
    g.close()
    plan = t.reset_group("g", "earliest", dry_run=True)
    assert [(r.partition, r.old, r.new, r.end_offset) for r in plan] == [(0, 5, 0, 5),
                                                                          (1, 5, 0, 5)]
    assert g.topic.group("g").lag() == 0  # nothing changed
    log.topic("orders").group("g").close()
    assert [r.new for r in t.reset_group("g", 3)] == [3, 3]
    assert [r.new for r in t.reset_group("g", 99)] == [5, 5]  # clamped to the end
    assert [r.new for r in t.reset_group("g", "earliest")] == [0, 0]
    when = datetime.datetime.fromtimestamp(1_000_000 / 1000 + 3600, datetime.UTC)
    assert [r.new for r in t.reset_group("g", when)] == [5, 5]
    assert [r.new for r in t.reset_group("g", "latest")] == [5, 5]
    with pytest.raises(ValueError, match="time zone"):
        t.reset_group("g", datetime.datetime(2020, 1, 1))
    with pytest.raises(ValueError, match="to must be"):
        t.reset_group("g", "start")
    with pytest.raises(TypeError):
        t.reset_group("g", 1.5)
    with pytest.raises(streamlog.StreamlogError, match="no group 'nope'"):
        t.reset_group("nope", "latest")


def test_reset_delivers_again_from_the_new_position(log):
    t = log.topic("orders")
    t.append_many([b"a", b"b", b"c"])
    g = t.group("g")
    g.ack(g.poll(10, timeout=0))
    g.close()
    t.reset_group("g", 1)
    g = t.group("g")
    assert [m.value for m in g.poll(10, timeout=0)] == [b"b", b"c"]


def test_a_group_with_a_live_consumer_is_reset_or_deleted_only_with_force(log):
    t = log.topic("orders")
    t.append(b"a")
    g = t.group("g")
    msgs = g.poll(10, timeout=0)
    assert t.group_consumers("g") == [g.consumer]
    with pytest.raises(GroupActive) as e:
        t.reset_group("g", "earliest")
    assert e.value.consumers == [g.consumer]
    with pytest.raises(GroupActive):
        t.delete_group("g", force=False)
    assert g.pending()  # nothing changed
    rows = t.reset_group("g", "latest", force=True)
    assert rows[0].new == 1 and g.pending() == []
    assert g.ack(msgs) == [False]  # its lease went with the reset
    g.close()
    assert t.group_consumers("g") == []
    t.delete_group("g", force=False)
    assert t.groups() == []
    with pytest.raises(streamlog.StreamlogError, match="no group"):
        t.delete_group("g", force=False)


def test_a_consumer_whose_process_died_is_not_live(tmp_path):
    """A killed consumer leaves a fresh heartbeat behind; its process is gone, so the
    group counts as inactive at once (not ack_wait_s later)."""
    data = tmp_path / "data"
    with streamlog.open(data) as log:
        log.topic("orders").append(b"a")
    child = Child("""
        import sys, streamlog
        log = streamlog.open(sys.argv[1])
        g = log.existing_topic("orders").group("g", ack_wait_s=600)
        print(len(g.poll(10, timeout=5)), flush=True)
        sys.stdin.readline()
    """, data)
    try:
        assert child.line() == "1"
        with streamlog.open(data) as log:
            t = log.existing_topic("orders")
            assert len(t.group_consumers("g")) == 1
            child.proc.send_signal(signal.SIGKILL)
            child.proc.wait(TIMEOUT_S)
            assert t.group_consumers("g") == []
            assert t.reset_group("g", "earliest")[0].new == 0
    finally:
        child.close()


def test_a_bound_append_kept_across_the_change_uses_the_new_partitions(log):
    """``append = t.append`` taken before the change keeps working on the fast path: the
    same appender object takes the new options in place."""
    t = log.topic("orders", partitions=2)
    append = t.append
    log.alter_topic("orders", partitions=4, max_record_bytes=10)
    assert {append(b"v", key=k).partition for k in keys_for(3, 4, 3) + keys_for(2, 4, 3)} \
        == {2, 3}
    with pytest.raises(streamlog.RecordTooLarge):
        append(b"x" * 11)
    assert append.__self__ is t._appender and t.append == append


def test_a_change_whose_publication_was_lost_is_published_by_the_next_opener(tmp_path):
    """The altering process died between writing the catalogue and bumping the shared
    counter: the next handle any process opens on the topic publishes the change, and
    the handles already open take it then."""
    import json

    with streamlog.open(tmp_path / "data") as log:
        t = log.topic("orders", partitions=2)
        old = t.append  # a handle (and its fast path) from before the change
        cfg = dict(t.config, partitions=3, generation=1)
        log._partitions_of("orders", cfg)  # what alter_topic does before the catalogue
        log._meta.write(lambda txn: txn.put(b"orders", json.dumps(cfg).encode(),
                                            db=log._meta.db_in(txn, "topics")))
        assert t.partitions == 2  # nothing published: the open handle cannot know yet
        with streamlog.open(tmp_path / "data") as other:
            assert other.existing_topic("orders").partitions == 3  # reads and publishes
        assert t.partitions == 3
        assert old(b"v", key=keys_for(2, 3)[0]).partition == 2
