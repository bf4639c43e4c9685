"""The JetStream operations of the client facade, each against a real nats-server."""

from __future__ import annotations

import asyncio
import threading

import pytest

from streamlog.backends.jetstream import _naming as naming
from streamlog.backends.jetstream._client import (
    ATOMIC_BATCH_MAX_MSGS,
    H_BATCH_COMMIT,
    H_BATCH_ID,
    H_BATCH_SEQ,
    Connection,
    JetStreamError,
    NotFound,
    OutMsg,
    WrongLastSequence,
)
from streamlog.errors import StreamlogError


@pytest.fixture
def part(conn):
    """A fresh partition stream (topic 'orders.eu', partition 0) of the test's store;
    returns (stream name, subject)."""
    store = conn.url.store
    name = naming.stream_name(store, "orders.eu", 0)
    conn.run(conn.ensure_stream(name, naming.stream_subjects(store, "orders.eu", 0),
                                metadata=naming.stream_metadata(store, "orders.eu", 0)))
    return name, naming.partition_subject(store, "orders.eu", 0)


# -- the facade itself ------------------------------------------------------


def test_run_returns_results_and_raises_errors_on_the_calling_thread(conn):
    """run() hands a coroutine to the loop thread and gives back its result or exception."""
    async def answer():
        return threading.current_thread().name

    assert conn.run(answer()).startswith("streamlog-nats-")

    async def boom():
        raise KeyError("x")

    with pytest.raises(KeyError):
        conn.run(boom())


def test_run_from_many_threads(conn, part):
    """Several threads publishing through one connection all get their own acks."""
    name, subject = part
    seqs: list[int] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        for j in range(20):
            ack = conn.run(conn.publish(subject, f"{i}-{j}".encode()))
            with lock:
                seqs.append(ack.seq)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seqs) == list(range(1, 81))


def test_run_on_the_loop_thread_is_refused(conn):
    """Blocking the loop on itself would deadlock: it is a RuntimeError instead."""
    async def nested():
        async def inner():
            return 1
        return conn.run(inner())

    with pytest.raises(RuntimeError, match="own event-loop thread"):
        conn.run(nested())


def test_run_timeout_cancels(conn):
    """A run() that outlives its timeout raises TimeoutError and cancels the coroutine."""
    with pytest.raises(TimeoutError):
        conn.run(asyncio.sleep(5), timeout=0.1)


def test_close_is_idempotent_and_final(js_url):
    """After close() the loop thread is gone and further use is a StreamlogError."""
    from streamlog.backends.jetstream._client import Connection

    c = Connection(js_url)
    c.close()
    c.close()
    assert not c._thread.is_alive()
    coro = asyncio.sleep(0)
    with pytest.raises(StreamlogError, match="closed"):
        c.run(coro)


# -- streams ----------------------------------------------------------------


def test_ensure_stream_is_idempotent_and_refuses_a_different_config(conn, part):
    """The same config returns the existing stream; another one is refused, not applied."""
    name, _ = part
    store = conn.url.store
    again = conn.run(conn.ensure_stream(name, naming.stream_subjects(store, "orders.eu", 0),
                                        metadata=naming.stream_metadata(store, "orders.eu", 0)))
    assert again.name == name
    assert again.config["allow_atomic"] is True and again.config["deny_delete"] is True
    assert again.config["metadata"][naming.META_TOPIC] == "orders.eu"
    with pytest.raises(JetStreamError) as info:
        conn.run(conn.ensure_stream(name, naming.stream_subjects(store, "orders.eu", 0),
                                    max_bytes=1 << 20))
    assert info.value.err_code == 10058
    assert conn.run(conn.stream_info(name)).config["max_bytes"] == -1


