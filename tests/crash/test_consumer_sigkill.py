"""Consumers killed with SIGKILL: their leases come back after ack_wait_s, their acks
before the kill stay, an exclusive partition is taken over."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

import streamlog


@pytest.fixture(autouse=True)
def _small_segments(monkeypatch):
    """Topics these tests create get 1 MiB segments: segments are preallocated, and the
    default 64 MiB per partition would dominate the run time of tests about groups."""
    monkeypatch.setattr(streamlog.backends.local.log, "DEFAULT_SEGMENT_BYTES", 1 << 20)

CTX = mp.get_context("spawn")


def _take_and_hang(path: str, mode: str, n_ack: int, ready) -> None:
    """Child: lease records, ack the first ``n_ack``, then hang until killed."""
    log = streamlog.open(path)
    g = log.topic("jobs").group("w", mode=mode, ack_wait_s=0.6, consumer="doomed")
    msgs = g.poll(10, timeout=5)
    g.ack(msgs[:n_ack])
    ready.set()
    time.sleep(600)


def _kill_holder(path: str, mode: str, n_ack: int) -> float:
    """Start a child that leases records and hangs, then SIGKILL it; returns the
    (monotonic) time the child was started: its leases were granted after it."""
    started = time.monotonic()
    ready = CTX.Event()
    p = CTX.Process(target=_take_and_hang, args=(path, mode, n_ack, ready))
    p.start()
    assert ready.wait(60)
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert p.exitcode == -signal.SIGKILL
    return started


def _poll_until(g, want: int, limit_s: float = 20):
    got = []
    deadline = time.monotonic() + limit_s
    while len(got) < want and time.monotonic() < deadline:
        got.extend(g.poll(10, timeout=0.5))
    return got


def test_killed_consumer_leases_come_back_after_ack_wait(tmp_path):
    """A shared-group consumer killed while holding leases: its acks before the kill
    stay; its unacked records are redelivered to another process after ack_wait_s
    (not before), with delivery_count 2."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        log.topic("jobs").append_many([b"%d" % i for i in range(5)])
        log.topic("jobs").group("w", ack_wait_s=0.6)
    started = _kill_holder(path, "shared", 2)
    with streamlog.open(path) as log:
        g = log.topic("jobs").group("w", ack_wait_s=0.6, consumer="survivor")
        first = g.poll(10, timeout=0)
        if first:  # only once ack_wait_s has passed since the leases were granted
            assert time.monotonic() - started >= 0.55  # (lease times are wall-clock ms)
        msgs = first + _poll_until(g, 3 - len(first))
        assert [(m.offset, m.delivery_count) for m in msgs] == [(2, 2), (3, 2), (4, 2)]
        assert g.ack(msgs) == [True, True, True]
        assert g.lag() == 0


def test_restarted_consumer_with_same_name_gets_leases_at_once(tmp_path):
    """A consumer killed and restarted under the same name gets its leases back on its
    first poll, without waiting for ack_wait_s."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        log.topic("jobs").append_many([b"%d" % i for i in range(4)])
    _kill_holder(path, "shared", 1)
    with streamlog.open(path) as log:
        g = log.topic("jobs").group("w", ack_wait_s=60, consumer="doomed")
        msgs = g.poll(10, timeout=0)
        assert [(m.offset, m.delivery_count) for m in msgs] == [(1, 2), (2, 2), (3, 2)]


def test_killed_exclusive_owner_is_taken_over(tmp_path):
    """An exclusive owner killed mid-batch: after ack_wait_s another process owns the
    partition and resumes in order from the oldest unacked record."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        log.topic("jobs").append_many([b"%d" % i for i in range(6)])
        log.topic("jobs").group("w", mode="exclusive", ack_wait_s=0.6)
    _kill_holder(path, "exclusive", 2)
    with streamlog.open(path) as log:
        g = log.topic("jobs").group("w", mode="exclusive", ack_wait_s=0.6, consumer="heir")
        msgs = _poll_until(g, 4)
        assert [m.offset for m in msgs] == [2, 3, 4, 5]
        assert msgs[0].delivery_count == 2
        assert g.ack(msgs) == [True] * 4
        owners = {p["owner"] for p in log.stats()["groups"]["jobs"]["w"]["partitions"]}
        assert owners == {"heir"}


