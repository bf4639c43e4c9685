"""Consumer groups through the public API, in one process: shared mode, leases, acks,
nacks, dead letters, seek, lag, pending, options and bad input."""

from __future__ import annotations

import time

import pytest

import streamlog
from streamlog import ConfigMismatch, Lease, Message, StoreClosed, StreamlogError


@pytest.fixture(autouse=True)
def _small_segments(monkeypatch):
    """Topics these tests create get 1 MiB segments: segments are preallocated, and the
    default 64 MiB per partition would dominate the run time of tests about groups."""
    monkeypatch.setattr(streamlog.backends.local.log, "DEFAULT_SEGMENT_BYTES", 1 << 20)


def fill(t, n, key=None):
    return [t.append(b"v%d" % i, key=key) for i in range(n)]


def test_new_group_gets_every_record_once_in_order(store):
    """A group's first polls hand out every record of a partition once, in offset order,
    with delivery_count 1 and the Record fields."""
    t = store.topic("orders")
    fill(t, 250)
    g = t.group("billing")
    got = []
    while True:
        msgs = g.poll(max_records=100, timeout=0)
        if not msgs:
            break
        assert len(msgs) <= 100
        got.extend(msgs)
        g.ack(msgs)
    assert [m.offset for m in got] == list(range(250))
    assert all(m.delivery_count == 1 for m in got)
    m = got[7]
    assert isinstance(m, Message)
    assert (m.topic, m.partition, m.value, m.key, m.headers) == ("orders", 0, b"v7", None, {})
    assert g.lag() == 0


def test_every_group_sees_every_record(store):
    """Two groups of one topic each receive all records (pub-sub between groups)."""
    t = store.topic("prices", partitions=3)
    fill(t, 30)
    seen = {}
    for name in ("a", "b"):
        g = t.group(name)
        msgs = g.poll(100, timeout=0)
        g.ack(msgs)
        seen[name] = sorted((m.partition, m.offset) for m in msgs)
    assert seen["a"] == seen["b"] and len(seen["a"]) == 30


def test_two_consumers_never_hold_the_same_record(store):
    """In a shared group two consumers polling in turn get disjoint records."""
    t = store.topic("jobs")
    fill(t, 100)
    a, b = t.group("w", consumer="a"), t.group("w", consumer="b")
    ma, mb = a.poll(30, timeout=0), b.poll(30, timeout=0)
    assert len(ma) == len(mb) == 30
    assert not {m.offset for m in ma} & {m.offset for m in mb}


def test_unacked_lease_expires_and_is_redelivered(store):
    """A lease not acked within ack_wait_s expires; the record comes back with
    delivery_count 2, and the first holder's late ack is refused once another took it."""
    t = store.topic("jobs")
    fill(t, 3)
    a = t.group("w", ack_wait_s=0.2, consumer="a")
    b = t.group("w", ack_wait_s=0.2, consumer="b")
    first = a.poll(10, timeout=0)
    assert len(first) == 3
    assert b.poll(10, timeout=0) == []
    again = b.poll(10, timeout=2.0)  # wakes when the leases come due
    assert [(m.offset, m.delivery_count) for m in again] == [(0, 2), (1, 2), (2, 2)]
    assert first[0].ack() is False
    assert again[0].ack() is True
    assert b.ack(again[1:]) == [True, True]
    assert b.lag() == 0


def test_expired_lease_not_taken_by_another_can_still_be_acked(store):
    """An expired lease that nobody took yet is still the holder's: its ack counts."""
    t = store.topic("jobs")
    fill(t, 1)
    g = t.group("w", ack_wait_s=0.1)
    (m,) = g.poll(1, timeout=0)
    time.sleep(0.15)
    assert m.ack() is True
    assert g.poll(1, timeout=0.2) == []


def test_second_ack_is_a_no_op(store):
    """Acking a message twice changes nothing and repeats the first answer."""
    t = store.topic("jobs")
    fill(t, 2)
    g = t.group("w")
    m, _ = g.poll(2, timeout=0)
    assert m.ack() is True
    assert m.ack() is True
    assert g.ack([m]) == [True]
    assert g.lag() == 1


