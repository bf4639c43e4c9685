"""The request-reply view: round trips, many threads, timeouts, remote errors, names."""

from __future__ import annotations

import threading
import time

import pytest

import streamlog
from streamlog.backends.local import replybox as rb_mod
from streamlog.views import rpc as rpc_mod


def wait_for(cond, timeout=10.0):
    """Wait until ``cond()`` is true (tests only: the code under test never polls)."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def upper(m):
    return m.value.upper()


@pytest.fixture(params=[True, False], ids=["handover", "durable"])
def reply_path(request, monkeypatch):
    """Run a test with the in-process hand-over on, then with every reply on the log."""
    monkeypatch.setattr(rb_mod, "IN_PROCESS_HANDOVER", request.param)
    return request.param


def test_request_gets_the_handlers_reply(store, reply_path):
    """A request returns what the handler returned for it, on both reply paths."""
    rpc = store.rpc("users")
    with rpc.serve(upper) as server:
        assert rpc.request(b"hello") == b"HELLO"
        assert rpc.request(bytearray(b"x"), timeout=5) == b"X"
    assert server.served == 2
    assert not server.running


def test_eight_threads_of_200_requests_each_get_their_own_reply(store, reply_path):
    """8 threads x 200 concurrent requests: every reply matches its own request."""
    rpc = store.rpc("echo")
    errors: list = []

    def client(i):
        try:
            for j in range(200):
                body = b"%d-%d" % (i, j)
                assert rpc.request(body, timeout=10) == b"re:" + body
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    with rpc.serve(lambda m: b"re:" + m.value, workers=2):
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_durable_replies_are_indexed_then_the_index_entry_is_dropped(store, monkeypatch):
    """On the durable path a reply is a record on <name>.replies found through the
    correlation index, whose entry the requester deletes after reading it."""
    monkeypatch.setattr(rb_mod, "IN_PROCESS_HANDOVER", False)
    rpc = store.rpc("svc")
    with rpc.serve(upper):
        assert rpc.request(b"a") == b"A"
    replies = list(store.existing_topic("svc.replies").read(0))
    assert [r.value for r in replies] == [b"A"]
    corr = replies[0].headers[rpc_mod.CORRELATION_ID]
    req = next(store.existing_topic("svc.requests").read(0))
    assert req.headers[rpc_mod.CORRELATION_ID] == corr
    assert req.headers[rpc_mod.REPLY_TO] == b"svc.replies"
    assert int(req.headers[rpc_mod.DEADLINE_MS]) > req.timestamp_ms
    assert store.kv(rb_mod.INDEX_NAMESPACE).scan(b"svc.replies\0") == []


def test_handover_writes_no_reply_record(store):
    """In one process the reply is handed over directly: nothing lands on the reply topic."""
    rpc = store.rpc("local")
    with rpc.serve(upper):
        assert rpc.request(b"a") == b"A"
    assert store.existing_topic("local.replies").end_offset(0) == 0


def test_timeout_and_the_late_request_is_never_served(store):
    """With no server, request() raises RequestTimeout; a server started after the
    deadline acknowledges that request without calling the handler."""
    rpc = store.rpc("slow")
    t0 = time.monotonic()
    with pytest.raises(streamlog.RequestTimeout) as exc:
        rpc.request(b"late", timeout=0.2)
    assert time.monotonic() - t0 >= 0.2
    assert isinstance(exc.value, TimeoutError)
    calls = []
    group = store.existing_topic("slow.requests").group("slow.servers",
                                                        dead_letter=rpc.dead_letter_topic)
    assert group.lag() == 1
    with rpc.serve(lambda m: calls.append(m.value) or b"ok") as server:
        wait_for(lambda: server.expired == 1)
        assert rpc.request(b"fresh", timeout=5) == b"ok"
    assert calls == [b"fresh"]
    assert group.lag() == 0
    group.close()


def test_handler_error_becomes_remote_error_and_the_server_goes_on(store, reply_path):
    """A handler exception reaches the requester as RemoteError (type and message);
    the same server then answers the next request."""

    def handler(m):
        if m.value == b"bad":
            raise KeyError("no such user")
        return b"fine"

    rpc = store.rpc("users")
    with rpc.serve(handler):
        with pytest.raises(streamlog.RemoteError) as exc:
            rpc.request(b"bad", timeout=5)
        assert exc.value.type_name == "KeyError"
        assert "no such user" in exc.value.remote_message
        assert rpc.request(b"good", timeout=5) == b"fine"


def test_handler_returning_a_non_bytes_value_is_a_remote_type_error(store, reply_path):
    """A handler that returns str (or None) is reported as a remote TypeError."""
    rpc = store.rpc("users")
    with rpc.serve(lambda m: "text" if m.value == b"s" else None):
        for body in (b"s", b"n"):
            with pytest.raises(streamlog.RemoteError) as exc:
                rpc.request(body, timeout=5)
            assert exc.value.type_name == "TypeError"


def test_a_reply_too_large_for_the_reply_topic_is_a_remote_error(store, monkeypatch):
    """A reply over the reply topic's max_record_bytes comes back as RecordTooLarge."""
    monkeypatch.setattr(rb_mod, "IN_PROCESS_HANDOVER", False)
    store.topic("big.replies", max_record_bytes=1024)
    rpc = store.rpc("big")
    with rpc.serve(lambda m: b"x" * 4096):
        with pytest.raises(streamlog.RemoteError) as exc:
            rpc.request(b"q", timeout=5)
    assert exc.value.type_name == "RecordTooLarge"