def _consume_forever(path: str, idx: int, started, report: str) -> None:
    """Child: consume and ack as fast as possible; after each ack commits, write the
    acked offsets to ``report`` with one unbuffered write (it survives SIGKILL)."""
    log = streamlog.open(path)
    g = log.topic("jobs").group("w", ack_wait_s=0.3, consumer=f"victim{idx}")
    fd = os.open(report, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    started.set()
    while True:
        msgs = g.poll(7, timeout=0.05)
        if msgs:
            ok = g.ack(msgs)
            done = [m.offset for m, good in zip(msgs, ok, strict=True) if good]
            os.write(fd, b"".join(b"%d\n" % o for o in done))


def test_consumers_killed_at_random_moments_lose_nothing(tmp_path):
    """Consumers SIGKILLed at arbitrary points (inside LMDB transactions too) leave a
    consistent group: a survivor then receives every record no one acked, each record is
    acked, and the group ends with no lag and no leases."""
    import random

    path = str(tmp_path / "s")
    total = 3000
    with streamlog.open(path) as log:
        log.topic("jobs").append_many([b"%d" % i for i in range(total)])
        log.topic("jobs").group("w", ack_wait_s=0.3)
    report = str(tmp_path / "acked.txt")
    rng = random.Random(3)
    for idx in range(3):
        started = CTX.Event()
        p = CTX.Process(target=_consume_forever, args=(path, idx, started, report))
        p.start()
        assert started.wait(60)
        time.sleep(rng.uniform(0.02, 0.15))
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
    with open(report) as f:
        acked = {int(line) for line in f if line.strip()}
    with streamlog.open(path) as log:
        g = log.topic("jobs").group("w", ack_wait_s=0.3, consumer="survivor")
        deadline = time.monotonic() + 30
        while g.lag() and time.monotonic() < deadline:
            msgs = g.poll(500, timeout=0.5)
            for m, ok in zip(msgs, g.ack(msgs), strict=True):
                if ok:
                    acked.add(m.offset)
        assert g.lag() == 0 and g.pending() == []
    # Every record was acked by someone: the children's reports plus the survivor's
    # acks cover all of them, except at most one batch per killed child (acked, then
    # killed before its report was written; the group's state has it: lag 0).
    assert acked <= set(range(total))
    assert len(acked) >= total - 3 * 7


def _get_ack_and_hang(path: str, ready, commit: bool) -> None:
    """Child: a queue consumer's get + ack of message 0, then get + ack of message 1
    (a quick consumer: that get leases the rest of the queue in one transaction);
    ``commit``: wait for the background committer to commit the batched acks (else it
    is stopped from committing); then hang."""
    from streamlog.backends.local import groups

    if not commit:  # no background committer: batched acks stay so until the kill
        groups._COMMITTER.add = lambda g: None
    groups.GROUP_PREFETCH_WINDOW_MS = 60_000  # the second get leases the whole queue
    groups.GROUP_PREFETCH_HOLD_MS = 60_000  # and holds what it does not hand out
    log = streamlog.open(path)
    q = log.queue("jobs", ack_wait_s=0.6)
    for want in (0, 1):
        m = q.get(timeout=5)
        assert m.offset == want and m.ack()
    g = q._consumers.mine()
    assert [h[0].offset for h in g._held] == [2]
    if commit:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with g._commit_lock:  # a commit in flight holds it: wait for its end
                if not g._acks:
                    break
            time.sleep(0.005)
        with g._commit_lock:
            assert not g._acks
    else:
        assert [m.offset for m in g._acks] == [1]  # 0's was committed by the second get
    ready.set()
    time.sleep(600)


def _survivor_gets(path: str) -> list[tuple[int, int]]:
    """(offset, delivery_count) of every message a new consumer gets until the queue is
    empty and nothing is leased, each acked."""
    with streamlog.open(path) as log:
        q = log.queue("jobs", ack_wait_s=0.6)
        got = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = q.get(timeout=0.5)
            if m is not None:
                got.append((m.offset, m.delivery_count))
                assert m.ack()
            elif q.lag() == 0:
                break
        assert q.lag() == 0 and q._consumers.mine().pending() == []
        assert q.get(timeout=0.8) is None  # nothing comes back after ack_wait_s either
        return sorted(got)


def _kill_queue_consumer(path: str, commit: bool) -> None:
    with streamlog.open(path) as log:
        q = log.queue("jobs", ack_wait_s=0.6)
        for i in range(3):
            q.put(b"%d" % i)
    ready = CTX.Event()
    p = CTX.Process(target=_get_ack_and_hang, args=(path, ready, commit))
    p.start()
    assert ready.wait(60)
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert p.exitcode == -signal.SIGKILL


def test_queue_consumer_killed_after_its_acks_committed_loses_nothing(tmp_path):
    """A queue consumer killed after the background committer committed its batched
    acks: they stay (0 and 1 never come back); the message it had leased and not handed
    out comes back after ack_wait_s with that delivery counted."""
    path = str(tmp_path / "s")
    _kill_queue_consumer(path, commit=True)
    assert _survivor_gets(path) == [(2, 2)]


def test_queue_consumer_killed_before_its_acks_committed_redelivers(tmp_path):
    """A queue consumer killed while an ack was batched, not committed: nothing is lost;
    the ack the next get committed stays (0 never comes back); the message whose ack was
    still batched comes back after ack_wait_s (at-least-once: its delivery counted), as
    does the one it held."""
    path = str(tmp_path / "s")
    _kill_queue_consumer(path, commit=False)
    assert _survivor_gets(path) == [(1, 2), (2, 2)]


def _queue_forever(path: str, idx: int, started, report: str) -> None:
    """Child: a queue consumer's get + ack loop as fast as it goes; after each ack
    returns, the offset goes to ``report`` (one unbuffered write: survives SIGKILL)."""
    log = streamlog.open(path)
    q = log.queue("jobs", ack_wait_s=0.3)
    fd = os.open(report, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    started.set()
    while True:
        m = q.get(timeout=0.05)
        if m is not None and m.ack():
            os.write(fd, b"%d\n" % m.offset)


def test_queue_consumers_killed_at_random_moments_lose_nothing(tmp_path):
    """Queue consumers (batched acks, prefetch) SIGKILLed at arbitrary points: a survivor
    then gets every message whose ack was not committed, nothing is dead-lettered, and
    the queue ends empty with nothing leased."""
    import random

    path = str(tmp_path / "s")
    total = 3000
    with streamlog.open(path) as log:
        log.queue("jobs", ack_wait_s=0.3).topic.append_many([b"%d" % i for i in range(total)])
    report = str(tmp_path / "acked.txt")
    rng = random.Random(5)
    for idx in range(3):
        started = CTX.Event()
        p = CTX.Process(target=_queue_forever, args=(path, idx, started, report))
        p.start()
        assert started.wait(60)
        time.sleep(rng.uniform(0.02, 0.15))
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
    with open(report) as f:
        acked = {int(line) for line in f if line.strip()}
    assert acked, "the children consumed something before they were killed"
    with streamlog.open(path) as log:
        q = log.queue("jobs", ack_wait_s=0.3)
        deadline = time.monotonic() + 30
        counts = []
        while time.monotonic() < deadline:
            m = q.get(timeout=0.5)
            if m is not None:
                counts.append(m.delivery_count)
                assert m.ack()
                acked.add(m.offset)
            elif q.lag() == 0:
                break
        assert q.lag() == 0 and q._consumers.mine().pending() == []
        assert max(counts, default=1) <= 4  # at most one delivery per kill, plus this one
        assert log.topic("jobs.dlq").end_offset(0) == 0 if "jobs.dlq" in log.topics() \
            else True
    assert acked == set(range(total))



def _filter_and_hang(path: str, ready) -> None:
    """Child: poll a filtered group (matches with passed-over records between them), ack
    the first two messages, then hang until killed."""
    log = streamlog.open(path)
    g = log.topic("mixed").group("f", ack_wait_s=0.6, consumer="doomed",
                                 subjects=["orders.eu.*"])
    msgs = g.poll(5, timeout=5)
    assert len(msgs) == 5
    g.ack(msgs[:2])
    ready.set()
    time.sleep(600)


def test_killed_filtered_consumer_loses_no_match_and_delivers_no_other(tmp_path):
    """A consumer of a group with a subject filter, SIGKILLed holding leases over matches
    and the records passed over between them: another process then gets exactly the
    matching records the dead one had not acked (delivery_count 2) and the rest of the
    matches, never a record that does not match, and the group's lag ends at 0."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        t = log.topic("mixed")
        t.append_many([b"%d" % i for i in range(3000)],
                      headers=[{"subject": "orders.eu.created" if i % 100 == 7 else
                                "orders.us.created"} for i in range(3000)])
        t.group("f", ack_wait_s=0.6, subjects=["orders.eu.*"])
    ready = CTX.Event()
    p = CTX.Process(target=_filter_and_hang, args=(path, ready))
    p.start()
    assert ready.wait(60)
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert p.exitcode == -signal.SIGKILL
    matches = [i for i in range(3000) if i % 100 == 7]
    with streamlog.open(path) as log:
        g = log.topic("mixed").group("f", ack_wait_s=0.6, consumer="survivor",
                                     subjects=["orders.eu.*"])
        got = _poll_until(g, len(matches) - 2)
        assert all(m.headers["subject"] == b"orders.eu.created" for m in got)
        assert sorted(m.offset for m in got) == matches[2:]
        assert {m.delivery_count for m in got if m.offset in matches[2:5]} == {2}
        assert {m.delivery_count for m in got if m.offset not in matches[2:5]} == {1}
        assert g.ack(got) == [True] * len(got)
        assert g.lag() == 0
