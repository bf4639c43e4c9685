"""Event logs, tracking logs and reply boxes on JetStream: what the conformance suite
does not reach (real processes racing, atomic multi-stream commits, the subjects)."""

from __future__ import annotations

import multiprocessing as mp

import pytest

import streamlog
from streamlog.api import ANY, NO_STREAM, NewEvent
from streamlog.errors import WrongExpectedVersion

_CTX = mp.get_context("spawn")
ROUNDS = 8


def _ev(sid: str, value: bytes) -> NewEvent:
    return NewEvent(sid, sid.encode(), value, None)


def _race_expected(url: str, barrier, wins, me: int) -> None:
    """Each round: wait for the other process, then append to one new stream."""
    with streamlog.open(url) as log:
        es = log.event_store("bank")
        for r in range(ROUNDS):
            barrier.wait()
            try:
                es.append(f"acc-{r}", [b"p%d" % me], expected_version=NO_STREAM)
                wins.put((r, me))
            except WrongExpectedVersion as e:
                assert e.actual == 0, e
            barrier.wait()


def _race_any(url: str, barrier, n: int) -> None:
    with streamlog.open(url) as log:
        es = log.event_store("bank")
        barrier.wait()
        for i in range(n):
            es.append("shared", [b"%d" % i])


def _race_tracking(url: str, barrier, wins, me: int) -> None:
    with streamlog.open(url) as log:
        tr = log.tracking_log("proc")
        ev = log.event_log("proc.events")
        for nid in range(1, ROUNDS + 1):
            barrier.wait()
            try:
                tr.commit_with(ev, "up", nid, [_ev(f"o-{nid}", b"p%d" % me)], {f"o-{nid}": ANY})
                wins.put((nid, me))
            except WrongExpectedVersion as e:
                assert e.actual == nid, e
            barrier.wait()