def test_handler_sees_request_value_key_headers_and_delivery_count(store):
    """The handler gets a group Message with the request's value and the caller's headers."""
    seen = []
    rpc = store.rpc("h")
    with rpc.serve(lambda m: seen.append(m) or b"ok"):
        rpc.request(b"v", timeout=5, headers={"trace": "t-1"})
    (m,) = seen
    assert m.value == b"v" and m.topic == "h.requests"
    assert m.headers["trace"] == b"t-1"
    assert m.delivery_count == 1


def test_view_topics_show_in_topics_and_names_are_checked(store):
    """rpc "users" is made of users.requests and users.replies; bad names are ValueError."""
    store.rpc("users")
    assert {"users.requests", "users.replies"} <= set(store.topics())
    for bad in ("", "-x", "a b", "x" * 201, "é"):
        with pytest.raises(ValueError):
            store.rpc(bad)
    with pytest.raises(TypeError):
        store.rpc(7)
    # the derived names are ordinary topic and group names (at most 200 characters):
    # the longest is the dead-letter topic <name>.requests.dlq
    longest = store.rpc("y" * 187)
    assert longest.request_topic_name == "y" * 187 + ".requests"
    with pytest.raises(ValueError, match="derived"):
        store.rpc("y" * 188)


def test_incompatible_topics_or_group_are_a_config_mismatch(store):
    """A compacted request topic, or a servers group in another mode: ConfigMismatch."""
    store.topic("c.requests", compact=True)
    with pytest.raises(streamlog.ConfigMismatch):
        store.rpc("c")
    store.topic("e.requests").group("e.servers", mode="exclusive").close()
    with pytest.raises(streamlog.ConfigMismatch):
        store.rpc("e")


def test_bad_requests_raise_before_anything_is_written(store):
    """str values, non-positive timeouts and bad handlers fail before any append."""
    rpc = store.rpc("b")
    with pytest.raises(TypeError):
        rpc.request("text")
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            rpc.request(b"x", timeout=bad)
    with pytest.raises(TypeError):
        rpc.request(b"x", timeout=None)
    with pytest.raises(TypeError):
        rpc.serve("not callable")
    with pytest.raises(ValueError):
        rpc.serve(upper, workers=0)
    assert store.existing_topic("b.requests").end_offset(0) == 0


def test_stop_is_prompt_and_requests_after_stop_time_out(store):
    """stop() returns well before the poll interval ends; later requests get no reply."""
    rpc = store.rpc("s")
    server = rpc.serve(upper, workers=3)
    assert rpc.request(b"a", timeout=5) == b"A"
    server.stop()
    server.stop()  # idempotent
    assert not server.running
    with pytest.raises(streamlog.RequestTimeout):
        rpc.request(b"b", timeout=0.1)


def test_closing_the_store_stops_its_servers(tmp_path):
    """Log.close() stops the servers running on it; their threads end."""
    log = streamlog.open(tmp_path / "s")
    server = log.rpc("x").serve(upper, workers=2)
    log.close()
    assert not server.running
    assert all(not t.is_alive() for t in server._threads)


