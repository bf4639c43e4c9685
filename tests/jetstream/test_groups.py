"""Consumer groups on JetStream against a real server: every group semantic of the
embedded store (shared, key_shared, exclusive; leases, redelivery, backoff, dead
letters, seek, start, lag, delayed records) and durability across connections."""

from __future__ import annotations

import threading
import time

import pytest

from streamlog.backends.jetstream import groups
from streamlog.errors import ConfigMismatch, StoreClosed, StreamlogError
from tests.jetstream.standin import StandInStore as _StandIn

try:  # the JetStream store, where this build has it; else the minimal stand-in topic
    from streamlog.backends.jetstream.log import open_store as _open_store
except ImportError:
    _open_store = None


def open_js_store(url: str, replicas: int = 1):
    """Open a store at ``url`` on the JetStream backend (or its stand-in)."""
    if _open_store is not None:
        return _open_store(url, replicas=replicas)
    return _StandIn(url, replicas=replicas)


@pytest.fixture
def stores(js_url):
    opened = []

    def open_store():
        s = open_js_store(js_url)
        opened.append(s)
        return s

    yield open_store
    for s in opened:
        s.close()


@pytest.fixture
def store(stores):
    return stores()


def drain(g, n=100, timeout=0.0):
    out = []
    while ms := g.poll(n, timeout=timeout):
        out.extend(ms)
    return out


def info(t, name, p=0):
    cfg = t.group_config(name)
    assert cfg is not None
    conn = t._conn
    gen = conn.run(groups._kv(t).get(groups._base(t.name, name) + ".cfg"))[0]["parts"][p][0]
    return conn.run(conn.consumer_info(t.stream_name(p), groups.consumer_name(name, gen)))


# ------------------------------------------------------------------ shared
def test_each_record_to_one_consumer_and_lag(store):
    t = store.topic("work", partitions=3)
    for i in range(30):
        t.append(b"%d" % i)
    a, b = t.group("g", consumer="a"), t.group("g", consumer="b")
    assert a.lag() == 30
    got = []
    while ms := a.poll(4, timeout=0) + b.poll(3, timeout=0):
        assert len(ms) <= 7
        for m in ms:
            got.append(m.value)
            assert m.delivery_count == 1 and m.ack()
    assert sorted(got) == sorted(b"%d" % i for i in range(30))
    assert a.lag() == 0 and b.lag(0) == 0


def test_poll_waits_for_an_append_on_any_partition(store):
    t = store.topic("wait", partitions=2)
    g = t.group("g")
    assert g.poll(10, timeout=0) == []
    threading.Timer(0.1, lambda: t.append(b"late", key=b"k")).start()
    ms = g.poll(10, timeout=5)
    assert [m.value for m in ms] == [b"late"]


def test_poll_never_returns_more_than_asked(store):
    t = store.topic("room", partitions=3)
    g = t.group("g")
    barrier = threading.Barrier(2)

    def burst():
        barrier.wait()
        for i in range(3):
            t.append(b"%d" % i)  # round robin: one per partition

    threading.Thread(target=burst).start()
    barrier.wait()
    got = []
    while len(got) < 3:
        ms = g.poll(1, timeout=5)
        assert len(ms) == 1
        got.append(ms[0])
    # a record handed back for lack of room did not use a delivery
    assert all(m.delivery_count == 1 for m in got)
    assert sorted(m.value for m in got) == [b"0", b"1", b"2"]


def test_lease_expiry_redelivers_and_the_stale_ack_is_refused(store):
    t = store.topic("lease")
    t.append(b"x")
    g = t.group("g", ack_wait_s=0.2)
    (m,) = g.poll(1, timeout=0)
    other = t.group("g", ack_wait_s=0.2)
    (m2,) = other.poll(1, timeout=3)
    assert (m2.offset, m2.delivery_count) == (0, 2)
    assert m.ack() is False
    assert m2.ack() is True
    assert other.lag() == 0
    assert drain(g) == []


def test_nack_waits_for_the_delay_and_the_backoff(store):
    t = store.topic("nk")
    t.append(b"x")
    g = t.group("g", backoff_s=[0.4, 0.0])
    (m,) = g.poll(1, timeout=0)
    t0 = time.monotonic()
    assert m.nack()  # backoff of delivery 1: 0.4 s
    assert g.poll(1, timeout=0.1) == []
    (m,) = g.poll(1, timeout=3)
    assert time.monotonic() - t0 >= 0.4 and m.delivery_count == 2
    assert m.nack()  # backoff of delivery 2: none, so at once
    (m,) = g.poll(1, timeout=3)
    assert m.delivery_count == 3
    assert m.nack(delay_s=0.3)  # an explicit delay longer than the backoff
    t0 = time.monotonic()
    (m,) = g.poll(1, timeout=3)
    assert m.delivery_count == 4 and time.monotonic() - t0 >= 0.25
    assert m.ack()


def test_an_expired_lease_comes_back_after_ack_wait_plus_backoff(store):
    t = store.topic("bo")
    t.append(b"x")
    g = t.group("g", ack_wait_s=0.2, backoff_s=[0.5])
    (m,) = g.poll(1, timeout=0)
    t0 = time.monotonic()
    # Past the lease but inside the backoff nobody can take it: the holder's ack counts.
    assert g.poll(1, timeout=0.3) == []
    (m2,) = g.poll(1, timeout=3)
    assert time.monotonic() - t0 >= 0.7 and m2.delivery_count == 2
    assert m.ack() is False and m2.ack() is True