def test_nack_redelivers_after_delay(store):
    """nack(delay_s) makes the record deliverable again only after the delay."""
    t = store.topic("jobs")
    fill(t, 1)
    g = t.group("w")
    (m,) = g.poll(1, timeout=0)
    t0 = time.monotonic()
    assert m.nack(delay_s=0.3) is True
    assert g.poll(1, timeout=0) == []
    (m2,) = g.poll(1, timeout=3)
    assert time.monotonic() - t0 >= 0.25
    assert (m2.offset, m2.delivery_count) == (0, 2)
    assert m.ack() is False  # settled by its nack


def test_nack_zero_delay_redelivers_at_once(store):
    """nack() without a delay hands the record back for the next poll."""
    t = store.topic("jobs")
    fill(t, 2)
    g = t.group("w")
    a, b = g.poll(2, timeout=0)
    a.nack()
    (again,) = g.poll(5, timeout=0)
    assert (again.offset, again.delivery_count) == (0, 2)


def test_backoff_delays_redeliveries_and_last_entry_repeats(store):
    """backoff_s gives the delays before the 2nd, 3rd, ... delivery; the last entry repeats."""
    t = store.topic("jobs")
    fill(t, 1)
    g = t.group("w", backoff_s=[0.1, 0.3], max_deliver=10)
    waits = []
    (m,) = g.poll(1, timeout=0)
    for _ in range(3):
        t0 = time.monotonic()
        m.nack()
        (m,) = g.poll(1, timeout=5)
        waits.append(time.monotonic() - t0)
    assert m.delivery_count == 4
    assert 0.08 <= waits[0] < 0.3
    assert waits[1] >= 0.28 and waits[2] >= 0.28


def test_in_progress_extends_the_lease(store):
    """in_progress() pushes the deadline back, so the record is not redelivered meanwhile."""
    t = store.topic("jobs")
    fill(t, 1)
    a = t.group("w", ack_wait_s=0.3, consumer="a")
    b = t.group("w", ack_wait_s=0.3, consumer="b")
    (m,) = a.poll(1, timeout=0)
    for _ in range(4):
        time.sleep(0.1)
        assert m.in_progress() is True
        assert b.poll(1, timeout=0) == []
    assert m.ack() is True


def test_max_deliver_sends_record_to_dead_letter_topic_with_origin(store):
    """After max_deliver deliveries a nacked record goes to "<topic>.<group>.dlq" with
    headers naming its origin and last error, and counts as done."""
    t = store.topic("orders")
    t.append(b"poison", key=b"k", headers={"h": "x"})
    t.append(b"fine")
    g = t.group("billing", max_deliver=3)
    for i in range(3):
        msgs = g.poll(1, timeout=0)
        assert [(m.value, m.delivery_count) for m in msgs] == [(b"poison", i + 1)]
        msgs[0].nack(error=f"boom {i}")
    (ok,) = g.poll(5, timeout=0)
    assert ok.value == b"fine"
    ok.ack()
    dlq = g.dead_letters()
    assert dlq.name == "orders.billing.dlq" and "orders.billing.dlq" in store.topics()
    (r,) = list(dlq.read(0))
    assert (r.value, r.key) == (b"poison", b"k")
    h = r.headers
    assert h["h"] == b"x"
    assert h["sl-dlq-topic"] == b"orders" and h["sl-dlq-group"] == b"billing"
    assert h["sl-dlq-partition"] == b"0" and h["sl-dlq-offset"] == b"0"
    assert h["sl-dlq-delivery-count"] == b"3" and h["sl-dlq-error"] == b"boom 2"
    assert g.lag() == 0
    stats = store.stats()["groups"]["orders"]["billing"]
    assert stats["dead_letters"] == 1 and stats["redeliveries"] == 2


def test_expired_leases_dead_letter_after_max_deliver(store):
    """Expiry counts as a failed delivery: the last one sends the record to the DLQ."""
    t = store.topic("orders")
    fill(t, 2)
    g = t.group("w", ack_wait_s=0.1, max_deliver=2, dead_letter="graveyard")
    assert len(g.poll(10, timeout=0)) == 2
    assert len(g.poll(10, timeout=2)) == 2
    time.sleep(0.15)
    assert g.poll(10, timeout=0.05) == []
    assert [r.value for r in store.topic("graveyard").read(0)] == [b"v0", b"v1"]
    assert g.lag() == 0


