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


def test_a_quick_consumer_prefetches_and_close_hands_back_uncounted(store, monkeypatch):
    """A consumer that comes back for more quickly leases a batch in one transaction
    and hands it out one get at a time; another consumer skips what it holds; closing
    the handle hands what it still holds back without counting a delivery."""
    from streamlog.backends.local import groups

    monkeypatch.setattr(groups, "GROUP_PREFETCH_WINDOW_MS", 60_000)  # any pace is quick
    monkeypatch.setattr(groups, "GROUP_PREFETCH_HOLD_MS", 60_000)
    q = store.queue("jobs")
    for i in range(6):
        q.put(b"%d" % i)
    m = q.get(timeout=0)  # the first lease takes one: no pace known yet
    assert m.offset == 0 and m.ack()
    m = q.get(timeout=0)  # came back at once: the rest of the queue is leased
    assert m.offset == 1 and m.ack()
    held = [h[0].offset for h in q._consumers.mine()._held]
    assert held == [2, 3, 4, 5]
    other = store.queue("jobs")
    assert other.get(timeout=0) is None  # all leased to the first consumer
    m = q.get(timeout=0)
    assert m.offset == 2 and m.ack()
    q.close()  # 0-2 acked (batched acks are committed by close), 3-5 back uncounted
    got = []
    while (m := other.get(timeout=0)) is not None:
        got.append((m.offset, m.delivery_count))
        assert m.ack()
    assert got == [(3, 1), (4, 1), (5, 1)]
    assert other.lag() == 0


def test_prefetched_messages_not_handed_out_go_back_uncounted(store, monkeypatch):
    """A consumer that prefetched and then stopped calling get: within about
    GROUP_PREFETCH_HOLD_MS the background committer hands what it kept back to the
    queue, deliveries not counted, and another consumer waiting in get takes them."""
    from streamlog.backends.local import groups

    monkeypatch.setattr(groups, "GROUP_PREFETCH_WINDOW_MS", 60_000)
    q = store.queue("jobs")
    for i in range(5):
        q.put(b"%d" % i)
    assert q.get(timeout=0).ack()
    m = q.get(timeout=0)  # leases 1-4, keeps 2-4
    assert m.offset == 1 and len(q._consumers.mine()._held) == 3
    other = store.queue("jobs")
    got = []
    t0 = time.monotonic()
    while len(got) < 3 and time.monotonic() - t0 < 5:
        n = other.get(timeout=1)  # wakes when they are handed back
        if n is not None:
            got.append((n.offset, n.delivery_count))
            assert n.ack()
    assert got == [(2, 1), (3, 1), (4, 1)]
    assert not q._consumers.mine()._held
    assert m.ack() and q.lag() == 0


def test_a_slow_consumer_leases_one_message_at_a_time(store, monkeypatch):
    """A consumer whose pace would not use a batch within the prefetch window leases
    one message per get: the others stay free for other consumers."""
    from streamlog.backends.local import groups

    monkeypatch.setattr(groups, "GROUP_PREFETCH_WINDOW_MS", 0)
    q = store.queue("jobs")
    for i in range(4):
        q.put(b"%d" % i)
    for i in range(3):
        m = q.get(timeout=0)
        assert m.offset == i and m.ack()
        assert not q._consumers.mine()._held
    assert store.queue("jobs").get(timeout=0).offset == 3


def _committed_lag(path) -> int:
    """The queue's lag as another store handle reads it from LMDB (no flush of ours)."""
    with streamlog.open(path) as other:
        return other.topic("jobs").group_config("jobs.queue") and \
            other.queue("jobs").lag()


def test_a_batched_ack_is_committed_by_the_next_get(tmp_path):
    """An ack with time left on its lease is batched: another handle does not see it
    until the consumer's next get commits it in its own transaction."""
    path = tmp_path / "s"
    with streamlog.open(path) as log:
        q = log.queue("jobs")
        for i in range(3):
            q.put(b"%d" % i)
        m = q.get(timeout=0)
        assert m.ack()
        g = q._consumers.mine()
        with g._commit_lock:  # keeps the background committer out meanwhile
            if g._acks:  # not yet committed (unless the background committer was quick)
                assert _committed_lag(path) == 3
        assert q.get(timeout=0).offset == 1
        assert not g._acks and _committed_lag(path) == 2