def test_an_ack_after_the_lease_but_before_the_backoff_ends_counts(store):
    t = store.topic("bo2")
    t.append(b"x")
    g = t.group("g", ack_wait_s=0.1, backoff_s=[2.0])
    (m,) = g.poll(1, timeout=0)
    time.sleep(0.3)  # the lease (0.1 s) is over, the backoff (2 s) is not
    assert m.ack() is True
    assert g.lag() == 0


def test_in_progress_extends_the_lease(store):
    t = store.topic("ip")
    t.append(b"x")
    g = t.group("g", ack_wait_s=1.0)
    (m,) = g.poll(1, timeout=0)
    other = t.group("g", ack_wait_s=1.0)
    for _ in range(4):  # 4 x 0.3 s: past the first lease
        assert other.poll(1, timeout=0.3) == []
        assert m.in_progress()
    assert m.ack()
    assert other.poll(1, timeout=1.2) == []


def test_max_deliver_dead_letters_with_the_origin_headers(store):
    t = store.topic("dl")
    t.append(b"poison", key=b"k", headers={"trace": b"t1"})
    t.append(b"fine")
    g = t.group("g", max_deliver=2, dead_letter="dl.dead")
    for n in (1, 2):
        ms = g.poll(10, timeout=1)
        poison = [m for m in ms if m.value == b"poison"]
        for m in ms:
            if m.value == b"fine":
                m.ack()
        assert poison[0].delivery_count == n
        assert poison[0].nack(error="bad data")
    assert g.poll(1, timeout=0.2) == []
    (dead,) = list(g.dead_letters().read(0))
    assert (dead.value, dead.key) == (b"poison", b"k")
    h = dead.headers
    assert h["trace"] == b"t1"
    assert h["sl-dlq-topic"] == b"dl" and h["sl-dlq-partition"] == b"0"
    assert h["sl-dlq-offset"] == b"0" and h["sl-dlq-group"] == b"g"
    assert h["sl-dlq-delivery-count"] == b"2" and h["sl-dlq-error"] == b"bad data"
    assert int(h["sl-dlq-timestamp-ms"]) > 0
    assert g.lag() == 0


def test_expired_deliveries_dead_letter_with_an_error_given_before_a_restart(stores):
    s1 = stores()
    t = s1.topic("dlx")
    t.append(b"poison")
    g = t.group("g", max_deliver=2, ack_wait_s=0.2)
    (m,) = g.poll(1, timeout=0)
    assert m.nack(error="first failure")
    s1.close()
    # A new connection: the error text lives on the server.
    t = stores().existing_topic("dlx")
    g = t.group("g", max_deliver=2, ack_wait_s=0.2)
    (m,) = g.poll(1, timeout=2)
    assert m.delivery_count == 2  # then its lease runs out: the last delivery is used
    assert g.poll(1, timeout=1.0) == []
    (dead,) = list(g.dead_letters().read(0))
    assert dead.headers["sl-dlq-error"] == b"first failure"
    assert dead.headers["sl-dlq-delivery-count"] == b"2"
    assert g.lag() == 0


def test_a_new_connection_continues_where_the_old_one_stopped(stores):
    s1 = stores()
    t = s1.topic("pos", partitions=2)
    for i in range(6):
        t.append(b"%d" % i, key=b"k%d" % i)
    g = t.group("g", ack_wait_s=0.3)
    first = g.poll(2, timeout=0)
    first[0].ack()
    held = first[1]  # leased, never settled: the process "dies" (no close of the group)
    s1._closers.clear()
    s1.close()
    t = stores().existing_topic("pos")
    g = t.group("g", ack_wait_s=0.3)
    assert g.lag() == 5
    got = {}
    while len(got) < 5:
        ms = g.poll(10, timeout=2)
        assert ms
        for m in ms:
            got[m.value] = m.delivery_count
            assert m.ack()
    assert sorted(got) == sorted({b"%d" % i for i in range(6)} - {first[0].value})
    assert got[held.value] == 2 and sum(got.values()) == 6
    assert g.lag() == 0


def test_start_latest_and_seek(store):
    t = store.topic("st")
    t.append(b"old")
    g = t.group("g", start="latest")
    t.append(b"new")
    (m,) = g.poll(10, timeout=0)
    assert m.value == b"new"
    g.seek(0, 0)
    assert m.ack() is False  # the seek dropped the lease
    ms = g.poll(10, timeout=0)
    assert [(m.value, m.delivery_count) for m in ms] == [(b"old", 1), (b"new", 1)]
    assert g.ack(ms) == [True, True]
    g.seek(0, 99)  # clamped to the end
    assert g.lag() == 0 and g.poll(10, timeout=0) == []


def test_a_seek_by_another_handle_voids_this_ones_leases(store):
    t = store.topic("sk")
    t.append_many([b"a", b"b"])
    g = t.group("g")
    ms = g.poll(10, timeout=0)
    t.group("g").seek(0, 1)
    assert ms[1].ack() is False
    (m,) = g.poll(10, timeout=1)
    assert m.value == b"b" and m.ack()


