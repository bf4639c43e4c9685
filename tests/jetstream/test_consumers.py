"""Durable pull consumers through the client facade: fetch, ack, nak with delay, term,
in-progress, redelivery after the ack wait, and consumer state."""

from __future__ import annotations

import pytest

from streamlog.backends.jetstream import _naming as naming
from streamlog.backends.jetstream._client import JetStreamError, NotFound, OutMsg


@pytest.fixture
def filled(conn):
    """A partition stream holding 10 messages; returns (stream name, subject)."""
    store = conn.url.store
    name = naming.stream_name(store, "jobs", 0)
    subject = naming.partition_subject(store, "jobs", 0)
    conn.run(conn.ensure_stream(name, naming.stream_subjects(store, "jobs", 0)))
    conn.run(conn.publish_batch([OutMsg(subject, b"job%d" % i) for i in range(10)]))
    return name, subject


def test_fetch_ack_and_state(conn, filled):
    """Fetched messages come in stream order with their delivery count; acks move the
    ack floor, and what is left is pending."""
    name, _ = filled
    conn.run(conn.ensure_consumer(name, "g", ack_wait_s=30))
    got = conn.run(conn.fetch(name, "g", 4))
    assert [d.stream_seq for d in got] == [1, 2, 3, 4]
    assert [d.data for d in got] == [b"job0", b"job1", b"job2", b"job3"]
    assert all(d.deliveries == 1 and d.time_ns > 0 for d in got)
    for d in got:
        conn.run(conn.ack(d, wait=True))
    st = conn.run(conn.consumer_info(name, "g"))
    assert (st.ack_floor_stream_seq, st.num_ack_pending, st.num_pending) == (4, 0, 6)


def test_ensure_consumer_is_idempotent_and_refuses_changes(conn, filled):
    """The same config returns the consumer; a different one is refused."""
    name, _ = filled
    conn.run(conn.ensure_consumer(name, "g", ack_wait_s=30, max_deliver=5))
    conn.run(conn.ensure_consumer(name, "g", ack_wait_s=30, max_deliver=5))
    with pytest.raises(JetStreamError):
        conn.run(conn.ensure_consumer(name, "g", ack_wait_s=10, max_deliver=5))
    assert conn.run(conn.consumer_info(name, "g")).config["ack_wait"] == 30 * 10**9


def test_start_sequence(conn, filled):
    """A consumer created at a start sequence delivers from there."""
    name, _ = filled
    conn.run(conn.ensure_consumer(name, "late", start_seq=8))
    assert [d.stream_seq for d in conn.run(conn.fetch(name, "late", 10))] == [8, 9, 10]


def test_fetch_on_a_drained_consumer_is_empty(conn, filled):
    """Nothing to deliver: fetch returns [] after its timeout instead of raising."""
    name, _ = filled
    conn.run(conn.ensure_consumer(name, "g", start_seq=11))
    assert conn.run(conn.fetch(name, "g", 5, timeout=0.2)) == []


def test_nak_with_delay_redelivers_after_the_delay(conn, filled):
    """A nak with a delay holds the message back; then it comes again as delivery 2."""
    name, _ = filled
    conn.run(conn.ensure_consumer(name, "g", ack_wait_s=30, start_seq=10))
    (d,) = conn.run(conn.fetch(name, "g", 1))
    conn.run(conn.nak(d, delay_s=1.0))
    assert conn.run(conn.fetch(name, "g", 1, timeout=0.3)) == []  # held back
    (again,) = conn.run(conn.fetch(name, "g", 1, timeout=5.0))
    assert (again.stream_seq, again.deliveries) == (10, 2)


def test_bare_nak_redelivers_at_once(conn, filled):
    """A nak without a delay makes the message deliverable immediately."""
    name, _ = filled
    conn.run(conn.ensure_consumer(name, "g", ack_wait_s=30, start_seq=10))
    (d,) = conn.run(conn.fetch(name, "g", 1))
    conn.run(conn.nak(d))
    (again,) = conn.run(conn.fetch(name, "g", 1, timeout=5.0))
    assert (again.stream_seq, again.deliveries) == (10, 2)


def test_unacked_message_is_redelivered_after_ack_wait(conn, filled):
    """A delivery neither acked nor nakked comes back once the ack wait passes."""
    name, _ = filled
    conn.run(conn.ensure_consumer(name, "g", ack_wait_s=0.5, start_seq=10))
    (d,) = conn.run(conn.fetch(name, "g", 1))
    (again,) = conn.run(conn.fetch(name, "g", 1, timeout=5.0))
    assert (again.stream_seq, again.deliveries) == (10, 2)
    assert conn.run(conn.consumer_info(name, "g")).num_redelivered == 1


def test_in_progress_holds_off_redelivery(conn, filled):
    """Progress signals reset the ack timer: no redelivery while they keep coming."""
    name, _ = filled
    conn.run(conn.ensure_consumer(name, "g", ack_wait_s=1.0, start_seq=10))
    (d,) = conn.run(conn.fetch(name, "g", 1))
    for _ in range(5):  # 5 x 0.4 s = 2 s, twice the ack wait
        conn.run(conn.in_progress(d))
        assert conn.run(conn.fetch(name, "g", 1, timeout=0.4)) == []
    conn.run(conn.ack(d, wait=True))
    assert conn.run(conn.consumer_info(name, "g")).num_redelivered == 0


def test_term_stops_redelivery_and_carries_a_reason(conn, filled):
    """A terminated message is never delivered again; the reason reaches the advisory."""
    name, _ = filled
    conn.run(conn.ensure_consumer(name, "g", ack_wait_s=0.5, start_seq=10))
    advisories = []

    async def listen():
        async def cb(msg):
            advisories.append(msg.data)
        return await conn.nc.subscribe(
            f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{name}.g", cb=cb)

    sub = conn.run(listen())
    (d,) = conn.run(conn.fetch(name, "g", 1))
    conn.run(conn.term(d, reason="poison: cannot decode"))
    conn.run(conn.flush())
    assert conn.run(conn.fetch(name, "g", 1, timeout=1.5)) == []  # 3 ack waits
    conn.run(sub.unsubscribe())
    assert len(advisories) == 1 and b"poison: cannot decode" in advisories[0]
    st = conn.run(conn.consumer_info(name, "g"))
    assert (st.ack_floor_stream_seq, st.num_ack_pending) == (10, 0)


def test_max_deliver_and_backoff(conn, filled):
    """max_deliver bounds deliveries; backoff sets the redelivery delays."""
    name, _ = filled
    conn.run(conn.ensure_consumer(name, "g", ack_wait_s=0.2, max_deliver=3,
                                  backoff_s=[0.2, 0.2], start_seq=10))
    counts = []
    while True:
        got = conn.run(conn.fetch(name, "g", 1, timeout=1.5))
        if not got:
            break
        counts.append(got[0].deliveries)
    assert counts == [1, 2, 3]


def test_delete_consumer(conn, filled):
    """A deleted consumer is gone; asking for it is NotFound."""
    name, _ = filled
    conn.run(conn.ensure_consumer(name, "g"))
    conn.run(conn.delete_consumer(name, "g"))
    with pytest.raises(NotFound):
        conn.run(conn.consumer_info(name, "g"))