def test_reopen_with_same_consumer_name_gets_leases_back_at_once(store):
    """A consumer reopened under its name receives its pending leases at its first poll,
    without waiting for ack_wait_s."""
    t = store.topic("jobs")
    fill(t, 5)
    g = t.group("w", ack_wait_s=60, consumer="worker-1")
    assert len(g.poll(3, timeout=0)) == 3
    g2 = t.group("w", ack_wait_s=60, consumer="worker-1")
    msgs = g2.poll(10, timeout=0)
    assert [(m.offset, m.delivery_count) for m in msgs] == [
        (0, 2), (1, 2), (2, 2), (3, 1), (4, 1)]
    other = t.group("w", ack_wait_s=60)
    assert other.poll(10, timeout=0) == []


def test_close_releases_leases_at_once(store):
    """close() hands this consumer's leases to the others immediately."""
    t = store.topic("jobs")
    fill(t, 4)
    a = t.group("w", ack_wait_s=60)
    b = t.group("w", ack_wait_s=60)
    assert len(a.poll(10, timeout=0)) == 4
    assert b.poll(10, timeout=0) == []
    a.close()
    a.close()  # idempotent
    assert [m.offset for m in b.poll(10, timeout=0)] == [0, 1, 2, 3]
    with pytest.raises(StoreClosed):
        a.poll(1, timeout=0)


def test_state_survives_close_and_reopen_of_the_store(tmp_path):
    """Acks and committed offsets are durable: a reopened store resumes the group; the
    clean close handed the unacked lease back, so it is delivered again at once."""
    path = tmp_path / "s"
    with streamlog.open(path) as log:
        t = log.topic("jobs")
        fill(t, 10)
        g = t.group("w", ack_wait_s=60, consumer="c1")
        msgs = g.poll(6, timeout=0)
        g.ack([m for m in msgs if m.offset != 2])
    with streamlog.open(path) as log:
        t = log.topic("jobs")
        g = t.group("w", ack_wait_s=60, consumer="c2")
        assert g.lag() == 5
        assert g.pending() == []
        assert [(m.offset, m.delivery_count) for m in g.poll(10, timeout=0)] == [
            (2, 2), (6, 1), (7, 1), (8, 1), (9, 1)]


def test_leases_survive_a_store_that_was_not_closed(tmp_path):
    """Leases are durable state: a store abandoned without close (as after a crash) still
    holds them when reopened, until they expire or their consumer comes back."""
    path = tmp_path / "s"
    log = streamlog.open(path)
    t = log.topic("jobs")
    fill(t, 3)
    t.group("w", ack_wait_s=60, consumer="c1").poll(2, timeout=0)
    log._closers.clear()  # as if the process died here: no consumer is closed
    log.close()
    with streamlog.open(path) as log:
        g = log.topic("jobs").group("w", ack_wait_s=60, consumer="c2")
        assert [(x.consumer, x.offset) for x in g.pending()] == [("c1", 0), ("c1", 1)]
        assert [m.offset for m in g.poll(10, timeout=0)] == [2]


def test_lag_counts_unacked_records_per_partition(store):
    """lag() counts records not yet acked, per partition and in total."""
    t = store.topic("jobs", partitions=2)
    ka = b"a"
    kb = next(k for k in (b"b%d" % i for i in range(100))
              if t.append(b"probe", key=k).partition != t.append(b"probe", key=ka).partition)
    t = store.topic("jobs2", partitions=2)
    for i in range(10):
        t.append(b"x", key=ka if i < 4 else kb)
    g = t.group("w")
    pa = t.append(b"x", key=ka).partition
    assert g.lag() == 11
    assert g.lag(pa) == 5 and g.lag(1 - pa) == 6
    msgs = g.poll(100, timeout=0)
    g.ack([m for m in msgs if m.partition == pa])
    assert g.lag(pa) == 0 and g.lag() == 6


def test_lag_counts_only_what_retention_kept(store):
    """Records removed by retention count as done for lag and delivery."""
    t = store.topic("logs", segment_bytes=1024,
                    retention=streamlog.Retention(max_bytes=2048))
    g = t.group("w")
    for _ in range(200):
        t.append(b"x" * 40)
    start = t.start_offset(0)
    assert start > 0
    assert g.lag() == 200 - start
    msgs = g.poll(1000, timeout=0)
    assert msgs[0].offset == start