def test_topic_with_dots_and_its_prefix_topic_coexist(conn):
    """Topics 'a' and 'a.0' (and 'a_0') get streams whose subjects do not overlap."""
    store = conn.url.store
    for topic in ("a", "a.0", "a_0"):
        for p in (0, 1):
            conn.run(conn.ensure_stream(naming.stream_name(store, topic, p),
                                        naming.stream_subjects(store, topic, p)))
    names = conn.run(conn.stream_names(naming.store_subjects(store)))
    assert len(names) == 6 and set(names) == {
        naming.stream_name(store, t, p) for t in ("a", "a.0", "a_0") for p in (0, 1)
    }


def test_stream_names_see_only_their_own_store(nats_server, store_name):
    """Stores 'x' and 'x_y' on one server: each listing holds only its own streams."""
    from streamlog.backends.jetstream._client import Connection

    with Connection(f"{nats_server.client_url}/{store_name}") as c:
        for store in (store_name, f"{store_name}_y", f"{store_name}-y"):
            c.run(c.ensure_stream(naming.stream_name(store, "t", 0),
                                  naming.stream_subjects(store, "t", 0)))
        assert c.run(c.stream_names(naming.store_subjects(store_name))) == [
            naming.stream_name(store_name, "t", 0)
        ]


def test_longest_names_fit_the_server(conn):
    """A 200-character topic with dots makes a hashed stream name the server accepts."""
    store = conn.url.store
    topic = "a." * 99 + "bb"
    name = naming.stream_name(store, topic, 4095)
    assert name.startswith("SLH_")
    st = conn.run(conn.ensure_stream(name, naming.stream_subjects(store, topic, 4095),
                                     metadata=naming.stream_metadata(store, topic, 4095)))
    assert st.config["metadata"][naming.META_TOPIC] == topic


def test_stream_info_counts_messages_and_bytes(conn, part):
    """first/last sequence, message count and bytes as the leader reports them."""
    name, subject = part
    empty = conn.run(conn.stream_info(name))
    assert (empty.first_seq, empty.last_seq, empty.messages, empty.bytes) == (0, 0, 0, 0)
    for _ in range(3):
        conn.run(conn.publish(subject, b"x" * 100))
    st = conn.run(conn.stream_info(name))
    assert (st.first_seq, st.last_seq, st.messages) == (1, 3, 3)
    assert st.bytes > 300 and st.leader
    with pytest.raises(NotFound):
        conn.run(conn.stream_info("SL_nope_nope_0"))


def test_purge_to_on_an_empty_stream_sets_the_first_sequence(conn, part):
    """Purging an empty stream up to N makes the next publish sequence N (offsets kept)."""
    name, subject = part
    assert conn.run(conn.purge_to(name, 1001)) == 0
    st = conn.run(conn.stream_info(name))
    assert (st.first_seq, st.last_seq, st.messages) == (1001, 1000, 0)
    assert conn.run(conn.publish(subject, b"a")).seq == 1001
    batch = conn.run(conn.publish_batch([OutMsg(subject, b"b"), OutMsg(subject, b"c")]))
    assert (batch.first_seq, batch.last_seq) == (1002, 1003)
    assert [m.seq for m in conn.run(conn.get_range(name, 1, 10))] == [1001, 1002, 1003]


def test_purge_to_drops_the_front_only(conn, part):
    """On a non-empty stream, purge_to removes messages below the sequence, no gap after."""
    name, subject = part
    for i in range(5):
        conn.run(conn.publish(subject, str(i).encode()))
    assert conn.run(conn.purge_to(name, 3)) == 2
    assert [m.seq for m in conn.run(conn.get_range(name, 1, 10))] == [3, 4, 5]


# -- publishing -------------------------------------------------------------


def test_publish_acks_dense_sequences_and_headers_round_trip(conn, part):
    """Each publish is acknowledged with the next sequence; headers and bytes come back."""
    name, subject = part
    acks = [conn.run(conn.publish(subject, bytes([i]) * 3, {"k": f"v{i}"})) for i in range(5)]
    assert [a.seq for a in acks] == [1, 2, 3, 4, 5]
    assert not any(a.duplicate for a in acks) and {a.stream for a in acks} == {name}
    m = conn.run(conn.get_message(name, 4))
    assert (m.seq, m.subject, m.data, m.headers["k"]) == (4, subject, b"\x03\x03\x03", "v3")
    assert m.time_ns > 1_700_000_000 * 10**9


