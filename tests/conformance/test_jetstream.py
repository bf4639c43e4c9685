"""The conformance suite on NATS JetStream: a fresh store name per test on the session's
single node. Tests that cannot hold exactly on JetStream are overridden here with a test
named for the difference (docs/backends.md says what differs and why)."""

from __future__ import annotations

import itertools
import os

import pytest

import streamlog
from tests.conformance import suite

_numbers = itertools.count(1)


class JetStream(suite.Harness):
    @pytest.fixture(autouse=True)
    def _nats(self, nats_server):
        self._server_url = nats_server.client_url

    def location(self, tmp_path):
        return f"{self._server_url}/c{os.getpid()}-{next(_numbers)}"

    def open_store(self, where):
        return streamlog.open(where)


class TestTopic(JetStream, suite.TopicContract):
    pass


class TestGroup(JetStream, suite.GroupContract):
    pass


class TestKeyShared(JetStream, suite.KeySharedContract):
    pass


class TestExclusive(JetStream, suite.ExclusiveContract):
    pass


class TestQueue(JetStream, suite.QueueContract):
    def test_views_refuse_a_compacted_topic(self, store):
        """Not applicable as written: JetStream has no compacted topics yet, so the topic a
        view would refuse cannot be made (compact=True raises NotImplementedError)."""
        with pytest.raises(NotImplementedError, match="JetStream"):
            store.topic("cq", compact=True)

    test_compacted_topics_do_not_exist_on_jetstream_yet = test_views_refuse_a_compacted_topic
    test_views_refuse_a_compacted_topic = None  # replaced by the test above, named for it


class TestPubSub(JetStream, suite.PubSubContract):
    pass


class TestRpc(JetStream, suite.RpcContract):
    pass


class TestEventStore(JetStream, suite.EventStoreContract):
    pass


class TestCopy(JetStream, suite.CopyContract):
    pass


class TestLifecycle(JetStream, suite.LifecycleContract):
    pass


class TestSubjects(JetStream, suite.SubjectsContract):
    pass


class TestSerializers(JetStream, suite.SerializersContract):
    pass


class TestCloudEvents(JetStream, suite.CloudEventsContract):
    pass


class TestBatchPoll(JetStream, suite.BatchPollContract):
    pass