def test_seek_to_time(store):
    t = store.topic("tm")
    t.append(b"a", timestamp_ms=1_000)
    t.append(b"b", timestamp_ms=2_000)
    t.append(b"c", timestamp_ms=3_000)
    g = t.group("g")
    g.ack(drain(g))
    g.seek_to_time(2_000)
    assert [m.value for m in drain(g)] == [b"b", b"c"]


def test_group_config_listing_mismatch_and_delete(store):
    t = store.topic("gc")
    assert t.group_config("g") is None and t.groups() == []
    t.group("g", mode="key_shared", ack_wait_s=7, backoff_s=[1, 2]).close()
    t.group("h").close()
    cfg = t.group_config("g")
    assert cfg["mode"] == "key_shared" and cfg["ack_wait_s"] == 7 and cfg["backoff_s"] == [1, 2]
    assert t.groups() == ["g", "h"]
    with pytest.raises(ConfigMismatch):
        t.group("g", mode="shared")
    # other options replace the stored ones, on the server's consumers too
    t.group("g", mode="key_shared", ack_wait_s=3).close()
    assert t.group_config("g")["ack_wait_s"] == 3
    st = info(t, "g")
    assert st.config["ack_wait"] == 3 * 10**9 and "backoff" not in st.config
    assert st.config["max_ack_pending"] == 5_000 and st.config["max_waiting"] == 4096
    assert info(t, "h").config["max_ack_pending"] == 20_000
    live = t.group("h")
    t.delete_group("g")
    t.delete_group("h")
    t.delete_group("never")
    assert t.groups() == [] and t.group_config("g") is None
    with pytest.raises(StreamlogError):
        live.poll(1, timeout=0)


def test_bad_options_are_refused_before_anything_is_created(store):
    t = store.topic("bad")
    with pytest.raises(ValueError):
        t.group("g", mode="fanout")
    with pytest.raises(ValueError):
        t.group("g", ack_wait_s=0)
    with pytest.raises(ValueError):
        t.group("g", start="middle")
    with pytest.raises(ValueError):
        t.group("g", dead_letter="bad")
    with pytest.raises(TypeError):
        t.group("g", backoff_s="1")
    assert t.groups() == []


def test_close_hands_leases_to_others_at_once(store):
    t = store.topic("cl")
    t.append(b"x")
    a = t.group("g", ack_wait_s=60)
    (held,) = a.poll(1, timeout=0)
    assert [le.offset for le in a.pending()] == [0]
    a.close()
    b = t.group("g", ack_wait_s=60)
    (m,) = b.poll(1, timeout=2)
    assert m.value == b"x" and m.delivery_count == 2
    assert held.ack() is False
    with pytest.raises(StoreClosed):
        a.poll(1, timeout=0)


def test_pending_lists_only_this_handles_leases(store):
    """JetStream does not list a consumer's leased messages: ``pending()`` shows the
    leases of this handle only (other consumers' leases count in ``lag()``)."""
    t = store.topic("pd")
    t.append_many([b"a", b"b"])
    a, b = t.group("g", consumer="a", ack_wait_s=30), t.group("g", consumer="b")
    (ma,) = a.poll(1, timeout=0)
    (mb,) = b.poll(1, timeout=0)
    (lease,) = a.pending()
    assert (lease.consumer, lease.partition, lease.offset, lease.delivery_count) == \
        ("a", 0, ma.offset, 1)
    assert 25 < lease.deadline - time.time() <= 30
    assert [le.offset for le in b.pending()] == [mb.offset]
    assert a.lag() == 2


def test_a_closed_store_refuses(stores):
    s = stores()
    t = s.topic("cs")
    t.append(b"x")
    g = t.group("g")
    (m,) = g.poll(1, timeout=0)
    s.close()
    with pytest.raises(StoreClosed):
        m.ack()
    with pytest.raises(StoreClosed):
        g.poll(1, timeout=0)


# ------------------------------------------------------------- delayed records
def test_a_delayed_record_waits_without_using_a_delivery(store):
    t = store.topic("later")
    due = int(time.time() * 1000) + 1500
    t.append_delayed(b"later", due, headers={"h": b"v"})
    t.append(b"now")
    assert [r.value for r in t.read(0)] == [b"later", b"now"]  # readers see both
    g = t.group("g", max_deliver=1)
    first = g.poll(10, timeout=0.1)
    assert [m.value for m in first] == [b"now"]
    first[0].ack()
    (m,) = g.poll(10, timeout=5)
    assert m.value == b"later" and m.delivery_count == 1 and m.headers["h"] == b"v"
    assert int(time.time() * 1000) >= due
    # the server did deliver it once before its time: that delivery was not counted
    assert info(t, "g").num_redelivered >= 1
    m.ack()
    assert g.lag() == 0
    assert list(g.dead_letters().read(0)) == []


