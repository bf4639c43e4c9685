"""The point-to-point queue view: put/get/ack/nack, delays, dead letters, names, threads."""

from __future__ import annotations

import threading
import time

import pytest

import streamlog
from streamlog.views import queue as queue_mod


def test_put_get_ack_round_trip(store):
    """A message put is got once with its value, key and headers; after ack it is gone."""
    q = store.queue("emails")
    pos = q.put(b"hello", key="k", headers={"h": "v"})
    assert isinstance(pos, streamlog.Position)
    m = q.get(timeout=1)
    assert (m.value, m.key, m.headers["h"], m.delivery_count) == (b"hello", b"k", b"v", 1)
    assert m.ack() is True
    assert m.ack() is True or m.ack() is False  # a second ack is a no-op either way
    assert q.get(timeout=0.05) is None
    assert q.lag() == 0


def test_get_times_out_with_none(store):
    """get() on an empty queue returns None after about ``timeout`` seconds."""
    q = store.queue("empty")
    t0 = time.monotonic()
    assert q.get(timeout=0.1) is None
    assert time.monotonic() - t0 >= 0.1
    assert q.get(timeout=0) is None


def test_get_wakes_when_a_message_is_put(store):
    """A get() blocked on an empty queue returns the message another thread puts."""
    q = store.queue("wake")
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=10)))
    t.start()
    time.sleep(0.05)
    q.put(b"x")
    t.join()
    assert got[0].value == b"x"


def test_get_without_timeout_waits_for_a_message(store):
    """get(timeout=None) blocks until a message arrives, however long that takes."""
    q = store.queue("patient")
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=None)))
    t.start()
    time.sleep(0.2)
    assert got == []
    q.put(b"finally")
    t.join(10)
    assert got[0].value == b"finally"


def test_a_producer_handle_opens_no_consumer_but_the_group_exists(store):
    """Opening a queue to put creates its group (its lag shows the depth) and no consumer."""
    q = store.queue("depth")
    for i in range(3):
        q.put(b"%d" % i)
    g = store.existing_topic("depth").group("depth.queue", dead_letter="depth.dlq")
    assert g.lag() == 3
    assert store.stats()["groups"]["depth"]["depth.queue"]["consumers"] == 0
    g.close()


def test_messages_go_out_in_order_each_once(store):
    """One consumer gets a single-partition queue's messages in order, each once."""
    q = store.queue("fifo")
    for i in range(20):
        q.put(b"%d" % i)
    out = []
    while (m := q.get(timeout=0.05)) is not None:
        out.append(m.value)
        m.ack()
    assert out == [b"%d" % i for i in range(20)]


def test_nack_redelivers_with_a_higher_delivery_count(store):
    """nack() gives the message back at once; the next get has delivery_count 2."""
    q = store.queue("retry")
    q.put(b"job")
    m = q.get()
    m.nack()
    m2 = q.get(timeout=1)
    assert (m2.value, m2.offset, m2.delivery_count) == (b"job", m.offset, 2)
    m2.ack()


def test_nack_with_delay_holds_the_message_back(store):
    """nack(delay_s) keeps the message from every consumer until the delay has passed."""
    q = store.queue("later")
    q.put(b"job")
    t0 = time.monotonic()
    q.get().nack(delay_s=0.3)
    assert q.get(timeout=0.1) is None
    m = q.get(timeout=2)
    assert m is not None and time.monotonic() - t0 >= 0.3
    m.ack()


def test_unacked_message_comes_back_after_ack_wait(store):
    """A message neither acked nor nacked is redelivered once ack_wait_s passes."""
    q = store.queue("lease", ack_wait_s=0.2)
    q.put(b"job")
    first = q.get()
    assert q.get(timeout=0.05) is None
    again = q.get(timeout=2)
    assert again.offset == first.offset and again.delivery_count == 2
    assert again.ack() is True


def test_delayed_put_is_not_delivered_before_its_time(store):
    """put(delay_s=) hides the message until the delay passes; messages behind it are not
    held up; the delay does not count as a delivery."""
    q = store.queue("delayed")
    t0 = time.monotonic()
    q.put(b"later", delay_s=0.4)
    q.put(b"now")
    m = q.get(timeout=1)
    assert m.value == b"now"
    m.ack()
    assert q.get(timeout=0.1) is None
    m = q.get(timeout=3)
    assert m.value == b"later" and time.monotonic() - t0 >= 0.4
    assert m.delivery_count == 1
    assert int(m.headers[queue_mod.DELIVER_AT_MS]) <= streamlog._types.now_ms()
    m.ack()