def _run(target, url, extra, procs=2):
    barrier = _CTX.Barrier(procs)
    ps = [_CTX.Process(target=target, args=(url, barrier, *extra(i))) for i in range(procs)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(60)
        assert p.exitcode == 0


def _drain(q) -> list:
    out = []
    while not q.empty():
        out.append(q.get())
    return out


def test_two_processes_on_one_expected_version_exactly_one_wins(js_url):
    wins = _CTX.Queue()
    _run(_race_expected, js_url, lambda i: (wins, i))
    got = sorted(_drain(wins))
    assert [r for r, _ in got] == list(range(ROUNDS))  # one winner per round
    with streamlog.open(js_url) as log:
        es = log.event_store("bank")
        for r, me in got:
            evs = es.read(f"acc-{r}")
            assert [(e.version, e.value) for e in evs] == [(0, b"p%d" % me)]


def test_any_appenders_racing_keep_versions_dense(js_url):
    _run(_race_any, js_url, lambda i: (20,))
    with streamlog.open(js_url) as log:
        es = log.event_store("bank")
        evs = es.read("shared")
        assert [e.version for e in evs] == list(range(40))
        assert es.last_version("shared") == 39
        assert sorted(e.value for e in evs) == sorted([b"%d" % i for i in range(20)] * 2)


def test_tracking_records_racing_in_two_processes_exactly_one_wins(js_url):
    wins = _CTX.Queue()
    _run(_race_tracking, js_url, lambda i: (wins, i))
    got = sorted(_drain(wins))
    assert [n for n, _ in got] == list(range(1, ROUNDS + 1))
    with streamlog.open(js_url) as log:
        assert log.tracking_log("proc").max_id("up") == ROUNDS
        ev = log.event_log("proc.events")
        events, _ = ev.events(0, 1000)
        assert sorted(e.stream_id for e in events) == sorted(f"o-{n}" for n in range(1, ROUNDS + 1))


def test_a_rejected_multi_stream_commit_stores_nothing(js_url):
    with streamlog.open(js_url) as log:
        ev = log.event_log("bank")
        ev.commit([_ev("a", b"a0")], {"a": NO_STREAM})
        end = log.topic("bank").end_offset(0)
        with pytest.raises(WrongExpectedVersion) as exc:
            ev.commit([_ev("b", b"b0"), _ev("a", b"a1"), _ev("b", b"b1")],
                      {"b": NO_STREAM, "a": 5})
        assert (exc.value.expected, exc.value.actual, exc.value.stream_id) == (5, 0, "a")
        assert log.topic("bank").end_offset(0) == end
        # the same commit with the right expectation lands whole, interleaved as sent
        pos, versions = ev.commit([_ev("b", b"b0"), _ev("a", b"a1"), _ev("b", b"b1")],
                                  {"b": NO_STREAM, "a": 0})
        assert (pos, versions) == (1, {"b": 1, "a": 1})
        events, nxt = ev.events(0, 10)
        assert [(e.stream_id, e.version, e.position) for e in events] == \
            [("a", 0, 0), ("b", 0, 1), ("a", 1, 2), ("b", 1, 3)]
        assert nxt == ev.end_position() == 4


def test_a_stale_cache_in_another_handle_is_corrected_by_the_server(js_url):
    with streamlog.open(js_url) as one, streamlog.open(js_url) as two:
        e1, e2 = one.event_store("bank"), two.event_store("bank")
        e1.append("s", [b"x"], expected_version=NO_STREAM)
        assert e2.append("s", [b"y"], expected_version=0) == 1  # two never saw "s"
        with pytest.raises(WrongExpectedVersion) as exc:
            e1.append("s", [b"z"], expected_version=0)  # one's cache says 0
        assert exc.value.actual == 1
        assert e1.append("s", [b"z"]) == 2


def test_streams_and_tracking_and_replies_live_on_their_own_subjects(js_url):
    with streamlog.open(js_url) as log:
        es = log.event_store("bank")
        es.append("ünïcode id/with spaces", [b"v"])
        es.append("x" * 500, [b"long"])  # a long id goes by digest
        assert es.read("ünïcode id/with spaces")[0].value == b"v"
        assert es.read("x" * 500)[0].value == b"long"
        assert es.read("x" * 499) == []
        ev = log.event_log("bank")
        sub = ev.subject_of("s1")
        assert sub.startswith(log.topic("bank").subject(0) + ".e.")
        # a plain read of the topic shows the events as records, as on the embedded store
        recs = list(log.topic("bank").read(0))
        assert recs[0].headers["es-version"] == b"0"


def test_event_positions_of_a_process_applications_events_have_gaps(js_url):
    """The documented difference of process applications on JetStream: the tracking
    records of ``<name>.events`` share its stream, so they take positions; ``events()``
    skips them, and ``end_position()`` is one past the last event, not past a tracking
    record that follows it."""
    with streamlog.open(js_url) as log:
        tr = log.tracking_log("proc")
        ev = log.event_log("proc.events")
        first = tr.commit_with(ev, "up", 1, [_ev("o-1", b"a")], {"o-1": NO_STREAM})
        second = tr.commit_with(ev, "up", 2, [_ev("o-2", b"b"), _ev("o-3", b"c")],
                                {"o-2": NO_STREAM, "o-3": NO_STREAM})
        tr.record("up", 3)  # a tracking record alone, after the last event
        # the tracking record comes first in each atomic batch: positions 0, 2 and 5
        assert (first, second) == (1, 3)
        events, after = ev.events(0, 100)
        assert [(e.stream_id, e.position) for e in events] == [
            ("o-1", 1), ("o-2", 3), ("o-3", 4)]
        assert after == 6  # past every record read, the trailing tracking record too
        assert ev.end_position() == 5  # one past the last event
        assert [r.offset for r in log.topic("proc.events").read(0)] == [0, 1, 2, 3, 4, 5]
        assert tr.max_id("up") == 3
        # reading from inside a gap starts at the next event
        assert [e.position for e in ev.events(2, 100)[0]] == [3, 4]


def test_reading_from_a_middle_version_fetches_only_near_that_version(js_url):
    """A read of versions far into a stream finds where they start (a binary search of
    one-message gets) instead of fetching every earlier event of the stream; the events
    read are the same either way, with another stream's events interleaved and the
    front of the log removed by retention."""
    with streamlog.open(js_url) as log:
        es = log.event_store("long")
        for _ in range(6):
            es.append("a", [b"a"] * 200)
            es.append("b", [b"b"] * 100)
        ev = log.event_log("long")
        conn = ev._conn
        fetched = [0]
        get_range, get_message = conn.get_range, conn.get_message

        async def counting_range(*a, **k):
            got = await get_range(*a, **k)
            fetched[0] += len(got)
            return got

        async def counting_get(*a, **k):
            got = await get_message(*a, **k)
            fetched[0] += 1
            return got

        conn.get_range, conn.get_message = counting_range, counting_get
        try:
            got = es.read("a", from_version=1100, limit=20)
            assert [e.version for e in got] == list(range(1100, 1120))
            assert fetched[0] <= 20 + 12 + 2  # the events, log2(1800) steps, the head
            fetched[0] = 0
            got = es.read("a", from_version=300, limit=5)
            assert [e.version for e in got] == list(range(300, 305))
            assert fetched[0] <= 5 + 12 + 2
            fetched[0] = 0
            # near the start the stream is read from its first event, as before
            assert [e.version for e in es.read("a", from_version=10, limit=3)] == [10, 11, 12]
            assert fetched[0] <= 13 + 1
            fetched[0] = 0
            # the newest events, read backwards, the same way
            back = es.read("b", limit=3, backwards=True)
            assert [e.version for e in back] == [599, 598, 597]
            assert fetched[0] <= 3 + 12 + 2
        finally:
            conn.get_range, conn.get_message = get_range, get_message
        # retention removed the front: the search still lands on the right version
        conn.run(conn.purge_to(ev._stream, 501))
        assert [e.version for e in es.read("a", from_version=700, limit=3)] == [700, 701, 702]
        assert [e.version for e in es.read("b", from_version=260, limit=2)] == [260, 261]


def test_a_reply_on_the_servers_own_handle_is_handed_over_without_a_record(js_url):
    """A requester waiting on the server's store handle gets its reply in memory and,
    as on the embedded store, no reply record is written; a requester on another
    handle gets a stored record. Every request is acknowledged."""
    with streamlog.open(js_url) as log, streamlog.open(js_url) as other:
        rpc = log.rpc("ho")
        with rpc.serve(lambda m: m.value + b"!"):
            assert [rpc.request(b"%d" % i, timeout=10) for i in range(5)] == \
                [b"%d!" % i for i in range(5)]
            assert other.rpc("ho").request(b"far", timeout=10) == b"far!"
        replies = log.topic("ho.replies")
        assert [r.value for r in replies.read(0)] == [b"far!"]
        assert log.topic("ho.requests").group("ho.servers").lag() == 0


def test_a_reply_from_another_handle_comes_by_subscription_and_a_missed_one_by_a_get(js_url):
    """Replies from a server on another connection reach the requester through its
    subscription on the reply subjects (no read of the stream); a reply the
    subscription never saw is read through the stream leader by ``take``."""
    with streamlog.open(js_url) as requester, streamlog.open(js_url) as server:
        conn = requester._conn
        gets = []
        get_last = conn.get_last_message

        async def counting(*a, **k):
            gets.append(a)
            return await get_last(*a, **k)

        conn.get_last_message = counting
        rpc = requester.rpc("sub")
        with server.rpc("sub").serve(lambda m: m.value[::-1]):
            for i in range(10):
                assert rpc.request(b"ab%d" % i, timeout=10) == b"%dba" % i
        assert gets == []
        # a reply put before this box waited for it: found by one get through the leader
        server.reply_box("sub.replies").put(b"early-id", b"late", None)
        box = requester.reply_box("sub.replies")
        box.open(b"early-id")
        try:
            assert box.take(b"early-id") == (b"late", None)
        finally:
            box.close(b"early-id")
        assert len(gets) == 1
