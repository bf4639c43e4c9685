"""Subjects: append(subject=) stores a header; groups and subscriptions with subjects= deliver
only matching records (NATS wildcards) and count the rest as done."""

from __future__ import annotations

import pytest

SUBJECTS = ["orders.eu.created", "orders.eu.paid", "orders.eu.de.created", "orders.us.created",
            "orders.us.west.paid", "orders", "billing.eu.created"]


def _fill(t):
    for i, s in enumerate(SUBJECTS):
        t.append(b"%d" % i, key=b"k%d" % i, subject=s)
    t.append(b"no-subject")


def _drain(g):
    out = []
    while True:
        msgs = g.poll(max_records=100, timeout=0.05)
        if not msgs:
            return out
        for m in msgs:
            out.append(m.headers.get("subject"))
            assert m.delivery_count == 1
            m.ack()


def test_subject_is_stored_as_a_header(store):
    t = store.topic("o")
    pos = t.append(b"v", subject="orders.eu.created", headers={"h": "1"})
    assert t.get(*pos).headers == {"h": b"1", "subject": b"orders.eu.created"}


@pytest.mark.parametrize("bad, exc", [
    ("", ValueError), ("orders..eu", ValueError), ("orders.*", ValueError),
    ("orders.>", ValueError), ("orders eu", ValueError), (".orders", ValueError),
    (b"orders", TypeError), (3, TypeError),
])
def test_bad_subject_refused_before_writing(store, bad, exc):
    t = store.topic("o")
    with pytest.raises(exc):
        t.append(b"v", subject=bad)
    assert t.end_offset(0) == 0


@pytest.mark.parametrize("mode", ["shared", "key_shared", "exclusive"])
@pytest.mark.parametrize("filters, expected", [
    (["orders.eu.*"], ["orders.eu.created", "orders.eu.paid"]),
    (["orders.>"], [s for s in SUBJECTS if s.startswith("orders.")]),
    (["*.eu.created"], ["orders.eu.created", "billing.eu.created"]),
    (["orders.eu.*", "orders.us.>"], ["orders.eu.created", "orders.eu.paid",
                                      "orders.us.created", "orders.us.west.paid"]),
    (["orders"], ["orders"]),
    ([">"], SUBJECTS),
])
def test_group_delivers_only_matching_records(store, mode, filters, expected):
    """Only matching records are handed out; the others (and records without a subject)
    count as done: the group's lag ends at 0."""
    t = store.topic("o", partitions=3)
    _fill(t)
    g = t.group("g", mode=mode, subjects=filters)
    got = _drain(g)
    assert sorted(s.decode() for s in got) == sorted(expected)
    assert g.lag() == 0
    assert t.group("all").lag() == len(SUBJECTS) + 1  # another group is not filtered


def test_filtered_records_never_reach_dead_letters(store):
    """A record the filter drops is done, not failed: with max_deliver=1 and a consumer that
    nacks everything it gets, only the matching record goes to the dead-letter topic."""
    t = store.topic("o")
    _fill(t)
    g = t.group("g", subjects=["billing.>"], max_deliver=1)
    for _ in range(5):
        for m in g.poll(timeout=0.05):
            m.nack()
    dl = [r.headers["subject"] for r in g.dead_letters().read(0)]
    assert dl == [b"billing.eu.created"] and g.lag() == 0


def test_filter_is_a_stored_option(store):
    """group_config shows the filter; opening the group with another replaces it, as other
    options do; subjects=None removes it."""
    t = store.topic("o")
    t.group("g", subjects=["b.*", "a.>", "b.*"]).close()
    assert t.group_config("g")["subjects"] == ["a.>", "b.*"]
    t.group("g", subjects=["c"]).close()
    assert t.group_config("g")["subjects"] == ["c"]
    t.group("g").close()
    assert t.group_config("g")["subjects"] is None


@pytest.mark.parametrize("bad, exc", [
    ("orders.*", TypeError), ([], ValueError), (["orders.>.x"], ValueError),
    (["or*ders"], ValueError), ([""], ValueError), ([1], TypeError), (["a..b"], ValueError),
])
def test_bad_filters_refused(store, bad, exc):
    t = store.topic("o")
    with pytest.raises(exc):
        t.group("g", subjects=bad)
    assert t.groups() == []


def test_pubsub_subscriptions_with_subjects(store):
    """Each subscription gets the messages its own filter matches."""
    ps = store.pubsub("events")
    for s in SUBJECTS:
        ps.publish(s.encode(), subject=s)
    eu = ps.subscribe("eu", subjects=["orders.eu.>"])
    paid = ps.subscribe("paid", subjects=["*.*.paid", "*.*.*.paid"])
    assert sorted(m.value for m in eu.listen(timeout=0.1)) == [
        b"orders.eu.created", b"orders.eu.de.created", b"orders.eu.paid"]
    assert sorted(m.value for m in paid.listen(timeout=0.1)) == [
        b"orders.eu.paid", b"orders.us.west.paid"]
    assert eu.lag() == 0 and paid.lag() == 0


def test_queue_put_with_subject_and_serializer(store):
    q = store.queue("jobs", serializer="json")
    q.put({"a": 1}, subject="jobs.email")
    m = q.get(timeout=1)
    assert m.value == {"a": 1} and m.headers["subject"] == b"jobs.email"
    m.ack()
    t = store.topic("jobs", serializer="json")
    g = t.group("mail", subjects=["jobs.*"])
    (m,) = g.poll(timeout=1)
    assert m.value == {"a": 1}


def test_one_at_a_time_consumer_respects_the_filter(store):
    """A consumer that settles one message before the next (the queue's pattern) still
    gets only matching records."""
    t = store.topic("o")
    _fill(t)
    g = t.group("g", subjects=["orders.us.>"])
    g.one_at_a_time()
    got = []
    while True:
        msgs = g.poll(max_records=1, timeout=0.05)
        if not msgs:
            break
        got.append(msgs[0].headers["subject"])
        msgs[0].ack()
    assert got == [b"orders.us.created", b"orders.us.west.paid"]


def test_small_polls_get_every_match_once(store):
    """Polls smaller than the matches in view hand each matching record out once, with
    delivery count 1 (those over a poll's room go back uncounted), in offset order."""
    t = store.topic("o")
    for i in range(300):
        t.append(b"%d" % i, subject="a.hit" if i % 7 == 0 else "a.miss")
    g = t.group("g", subjects=["*.hit"])
    got = []
    while True:
        msgs = g.poll(max_records=2, timeout=0.05)
        if not msgs:
            break
        assert len(msgs) <= 2
        for m in msgs:
            assert m.delivery_count == 1
            got.append(int(m.value))
            m.ack()
    assert got == [i for i in range(300) if i % 7 == 0]
    assert g.lag() == 0
