"""`streamlog copy` between the embedded store and JetStream (a real nats-server): an
embedded store whose groups are part-way through and whose event streams have versions
moves to JetStream; its consumers and its eventsourcing application continue there
where they were; copied back to a new directory, every record, group position and
version is the same. A copy killed with SIGKILL mid-way and run again duplicates
nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

import streamlog
from streamlog import Retention

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Dog(Aggregate):
    """The eventsourcing application's aggregate (module level: its topic must resolve)."""

    @event("Registered")
    def __init__(self, name: str) -> None:
        self.name = name
        self.tricks: list[str] = []

    @event("TrickAdded")
    def add_trick(self, trick: str) -> None:
        self.tricks.append(trick)


def _app(monkeypatch, where: str) -> Application:
    monkeypatch.setenv("PERSISTENCE_MODULE", "streamlog.eventsourcing")
    monkeypatch.setenv("STREAMLOG_PATH", where)
    return Application()


def _make_source(path: str, monkeypatch) -> dict:
    """An embedded store mid-life: keyed records with headers and old timestamps, a
    shared group with acked and leased-but-unacked records, a key_shared group with its
    own options, a topic whose start retention moved, an event store with versions, and
    an eventsourcing application's aggregates. Returns what the test checks later."""
    log = streamlog.open(path)
    orders = log.topic("orders", partitions=3)
    orders.append_many([b"o%d" % i for i in range(600)], keys=[b"c%d" % (i % 37) for i in
                                                               range(600)])
    for i in range(300):
        orders.append(b"h%d" % i, key=b"c%d" % i, headers={"trace": b"t%d" % i, "Nats-Odd": "x"},
                      timestamp_ms=1_600_000_000_000 + i)
    billing = orders.group("billing")
    acked = billing.poll(250, timeout=1)
    assert billing.ack(acked) == [True] * len(acked)
    leased = billing.poll(40, timeout=1)  # delivered, never acknowledged
    assert len(leased) == 40
    audit = orders.group("audit", mode="key_shared", ack_wait_s=12, max_deliver=3,
                         backoff_s=[1, 2])
    assert all(audit.ack(audit.poll(100, timeout=1)))
    owners = orders.group("owners", mode="exclusive", ack_wait_s=20)
    assert all(owners.ack(owners.poll(120, timeout=1)))
    owners.close()
    metrics = log.topic("metrics", retention=Retention(max_bytes=4096), segment_bytes=1024)
    for i in range(400):
        metrics.append(b"m" * 40, timestamp_ms=1_700_000_000_000 + i)
    log.apply_retention()
    assert metrics.start_offset(0) > 0
    # Retention moved the start; without limits from now on, every backend keeps the rest
    # (JetStream applies a byte limit message by message, the embedded store by segments).
    log.alter_topic("metrics", retention=Retention(None, None))
    bank = log.event_store("bank")
    for i in range(30):
        bank.append(f"acc-{i % 4}", [b"e%d" % i, (b"f%d" % i, {"note": b"n"})])
    app = _app(monkeypatch, path)
    dog = Dog("Fido")
    dog.add_trick("roll")
    app.save(dog)
    app.close()
    out = {"positions": billing_positions(orders), "owners": orders.group_positions("owners"),
           "leased": {(m.partition, m.offset)
                                                               for m in leased},
           "dog": dog.id, "metrics_start": metrics.start_offset(0)}
    log.close()
    return out


def billing_positions(topic) -> dict[int, int]:
    return topic.group_positions("billing")


