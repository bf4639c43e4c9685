"""The eventsourcing library's projection test cases, with a view kept in streamlog.

As the library tests its POPO module's projections: a materialised view (the
event counters) implemented on this persistence module, then the projection
runner's test case over an application on streamlog.

Not run here: TaggedDecisionCountersProjectionTestCase. It drives a
``DCBApplication``, which persists through the library's separate dynamic
consistency boundary recorders (``eventsourcing.dcb``); this module provides
the aggregate, application, tracking and process recorders only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import ClassVar

from eventsourcing.persistence import Tracking
from eventsourcing.tests.projection import (
    AggregateEventCountersProjectionTestCase,
    EventCountersView,
    EventCountersViewTestCase,
)

import streamlog
from streamlog.eventsourcing import StreamlogTrackingRecorder

_COUNTER = "counter"


class StreamlogEventCountersView(StreamlogTrackingRecorder, EventCountersView):
    """Event counters kept in the tracking records themselves: an increment is the
    tracking record of the event it counts, with the counter's name in a header,
    so the count and the tracking position are one record (atomic together)."""

    def _count(self, name: bytes) -> int:
        topic = self._tracking.t_topic
        return sum(1 for r in topic.read(0) if r.headers.get(_COUNTER) == name)

    def get_created_event_counter(self) -> int:
        return self._count(b"created")

    def get_subsequent_event_counter(self) -> int:
        return self._count(b"subsequent")

    def incr_created_event_counter(self, tracking: Tracking) -> None:
        self.insert_tracking(tracking, headers={_COUNTER: b"created"})

    def incr_subsequent_event_counter(self, tracking: Tracking) -> None:
        self.insert_tracking(tracking, headers={_COUNTER: b"subsequent"})


class TestStreamlogEventCountersView(EventCountersViewTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="streamlog-es-")
        self.log = streamlog.open(self.tmp)

    def tearDown(self) -> None:
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        super().tearDown()

    def construct_event_counters_view(self) -> EventCountersView:
        return StreamlogEventCountersView(self.log, "counters")


class TestAggregateEventCountersProjectionWithStreamlog(AggregateEventCountersProjectionTestCase):
    view_class = StreamlogEventCountersView
    env: ClassVar[dict[str, str]] = {}

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


del EventCountersViewTestCase
del AggregateEventCountersProjectionTestCase