def test_pending_lists_leases(store):
    """pending() lists each leased record with consumer, deadline and delivery count."""
    t = store.topic("jobs")
    fill(t, 3)
    g = t.group("w", ack_wait_s=10, consumer="me")
    before = time.time()
    msgs = g.poll(2, timeout=0)
    leases = g.pending()
    assert [(x.consumer, x.partition, x.offset, x.delivery_count) for x in leases] == [
        ("me", 0, 0, 1), ("me", 0, 1, 1)]
    assert all(isinstance(x, Lease) and before + 9 < x.deadline < time.time() + 11
               for x in leases)
    msgs[0].ack()
    assert [x.offset for x in g.pending()] == [1]


def test_seek_back_redelivers_and_forward_skips(store):
    """seek: records before the offset count as done, records from it on are delivered
    again."""
    t = store.topic("jobs")
    fill(t, 10)
    g = t.group("w")
    g.ack(g.poll(10, timeout=0))
    g.seek(0, 4)
    assert g.lag() == 6
    assert [m.offset for m in g.poll(100, timeout=0)] == [4, 5, 6, 7, 8, 9]
    g.seek(0, 8)
    assert [m.offset for m in g.poll(100, timeout=0)] == [8, 9]
    g.seek(0, 1000)  # past the end: clamped to the end
    assert g.lag() == 0


def test_seek_to_time(store):
    """seek_to_time positions every partition at its first record at or after the time."""
    t = store.topic("jobs", partitions=2)
    for i in range(6):
        t.append(b"x", key=b"k%d" % (i % 2), timestamp_ms=1000 * (i + 1))
    g = t.group("w")
    g.ack(g.poll(100, timeout=0))
    g.seek_to_time(4000)
    got = sorted(m.timestamp_ms for m in g.poll(100, timeout=0))
    assert got == [4000, 5000, 6000]


def test_start_latest_skips_existing_records(store):
    """start="latest" fixes the start at the end when the group is created."""
    t = store.topic("jobs")
    fill(t, 5)
    g = t.group("late", start="latest")
    assert g.poll(10, timeout=0) == []
    t.append(b"new")
    assert [m.value for m in g.poll(10, timeout=0)] == [b"new"]


def test_options_are_stored_mode_mismatch_raises_others_update(store):
    """Reopening with another mode raises ConfigMismatch; other options replace the stored
    ones."""
    t = store.topic("jobs")
    t.group("w", mode="shared", ack_wait_s=5)
    with pytest.raises(ConfigMismatch):
        t.group("w", mode="exclusive", ack_wait_s=5)
    g = t.group("w", ack_wait_s=7, max_deliver=9, backoff_s=[1, 2])
    assert g.config["ack_wait_s"] == 7 and g.config["max_deliver"] == 9
    assert t.group("w", ack_wait_s=7).config["backoff_s"] is None


def test_groups_list_and_delete(store):
    """t.groups() lists groups; delete_group drops one (its handles then fail)."""
    t = store.topic("jobs")
    fill(t, 3)
    g = t.group("b")
    t.group("a")
    assert t.groups() == ["a", "b"]
    g.ack(g.poll(10, timeout=0))
    t.delete_group("b")
    t.delete_group("b")  # missing: nothing to do
    assert t.groups() == ["a"]
    with pytest.raises(StreamlogError):
        g.poll(1, timeout=0)
    assert len(t.group("b").poll(10, timeout=0)) == 3  # recreated from scratch


def test_deleting_the_topic_drops_its_groups(store):
    """delete_topic removes the topic's groups; a new topic of that name starts afresh."""
    t = store.topic("jobs")
    fill(t, 3)
    g = t.group("w")
    g.ack(g.poll(10, timeout=0))
    store.delete_topic("jobs")
    t = store.topic("jobs")
    assert t.groups() == []
    fill(t, 2)
    assert len(t.group("w").poll(10, timeout=0)) == 2


