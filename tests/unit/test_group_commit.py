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
