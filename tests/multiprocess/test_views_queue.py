"""Queues and subscriptions shared by processes: every message consumed once between them,
and a consumer killed with SIGKILL loses nothing."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import streamlog

CTX = mp.get_context("spawn")


def _consume_queue(path, out, ready):
    got = []
    with streamlog.open(path) as log:
        q = log.queue("jobs")
        ready.set()
        while (m := q.get(timeout=1.0)) is not None:
            got.append(m.value)
            assert m.ack()
    out.put(got)


def _listen(path, out, ready):
    got = []
    with streamlog.open(path) as log:
        sub = log.pubsub("feed").subscribe("workers")
        ready.set()
        for m in sub.listen(timeout=1.0):
            got.append(m.value)
    out.put(got)


def _take_one_and_hang(path, ready):
    with streamlog.open(path) as log:
        m = log.queue("crash", ack_wait_s=0.5).get(timeout=10)
        assert m is not None
        ready.set()
        signal.pause()  # killed here, holding the lease


def test_two_processes_consume_a_queue_once(tmp_path):
    """Two consumer processes and this producer: 600 messages, each consumed exactly once."""
    path = str(tmp_path / "s")
    out = CTX.Queue()
    with streamlog.open(path) as log:
        q = log.queue("jobs")
        readies = [CTX.Event() for _ in range(2)]
        procs = [CTX.Process(target=_consume_queue, args=(path, out, r)) for r in readies]
        for p in procs:
            p.start()
        for r in readies:
            assert r.wait(30)
        for i in range(600):
            q.put(b"%d" % i)
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        got = results[0] + results[1]
        assert sorted(got) == sorted(b"%d" % i for i in range(600))
        assert q.lag() == 0


def test_processes_on_one_subscription_share_it_and_another_sees_all(tmp_path):
    """Two processes on subscription "workers" split its messages; subscription "audit"
    in this process receives every message."""
    path = str(tmp_path / "s")
    out = CTX.Queue()
    with streamlog.open(path) as log:
        ps = log.pubsub("feed")
        ps.subscribe("workers")
        audit = ps.subscribe("audit")
        readies = [CTX.Event() for _ in range(2)]
        procs = [CTX.Process(target=_listen, args=(path, out, r)) for r in readies]
        for p in procs:
            p.start()
        for r in readies:
            assert r.wait(30)
        for i in range(300):
            ps.publish(b"%d" % i)
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        want = [b"%d" % i for i in range(300)]
        assert sorted(results[0] + results[1]) == sorted(want)
        assert [m.value for m in audit.listen(timeout=0.2)] == want


def test_message_of_a_killed_consumer_is_redelivered(tmp_path):
    """A consumer SIGKILLed while holding a message: the message comes back to another
    consumer after ack_wait_s, with delivery_count 2."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        q = log.queue("crash", ack_wait_s=0.5)
        q.put(b"precious")
        ready = CTX.Event()
        child = CTX.Process(target=_take_one_and_hang, args=(path, ready))
        child.start()
        assert ready.wait(30)
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        m = q.get(timeout=10)
        assert m is not None and m.value == b"precious" and m.delivery_count == 2
        assert m.ack()