def test_stats_report_groups(store):
    """log.stats()["groups"][topic][group] has lag, pending, redeliveries, dead letters."""
    t = store.topic("jobs")
    fill(t, 4)
    g = t.group("w")
    msgs = g.poll(3, timeout=0)
    msgs[0].ack()
    s = store.stats()["groups"]["jobs"]["w"]
    assert (s["lag"], s["pending"], s["redeliveries"], s["dead_letters"]) == (3, 2, 0, 0)
    assert s["mode"] == "shared" and s["partitions"][0]["committed"] == 1


def test_poll_waits_then_returns_what_another_thread_appends(store):
    """A blocked poll returns when a record is appended, not at its (hour-long) timeout."""
    import threading

    t = store.topic("jobs")
    g = t.group("w")
    timer = threading.Timer(0.2, lambda: t.append(b"late"))
    timer.start()
    msgs = g.poll(1, timeout=3600)  # returns at the append: the test does not wait an hour
    assert [m.value for m in msgs] == [b"late"]
    timer.join()


def test_poll_timeout_returns_empty(store):
    """poll returns [] once its timeout passes with nothing to deliver."""
    g = store.topic("jobs").group("w")
    t0 = time.monotonic()
    assert g.poll(1, timeout=0.2) == []
    assert time.monotonic() - t0 >= 0.19


def test_closed_store_raises(tmp_path):
    """Every group call on a closed store raises StoreClosed."""
    log = streamlog.open(tmp_path / "s")
    g = log.topic("jobs").group("w")
    log.close()
    with pytest.raises(StoreClosed):
        g.poll(1, timeout=0)
    with pytest.raises(StoreClosed):
        g.lag()


@pytest.mark.parametrize("kwargs, exc", [
    ({"name": "bad name"}, ValueError),
    ({"name": ""}, ValueError),
    ({"name": "x" * 201}, ValueError),
    ({"name": 5}, TypeError),
    ({"mode": "fanout"}, ValueError),
    ({"mode": 1}, TypeError),
    ({"ack_wait_s": -1}, ValueError),
    ({"ack_wait_s": 0}, ValueError),
    ({"ack_wait_s": "5"}, TypeError),
    ({"ack_wait_s": float("nan")}, ValueError),
    ({"max_deliver": 0}, ValueError),
    ({"max_deliver": 1.5}, TypeError),
    ({"backoff_s": [-1]}, ValueError),
    ({"backoff_s": "1,2"}, TypeError),
    ({"backoff_s": [None]}, TypeError),
    ({"start": "middle"}, ValueError),
    ({"dead_letter": "no spaces"}, ValueError),
    ({"dead_letter": "jobs"}, ValueError),
    ({"consumer": "a b"}, ValueError),
])
def test_bad_group_options_raise_before_anything_is_stored(store, kwargs, exc):
    """Bad names, modes, durations and options raise TypeError/ValueError and create
    nothing."""
    t = store.topic("jobs")
    args = {"name": "g"} | kwargs
    name = args.pop("name")
    with pytest.raises(exc):
        t.group(name, **args)
    assert t.groups() == []


def test_long_default_dead_letter_name_needs_dead_letter(store):
    """A default dead-letter name over 249 characters is a ValueError naming dead_letter=."""
    t = store.topic("t" * 150)
    with pytest.raises(ValueError, match="dead_letter="):
        t.group("g" * 100)
    assert t.group("g" * 100, dead_letter="dlq").config["dead_letter"] == "dlq"


def test_derived_dead_letter_name_up_to_249_chars_works(store):
    """A default dead-letter name between 200 and 249 characters is usable."""
    t = store.topic("t" * 120)
    g = t.group("g" * 100, max_deliver=1)
    t.append(b"x")
    g.poll(1, timeout=0)[0].nack()
    assert [r.value for r in g.dead_letters().read(0)] == [b"x"]
    assert len(g.dead_letters().name) == 120 + 100 + 5


@pytest.mark.parametrize("call, exc", [
    (lambda g: g.poll(0), ValueError),
    (lambda g: g.poll(-1), ValueError),
    (lambda g: g.poll("1"), TypeError),
    (lambda g: g.poll(1, timeout=-1), ValueError),
    (lambda g: g.lag(5), ValueError),
    (lambda g: g.seek(0, -1), ValueError),
    (lambda g: g.seek(3, 0), ValueError),
    (lambda g: g.seek_to_time(-5), ValueError),
    (lambda g: g.ack([object()]), TypeError),
])
def test_bad_call_arguments(store, call, exc):
    """Bad arguments to poll/lag/seek/ack raise TypeError/ValueError."""
    g = store.topic("jobs").group("w")
    with pytest.raises(exc):
        call(g)