def test_a_batched_ack_is_committed_in_the_background(tmp_path):
    """A consumer that acks and then does not call get again: the background committer
    commits its ack within GROUP_ACK_DELAY_MS or so."""
    from streamlog._limits import GROUP_ACK_DELAY_MS

    path = tmp_path / "s"
    with streamlog.open(path) as log:
        q = log.queue("jobs")
        q.put(b"0")
        q.put(b"1")
        assert q.get(timeout=0).ack()
        g = q._consumers.mine()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with g._commit_lock:  # a commit in flight holds it: wait for its end
                if not g._acks:
                    break
            time.sleep(GROUP_ACK_DELAY_MS / 4000)
        with g._commit_lock:
            assert not g._acks
        assert _committed_lag(path) == 1


def test_lag_in_the_same_process_counts_batched_acks(store):
    """q.lag() (and another handle's, in this process) counts acks not committed yet."""
    q = store.queue("jobs")
    for i in range(3):
        q.put(b"%d" % i)
    assert q.get(timeout=0).ack()
    assert q.lag() == 2 and store.queue("jobs").lag() == 2


def test_an_ack_near_the_lease_deadline_commits_at_once(tmp_path):
    """With less than a quarter of ack_wait_s (or 200 ms) left on the lease, ack()
    commits before it returns, as a group's ack does: it can tell a lost lease."""
    path = tmp_path / "s"
    with streamlog.open(path) as log:
        q = log.queue("jobs", ack_wait_s=0.4)
        q.put(b"0")
        m = q.get(timeout=0)
        time.sleep(0.25)  # 150 ms left: under the 200 ms margin
        assert m.ack()
        assert not q._consumers.mine()._acks
        assert _committed_lag(path) == 0


def test_a_lost_lease_is_not_batched(store):
    """An ack after the lease expired and another consumer took the message: False."""
    q = store.queue("jobs", ack_wait_s=0.2)
    q.put(b"0")
    m = q.get(timeout=0)
    time.sleep(0.3)
    other = store.queue("jobs", ack_wait_s=0.2)
    again = other.get(timeout=1)
    assert again is not None and again.delivery_count == 2
    assert m.ack() is False
    assert again.ack() and other.lag() == 0


def test_durability_always_commits_each_ack(tmp_path):
    """With durability="always" nothing is batched: each ack is committed (and synced)
    before it returns, and leases the next message in its transaction."""
    path = tmp_path / "s"
    with streamlog.open(path, durability="always") as log:
        q = log.queue("jobs")
        for i in range(3):
            q.put(b"%d" % i)
        assert q.get(timeout=0).ack()
        g = q._consumers.mine()
        assert not g._acks and [h[0].offset for h in g._held] == [1]
        assert _committed_lag(path) == 2


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


def test_a_program_that_exits_without_closing_keeps_its_acks(tmp_path):
    """Batched acks are committed at interpreter exit (a normal exit is not a crash),
    and prefetched messages go back uncounted: nothing waits for ack_wait_s."""
    import subprocess
    import sys

    path = tmp_path / "s"
    with streamlog.open(path) as log:
        q = log.queue("jobs")
        for i in range(5):
            q.put(b"%d" % i)
    script = (
        "import streamlog\n"
        "from streamlog.backends.local import groups\n"
        "groups.GROUP_PREFETCH_WINDOW_MS = 60_000\n"
        "groups.GROUP_PREFETCH_HOLD_MS = 60_000\n"
        "groups._COMMITTER.add = lambda g: None  # no background commit before exit\n"
        f"log = streamlog.open({str(path)!r})\n"
        "q = log.queue('jobs')\n"
        "for _ in range(2):\n"
        "    assert q.get(timeout=1).ack()\n"
        "g = q._consumers.mine()\n"
        "assert g._acks and g._held\n"
        "import os\n"
        "groups._COMMITTER._groups.add(g)  # what add() does, without its thread\n"
        "groups._COMMITTER._pid = os.getpid()\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    with streamlog.open(path) as log:
        q = log.queue("jobs")
        assert q.lag() == 3
        got = [(m.offset, m.delivery_count) for m in iter(lambda: q.get(timeout=0), None)]
        assert got == [(2, 1), (3, 1), (4, 1)]