def test_prune_removes_only_entries_long_past_their_deadline(store):
    """The correlation index prune deletes entries past deadline + grace, keeps the rest."""
    kv = store.kv(rb_mod.INDEX_NAMESPACE)
    now = streamlog._types.now_ms()
    old = rb_mod.index_key("p.replies", b"%012x" % (now - 60_000) + b"a")
    young = rb_mod.index_key("p.replies", b"%012x" % (now + 1_000) + b"b")
    other = rb_mod.index_key("q.replies", b"%012x" % (now - 60_000) + b"c")
    for k in (old, young, other):
        kv.put(k, b"\0" * 12)
    assert rb_mod.prune_index(kv, "p.replies") == 1
    assert kv.get(old) is None and kv.get(young) is not None and kv.get(other) is not None


def test_a_stale_index_entry_is_not_taken_for_a_reply(store, monkeypatch):
    """An index entry pointing at a record with another correlation id is ignored."""
    monkeypatch.setattr(rb_mod, "IN_PROCESS_HANDOVER", False)
    rpc = store.rpc("st")
    store.existing_topic("st.replies").append(b"someone else's",
                                              headers={rpc_mod.CORRELATION_ID: b"zzz"})
    key = rb_mod.index_key("st.replies", b"mine")
    store.kv(rb_mod.INDEX_NAMESPACE).put(key, rb_mod._INDEX_VALUE.pack(0, 0))
    assert rpc._box._lookup(b"mine", key) is None
    store.kv(rb_mod.INDEX_NAMESPACE).put(key, rb_mod._INDEX_VALUE.pack(0, 5))
    assert rpc._box._lookup(b"mine", key) is None  # past the end: not appended yet


def test_deleting_the_reply_topic_drops_its_index_entries(store):
    """delete_topic on a reply topic removes that topic's correlation entries, no others."""
    kv = store.kv(rb_mod.INDEX_NAMESPACE)
    store.rpc("gone")
    store.rpc("kept")
    kv.put(rb_mod.index_key("gone.replies", b"a"), b"\0" * 12)
    kv.put(rb_mod.index_key("kept.replies", b"b"), b"\0" * 12)
    store.delete_topic("gone.replies")
    assert kv.scan(b"gone.replies\0") == []
    assert len(kv.scan(b"kept.replies\0")) == 1


def test_a_failed_reply_is_retried_and_the_worker_goes_on(store, monkeypatch, caplog):
    """When writing a reply fails (say, a full disk), the server logs it, hands the request
    back, and answers it on the next delivery; the worker keeps serving."""
    monkeypatch.setattr(rb_mod, "IN_PROCESS_HANDOVER", False)
    real = rb_mod.encode_one
    failures = [OSError(28, "No space left on device")]

    def flaky(*args, **kwargs):
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(rb_mod, "encode_one", flaky)
    calls = []
    rpc = store.rpc("flaky")
    with rpc.serve(lambda m: calls.append(m.delivery_count) or b"ok"):
        assert rpc.request(b"x", timeout=5) == b"ok"
        assert rpc.request(b"y", timeout=5) == b"ok"
    assert calls == [1, 2, 1]
    assert "could not reply" in caplog.text


def test_reply_box_hands_over_to_an_opened_id_and_indexes_the_rest(store):
    """Log.reply_box: a put for an id a requester of this process opened is handed over
    (no record); a put for any other id is a record found through the index, taken once;
    the handler's error type comes back as a str; close forgets the id."""
    store.rpc("box")
    box = store.reply_box("box.replies")
    replies = store.existing_topic("box.replies")
    w = box.watch()
    box.open(b"mine")
    assert box.take(b"mine") is None
    seen = w.seq()
    box.put(b"mine", b"v", None)
    assert w.wait(seen, 10) is True
    assert box.take(b"mine") == (b"v", None)
    box.close(b"mine")
    assert replies.end_offset(0) == 0  # handed over: nothing written
    box.put(b"other", b"oops", "KeyError")
    assert replies.end_offset(0) == 1
    assert box.take(b"other") == (b"oops", "KeyError")
    assert box.take(b"other") is None  # taken: its index entry is gone
    with pytest.raises(streamlog.TopicNotFound):
        store.reply_box("no.such.replies")
