"""View-level behaviour every backend must show: queue, pub-sub and request-reply.

Runs once per backend in ``streamlog.backend.BACKENDS`` (the ``log`` fixture);
uses the view classes and ``streamlog.backend`` only.
"""

from __future__ import annotations

import threading
import time

import pytest

from streamlog import backend
from streamlog.backends.local import replybox as rb_mod
from streamlog.views.pubsub import PubSub
from streamlog.views.queue import Queue
from streamlog.views.rpc import Rpc


def _reopen(log, kind, tmp_path):
    log.close()
    return backend.open_backend(kind, tmp_path / "store")


# ------------------------------------------------------------------- queue
def test_queue_delivers_each_message_to_one_consumer(log):
    """Two consumers (handles) of one queue split its messages: each message once."""
    a, b = Queue(log, "jobs"), Queue(log, "jobs")
    for i in range(30):
        a.put(b"%d" % i)
    got = []
    for q in (a, b, a, b) * 10:
        m = q.get(timeout=0.05)
        if m is not None:
            got.append(m.value)
            assert m.ack()
    assert sorted(got) == sorted(b"%d" % i for i in range(30))


def test_queue_acks_survive_reopen(log, backend_kind, tmp_path):
    """Acknowledged messages stay consumed after the store is opened again; the rest remain."""
    q = Queue(log, "durable")
    for v in (b"a", b"b", b"c"):
        q.put(v)
    q.get().ack()
    log = _reopen(log, backend_kind, tmp_path)
    try:
        q = Queue(log, "durable")
        rest = []
        while (m := q.get(timeout=0.05)) is not None:
            rest.append(m.value)
            m.ack()
        assert rest == [b"b", b"c"]
    finally:
        log.close()


def test_queue_redelivery_counts_and_dead_letter(log):
    """nack and lease expiry redeliver with a growing delivery_count; after max_deliver the
    message is in the dead-letter topic and no longer delivered."""
    q = Queue(log, "flaky", ack_wait_s=0.1, max_deliver=3)
    q.put(b"poison")
    counts = []
    m = q.get(timeout=1)
    counts.append(m.delivery_count)
    m.nack()
    m = q.get(timeout=1)
    counts.append(m.delivery_count)  # not acked: its lease expires
    m = q.get(timeout=2)
    counts.append(m.delivery_count)
    m.nack()
    assert counts == [1, 2, 3]
    assert q.get(timeout=0.2) is None
    assert [r.value for r in q.dead_letters().read(0)] == [b"poison"]


def test_queue_delay(log):
    """A delayed message is not delivered before its due time, and then exactly once."""
    q = Queue(log, "timer")
    t0 = time.monotonic()
    q.put(b"t", delay_s=0.3)
    assert q.get(timeout=0.1) is None
    m = q.get(timeout=3)
    assert m.value == b"t" and time.monotonic() - t0 >= 0.3 and m.delivery_count == 1
    m.ack()
    assert q.get(timeout=0.05) is None


def test_view_names_derive_and_show(log):
    """Each view's topics are ordinary topics named after the view."""
    Queue(log, "q1")
    PubSub(log, "p1")
    Rpc(log, "r1")
    assert {"q1", "p1", "r1.requests", "r1.replies"} <= set(log.topics())


def test_views_refuse_a_compacted_topic(log):
    """A topic created compacted under a view's name raises ConfigMismatch for the view."""
    log.topic("cq", compact=True)
    log.topic("cr.replies", compact=True)
    for make in (lambda: Queue(log, "cq"), lambda: PubSub(log, "cq"), lambda: Rpc(log, "cr")):
        with pytest.raises(backend.ConfigMismatch):
            make()


# ------------------------------------------------------------------ pubsub
def test_pubsub_fan_out_resume_and_latest(log, backend_kind, tmp_path):
    """Every subscription sees every message; a named subscription resumes after reopen;
    start="latest" starts at subscribe() time."""
    ps = PubSub(log, "feed")
    ps.publish(b"before")
    early = ps.subscribe("early")
    late = ps.subscribe("late", start="latest")
    ps.publish(b"after")
    assert [m.value for m in late.listen(timeout=0.1)] == [b"after"]
    it = early.listen(timeout=0.1)
    assert next(it).value == b"before"
    next(it)  # acks "before" by asking for the next
    it.close()
    log = _reopen(log, backend_kind, tmp_path)
    try:
        ps = PubSub(log, "feed")
        ps.publish(b"third")
        got = [m.value for m in ps.subscribe("early").listen(timeout=0.2)]
        assert got == [b"after", b"third"]
        assert [m.value for m in ps.subscribe("late").listen(timeout=0.1)] == [b"third"]
    finally:
        log.close()


# --------------------------------------------------------------------- rpc
@pytest.mark.parametrize("handover", [True, False], ids=["handover", "durable"])
def test_rpc_round_trip_errors_and_concurrency(log, monkeypatch, handover):
    """Replies match requests across 4 concurrent requesters; handler errors come back as
    RemoteError; the server keeps serving."""
    monkeypatch.setattr(rb_mod, "IN_PROCESS_HANDOVER", handover)
    rpc = Rpc(log, "calc")

    def handler(m):
        if m.value == b"boom":
            raise RuntimeError("exploded")
        return m.value[::-1]

    failures = []

    def client(i):
        for j in range(50):
            body = b"%d:%d" % (i, j)
            if rpc.request(body, timeout=10) != body[::-1]:
                failures.append(body)

    with rpc.serve(handler, workers=2):
        with pytest.raises(backend.RemoteError) as exc:
            rpc.request(b"boom", timeout=5)
        assert (exc.value.type_name, exc.value.remote_message) == ("RuntimeError", "exploded")
        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []


def test_rpc_expired_request_is_never_served(log):
    """A request whose deadline passed before any server took it is dropped unserved."""
    rpc = Rpc(log, "late")
    with pytest.raises(backend.RequestTimeout):
        rpc.request(b"x", timeout=0.05)
    served = []
    with rpc.serve(lambda m: served.append(m.value) or b"") as server:
        assert rpc.request(b"y", timeout=5) == b""
        end = time.monotonic() + 5
        while server.expired < 1 and time.monotonic() < end:
            time.sleep(0.01)
    assert served == [b"y"] and server.expired == 1