def test_publish_to_a_subject_without_a_stream_times_out(conn):
    """No stream owns the subject: the publish fails as a TimeoutError, nothing stored."""
    with pytest.raises(TimeoutError, match="no JetStream responder"):
        conn.run(conn.publish("streamlog.nobody.here.0", b"x"))


def test_msg_id_dedupe(conn, part):
    """A repeated Nats-Msg-Id inside the duplicate window is acked with the first copy's
    sequence and flagged duplicate; the stream holds one copy."""
    name, subject = part
    first = conn.run(conn.publish(subject, b"a", msg_id="id-1"))
    again = conn.run(conn.publish(subject, b"a-again", msg_id="id-1"))
    other = conn.run(conn.publish(subject, b"b", msg_id="id-2"))
    assert (first.seq, first.duplicate) == (1, False)
    assert (again.seq, again.duplicate) == (1, True)
    assert (other.seq, other.duplicate) == (2, False)
    assert conn.run(conn.stream_info(name)).messages == 2
    assert conn.run(conn.get_message(name, 1)).data == b"a"


def test_publish_blocking_is_publish_without_a_task(conn, part):
    """publish_blocking (the sync append's path) stores what publish stores, with the same
    acknowledgement: dense sequences, headers and bytes round-trip, msg id dedupe."""
    name, subject = part
    assert conn._ack_prefix is not None  # the direct path is on for this client
    acks = [conn.publish_blocking(subject, bytes([i]) * 3, {"k": f"v{i}", "e": ""})
            for i in range(3)]
    acks.append(conn.publish_blocking(subject, b"plain"))  # no headers: a PUB frame
    assert [a.seq for a in acks] == [1, 2, 3, 4] and {a.stream for a in acks} == {name}
    m = conn.run(conn.get_message(name, 2))
    assert (m.data, m.headers["k"]) == (b"\x01\x01\x01", "v1")
    assert conn.run(conn.get_message(name, 4)).data == b"plain"
    first = conn.publish_blocking(subject, b"a", msg_id="id-1")
    again = conn.publish_blocking(subject, b"b", msg_id="id-1")
    assert (first.seq, first.duplicate, again.seq, again.duplicate) == (5, False, 5, True)
    assert conn.run(conn.stream_info(name)).messages == 5


def test_publish_blocking_errors_are_those_of_publish(conn, part):
    """No stream: NoResponders (a TimeoutError) as publish raises; a bad header name or
    an oversized message: an error before anything is sent; on the loop: refused."""
    name, subject = part
    with pytest.raises(TimeoutError, match="no JetStream responder"):
        conn.publish_blocking("streamlog.nobody.here.0", b"x")
    with pytest.raises(JetStreamError, match="bad header name"):
        conn.publish_blocking(subject, b"x", {"bad name": "v"})
    with pytest.raises(JetStreamError, match="max_payload"):
        conn.publish_blocking(subject, b"x" * (conn.max_payload + 1))
    assert conn.run(conn.stream_info(name)).messages == 0

    async def on_loop():
        conn.publish_blocking(subject, b"x")

    with pytest.raises(RuntimeError, match="own event-loop thread"):
        conn.run(on_loop())


