"""Model-based test of tables: random puts, deletes, compare-and-set updates, compactions,
reopens, a lost index and writes and reads from a second process, checked against a dict."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import streamlog
from streamlog import WrongExpectedVersion
from streamlog.backends.local.storage import compaction

CTX = multiprocessing.get_context("fork")
# a few keys (so values are superseded), the empty key, and one too long for an LMDB key
keys = st.sampled_from([b"a", b"b", b"c", b"", "d\u00e9", b"L" * 600, b"z" * 40])
values = st.binary(max_size=300)


def _k(key) -> bytes:
    return key.encode() if isinstance(key, str) else key


def _child_put(path, key, value, conn):
    with streamlog.open(path) as log:
        conn.send(log.table("t").put(key, value).offset)
    os._exit(0)


def _child_read(path, conn):
    with streamlog.open(path, read_only=True) as log:
        tbl = log.table("t")
        conn.send((tbl.items(), len(tbl)))
    os._exit(0)


class TableModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="streamlog-table-")
        self.log = streamlog.open(self.dir, durability="never")
        # small segments: compaction has closed segments to work on
        self.log.topic("t", compact=True, segment_bytes=1024, partitions=2)
        self.tbl = self.log.table("t")
        self.model: dict[bytes, tuple[bytes, int]] = {}  # key -> (value, offset)

    def teardown(self):
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(key=keys, value=values)
    def put(self, key, value):
        pos = self.tbl.put(key, value)
        self.model[_k(key)] = (value, pos.offset)

    @rule(key=keys)
    def delete(self, key):
        self.tbl.delete(key)
        self.model.pop(_k(key), None)

    @rule(key=keys, value=values, right=st.booleans())
    def update(self, key, value, right):
        current = self.model.get(_k(key))
        actual = current[1] if current else None
        expected = actual if right else (actual + 1 if actual is not None else 0)
        if right:
            pos = self.tbl.update(key, value, expected_offset=expected)
            self.model[_k(key)] = (value, pos.offset)
        else:
            with pytest.raises(WrongExpectedVersion) as e:
                self.tbl.update(key, value, expected_offset=expected)
            assert (e.value.expected, e.value.actual) == (expected, actual)

    @rule()
    def compact(self):
        self.log.compact("t")

    @rule()
    def reopen(self):
        self.log.close()
        self.log = streamlog.open(self.dir, durability="never")
        self.tbl = self.log.table("t")

    @rule()
    def lose_the_index(self):
        """The index is derived: dropped, it comes back identical from the topic."""
        before = self.tbl.items()
        from streamlog.backends.local import table as table_mod

        self.log._meta.write(lambda txn: table_mod.drop_topic(self.log._meta, txn, "t"))
        assert self.tbl.items() == before

    @rule(key=keys, value=values)
    def put_in_another_process(self, key, value):
        r, w = CTX.Pipe(duplex=False)
        child = CTX.Process(target=_child_put, args=(self.dir, key, value, w))
        child.start()
        off = r.recv()
        child.join(30)
        self.model[_k(key)] = (value, off)

    @rule()
    def read_in_another_process(self):
        r, w = CTX.Pipe(duplex=False)
        child = CTX.Process(target=_child_read, args=(self.dir, w))
        child.start()
        items, n = r.recv()
        child.join(30)
        assert items == sorted((k, v) for k, (v, _) in self.model.items())
        assert n == len(self.model)

    @invariant()
    def same_as_the_dict(self):
        want = sorted((k, v) for k, (v, _) in self.model.items())
        assert self.tbl.items() == want
        assert self.tbl.keys() == [k for k, _ in want]
        assert len(self.tbl) == len(want)
        for k in (b"a", "d\u00e9", b"L" * 600, b"nope"):
            got = self.model.get(_k(k))
            assert self.tbl.get(k) == (got[0] if got else None)
            assert (k in self.tbl) == (got is not None)
            if got:
                assert self.tbl[k] == got[0]
                assert self.tbl.position(k).offset == got[1]


@pytest.fixture(autouse=True)
def _only_explicit_compactions(monkeypatch):
    monkeypatch.setattr(compaction.Background, "check", lambda self, log: None)


TestTableModel = TableModel.TestCase
TestTableModel.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)