def test_a_deferred_record_still_dead_letters_after_max_deliver(store):
    t = store.topic("later2")
    t.append_delayed(b"later", int(time.time() * 1000) + 1000)
    g = t.group("g", max_deliver=2)
    assert g.poll(1, timeout=0) == []
    counts = []
    for _ in range(2):
        (m,) = g.poll(1, timeout=3)
        counts.append(m.delivery_count)
        m.nack()
    assert counts == [1, 2]
    (dead,) = list(g.dead_letters().read(0))
    assert dead.headers["sl-dlq-delivery-count"] == b"2"


def test_defer_hands_back_without_counting(store):
    t = store.topic("df")
    t.append(b"x")
    g = t.group("g", max_deliver=1)
    (m,) = g.poll(1, timeout=0)
    assert m.defer(1.0)
    assert g.poll(1, timeout=0) == []
    (m,) = g.poll(1, timeout=3)
    assert m.delivery_count == 1 and m.ack()


# -------------------------------------------------------------- key_shared
def test_key_shared_no_key_held_by_two_consumers(store):
    t = store.topic("ks")
    for i in range(6):
        t.append(b"%d" % i, key=b"A" if i % 2 == 0 else b"B")
    a = t.group("g", mode="key_shared", consumer="a")
    b = t.group("g", mode="key_shared", consumer="b")
    (ma,) = a.poll(1, timeout=0)
    assert ma.key == b"A"
    mb = b.poll(10, timeout=0)
    assert [(m.key, m.offset) for m in mb] == [(b"B", 1), (b"B", 3), (b"B", 5)]
    assert b.ack(mb) == [True] * 3
    ma2 = a.poll(10, timeout=0.5)
    assert [(m.key, m.offset, m.delivery_count) for m in ma2] == [(b"A", 2, 1), (b"A", 4, 1)]
    assert ma.ack() and a.ack(ma2) == [True, True]
    assert a.lag() == 0


def test_key_shared_redelivery_keeps_key_order(store):
    t = store.topic("ko")
    for i in range(3):
        t.append(b"%d" % i, key=b"A")
    t.append(b"free")
    a = t.group("g", mode="key_shared")
    (first,) = a.poll(1, timeout=0)
    assert first.nack(delay_s=1.0)
    b = t.group("g", mode="key_shared")
    # keyless records go to anyone; A's later records wait for offset 0
    assert [m.value for m in b.poll(10, timeout=0)] == [b"free"]
    again = []
    deadline = time.monotonic() + 5
    while len(again) < 3 and time.monotonic() < deadline:
        again += b.poll(10, timeout=1)
    assert [(m.offset, m.delivery_count) for m in again] == [(0, 2), (1, 1), (2, 1)]


def test_key_shared_a_closed_consumers_keys_go_to_others(store):
    t = store.topic("kc")
    t.append_many([b"0", b"1"], keys=[b"A", b"A"])
    a = t.group("g", mode="key_shared", ack_wait_s=60)
    assert [m.offset for m in a.poll(1, timeout=0)] == [0]
    b = t.group("g", mode="key_shared", ack_wait_s=60)
    assert b.poll(10, timeout=0) == []
    a.close()
    got = []
    while len(got) < 2:
        got += b.poll(10, timeout=2)
    assert [(m.offset, m.delivery_count) for m in got] == [(0, 2), (1, 1)]


# --------------------------------------------------------------- exclusive
def test_exclusive_one_active_consumer_takeover_and_stale_ack(store):
    t = store.topic("ex")
    t.append_many([b"0", b"1", b"2"])
    a = t.group("g", mode="exclusive", consumer="a", ack_wait_s=1.0)
    got = a.poll(2, timeout=0)
    assert [m.value for m in got] == [b"0", b"1"]
    assert got[0].ack()
    b = t.group("g", mode="exclusive", consumer="b", ack_wait_s=1.0)
    assert b.poll(10, timeout=0) == []  # a is active
    taken = b.poll(10, timeout=5)  # a went silent and its leases ran out: b takes over
    assert [(m.value, m.delivery_count) for m in taken] == [(b"1", 2), (b"2", 1)]
    assert got[1].ack() is False  # the old owner's ack is refused by streamlog
    assert b.ack(taken) == [True, True]
    assert b.lag() == 0


def test_exclusive_stale_ack_refused_even_inside_the_old_lease(store):
    """The server does not fence a pinned consumer's acks; streamlog refuses an ack
    from a consumer that no longer owns the partition, whatever its lease says."""
    t = store.topic("ex2")
    t.append(b"0")
    a = t.group("g", mode="exclusive", consumer="a", ack_wait_s=30)
    (m,) = a.poll(1, timeout=0)
    a.close()  # hands the partition over
    b = t.group("g", mode="exclusive", consumer="b", ack_wait_s=30)
    (m2,) = b.poll(1, timeout=2)
    assert m2.offset == 0
    with pytest.raises(StoreClosed):
        a.poll(1, timeout=0)
    assert m.ack() is False