def test_publish_blocking_keeps_order_beside_buffered_publishes(conn, part):
    """Threads publishing at once, some of them through the client's buffer (its own
    publish, as run(publish) does), all get their acknowledgements; the messages of each
    thread are stored in the order it sent them, and the sequences are dense."""
    name, subject = part
    got: dict[int, list[int]] = {}

    def worker(i: int) -> None:
        seqs = []
        for j in range(40):
            body = f"{i}:{j}".encode()
            if (i + j) % 3 == 0:
                seqs.append(conn.run(conn.publish(subject, body)).seq)
            else:
                seqs.append(conn.publish_blocking(subject, body, {"w": str(i)}).seq)
        got[i] = seqs

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(s for seqs in got.values() for s in seqs) == list(range(1, 161))
    for i, seqs in got.items():
        assert seqs == sorted(seqs)
        bodies = [conn.run(conn.get_message(name, s)).data for s in seqs]
        assert bodies == [f"{i}:{j}".encode() for j in range(40)]


def test_publish_blocking_rides_out_a_closed_connection(js_url, part):
    """A connection closed by another thread while a caller waits ends that wait with a
    clear error, not a hang."""
    c = Connection(js_url)
    _, subject = part
    c.publish_blocking(subject, b"x")
    c.close()
    with pytest.raises(StreamlogError, match="closed"):
        c.publish_blocking(subject, b"y")


def test_expected_last_subject_sequence(conn, part):
    """An expected version per subject is checked by the server; a stale one stores
    nothing and reports the subject's actual last sequence."""
    name, subject = part
    ev_a, ev_b = f"{subject}.A", f"{subject}.B"
    assert conn.run(conn.publish(ev_a, b"a1", expected_last_subject_seq=0)).seq == 1
    assert conn.run(conn.publish(ev_b, b"b1", expected_last_subject_seq=0)).seq == 2
    assert conn.run(conn.publish(ev_a, b"a2", expected_last_subject_seq=1)).seq == 3
    with pytest.raises(WrongLastSequence) as info:
        conn.run(conn.publish(ev_a, b"stale", expected_last_subject_seq=1))
    assert info.value.actual == 3 and info.value.err_code == 10071
    with pytest.raises(WrongLastSequence) as info:
        conn.run(conn.publish(ev_b, b"new?", expected_last_subject_seq=0))
    assert info.value.actual == 2
    assert conn.run(conn.stream_info(name)).last_seq == 3


def test_atomic_batch_commits_all_with_one_ack(conn, part):
    """A batch is stored at consecutive sequences; the commit's ack names batch and count."""
    name, subject = part
    conn.run(conn.publish(subject, b"before"))
    msgs = [OutMsg(subject, f"r{i}".encode(), {"i": str(i)}) for i in range(10)]
    ack = conn.run(conn.publish_batch(msgs))
    assert (ack.stream, ack.first_seq, ack.last_seq, ack.count) == (name, 2, 11, 10)
    got = conn.run(conn.get_range(name, 2, 100))
    assert [m.data for m in got] == [m.payload for m in msgs]
    assert [m.headers["i"] for m in got] == [str(i) for i in range(10)]
    # The server keeps the batch directives on the stored messages.
    assert {m.headers[H_BATCH_ID] for m in got} == {ack.batch_id}
    assert [m.headers[H_BATCH_SEQ] for m in got] == [str(i) for i in range(1, 11)]
    assert got[-1].headers[H_BATCH_COMMIT] == "1" and H_BATCH_COMMIT not in got[0].headers


def test_atomic_batch_of_the_maximum_size(conn, part):
    """1,000 messages (the server's default limit) commit as one batch."""
    name, subject = part
    ack = conn.run(conn.publish_batch([OutMsg(subject, b"%d" % i) for i in range(1000)]))
    assert (ack.first_seq, ack.last_seq, ack.count) == (1, 1000, 1000)


def test_atomic_batch_over_the_limit_is_refused_before_sending(conn, part):
    """1,001 messages: ValueError naming the limit, and the stream is untouched."""
    name, subject = part
    with pytest.raises(ValueError, match=str(ATOMIC_BATCH_MAX_MSGS)):
        conn.run(conn.publish_batch([OutMsg(subject, b"x")] * (ATOMIC_BATCH_MAX_MSGS + 1)))
    with pytest.raises(ValueError):
        conn.run(conn.publish_batch([]))
    assert conn.run(conn.stream_info(name)).messages == 0


