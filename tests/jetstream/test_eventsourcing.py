"""The eventsourcing library's recorder test cases on JetStream: the cases of
tests/eventsourcing/test_persistence.py, each test on a fresh store of the session's
single node. Where a case cannot hold as written on JetStream, it is replaced by a test
named for the difference (docs/backends.md says what differs)."""

from __future__ import annotations

import itertools
import os

import pytest
from eventsourcing.persistence import StoredEvent

import streamlog
from streamlog.eventsourcing import StreamlogApplicationRecorder
from tests.eventsourcing import test_persistence as cases

_numbers = itertools.count(1)


class OnJetStream:
    """``open_store`` returns a fresh store on the session's nats-server."""

    @pytest.fixture(autouse=True)
    def _nats(self, nats_server):
        self._nats_url = nats_server.client_url

    def open_store(self, tmp: str):
        return streamlog.open(f"{self._nats_url}/es{os.getpid()}-{next(_numbers)}")


class TestAggregateRecorder(OnJetStream, cases.TestStreamlogAggregateRecorder):
    pass


class TestAggregateRecorderWithTextOriginatorID(
        OnJetStream, cases.TestStreamlogAggregateRecorderWithTextOriginatorID):
    pass


class TestSnapshotRecorder(OnJetStream, cases.TestStreamlogSnapshotRecorder):
    pass


class TestApplicationRecorder(OnJetStream, cases.TestStreamlogApplicationRecorder):
    pass


class TestApplicationRecorderWithTextOriginatorID(
        OnJetStream, cases.TestStreamlogApplicationRecorderWithTextOriginatorID):
    pass


class TestNonInterleavingNotificationIDs(OnJetStream,
                                         cases.TestStreamlogNonInterleavingNotificationIDs):
    # One commit is one atomic batch on JetStream, at most 1,000 messages (the
    # server's batch limit): each thread inserts 500 events in one call.
    insert_num = 500

    def test_one_commit_holds_at_most_1000_events_on_jetstream(self) -> None:
        recorder = StreamlogApplicationRecorder(self.log, "big")
        events = [StoredEvent(originator_id="o", originator_version=v, topic="t", state=b"")
                  for v in range(1001)]
        with self.assertRaisesRegex(ValueError, "at most 1000"):
            recorder.insert_events(events)
        self.assertIsNone(recorder.max_notification_id())


class TestTrackingRecorder(OnJetStream, cases.TestStreamlogTrackingRecorder):
    pass


class TestProcessRecorder(OnJetStream, cases.TestStreamlogProcessRecorder):
    pass


class TestProcessRecorderWithTextOriginatorID(
        OnJetStream, cases.TestStreamlogProcessRecorderWithTextOriginatorID):
    pass


def test_an_application_runs_on_jetstream_through_streamlog_path(nats_server, monkeypatch):
    """An eventsourcing Application whose STREAMLOG_PATH is a nats:// URL saves, reloads
    (from a second Application instance) and numbers its notifications densely."""
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Dog(Aggregate):
        @event("Registered")
        def __init__(self, name: str) -> None:
            self.name = name
            self.tricks: list[str] = []

        @event("TrickAdded")
        def add_trick(self, trick: str) -> None:
            self.tricks.append(trick)

    monkeypatch.setenv("PERSISTENCE_MODULE", "streamlog.eventsourcing")
    monkeypatch.setenv("STREAMLOG_PATH", f"{nats_server.client_url}/app{os.getpid()}")
    first, second = Application(), Application()
    try:
        dog = Dog("Fido")
        dog.add_trick("roll")
        dog.add_trick("sit")
        first.save(dog)
        assert second.repository.get(dog.id).tricks == ["roll", "sit"]
        assert [n.id for n in second.notification_log.select(start=1, limit=10)] == [1, 2, 3]
    finally:
        first.close()
        second.close()
