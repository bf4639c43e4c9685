"""_ext.GroupCommit: the leader/follower protocol behind durability="always"."""

from __future__ import annotations

import threading
import time

import pytest

from streamlog import _ext


def test_every_caller_returns_covered_and_syncs_are_shared():
    """8 threads x 200 'appends': each sync_to returns only once a sync covered its
    target, and far fewer syncs than appends run."""
    gc = _ext.GroupCommit(0)
    lock = threading.Lock()
    state = {"end": 0, "durable": 0, "syncs": 0}
    bad = []

    def sync():
        end = state["end"]
        time.sleep(0.002)  # the disk: long enough for the others to queue, even on a busy machine
        state["durable"] = max(state["durable"], end)
        state["syncs"] += 1
        return end

    def worker():
        for _ in range(200):
            with lock:
                state["end"] += 1
                target = state["end"]
            gc.sync_to(target, sync, True)
            if state["durable"] < target:
                bad.append(target)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not bad
    assert gc.synced == state["durable"] == 1600
    assert state["syncs"] <= 1600 // 2  # at least two appends per sync on average


def test_a_failed_sync_is_retried_by_the_next_leader():
    """The leader's sync raises: it gets the error, nothing counts as durable, and the
    next caller syncs again."""
    gc = _ext.GroupCommit(5)
    calls = []

    def failing():
        calls.append("fail")
        raise OSError(5, "I/O error")

    with pytest.raises(OSError):
        gc.sync_to(10, failing)
    assert gc.synced == 5
    gc.sync_to(10, lambda: calls.append("ok") or 10)
    assert calls == ["fail", "ok"] and gc.synced == 10
    gc.sync_to(7, failing)  # already durable: no sync at all
    assert calls == ["fail", "ok"]


def _busy_sync(state: dict, seconds: float):
    """A sync that holds the GIL while it 'writes' (a fast disk, seen from Python):
    nobody can queue during it, so only the leader's wait lets a group form."""

    def sync():
        end = state["end"]
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            pass
        state["syncs"] += 1
        return end

    return sync


def _append_and_sync(gc, lock: threading.Lock, state: dict, sync, times: int) -> None:
    for _ in range(times):
        with lock:
            state["end"] += 1
            target = state["end"]
        gc.sync_to(target, sync, True)
        assert gc.synced >= target


def test_the_leader_waits_for_the_group_its_last_sync_served():
    """8 threads whose woken members must each take the GIL back before they can queue
    again: the leader waits for them (counted exactly, not by the futex's sleepers, which
    still hold threads already woken), so most syncs serve the whole group."""
    gc = _ext.GroupCommit(0)
    lock = threading.Lock()
    state = {"end": 0, "syncs": 0}
    sync = _busy_sync(state, 0.001)  # the leader then waits up to 1 ms for its group
    go = threading.Event()

    def worker():
        go.wait()
        _append_and_sync(gc, lock, state, sync, 200)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    go.set()
    for th in threads:
        th.join(60)
    assert gc.synced == state["end"] == 1600
    assert 1600 / state["syncs"] >= 4.5, state["syncs"]


def test_a_group_that_stops_coming_costs_a_few_waits_only():
    """After 8 threads stop, a lone thread's syncs stop waiting for them within a few
    syncs (the group waited for shrinks by one each time it does not come), instead of
    every sync paying the wait."""
    gc = _ext.GroupCommit(0)
    lock = threading.Lock()
    state = {"end": 0, "syncs": 0}
    sync = _busy_sync(state, 0.0002)
    threads = [threading.Thread(target=_append_and_sync, args=(gc, lock, state, sync, 50))
               for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    noop = _busy_sync(state, 0.0)
    started = time.perf_counter()
    _append_and_sync(gc, lock, state, noop, 400)
    took = time.perf_counter() - started
    # each wait is at least 0.5 ms: paid by all 400 syncs that would be 0.2 s; 7 waits are
    # a few ms (a sched_yield on a busy machine can add a time slice to each)
    assert took < 0.1, took
