"""The eventsourcing library's recorder and factory test cases, run against streamlog.

Subclassed the way the library's own persistence modules (POPO, SQLite) are
tested: every recorder test case and the infrastructure factory test case.
Each test gets a fresh store directory.
"""

from __future__ import annotations

import shutil
import tempfile
from unittest import TestCase
from uuid import UUID, uuid4

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    ProcessRecorder,
    StoredEvent,
    TrackingRecorder,
)
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    InfrastructureFactoryTestCase,
    NonInterleavingNotificationIDsBaseCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)
from eventsourcing.utils import Environment

import streamlog
from streamlog.eventsourcing import (
    Factory,
    StreamlogAggregateRecorder,
    StreamlogApplicationRecorder,
    StreamlogProcessRecorder,
    StreamlogSnapshotRecorder,
    StreamlogTrackingRecorder,
)


class WithStore(TestCase):
    """A fresh, open store per test, closed and removed afterwards."""

    durability = "interval"

    def setUp(self) -> None:
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="streamlog-es-")
        self.log = self.open_store(self.tmp)

    def open_store(self, tmp: str):
        """The store the recorders run on: a directory here. A backend's module
        subclasses these cases with its own ``open_store`` (the shared recorder
        cases of the conformance suite)."""
        return streamlog.open(tmp, durability=self.durability)

    def tearDown(self) -> None:
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        super().tearDown()


class WithTextOriginatorID:
    """Originator ids that are strings, as the SQLite module's text-id variant."""

    def new_originator_id(self) -> UUID | str:
        return "test-" + str(uuid4())


class TestStreamlogAggregateRecorder(WithStore, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return StreamlogAggregateRecorder(self.log, "app")


class TestStreamlogAggregateRecorderWithTextOriginatorID(
        WithTextOriginatorID, TestStreamlogAggregateRecorder):
    pass


class TestStreamlogSnapshotRecorder(WithStore, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return StreamlogSnapshotRecorder(self.log, "app", purpose="snapshots")

    def test_snapshots_any_versions_any_order(self) -> None:
        """Snapshots may skip versions and arrive out of order; a duplicate is refused."""
        recorder = self.create_recorder()
        oid = self.new_originator_id()

        def snap(v: int) -> StoredEvent:
            return StoredEvent(originator_id=oid, originator_version=v, topic="snap",
                               state=b"%d" % v)

        recorder.insert_events([snap(4)])
        recorder.insert_events([snap(2)])
        recorder.insert_events([snap(9)])
        with self.assertRaises(IntegrityError):
            recorder.insert_events([snap(2)])
        latest = recorder.select_events(oid, desc=True, limit=1)
        self.assertEqual([e.originator_version for e in latest], [9])
        before_5 = recorder.select_events(oid, lte=5, desc=True, limit=1)
        self.assertEqual([e.originator_version for e in before_5], [4])
        self.assertEqual([e.originator_version for e in recorder.select_events(oid)], [2, 4, 9])


class TestStreamlogApplicationRecorder(WithStore, ApplicationRecorderTestCase):
    def create_recorder(self) -> ApplicationRecorder:
        return StreamlogApplicationRecorder(self.log, "app")

    def test_insert_subscribe(self) -> None:
        """The library's optional subscription test: the SQLite module lacks subscribe()."""
        super().optional_test_insert_subscribe()

    def test_concurrent_no_conflicts(self, initial_position: int = 0) -> None:
        super().test_concurrent_no_conflicts(initial_position)

    def test_concurrent_throughput(self) -> None:
        super().test_concurrent_throughput()


class TestStreamlogApplicationRecorderWithTextOriginatorID(
        WithTextOriginatorID, TestStreamlogApplicationRecorder):
    pass


class TestStreamlogNonInterleavingNotificationIDs(WithStore,
                                                 NonInterleavingNotificationIDsBaseCase):
    # As the library's own runs against POPO and SQLite: two threads each insert
    # 10,000 events in one call; each call's ids must be one contiguous block.
    insert_num = 10000

    def create_recorder(self) -> ApplicationRecorder:
        return StreamlogApplicationRecorder(self.log, "app")


class TestStreamlogTrackingRecorder(WithStore, TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        return StreamlogTrackingRecorder(self.log, "app")


class TestStreamlogProcessRecorder(WithStore, ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return StreamlogProcessRecorder(self.log, "app")


class TestStreamlogProcessRecorderWithTextOriginatorID(
        WithTextOriginatorID, TestStreamlogProcessRecorder):
    pass


class TestStreamlogInfrastructureFactory(InfrastructureFactoryTestCase[Factory]):
    def expected_factory_class(self) -> type[Factory]:
        return Factory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return StreamlogAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return StreamlogApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return StreamlogTrackingRecorder

    class StreamlogTrackingRecorderSubclass(StreamlogTrackingRecorder):
        pass

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return self.StreamlogTrackingRecorderSubclass

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return StreamlogProcessRecorder

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="streamlog-es-")
        self.env = Environment("TestCase")
        self.env[InfrastructureFactory.PERSISTENCE_MODULE] = Factory.__module__
        self.env[Factory.STREAMLOG_PATH] = self.tmp
        super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_construct_raises_environment_error_when_path_missing(self) -> None:
        """Without STREAMLOG_PATH the factory names the keys it looked for."""
        del self.env[Factory.STREAMLOG_PATH]
        with self.assertRaises(EnvironmentError) as cm:
            InfrastructureFactory.construct(self.env)
        self.assertEqual(cm.exception.args[0], "streamlog store directory not found in "
                         "environment with keys: TESTCASE_STREAMLOG_PATH, STREAMLOG_PATH")

    def test_prefixed_path_wins(self) -> None:
        """<APPNAME>_STREAMLOG_PATH is preferred to STREAMLOG_PATH."""
        other = tempfile.mkdtemp(prefix="streamlog-es-")
        try:
            self.env["TESTCASE_STREAMLOG_PATH"] = other
            factory = Factory(self.env)
            try:
                self.assertEqual(factory.log.path, other)
            finally:
                factory.close()
        finally:
            shutil.rmtree(other, ignore_errors=True)

    def test_bad_settings_raise_environment_error(self) -> None:
        """A durability or originator id type outside the known values is refused."""
        self.env[Factory.STREAMLOG_DURABILITY] = "sometimes"
        with self.assertRaises(EnvironmentError):
            Factory(self.env)
        del self.env[Factory.STREAMLOG_DURABILITY]
        self.env[Factory.ORIGINATOR_ID_TYPE] = "int"
        with self.assertRaises(EnvironmentError):
            Factory(self.env)

    def test_snapshot_recorder_for_snapshots(self) -> None:
        """The snapshots purpose gets the recorder that accepts any snapshot versions."""
        self.assertIsInstance(self.factory.aggregate_recorder("snapshots"),
                              StreamlogSnapshotRecorder)


del AggregateRecorderTestCase
del ApplicationRecorderTestCase
del TrackingRecorderTestCase
del ProcessRecorderTestCase
del InfrastructureFactoryTestCase
del NonInterleavingNotificationIDsBaseCase
