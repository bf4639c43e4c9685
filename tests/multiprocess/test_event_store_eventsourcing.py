"""streamlog.eventsourcing across processes: conflicting saves of one aggregate, a
subscription fed by another process, and events + tracking written together."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from uuid import UUID, uuid4

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking

import streamlog
from streamlog.eventsourcing import StreamlogApplicationRecorder, StreamlogProcessRecorder

CTX = mp.get_context("spawn")


def _env(path: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "streamlog.eventsourcing", "STREAMLOG_PATH": path}


def _increment(path, aggregate_id, saves, barrier, out):
    app = Application(env=_env(path))
    conflicts = 0
    done = 0
    barrier.wait(60)
    while done < saves:
        aggregate = app.repository.get(UUID(aggregate_id))
        aggregate.trigger_event(Aggregate.Event)
        try:
            app.save(aggregate)
            done += 1
        except IntegrityError:
            conflicts += 1
    app.close()
    out.put(conflicts)


def test_processes_saving_one_aggregate(tmp_path):
    """Two processes keep saving new versions of one aggregate: a conflicting save
    raises IntegrityError and writes nothing, so versions and notification ids stay
    dense."""
    path = str(tmp_path / "s")
    app = Application(env=_env(path))
    aggregate = Aggregate()
    app.save(aggregate)
    saves = 40
    barrier = CTX.Barrier(2)
    out = CTX.Queue()
    procs = [CTX.Process(target=_increment, args=(path, str(aggregate.id), saves, barrier, out))
             for _ in range(2)]
    for p in procs:
        p.start()
    for _ in procs:
        out.get(timeout=120)  # each worker reports its conflicts when done
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    final = app.repository.get(aggregate.id)
    assert final.version == 1 + 2 * saves
    notifications = app.recorder.select_notifications(start=None, limit=1000)
    assert [n.id for n in notifications] == list(range(1, 2 + 2 * saves))
    assert [n.originator_version for n in notifications] == list(range(1, 2 + 2 * saves))
    app.close()


def _save_some(path, n, start):
    assert start.wait(60)
    app = Application(env=_env(path))
    for _ in range(n):
        app.save(Aggregate())
    app.close()


def test_recorder_subscription_fed_by_another_process(tmp_path):
    """A recorder subscription receives, live, the events another process records."""
    path = str(tmp_path / "s")
    start = CTX.Event()
    n = 30
    with streamlog.open(path) as log:
        recorder = StreamlogApplicationRecorder(log, "Application")
        recorder.insert_events([StoredEvent(uuid4(), 1, "first", b"{}")])
        proc = CTX.Process(target=_save_some, args=(path, n, start))
        proc.start()
        ids = []
        with recorder.subscribe(gt=None) as subscription:
            for notification in subscription:
                ids.append(notification.id)
                if len(ids) == 1:
                    start.set()
                if len(ids) == 1 + n:
                    break
        proc.join(60)
        assert proc.exitcode == 0
    assert ids == list(range(1, 2 + n))


def _process_and_die(path, batches):
    log = streamlog.open(path)
    recorder = StreamlogProcessRecorder(log, "downstream")
    for i in range(1, batches + 1):
        recorder.insert_events([StoredEvent(uuid4(), 1, "made", b"%d" % i),
                                StoredEvent(uuid4(), 1, "made", b"%d" % i)],
                               tracking=Tracking("upstream", i))
    os.kill(os.getpid(), signal.SIGKILL)


def test_events_and_tracking_survive_together(tmp_path):
    """Events and their tracking record are one batch: after a SIGKILL every tracked
    notification has its events, and a repeated tracking id is refused."""
    path = str(tmp_path / "s")
    batches = 200
    proc = CTX.Process(target=_process_and_die, args=(path, batches))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    with streamlog.open(path) as log:
        recorder = StreamlogProcessRecorder(log, "downstream")
        assert recorder.max_tracking_id("upstream") == batches
        notifications = recorder.select_notifications(start=None, limit=10 * batches)
        assert [n.state for n in notifications] == \
            [b"%d" % (i // 2 + 1) for i in range(2 * batches)]
        try:
            recorder.insert_events([StoredEvent(uuid4(), 1, "made", b"again")],
                                   tracking=Tracking("upstream", batches))
            raise AssertionError("a processed notification was processed again")
        except IntegrityError:
            pass
        assert recorder.max_notification_id() == 2 * batches
