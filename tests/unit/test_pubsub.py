"""The pub-sub view: fan-out, durable named subscriptions, start, acks, listen timeout."""

from __future__ import annotations

import threading
import time

import pytest

import streamlog


def drain(sub, **kw):
    return [m.value for m in sub.listen(timeout=kw.pop("timeout", 0.1), **kw)]


def test_every_subscription_gets_every_message(store):
    """Two subscriptions each receive all published messages, in order."""
    ps = store.pubsub("prices")
    a = ps.subscribe("analytics")
    b = ps.subscribe("billing")
    for i in range(10):
        ps.publish(b"%d" % i)
    want = [b"%d" % i for i in range(10)]
    assert drain(a) == want
    assert drain(b) == want
    assert sorted(ps.subscriptions()) == ["analytics", "billing"]


def test_subscription_is_durable_and_resumes_by_name(tmp_path):
    """A subscription opened again by name (in a new store handle) resumes after the
    last acknowledged message."""
    with streamlog.open(tmp_path / "s") as log:
        ps = log.pubsub("prices")
        sub = ps.subscribe("analytics")
        for i in range(5):
            ps.publish(b"%d" % i)
        got = []
        for m in sub.listen(timeout=0.1):
            got.append(m.value)
            if len(got) == 3:
                break  # the 3rd is not acked: the loop never asked for the 4th
    with streamlog.open(tmp_path / "s") as log:
        sub = log.pubsub("prices").subscribe("analytics", start="latest")
        rest = drain(sub, timeout=0.3)
    assert got == [b"0", b"1", b"2"]
    # the broken-off 3rd comes back (its lease was released at close), then the rest
    assert rest == [b"2", b"3", b"4"]


def test_start_latest_is_fixed_at_subscribe(store):
    """start="latest" skips what was published before subscribe(), not what comes after
    it, even when nobody listens in between."""
    ps = store.pubsub("news")
    ps.publish(b"old")
    sub = ps.subscribe("fresh", start="latest")
    ps.publish(b"new1")
    ps.publish(b"new2")
    assert drain(sub) == [b"new1", b"new2"]
    assert drain(ps.subscribe("everything")) == [b"old", b"new1", b"new2"]


def test_auto_ack_acks_when_the_loop_asks_for_the_next(store):
    """With auto_ack the message in hand is unacked until the loop moves on."""
    ps = store.pubsub("t")
    sub = ps.subscribe("s")
    ps.publish(b"a")
    ps.publish(b"b")
    it = sub.listen(timeout=0.1)
    assert next(it).value == b"a"
    assert sub.lag() == 2
    assert next(it).value == b"b"
    assert sub.lag() == 1
    assert list(it) == []
    assert sub.lag() == 0


def test_manual_ack(store):
    """listen(auto_ack=False) leaves acks to the caller; unacked messages stay pending."""
    ps = store.pubsub("m")
    sub = ps.subscribe("s", ack_wait_s=0.3)
    for v in (b"a", b"b", b"c"):
        ps.publish(v)
    msgs = list(sub.listen(timeout=0.1, auto_ack=False))
    assert [m.value for m in msgs] == [b"a", b"b", b"c"]
    assert sub.lag() == 3
    assert msgs[0].ack() and msgs[2].ack()
    assert sub.lag() == 1
    again = []
    for m in sub.listen(timeout=0.6, auto_ack=False):
        again.append((m.value, m.delivery_count))
        assert m.ack()
    assert again == [(b"b", 2)]  # redelivered once its lease expired
    assert sub.lag() == 0


def test_listen_ends_after_timeout_without_messages(store):
    """listen(timeout) ends once ``timeout`` seconds pass with no message, counted from
    the last message."""
    ps = store.pubsub("quiet")
    sub = ps.subscribe("s")
    t0 = time.monotonic()
    assert drain(sub, timeout=0.15) == []
    assert time.monotonic() - t0 >= 0.15

    def later():
        time.sleep(0.1)
        ps.publish(b"x")

    t = threading.Thread(target=later)
    t.start()
    assert drain(sub, timeout=0.4) == [b"x"]
    t.join()


def test_listen_forever_gets_messages_published_later(store):
    """listen(timeout=None) keeps waiting across poll intervals for new messages."""
    ps = store.pubsub("forever")
    sub = ps.subscribe("s")

    def later():
        time.sleep(0.6)  # longer than one internal poll interval
        ps.publish(b"late")

    t = threading.Thread(target=later)
    t.start()
    for m in sub.listen(timeout=None):
        assert m.value == b"late"
        break
    t.join()


def test_consumers_of_one_subscription_share_its_messages(store):
    """Two handles on one subscription split its messages: each message goes to one."""
    ps = store.pubsub("work")
    s1 = ps.subscribe("workers")
    s2 = ps.subscribe("workers")
    for i in range(6):
        ps.publish(b"%d" % i)
    it1, it2 = s1.listen(timeout=0.1), s2.listen(timeout=0.1)
    got = [next(it1).value, next(it2).value]
    got += [m.value for m in it1] + [m.value for m in it2]
    assert sorted(got) == sorted(b"%d" % i for i in range(6))


def test_names_and_bad_arguments(store):
    """Bad pubsub/subscription names, starts and timeouts raise; too long derived names
    (the dead-letter topic <pubsub>.<subscription>.dlq) raise ValueError."""
    for bad in ("", "_x", "a b", "x" * 201):
        with pytest.raises(ValueError):
            store.pubsub(bad)
    ps = store.pubsub("p" * 150)
    with pytest.raises(ValueError):
        ps.subscribe("s" * 100)  # 150 + 1 + 100 + 4 > 249
    ps2 = store.pubsub("ok")
    with pytest.raises(ValueError):
        ps2.subscribe("s", start="middle")
    with pytest.raises(TypeError):
        ps2.subscribe("s", start=0)
    with pytest.raises(ValueError):
        ps2.subscribe("bad name")
    sub = ps2.subscribe("s")
    with pytest.raises(ValueError):
        sub.listen(timeout=-1)
    with pytest.raises(TypeError):
        ps2.publish("text")


def test_incompatible_topic_or_group_is_a_config_mismatch(store):
    """A pubsub view refuses a compacted topic; a subscription refuses a group of its name
    that exists in another mode."""
    store.topic("cmp", compact=True)
    with pytest.raises(streamlog.ConfigMismatch):
        store.pubsub("cmp")
    store.topic("ex").group("owner", mode="exclusive").close()
    with pytest.raises(streamlog.ConfigMismatch):
        store.pubsub("ex").subscribe("owner")


def test_unsubscribe_deletes_the_position(store):
    """unsubscribe() drops the subscription; subscribing again starts afresh."""
    ps = store.pubsub("u")
    sub = ps.subscribe("s")
    ps.publish(b"a")
    assert drain(sub) == [b"a"]
    sub.close()
    ps.unsubscribe("s")
    assert ps.subscriptions() == []
    assert drain(ps.subscribe("s")) == [b"a"]
