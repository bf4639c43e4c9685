"""Event logs, tracking records and replies on a 3-node cluster with R3 streams: the
server's expected-sequence checks inside atomic batches hold there too, and reads
right after a commit see it (any replica may answer a direct get)."""

from __future__ import annotations

import threading

import pytest

import streamlog
from streamlog.api import ANY, NO_STREAM, NewEvent
from streamlog.errors import WrongExpectedVersion


def _ev(sid: str, value: bytes) -> NewEvent:
    return NewEvent(sid, sid.encode(), value, None)


def test_r3_commits_checks_reads_and_replies(nats_cluster, store_name):
    url = f"{nats_cluster.url}/{store_name}"
    with streamlog.open(url, replicas=3) as one, streamlog.open(url, replicas=3) as two:
        ev1, ev2 = one.event_log("bank"), two.event_log("bank")
        ev1.commit([_ev("a", b"a0"), _ev("b", b"b0")], {"a": NO_STREAM, "b": NO_STREAM})
        with pytest.raises(WrongExpectedVersion) as exc:
            ev2.commit([_ev("b", b"x"), _ev("a", b"y")], {"b": 0, "a": NO_STREAM})
        assert (exc.value.actual, exc.value.stream_id) == (0, "a")
        # ANY appenders racing in two handles: versions stay dense
        def spam(ev):
            for i in range(15):
                ev.commit([_ev("hot", b"%d" % i)], {"hot": ANY})
        ts = [threading.Thread(target=spam, args=(e,)) for e in (ev1, ev2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for ev in (ev1, ev2):  # read right after the writes, from either handle
            assert [e.version for e in ev.stream_events("hot", 0, None, None)] == list(range(30))
            assert ev.last_version("hot") == 29
        tr = two.tracking_log("p")
        tr.commit_with(two.event_log("p.events"), "up", 1, [_ev("o", b"e")], {"o": ANY})
        with pytest.raises(WrongExpectedVersion):
            one.tracking_log("p").record("up", 1)
        assert one.tracking_log("p").max_id("up") == 1
        with two.rpc("echo").serve(lambda m: m.value + b"!"):
            assert one.rpc("echo").request(b"hi", timeout=10) == b"hi!"
