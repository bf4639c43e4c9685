"""The conformance suite on the embedded engine: a store directory per test."""

from __future__ import annotations

import pytest

import streamlog
from streamlog.backends.local import replybox
from tests.conformance import suite


class Local(suite.Harness):
    def open_store(self, where):
        return streamlog.open(where)


class TestTopic(Local, suite.TopicContract):
    pass


class TestGroup(Local, suite.GroupContract):
    pass


class TestKeyShared(Local, suite.KeySharedContract):
    pass


class TestExclusive(Local, suite.ExclusiveContract):
    pass


class TestQueue(Local, suite.QueueContract):
    pass


class TestPubSub(Local, suite.PubSubContract):
    pass


class TestRpc(Local, suite.RpcContract):
    pass


class TestEventStore(Local, suite.EventStoreContract):
    pass


class TestLifecycle(Local, suite.LifecycleContract):
    pass


class TestRpcDurablePath(Local, suite.RpcContract):
    """The same rpc behaviours with the in-process hand-over off: every reply takes the
    durable path (a reply record and its index entry), as between processes."""

    @pytest.fixture(autouse=True)
    def _no_handover(self, monkeypatch):
        monkeypatch.setattr(replybox, "IN_PROCESS_HANDOVER", False)


class TestCopy(Local, suite.CopyContract):
    pass


class TestSubjects(Local, suite.SubjectsContract):
    pass


class TestSerializers(Local, suite.SerializersContract):
    pass


class TestCloudEvents(Local, suite.CloudEventsContract):
    pass


class TestBatchPoll(Local, suite.BatchPollContract):
    pass