def test_nack_bad_arguments(store):
    """nack with a negative delay or a non-str error is refused."""
    t = store.topic("jobs")
    fill(t, 1)
    g = t.group("w")
    (m,) = g.poll(1, timeout=0)
    with pytest.raises(ValueError):
        m.nack(delay_s=-1)
    with pytest.raises(TypeError):
        m.nack(error=5)
    assert m.ack() is True


def test_message_from_another_handle_is_refused(store):
    """A message can only be settled by the handle that received it."""
    t = store.topic("jobs")
    fill(t, 1)
    a, b = t.group("w"), t.group("w")
    (m,) = a.poll(1, timeout=0)
    with pytest.raises(ValueError):
        b.ack([m])


def test_defer_hands_back_without_counting_the_delivery(store):
    """defer(delay_s) returns the record after the delay with the same delivery count and
    without using up max_deliver."""
    t = store.topic("jobs")
    fill(t, 1)
    g = t.group("w", max_deliver=1, backoff_s=[5])
    (m,) = g.poll(1, timeout=0)
    assert m.defer(0.1) is True
    assert m.ack() is False  # settled by the defer
    assert g.poll(1, timeout=0) == []
    (m2,) = g.poll(1, timeout=3)
    assert (m2.offset, m2.delivery_count) == (0, 1)
    assert m2.ack() is True
    assert list(g.dead_letters().read(0)) == []


@pytest.mark.parametrize("batch", ["fast", "slow"])
def test_settle_ends_alike_on_both_paths(store, batch):
    """A settle's answers are computed one of two ways (a whole batch that succeeded, or
    message by message); both end alike: a nack of a record's last delivery dead-letters
    it, a defer of a record's last delivery does not (the delivery is refunded, so the
    record comes back instead)."""
    from streamlog.backends.local.groups import _DEFER

    t = store.topic("jobs")
    fill(t, 4)
    g = t.group("w", max_deliver=1)
    m0, m1, m2, m3 = g.poll(4, timeout=0)
    assert m0.ack() is True
    # "slow": a message already settled in the batch takes the message-by-message path
    extra = [m0] if batch == "slow" else []
    assert g.nack(extra + [m1], error="boom")[-1] is True
    # defer has no batch form on the handle: drive the same settle a batch would
    assert g._settle(extra + [m2], _DEFER, 0.05)[-1] is True
    dead = list(g.dead_letters().read(0))
    assert [(d.value, d.headers["sl-dlq-error"]) for d in dead] == [(b"v1", b"boom")]
    again = g.poll(4, timeout=3)
    assert [(m.offset, m.delivery_count) for m in again] == [(2, 1)]
    assert m3.ack() is True and again[0].ack() is True
    assert len(list(g.dead_letters().read(0))) == 1


def test_pending_cap_bounds_leases_and_acks_make_room(store, monkeypatch):
    """No more than GROUP_MAX_PENDING_RECORDS records are out at once per partition; an
    ack makes room (and wakes a waiting poller)."""
    import threading

    from streamlog.backends.local import groups

    monkeypatch.setattr(groups, "GROUP_MAX_PENDING_RECORDS", 5)
    t = store.topic("jobs")
    fill(t, 20)
    a, b = t.group("w"), t.group("w")
    got = a.poll(100, timeout=0)
    assert len(got) == 5
    assert b.poll(100, timeout=0) == []
    timer = threading.Timer(0.2, lambda: a.ack(got[:2]))
    timer.start()
    more = b.poll(100, timeout=10)
    timer.join()
    assert [m.offset for m in more] == [5, 6]


