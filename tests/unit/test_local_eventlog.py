"""The embedded engine's event log and tracking log against the contract's meaning."""

from __future__ import annotations

import threading

import pytest

import streamlog
from streamlog import api
from streamlog.errors import WrongExpectedVersion


@pytest.fixture
def log(tmp_path):
    with streamlog.open(tmp_path / "s") as lg:
        yield lg


def _ev(sid: str, value: bytes) -> api.NewEvent:
    return api.NewEvent(sid, sid.encode(), value, None)


def test_event_log_and_tracking_log_satisfy_the_protocols(log):
    el = log.event_log("bank")
    assert isinstance(el, api.EventLog)
    assert isinstance(log.tracking_log("app"), api.TrackingLog)
    assert isinstance(el.watch(), api.Watch)
    assert log.event_log("bank") is el  # one per Log: every handle shares the index


def test_commit_of_several_streams_is_all_or_nothing(log):
    el = log.event_log("bank")
    assert el.commit([_ev("a", b"1"), _ev("b", b"2"), _ev("a", b"3")],
                     {"a": api.NO_STREAM, "b": api.NO_STREAM}) == (0, {"a": 1, "b": 0})
    with pytest.raises(WrongExpectedVersion) as e:
        el.commit([_ev("a", b"4"), _ev("b", b"5")], {"a": 1, "b": api.NO_STREAM})
    assert (e.value.stream_id, e.value.expected, e.value.actual) == ("b", -1, 0)
    assert el.end_position() == 3
    assert el.last_version("a") == 1 and el.last_version("c") == api.NO_STREAM
    first, records = el.stream_records("a", 0, None, None)
    assert first == 0 and [r.value for r in records] == [b"1", b"3"]
    assert [(e.stream_id, e.version, e.position) for e in el.stream_events("a", 1, 1, 5)] \
        == [("a", 1, 2)]
    events, nxt = el.events(1, 10)
    assert nxt == 3 and [e.value for e in events] == [b"2", b"3"]


def test_tracking_ids_only_grow_and_ride_with_their_events(log):
    tl = log.tracking_log("app")
    el = log.event_log("app.events")
    tl.record("up", 3)
    with pytest.raises(WrongExpectedVersion) as e:
        tl.record("up", 3)
    assert (e.value.expected, e.value.actual) == (3, 3)
    assert tl.commit_with(el, "up", 4, [_ev("s", b"x")], {"s": api.NO_STREAM}) == 0
    assert tl.max_id("up") == 4
    with pytest.raises(WrongExpectedVersion):  # the event check fails: no tracking either
        tl.commit_with(el, "up", 5, [_ev("s", b"y")], {"s": api.NO_STREAM})
    assert tl.max_id("up") == 4 and el.end_position() == 1


def test_a_watch_wakes_its_waiter_on_a_commit_from_another_thread(log):
    el = log.event_log("bank")
    w = el.watch()
    seen = w.seq()
    started = threading.Barrier(2)
    woke: list[bool] = []

    def waiter() -> None:
        started.wait()
        woke.append(w.wait(seen, 30))

    t = threading.Thread(target=waiter)
    t.start()
    started.wait()
    el.commit([_ev("a", b"1")], {"a": api.ANY})
    t.join(30)
    assert woke == [True] and w.seq() != seen


def test_deleting_a_tracking_topic_drops_its_checkpoint(log):
    from streamlog.backends.local import tracking

    kv = log.kv(tracking.KV_NAMESPACE)
    kv.put(b"app\0tracking", b"{}")
    log.tracking_log("app")
    log.delete_topic("app.tracking")
    assert kv.get(b"app\0tracking") is None