def _records(store, name: str) -> list[list[tuple]]:
    t = store.existing_topic(name)
    return [[(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in t.read(p)]
            for p in range(t.partitions)]


def _groups(store, name: str) -> dict:
    t = store.existing_topic(name)
    keep = ("mode", "ack_wait_s", "max_deliver", "backoff_s", "dead_letter")
    return {g: ({k: t.group_config(g)[k] for k in keep}, t.group_positions(g))
            for g in t.groups()}


def _assert_same(a, b) -> None:
    """Every topic, record (offset, timestamp, key, value, headers), start offset, group
    option and position, and event-stream version of store ``a`` is in ``b``."""
    assert a.topics() == b.topics()
    for name in a.topics():
        ta, tb = a.existing_topic(name), b.existing_topic(name)
        assert ta.partitions == tb.partitions, name
        for p in range(ta.partitions):
            assert (ta.start_offset(p), ta.end_offset(p)) == (tb.start_offset(p),
                                                              tb.end_offset(p)), (name, p)
        assert _records(a, name) == _records(b, name), name
        assert _groups(a, name) == _groups(b, name), name
    ea, eb = a.event_store("bank"), b.event_store("bank")
    assert ea.read_all() == eb.read_all()
    for i in range(4):
        assert ea.read(f"acc-{i}") == eb.read(f"acc-{i}")


def test_embedded_store_moves_to_jetstream_and_back(tmp_path, js_url, monkeypatch):
    """The issue's test: consumers and the eventsourcing application continue on
    JetStream where they were on the embedded store, and a copy back compares equal."""
    src = str(tmp_path / "src")
    before = _make_source(src, monkeypatch)
    seen: list[streamlog.CopyProgress] = []
    res = streamlog.copy(src, js_url, progress=seen.append)
    assert res.records == seen[-1].records == seen[-1].records_total > 1000
    assert res.groups == 3
    with streamlog.open(src, read_only=True) as a, streamlog.open(js_url) as b:
        _assert_same(a, b)
        assert b.existing_topic("metrics").start_offset(0) == before["metrics_start"]
    # A second run finds everything copied: nothing is written twice.
    again = streamlog.copy(src, js_url)
    assert again.records == 0

    # The consumers continue: billing gets exactly what it had not acknowledged.
    with streamlog.open(js_url) as b:
        orders = b.existing_topic("orders")
        g = orders.group("billing", ack_wait_s=30)
        got: set = set()
        while True:
            msgs = g.poll(500, timeout=1.0)
            if not msgs:
                break
            got |= {(m.partition, m.offset) for m in msgs}
            assert all(g.ack(msgs))
        want = {(p, off) for p in range(3)
                for off in range(before["positions"][p], orders.end_offset(p))}
        assert got == want
        assert before["leased"] <= got  # leased and unacked on the source: delivered again
        g.close()
        assert orders.group_config("audit")["mode"] == "key_shared"
        assert orders.group_config("audit")["backoff_s"] == [1, 2]
        owners = orders.group("owners", mode="exclusive", ack_wait_s=20)
        left = {p: orders.end_offset(p) - before["owners"][p] for p in range(3)}
        n = 0
        while msgs := owners.poll(500, timeout=0.5):
            assert all(m.offset >= before["owners"][m.partition] for m in msgs)
            assert all(owners.ack(msgs))
            n += len(msgs)
        assert n == sum(left.values())
        owners.close()
        # The event store continues with the copied versions.
        assert b.event_store("bank").append("acc-1", [b"next"], expected_version=15) == 16

    # The same eventsourcing application continues on JetStream.
    app = _app(monkeypatch, js_url)
    try:
        dog = app.repository.get(before["dog"])
        assert dog.tricks == ["roll"]
        dog.add_trick("sit")
        app.save(dog)
        assert app.repository.get(before["dog"]).tricks == ["roll", "sit"]
        # Notification ids continue densely after the copied ones.
        assert [n.id for n in app.notification_log.select(start=1, limit=10)] == [1, 2, 3]
    finally:
        app.close()

    # Back to a new directory: everything, the work done on JetStream included, is equal.
    back = str(tmp_path / "back")
    streamlog.copy(js_url, back)
    with streamlog.open(js_url, read_only=True) as b, streamlog.open(back) as c:
        _assert_same(b, c)
        assert c.existing_topic("metrics").start_offset(0) == before["metrics_start"]
    app = _app(monkeypatch, back)
    try:
        assert app.repository.get(before["dog"]).tricks == ["roll", "sit"]
    finally:
        app.close()


def test_copy_to_jetstream_killed_mid_way_resumes_without_duplicates(tmp_path, js_url):
    """A `streamlog copy` process killed with SIGKILL mid-copy leaves whole batches; the
    rerun continues from the destination's end, and the result equals the source."""
    src = str(tmp_path / "src")
    with streamlog.open(src) as log:
        t = log.topic("big", partitions=2)
        for i in range(0, 60_000, 1000):
            t.append_many([b"r%06d" % j for j in range(i, i + 1000)],
                          keys=[b"k%d" % (j % 97) for j in range(i, i + 1000)])
        g = t.group("g")
        assert all(g.ack(g.poll(300, timeout=1)))
        g.close()
    _kill_mid_copy(src, js_url, lambda: _dst_records(js_url, "big"), 60_000)
    res = streamlog.copy(src, js_url)
    assert 0 < res.records < 60_000
    with streamlog.open(src, read_only=True) as a, streamlog.open(js_url) as b:
        assert _records(a, "big") == _records(b, "big")
        assert _groups(a, "big") == _groups(b, "big")


def _dst_records(url: str, name: str) -> int:
    try:
        with streamlog.open(url, read_only=True) as d:
            if name not in d.topics():
                return 0
            t = d.existing_topic(name)
            return sum(t.end_offset(p) for p in range(t.partitions))
    except streamlog.StreamlogError:
        return 0


def _kill_mid_copy(src: str, dst: str, landed, total: int) -> None:
    """Run `streamlog copy SRC DST` in a child process, slowed by a progress callback,
    and SIGKILL it once some but not all records landed in the destination."""
    code = ("import sys, time, streamlog\n"
            "streamlog.copy(sys.argv[1], sys.argv[2], "
            "progress=lambda p: time.sleep(0.3))\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-c", code, src, dst], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            n = landed()
            if n >= 5000:
                break
            assert proc.poll() is None, "the copy ended before it could be killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    n = landed()
    assert 0 < n < total, n


@pytest.mark.parametrize("direction", ["to_jetstream", "to_embedded"])
def test_copy_refuses_a_destination_that_is_not_a_copy(tmp_path, js_url, direction):
    """A destination partition whose records differ from the source's at the same
    offsets is refused with nothing more written, in both directions."""
    a = str(tmp_path / "a")
    with streamlog.open(a) as log:
        log.topic("t").append_many([b"a", b"b"])
    other = js_url if direction == "to_jetstream" else str(tmp_path / "other")
    with streamlog.open(other) as log:
        log.topic("t").append_many([b"x"])
    with pytest.raises(streamlog.StreamlogError, match="differs from the source"):
        streamlog.copy(a, other)
    with streamlog.open(other, read_only=True) as log:
        assert log.existing_topic("t").end_offset(0) == 1


def test_append_copies_and_start_offset_on_jetstream(js_url):
    """The contract members a copy uses, on JetStream: records land at the given offsets
    with their timestamp, key and headers; a batch for an offset that is not the
    partition's end is refused whole; an empty partition's start can be moved."""
    with streamlog.open(js_url) as log:
        t = log.topic("c", partitions=2)
        t.set_start_offset(1, 40)
        t.set_start_offset(1, 40)  # idempotent
        assert (t.start_offset(1), t.end_offset(1)) == (40, 40)
        recs = [streamlog.Record("x", 0, 0, 5 + i, b"k", b"v%d" % i, {"h": b"%d" % i})
                for i in range(2500)]
        assert t.append_copies(1, 40, recs) == 2540
        got = list(t.read(1, 40, limit=3))
        assert [(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in got] == [
            (40 + i, 5 + i, b"k", b"v%d" % i, {"h": b"%d" % i}) for i in range(3)]
        with pytest.raises(streamlog.WrongExpectedVersion) as e:
            t.append_copies(1, 100, recs[:5])
        assert (e.value.expected, e.value.actual) == (100, 2540)
        assert t.end_offset(1) == 2540
        with pytest.raises(streamlog.StreamlogError, match="cannot start"):
            t.set_start_offset(1, 5000)
        with pytest.raises(TypeError):
            t.append_copies(0, 0, [b"not a record"])
        assert t.end_offset(0) == 0


def test_a_group_with_a_subject_filter_is_copied_or_refused_before_any_record(tmp_path,
                                                                             js_url):
    """A source group with a subject filter: where the destination's groups take
    ``subjects=`` the filter is copied with the group; where they do not, the copy stops
    before any record is written, naming the group."""
    import inspect

    src = str(tmp_path / "src")
    with streamlog.open(src) as log:
        t = log.topic("t")
        t.append(b"x", subject="orders.eu")
        t.group("eu", subjects=["orders.eu"]).close()
    with streamlog.open(js_url) as probe:
        takes = "subjects" in inspect.signature(probe.topic("probe").group).parameters
    if takes:
        streamlog.copy(src, js_url)
        with streamlog.open(js_url) as d:
            assert d.existing_topic("t").group_config("eu")["subjects"] == ["orders.eu"]
    else:
        with pytest.raises(NotImplementedError, match="'eu'"):
            streamlog.copy(src, js_url)
        with streamlog.open(js_url) as d:
            assert d.existing_topic("t").end_offset(0) == 0


def test_compacted_topics_cannot_be_copied_to_jetstream_yet(tmp_path, js_url):
    """JetStream has no compacted topics yet: a compacted source topic stops the copy with
    NotImplementedError before any record is written; append_gap says the same."""
    from tests.unit.test_copy import _compacted_store

    src = str(tmp_path / "src")
    _compacted_store(src)
    with pytest.raises(NotImplementedError, match="JetStream"):
        streamlog.copy(src, js_url)
    with streamlog.open(js_url) as d:
        assert d.topics() == []
        with pytest.raises(NotImplementedError, match="JetStream"):
            d.topic("plain").append_gap(0, 0, 1)


def test_copy_between_two_stores_on_jetstream(tmp_path, js_url, monkeypatch):
    """A store on JetStream copied to another store on the servers keeps the same
    records, offsets, group options and positions, and event-stream versions."""
    src = str(tmp_path / "src")
    _make_source(src, monkeypatch)
    streamlog.copy(src, js_url)
    other = js_url + "-2"
    res = streamlog.copy(js_url, other)
    assert res.records > 1000 and res.groups == 3
    with streamlog.open(js_url, read_only=True) as a, streamlog.open(other) as b:
        _assert_same(a, b)
    assert streamlog.copy(js_url, other).records == 0