def test_append_delayed_is_held_back_by_poll_until_due(store):
    """A record appended with append_delayed is readable at once, but no poll delivers it
    before its due time: a poll that draws it early hands it back (its delivery refunded)
    and keeps waiting within its timeout, then delivers it once due, as delivery 1."""
    from streamlog._types import now_ms

    t = store.topic("later")
    g = t.group("w", max_deliver=1)
    due = now_ms() + 300
    pos = t.append_delayed(b"x", due, key=b"k", headers={"h": b"1"})
    rec = t.get(*pos)
    assert rec.value == b"x" and rec.key == b"k" and rec.headers["h"] == b"1"
    assert int(rec.headers["streamlog.deliver-at-ms"]) == due
    assert g.poll(10, timeout=0) == []
    (m,) = g.poll(10, timeout=10)  # one call: it waits past the hand-back until due
    assert now_ms() >= due
    assert (m.offset, m.delivery_count) == (pos.offset, 1)
    assert m.ack() is True
    assert list(g.dead_letters().read(0)) == []
    assert g.lag() == 0


def test_poll_delivers_what_is_due_and_holds_back_the_rest(store):
    """In one poll, records without a due time (or past it) are delivered and an early
    one is held back; records behind it are not held up."""
    from streamlog._types import now_ms

    t = store.topic("mixed")
    t.append(b"a")
    t.append_delayed(b"b", now_ms() + 60_000)
    t.append_delayed(b"c", now_ms() - 1)
    t.append(b"d", headers={"streamlog.deliver-at-ms": b"not a number"})
    g = t.group("w")
    got = g.poll(10, timeout=0)
    assert [m.value for m in got] == [b"a", b"c", b"d"]
    g.ack(got)
    assert g.poll(10, timeout=0) == []
    assert g.lag() == 1
    # another consumer of the group does not get it either
    assert t.group("w").poll(10, timeout=0) == []


def test_append_delayed_refuses_bad_input_before_writing(store):
    """A non-int or negative due time, or headers that are not a mapping, raise before
    anything is appended."""
    t = store.topic("bad")
    with pytest.raises(TypeError):
        t.append_delayed(b"x", 1.5)
    with pytest.raises(TypeError):
        t.append_delayed(b"x", True)
    with pytest.raises(ValueError):
        t.append_delayed(b"x", -1)
    with pytest.raises(TypeError):
        t.append_delayed(b"x", 0, headers=[("a", b"b")])
    with pytest.raises(TypeError):
        t.append_delayed("x", 0)
    assert t.end_offset(0) == 0


def test_topic_watch_moves_on_append_and_wake(store):
    """Topic.watch(): seq() moves on an append and on wake(); wait() returns at once for
    an old seq and times out (False) when nothing moves it."""
    t = store.topic("w")
    w = t.watch()
    s0 = w.seq()
    assert w.wait(s0, 0.01) is False
    t.append(b"x")
    s1 = w.seq()
    assert s1 != s0 and w.wait(s0, 10) is True
    w.wake()
    assert w.seq() != s1


def test_group_config_reads_without_joining(store):
    """Topic.group_config(name): the stored options, None for a missing group; no
    consumer is registered by reading them."""
    t = store.topic("cfg")
    assert t.group_config("g") is None
    t.group("g", mode="key_shared", ack_wait_s=7).close()
    cfg = t.group_config("g")
    assert cfg["mode"] == "key_shared" and cfg["ack_wait_s"] == 7.0
    assert store.stats()["groups"]["cfg"]["g"]["consumers"] == 0
    store.close()
    with pytest.raises(StoreClosed):
        t.group_config("g")


@pytest.mark.parametrize("mode", ["key_shared", "exclusive"])
def test_a_delayed_record_keeps_its_order_in_ordered_modes(store, mode):
    """In key_shared (per key) and exclusive (per partition) groups nothing overtakes a
    delayed record: records behind it that the same poll drew are held back with it, and
    both come, in order, as delivery 1, once it is due; other keys are not held up."""
    from streamlog._types import now_ms

    t = store.topic("ordered")
    due = now_ms() + 300
    t.append_delayed(b"a1", due, key=b"a")
    t.append(b"a2", key=b"a")
    t.append(b"b1", key=b"b")
    g = t.group("w", mode=mode)
    first = g.poll(10, timeout=0)
    assert [m.value for m in first] == ([b"b1"] if mode == "key_shared" else [])
    g.ack(first)
    got = []
    while len(got) < 3 - len(first):
        got.extend(g.poll(10, timeout=10))
    assert now_ms() >= due
    assert [(m.value, m.delivery_count) for m in got][:2] == [(b"a1", 1), (b"a2", 1)]