def test_exclusive_partitions_are_shared_out_among_live_consumers(store):
    t = store.topic("ex3", partitions=2)
    for i in range(8):
        t.append(b"%d" % i)  # round robin
    a = t.group("g", mode="exclusive", consumer="a", ack_wait_s=0.4)
    assert a.poll(1, timeout=0)[0].ack()  # a owns both partitions while alone
    b = t.group("g", mode="exclusive", consumer="b", ack_wait_s=0.4)
    deadline = time.monotonic() + 5
    while not (ms := b.poll(1, timeout=0.05)):  # b gets its share once a lets go of it
        a.ack(a.poll(1, timeout=0.05))
        assert time.monotonic() < deadline
    b.ack(ms)
    for i in range(8):
        t.append(b"%d" % i)
    seen: dict[str, set] = {"a": set(), "b": set()}
    for _ in range(40):
        for name, g in (("a", a), ("b", b)):
            for m in g.poll(1, timeout=0.02):
                seen[name].add(m.partition)
                assert m.ack()
    assert seen["a"] and seen["b"] and not (seen["a"] & seen["b"])
    assert a.lag() == 0


def test_exclusive_delivers_in_offset_order(store):
    t = store.topic("ex4")
    t.append_many([b"%d" % i for i in range(20)])
    g = t.group("g", mode="exclusive")
    offsets = []
    while ms := g.poll(7, timeout=0):
        offsets += [m.offset for m in ms]
        g.ack(ms)
    assert offsets == list(range(20))


def test_exclusive_nack_restarts_the_partition_at_that_record(store):
    t = store.topic("ex5")
    t.append_many([b"0", b"1", b"2"])
    g = t.group("g", mode="exclusive")
    ms = g.poll(10, timeout=0)
    assert [m.offset for m in ms] == [0, 1, 2]
    assert ms[0].nack()
    assert ms[1].ack() is False  # handed back with the record before it
    again = g.poll(10, timeout=2)
    assert [(m.offset, m.delivery_count) for m in again] == [(0, 2), (1, 1), (2, 1)]
    assert again[0].nack(delay_s=1.0)
    t.append(b"3")
    assert g.poll(10, timeout=0.1) == []  # nothing overtakes the record waiting
    later = []
    while len(later) < 4:
        later += g.poll(10, timeout=2)
    assert [(m.offset, m.delivery_count) for m in later] == [(0, 3), (1, 1), (2, 1), (3, 1)]
    assert g.ack(later) == [True] * 4
    assert g.lag() == 0


# ------------------------------------------- where JetStream differs (docs/backends.md)
def test_an_ack_after_the_lease_ran_out_is_refused_even_if_nobody_took_the_record(store):
    """The embedded store accepts a late ack until another consumer takes the record;
    JetStream may already have redelivered it, which a client cannot see, so the ack is
    refused once the lease (and its backoff) ran out, and the record comes again."""
    t = store.topic("late")
    t.append(b"x")
    g = t.group("g", ack_wait_s=0.1)
    (m,) = g.poll(1, timeout=0)
    time.sleep(0.3)  # the lease runs out with nobody polling
    assert m.ack() is False
    (again,) = g.poll(1, timeout=2)
    assert again.delivery_count == 2 and again.ack()


def test_a_restarted_named_consumer_gets_its_leases_back_only_when_they_expire(stores):
    """The embedded store hands a named consumer's live leases back to it at once
    when it comes back; JetStream's leases belong to no consumer name, so they come
    back when they expire, to whichever consumer polls."""
    s1 = stores()
    t = s1.topic("rn")
    t.append(b"x")
    g = t.group("g", consumer="worker-1", ack_wait_s=0.5)
    (m,) = g.poll(1, timeout=0)
    s1._closers.clear()  # the process dies: the lease is not handed back
    s1.close()
    t = stores().existing_topic("rn")
    g = t.group("g", consumer="worker-1", ack_wait_s=0.5)
    assert g.poll(1, timeout=0) == []
    (again,) = g.poll(1, timeout=3)
    assert (again.offset, again.delivery_count) == (0, 2)


def test_backoff_after_an_expired_lease_runs_from_when_the_record_is_next_drawn(store):
    """After a lease expires, the embedded store makes the record deliverable at
    expiry + backoff; on JetStream the server redelivers at expiry and the consumer
    that draws it holds it back for the backoff from then, so with nobody polling in
    between the record comes later than on the embedded store, never earlier."""
    t = store.topic("bx")
    t.append(b"x")
    g = t.group("g", ack_wait_s=0.1, backoff_s=[0.3])
    (m,) = g.poll(1, timeout=0)
    time.sleep(0.6)  # expiry (0.1) + backoff (0.3) have passed, nobody polled
    assert g.poll(1, timeout=0) == []  # the embedded store would deliver it now
    t0 = time.monotonic()
    (again,) = g.poll(1, timeout=3)
    assert again.delivery_count == 2 and time.monotonic() - t0 >= 0.25
    assert again.ack()


# ---------------------------------------------------- concurrency and restarts
def test_threads_of_a_key_shared_group_never_hold_one_key_at_once(store):
    t = store.topic("kt", partitions=2)
    keys = [b"k%d" % (i % 5) for i in range(200)]
    t.append_many([b"%d" % i for i in range(200)], keys=keys)
    lock = threading.Lock()
    holders: dict[bytes, str] = {}
    seen: dict[bytes, list[int]] = {}
    errors: list[str] = []
    barrier = threading.Barrier(3)

    def work(name: str) -> None:
        g = t.group("g", mode="key_shared", consumer=name)
        barrier.wait()
        idle = 0
        while idle < 10:
            ms = g.poll(7, timeout=0.05)
            if not ms:
                idle += 1
                continue
            idle = 0
            mine = {m.key for m in ms}
            with lock:
                for k in mine:
                    if holders.setdefault(k, name) != name:
                        errors.append(f"{k!r} held by {holders[k]} and {name}")
                for m in ms:
                    seen.setdefault(m.key, []).append(int(m.value))
            with lock:
                for k in mine:
                    holders.pop(k, None)
            assert g.ack(ms) == [True] * len(ms)
        g.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b", "c")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    for k, values in seen.items():
        assert values == sorted(values) == [i for i in range(200) if keys[i] == k]