def test_delay_does_not_use_up_max_deliver(store):
    """A delayed message on a max_deliver=1 queue is still delivered (not dead-lettered)."""
    q = store.queue("tight", max_deliver=1)
    q.put(b"x", delay_s=0.1)
    m = q.get(timeout=3)
    assert m is not None and m.value == b"x"
    m.ack()
    assert q.dead_letters().end_offset(0) == 0


def test_dead_letters_after_max_deliver(store):
    """After max_deliver nacks the message moves to <name>.dlq with its origin in headers."""
    q = store.queue("poison", max_deliver=2)
    q.put(b"bad")
    for _ in range(2):
        q.get(timeout=1).nack()
    assert q.get(timeout=0.2) is None
    dlq = q.dead_letters()
    assert dlq.name == "poison.dlq"
    (rec,) = list(dlq.read(0))
    assert rec.value == b"bad"
    assert any(b"poison" in v for v in rec.headers.values())
    assert q.lag() == 0


def test_topics_and_group_names_derive_from_the_queue_name(store):
    """queue "emails" is topic emails with shared group emails.queue."""
    store.queue("emails").put(b"x")
    assert "emails" in store.topics()
    assert "emails.queue" in store.existing_topic("emails").groups()


def test_names_are_validated(store):
    """Queue names follow topic names: bad ones raise ValueError, non-str TypeError."""
    for bad in ("", ".x", "a/b", "x" * 201):
        with pytest.raises(ValueError):
            store.queue(bad)
    with pytest.raises(TypeError):
        store.queue(b"emails")


def test_incompatible_existing_topic_or_group_is_a_config_mismatch(store):
    """A compacted topic, or a group emails.queue of another mode, refuses the queue view."""
    store.topic("compacted", compact=True)
    with pytest.raises(streamlog.ConfigMismatch):
        store.queue("compacted")
    store.topic("q2").group("q2.queue", mode="exclusive").close()
    with pytest.raises(streamlog.ConfigMismatch):
        store.queue("q2")


def test_bad_arguments_raise_before_writing(store):
    """A str value, a negative delay or a bad timeout raise before anything is appended."""
    q = store.queue("bad")
    with pytest.raises(TypeError):
        q.put("text")
    with pytest.raises(ValueError):
        q.put(b"x", delay_s=-1)
    with pytest.raises(TypeError):
        q.put(b"x", delay_s="1")
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    assert q.topic.end_offset(0) == 0


def test_threads_share_one_queue_handle_and_get_each_message_once(store):
    """4 threads calling get() on one handle consume 400 messages exactly once between them."""
    q = store.queue("shared")
    for i in range(400):
        q.put(b"%d" % i)
    got: list[bytes] = []
    lock = threading.Lock()

    def worker():
        while (m := q.get(timeout=0.2)) is not None:
            with lock:
                got.append(m.value)
            assert m.ack()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(b"%d" % i for i in range(400))


def test_close_releases_leases_at_once(store):
    """close() on a queue handle hands its unacked messages to other consumers at once."""
    q1 = store.queue("rel")
    q1.put(b"x")
    assert q1.get().value == b"x"
    q1.close()
    m = store.queue("rel").get(timeout=1)
    assert m is not None and m.value == b"x"


def test_an_ack_leases_the_next_message_which_close_hands_back_uncounted(store):
    """get + ack is one write transaction per message: the ack also leases the next
    message to the same consumer, which its next get returns; closing the handle hands
    a held message back without counting a delivery."""
    q = store.queue("jobs")
    for i in range(3):
        q.put(b"%d" % i)
    m = q.get(timeout=0)
    assert m.ack()
    other = store.queue("jobs")
    held = q._consumers.mine()._held[0]
    assert held.offset == 1
    got = other.get(timeout=0)  # the held message is leased: another consumer skips it
    assert got.offset == 2 and got.ack()
    q.close()
    again = other.get(timeout=0)
    assert (again.offset, again.delivery_count) == (1, 1)
    assert again.ack() and other.lag() == 0


def test_a_message_held_past_the_hold_limit_goes_back_uncounted(store, monkeypatch):
    """The next get hands out a held message only if the ack leased it recently (its
    lease is then nearly whole); otherwise it goes back, its delivery not counted, and
    the get polls afresh."""
    from streamlog.backends.local import groups

    q = store.queue("jobs")
    for i in range(2):
        q.put(b"%d" % i)
    assert q.get(timeout=0).ack()
    monkeypatch.setattr(groups, "GROUP_HOLD_MAX_MS", -1)  # every held message is stale
    m = q.get(timeout=0)
    assert (m.offset, m.delivery_count) == (1, 1)
    assert m.ack() and q.lag() == 0
