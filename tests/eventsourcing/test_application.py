"""The eventsourcing library's application and projection test cases, on streamlog.

As the library tests its SQLite module: the persistence module and the store
directory come from the process environment (PERSISTENCE_MODULE,
STREAMLOG_PATH), a fresh directory per test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import ClassVar
from unittest import TestCase

from eventsourcing.tests.application import ApplicationTestCase, ExampleApplicationTestCase
from eventsourcing.tests.projection import EventSourcedProjectionTestCase


class WithStreamlog(TestCase):
    expected_factory_topic = "streamlog.eventsourcing:Factory"

    def setUp(self) -> None:
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="streamlog-es-")
        os.environ["PERSISTENCE_MODULE"] = "streamlog.eventsourcing"
        os.environ["STREAMLOG_PATH"] = self.tmp

    def tearDown(self) -> None:
        del os.environ["PERSISTENCE_MODULE"]
        del os.environ["STREAMLOG_PATH"]
        shutil.rmtree(self.tmp, ignore_errors=True)
        super().tearDown()


class TestApplicationWithStreamlog(WithStreamlog, ApplicationTestCase):
    pass


class TestExampleApplicationWithStreamlog(WithStreamlog, ExampleApplicationTestCase):
    pass


class TestEventSourcedProjectionWithStreamlog(WithStreamlog, EventSourcedProjectionTestCase):
    # The projection (a process recorder fed by the application's subscription)
    # and the application share the store directory from the environment.
    env: ClassVar[dict[str, str]] = {}


class TestRunnerUsesStreamlog(WithStreamlog):
    def test_application_and_projection_on_streamlog(self) -> None:
        """The projection runner's application and projection both persist in the store."""
        from eventsourcing.application import Application
        from eventsourcing.projection import EventSourcedProjectionRunner
        from eventsourcing.tests.projection import Counters

        from streamlog.eventsourcing import Factory

        with EventSourcedProjectionRunner(application_class=Application,
                                          projection_class=Counters, env={}) as runner:
            self.assertIsInstance(runner.app.factory, Factory)
            self.assertIsInstance(runner.projection.factory, Factory)
            self.assertEqual(runner.app.factory.log.path, self.tmp)


del ApplicationTestCase
del ExampleApplicationTestCase
del EventSourcedProjectionTestCase