def test_atomic_batch_with_a_stale_expectation_stores_nothing(conn, part):
    """Expected subject sequences inside a batch: one stale message rejects the whole
    batch, so a multi-stream commit is all or nothing."""
    name, subject = part
    ev_a, ev_b = f"{subject}.A", f"{subject}.B"
    conn.run(conn.publish_batch([
        OutMsg(ev_a, b"a1", {"Nats-Expected-Last-Subject-Sequence": "0"}),
        OutMsg(ev_b, b"b1", {"Nats-Expected-Last-Subject-Sequence": "0"}),
    ]))
    with pytest.raises(WrongLastSequence) as info:
        conn.run(conn.publish_batch([
            OutMsg(ev_a, b"a2", {"Nats-Expected-Last-Subject-Sequence": "1"}),
            OutMsg(ev_b, b"b2", {"Nats-Expected-Last-Subject-Sequence": "0"}),  # stale
        ]))
    assert info.value.actual == 2
    st = conn.run(conn.stream_info(name))
    assert (st.last_seq, st.messages) == (2, 2)


def test_atomic_batch_with_a_repeated_msg_id_stores_nothing(conn, part):
    """Two messages of one batch with the same Nats-Msg-Id: the batch is refused whole."""
    name, subject = part
    with pytest.raises(JetStreamError) as info:
        conn.run(conn.publish_batch([OutMsg(subject, b"a", {"Nats-Msg-Id": "same"}),
                                     OutMsg(subject, b"b", {"Nats-Msg-Id": "same"})]))
    assert info.value.err_code == 10201
    assert conn.run(conn.stream_info(name)).messages == 0


def test_atomic_batch_refused_by_a_stream_without_atomic(conn):
    """A stream created without allow_atomic refuses a batch (10174) and stores nothing."""
    conn.run(conn.api("STREAM.CREATE.PLAIN_" + conn.url.store.replace("-", "_"), {
        "name": "PLAIN_" + conn.url.store.replace("-", "_"),
        "subjects": [f"plain.{conn.url.store}"], "storage": "file",
    }))
    with pytest.raises(JetStreamError) as info:
        conn.run(conn.publish_batch([OutMsg(f"plain.{conn.url.store}", b"x")] * 2))
    assert info.value.err_code == 10174


# -- reading ----------------------------------------------------------------


def test_get_message_past_the_end_is_not_found(conn, part):
    """A sequence that does not exist is NotFound (10037), not an empty message."""
    name, subject = part
    conn.run(conn.publish(subject, b"x"))
    with pytest.raises(NotFound) as info:
        conn.run(conn.get_message(name, 2))
    assert info.value.err_code == 10037


def test_get_range_reads_in_order_within_limits(conn, part):
    """One batch direct get returns a range in order, bounded by count and bytes."""
    name, subject = part
    conn.run(conn.publish_batch([OutMsg(subject, b"%03d" % i) for i in range(300)]))
    got = conn.run(conn.get_range(name, 1, 300))
    assert [m.seq for m in got] == list(range(1, 301))
    assert [m.data for m in got] == [b"%03d" % i for i in range(300)]
    assert all(m.subject == subject for m in got)
    assert all(not k.startswith("Nats-Sequence") for m in got for k in m.headers)
    mid = conn.run(conn.get_range(name, 101, 50))
    assert [m.seq for m in mid] == list(range(101, 151))
    assert conn.run(conn.get_range(name, 301, 10)) == []
    small = conn.run(conn.get_range(name, 1, 300, max_bytes=2000))
    assert 0 < len(small) < 300 and [m.seq for m in small] == list(range(1, len(small) + 1))


def test_get_range_on_an_empty_stream(conn, part):
    """An empty stream answers with no messages rather than an error."""
    name, _ = part
    assert conn.run(conn.get_range(name, 1, 10)) == []