def _consume(url: str, out, barrier) -> None:
    s = open_js_store(url)
    g = s.existing_topic("mp").group("g")
    barrier.wait()
    got = []
    idle = 0
    while idle < 20:
        ms = g.poll(10, timeout=0.05)
        idle = 0 if ms else idle + 1
        got += [m.value for m in ms]
        g.ack(ms)
    out.put(got)
    s.close()


def test_processes_share_a_group_each_record_once(store, js_url):
    import multiprocessing

    t = store.topic("mp", partitions=3)
    t.append_many([b"%d" % i for i in range(300)])
    t.group("g").close()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_consume, args=(js_url, out, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [out.get(timeout=60), out.get(timeout=60)]
    for p in procs:
        p.join(10)
    assert sorted(got[0] + got[1]) == sorted(b"%d" % i for i in range(300))
    assert t.group("g").lag() == 0


def test_a_server_restart_under_a_running_consumer_loses_nothing(tmp_path):
    """A clean restart (SIGTERM) of the server: the running consumer reconnects and
    continues with its acks, redelivery counts and nack error kept."""
    from streamlog.backends.jetstream.server import NatsServer

    server = NatsServer.start_single(tmp_path / "nats")
    try:
        s = open_js_store(f"{server.client_url}/rs")
        t = s.topic("r")
        t.append_many([b"%d" % i for i in range(4)])
        g = t.group("g", ack_wait_s=0.5, max_deliver=2)
        ms = g.poll(2, timeout=0)
        assert ms[0].ack() and ms[1].nack(error="before the restart")
        server.restart()
        got = {}
        deadline = time.monotonic() + 30
        while len(got) < 3 and time.monotonic() < deadline:
            try:
                batch = g.poll(10, timeout=1)
            except (TimeoutError, StreamlogError):
                continue  # the client is reconnecting
            for m in batch:
                got[m.value] = m.delivery_count
                if m.value != b"1":
                    assert m.ack()
        assert got == {b"1": 2, b"2": 1, b"3": 1}
        # b"1" used its last delivery: it dead-letters with the error given before
        deadline = time.monotonic() + 10
        while g.lag() and time.monotonic() < deadline:
            g.poll(1, timeout=0.5)
        (dead,) = list(g.dead_letters().read(0))
        assert dead.headers["sl-dlq-error"] == b"before the restart"
        s.close()
    finally:
        server.stop()


def test_a_killed_server_redelivers_rather_than_loses(tmp_path):
    """SIGKILL of a single node: the server writes a consumer's acks to disk lazily, so
    a recent ack may be lost and its record delivered again (at least once); no record
    is lost and every one is acked in the end."""
    from streamlog.backends.jetstream.server import NatsServer

    server = NatsServer.start_single(tmp_path / "nats")
    try:
        s = open_js_store(f"{server.client_url}/rk")
        t = s.topic("r")
        t.append_many([b"%d" % i for i in range(6)])
        g = t.group("g", ack_wait_s=0.5)
        assert g.ack(g.poll(3, timeout=0)) == [True] * 3
        server.kill()
        server.start()
        got = set()
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline
            try:
                batch = g.poll(10, timeout=1)
                got |= {m.value for m in batch}
                g.ack(batch)
                if got and not batch and g.lag() == 0:
                    break
            except (TimeoutError, StreamlogError):
                continue  # the client is reconnecting
        assert {b"3", b"4", b"5"} <= got
        assert g.lag() == 0
        s.close()
    finally:
        server.stop()


def test_a_poll_waiting_across_a_server_restart_gets_what_comes_after(tmp_path):
    """A waiting pull request dies with the server; the poll notices, rides out the
    reconnect, and receives a record appended once the server is back."""
    from streamlog.backends.jetstream.server import NatsServer

    server = NatsServer.start_single(tmp_path / "nats")
    try:
        s = open_js_store(f"{server.client_url}/rw")
        t = s.topic("r")
        g = t.group("g")
        result: list = []
        th = threading.Thread(target=lambda: result.append(g.poll(10, timeout=20)))
        th.start()
        deadline = time.monotonic() + 10
        while info(t, "g").num_waiting == 0:  # the poll's request waits on the server
            assert time.monotonic() < deadline
        server.restart()
        deadline = time.monotonic() + 20
        while True:
            try:
                t.append(b"after")
                break
            except (TimeoutError, StreamlogError):
                assert time.monotonic() < deadline
                time.sleep(0.1)
        th.join(30)
        assert [m.value for m in result[0]] == [b"after"]
        assert result[0][0].ack()
        s.close()
    finally:
        server.stop()


def test_group_stats(store):
    t = store.topic("gs", partitions=2)
    t.append_many([b"%d" % i for i in range(4)])
    g = t.group("g", mode="exclusive", consumer="a")
    ms = g.poll(10, timeout=0)
    g.ack(ms[:1])
    t.group("h").close()
    st = groups.group_stats(t)
    assert sorted(st) == ["g", "h"]
    assert st["g"]["mode"] == "exclusive" and st["g"]["consumers"] == ["a"]
    assert st["g"]["lag"] == 3 and st["g"]["pending"] == 3
    assert [p["owner"] for p in st["g"]["partitions"]] == ["a", "a"]
    assert sum(p["end_offset"] for p in st["g"]["partitions"]) == 4
    assert st["h"]["lag"] == 4 and st["h"]["pending"] == 0


def test_exclusive_in_progress_keeps_the_whole_batch(store):
    t = store.topic("ex6")
    t.append_many([b"0", b"1", b"2"])
    g = t.group("g", mode="exclusive", ack_wait_s=1.0)
    ms = g.poll(10, timeout=0)
    for _ in range(4):  # 4 x 0.4 s: past the first leases
        time.sleep(0.4)
        assert ms[0].in_progress()
    assert g.ack(ms) == [True, True, True]  # none of the later leases ran out
    assert g.poll(10, timeout=0) == [] and g.lag() == 0


def _own_and_hang(url: str, ready) -> None:
    s = open_js_store(url)
    g = s.existing_topic("exk").group("g", mode="exclusive", consumer="child", ack_wait_s=1.0)
    ms = g.poll(3, timeout=5)
    ms[0].ack()
    ready.put([m.offset for m in ms])
    time.sleep(60)  # killed here, holding the partition and two leases


def test_exclusive_takeover_after_the_owner_is_killed(store, js_url):
    import multiprocessing
    import os
    import signal

    t = store.topic("exk")
    t.append_many([b"%d" % i for i in range(5)])
    t.group("g", mode="exclusive", ack_wait_s=1.0).close()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    child = ctx.Process(target=_own_and_hang, args=(js_url, ready))
    child.start()
    assert ready.get(timeout=60) == [0, 1, 2]
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    g = t.group("g", mode="exclusive", consumer="parent", ack_wait_s=1.0)
    got = []
    deadline = time.monotonic() + 10
    while len(got) < 4:
        assert time.monotonic() < deadline
        ms = g.poll(10, timeout=1)
        got += [(m.offset, m.delivery_count) for m in ms]
        assert g.ack(ms) == [True] * len(ms)
    assert got == [(1, 2), (2, 2), (3, 1), (4, 1)]  # from the oldest unacked, in order
    assert g.lag() == 0


def test_subjects_are_nats_subjects_and_filters_run_on_the_server(store):
    """A record with a subject is published on ``<partition subject>.s.<subject>`` (the
    stream's own subject list is unchanged), a group with ``subjects=`` gets consumers with
    ``filter_subjects``, and the consumer's pending count leaves the other records out."""
    t = store.topic("subj", partitions=1)
    for i in range(30):
        t.append(b"%d" % i, subject="orders.eu.created" if i % 10 == 0 else "orders.us.paid")
    t.append(b"plain")
    conn = t._conn
    info = conn.run(conn.api(f"STREAM.INFO.{t.stream_name(0)}", {"subjects_filter": ">"}))
    base = t.subject(0)
    assert info["config"]["subjects"] == [base, base + ".>"]
    assert info["state"]["subjects"] == {base + ".s.orders.eu.created": 3,
                                         base + ".s.orders.us.paid": 27, base: 1}
    g = t.group("eu", subjects=["orders.eu.*"])
    c = conn.run(conn.api(f"CONSUMER.INFO.{t.stream_name(0)}.{groups.consumer_name('eu', 0)}",
                          {}))
    assert c["config"]["filter_subjects"] == [base + ".s.orders.eu.*"]
    assert c["num_pending"] == 3 and g.lag() == 3
    msgs = drain(g, timeout=0.2)
    assert [m.offset for m in msgs] == [0, 10, 20]
    assert g.ack(msgs) == [True] * 3 and g.lag() == 0
    # reopening without subjects removes the filter, as other options are replaced
    t.group("eu").close()
    c = conn.run(conn.api(f"CONSUMER.INFO.{t.stream_name(0)}.{groups.consumer_name('eu', 0)}",
                          {}))
    assert not c["config"].get("filter_subjects")


def test_deliveries_with_subjects_reach_their_partition(store):
    """A delivery arrives on the record's own NATS subject; with a subject that subject no
    longer ends in the partition number, so the partition is read from its fourth token:
    on a 12-partition topic every record comes back with its partition and offset."""
    t = store.topic("wide", partitions=12)
    sent = {}
    for i in range(48):
        pos = t.append(b"%d" % i, key=b"k%d" % i, subject=f"orders.eu.p{i % 5}")
        sent[(pos.partition, pos.offset)] = b"%d" % i
    g = t.group("all", subjects=["orders.>"])
    got = drain(g, timeout=0.2)
    assert {(m.partition, m.offset): m.value for m in got} == sent
    assert g.ack(got) == [True] * len(got) and g.lag() == 0

# ------------------------------------------------------------- one at a time
def test_one_at_a_time_ack_asks_for_the_next_record_in_the_same_message(store):
    """With the hint, an ack also pulls the next record: it is in the handle's buffer
    before the next poll, which hands it out with its delivery counted once."""
    t = store.topic("oat")
    for i in range(3):
        t.append(b"%d" % i)
    g = t.group("g", ack_wait_s=30)
    g.one_at_a_time()
    (m,) = g.poll(1, timeout=2)
    assert m.ack() is True
    deadline = time.monotonic() + 5
    while not g._puller.buf and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(g._puller.buf) == 1  # delivered with the ack, before any poll
    got = [m.value]
    while len(got) < 3:
        (m,) = g.poll(1, timeout=2)
        assert m.delivery_count == 1 and m.ack() is True
        got.append(m.value)
    assert got == [b"0", b"1", b"2"]
    assert g.lag() == 0


def test_one_at_a_time_ack_of_a_lost_lease_is_refused(store):
    """The ack that does not wait for the server still answers False for a lease that
    ran out (checked against the local deadline, which never outlives the server's)."""
    t = store.topic("oatl")
    t.append(b"x")
    g = t.group("g", ack_wait_s=0.2)
    g.one_at_a_time()
    (m,) = g.poll(1, timeout=2)
    time.sleep(0.3)
    assert m.ack() is False
    (again,) = g.poll(1, timeout=3)
    assert (again.offset, again.delivery_count) == (0, 2)
    assert again.ack() is True


def test_one_at_a_time_record_not_polled_in_time_goes_back_uncounted(store):
    """A record the ack asked for and no poll took within the hold (a tenth of
    ack_wait_s here) goes back to the group, its delivery not counted."""
    t = store.topic("oath")
    t.append(b"a")
    t.append(b"b")
    g = t.group("g", ack_wait_s=3)  # hold: 0.3 s
    g.one_at_a_time()
    (m,) = g.poll(1, timeout=2)
    assert m.ack() is True
    time.sleep(0.6)
    (m,) = g.poll(1, timeout=3)
    assert m.value == b"b"
    assert m.delivery_count == 1 and m._dc == 2  # the server delivered it twice
    assert m.ack() is True


def test_one_at_a_time_close_hands_back_an_unpolled_record_uncounted(store):
    """close() returns a record the last ack asked for at once, its delivery not
    counted: the next consumer gets it as a first delivery."""
    t = store.topic("oatc")
    t.append(b"a")
    t.append(b"b")
    a = t.group("g", ack_wait_s=60)
    a.one_at_a_time()
    (m,) = a.poll(1, timeout=2)
    assert m.ack() is True
    deadline = time.monotonic() + 5
    while not a._puller.buf and time.monotonic() < deadline:
        time.sleep(0.01)
    a.close()
    b = t.group("g", ack_wait_s=60)
    (m,) = b.poll(1, timeout=3)
    assert (m.value, m.delivery_count) == (b"b", 1)


def test_ready_for_next_pulls_the_next_record_before_the_ack(store):
    """The hint that a one-at-a-time consumer settles its message next sends the pull
    for the next record at once: a record appended before the ack is delivered to the
    handle while it still holds the first, and the next poll hands it out, counted once."""
    t = store.topic("rfn")
    t.append(b"a")
    g = t.group("g", ack_wait_s=30)
    g.one_at_a_time()
    (m,) = g.poll(1, timeout=2)
    g.ready_for_next()
    t.append(b"b")
    deadline = time.monotonic() + 5
    while not g._puller.buf and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(g._puller.buf) == 1  # delivered before the first record was acked
    assert m.ack() is True
    (m,) = g.poll(1, timeout=0)
    assert (m.value, m.delivery_count) == (b"b", 1)
    assert m.ack() is True and g.lag() == 0


def test_ready_for_next_does_nothing_without_the_hint_or_with_partitions(store):
    """Without one_at_a_time, or on a topic of several partitions (a pull ahead per
    partition would hold records from other consumers), the hint sends nothing."""
    t = store.topic("rfn2", partitions=2)
    t.append(b"a", key=b"k")
    g = t.group("g")
    g.one_at_a_time()
    g.ready_for_next()
    plain = store.topic("rfn3").group("g")
    plain.ready_for_next()
    time.sleep(0.2)
    assert not g._puller.open and not plain._puller.open


def test_one_at_a_time_close_right_after_an_ack_loses_nothing_in_flight(stores):
    """close() just after an ack that asked for the next record: the record the pull
    brings (possibly still on its way) is handed back at once, never left to its lease.
    Repeated, since the record and the close race."""
    for i in range(10):
        a = stores()
        t = a.topic(f"race{i}")
        for v in (b"a", b"b", b"c"):
            t.append(v)
        g = t.group("g", ack_wait_s=30)
        g.one_at_a_time()
        (m,) = g.poll(1, timeout=2)
        assert m.ack() is True
        a.close()
        b = stores().topic(f"race{i}").group("g", ack_wait_s=30)
        got = []
        while ms := b.poll(1, timeout=0.5):
            got.append((ms[0].value, ms[0].delivery_count))
            ms[0].ack()
        assert got == [(b"b", 1), (b"c", 1)], i