@pytest.mark.asyncio
async def test_a_connection_bound_to_the_callers_loop_has_no_thread(js_url):
    """Opened with ``loop=`` and ``connect_async``, a Connection runs nats-py on the
    caller's loop: its coroutines are awaited there, ``run`` works from other threads
    while the loop runs and is refused on the loop itself, and closing from the loop
    leaves the loop running."""
    loop = asyncio.get_running_loop()
    before = {th.name for th in threading.enumerate()}
    c = Connection(js_url, loop=loop)
    await c.connect_async()
    try:
        assert c.bound and c.on_loop() and c.loop is loop
        assert {th.name for th in threading.enumerate()} <= before | {"asyncio_0"}
        assert (await c.api("INFO"))["type"] == "io.nats.jetstream.api.v1.account_info_response"
        # from another thread: handed to this loop, which is free while we await
        info = await asyncio.to_thread(c.run, c.api("INFO"))
        assert info["type"] == "io.nats.jetstream.api.v1.account_info_response"
        coro = c.api("INFO")
        with pytest.raises(RuntimeError, match="await instead"):
            c.run(coro)
    finally:
        await c.aclose()
    assert loop.is_running()
    with pytest.raises(StreamlogError, match="closed"):
        await asyncio.to_thread(c.run, asyncio.sleep(0))


def test_stream_info_is_asked_again_while_no_answer_comes(conn, part, monkeypatch):
    """A replicated stream electing its leader answers nothing: the info request times out
    and is asked again (it is a read), up to STREAM_CREATE_ATTEMPTS times; the real
    server's answer then comes back as usual, and a NotFound is not retried."""
    from streamlog.backends.jetstream import _client

    name, _subject = part
    real_api = conn.api
    calls: list[str] = []

    async def api(subject, request=None):
        calls.append(subject)
        if len(calls) < _client.STREAM_CREATE_ATTEMPTS:
            raise TimeoutError(f"no answer to {subject}")  # as a leaderless stream leaves it
        return await real_api(subject, request)

    monkeypatch.setattr(conn, "api", api)
    st = conn.run(conn.stream_info(name))
    assert st.name == name and calls == [f"STREAM.INFO.{name}"] * _client.STREAM_CREATE_ATTEMPTS
    calls.clear()
    calls.extend(["x"] * _client.STREAM_CREATE_ATTEMPTS)  # from now on the real answers
    with pytest.raises(NotFound):
        conn.run(conn.stream_info("SL_nope_nope_0"))
    assert len(calls) == _client.STREAM_CREATE_ATTEMPTS + 1


def test_stream_creation_waits_out_a_cluster_without_suitable_peers(conn, monkeypatch):
    """A create answered "no suitable peers for placement" (a server of the cluster down,
    or not yet seen back) is asked again until it is placed; any other refusal is the
    caller's at once."""
    from streamlog.backends.jetstream import _client

    store = conn.url.store
    name = naming.stream_name(store, "peers", 0)
    subjects = naming.stream_subjects(store, "peers", 0)
    real_api = conn.api
    calls: list[str] = []

    async def api(subject, request=None):
        calls.append(subject)
        if len(calls) <= 2:
            raise _client.JetStreamError("no suitable peers for placement, peer offline",
                                         400, _client.ERR_NO_PEERS)
        return await real_api(subject, request)

    monkeypatch.setattr(conn, "api", api)
    st = conn.run(conn.ensure_stream(name, subjects))
    assert st.name == name and calls == [f"STREAM.CREATE.{name}"] * 3

    async def refuse(subject, request=None):
        calls.append(subject)
        raise _client.JetStreamError("insufficient resources", 400, 10023)

    calls.clear()
    monkeypatch.setattr(conn, "api", refuse)
    with pytest.raises(_client.JetStreamError):
        conn.run(conn.ensure_stream(name, subjects))
    assert len(calls) == 1
