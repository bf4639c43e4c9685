"""The extension's MessageMaker: group Messages built by slot stores are the same as
Messages built in Python, hold their fields with correct reference counts, and go away."""

from __future__ import annotations

import gc
import sys
import weakref

import pytest

from streamlog import _ext
from streamlog.backends.local import groups


def _record(offset: int, headers=None):
    return _ext.Record("t", 0, offset, 1000 + offset, b"k", b"v%d" % offset, headers)


def test_built_messages_have_every_field():
    recs = [_record(0), _record(1)]
    out: list = []
    owner = object()
    assert groups._ext.MessageMaker(groups.Message).build(
        recs, out, owner, 3, 7, 0, 123456) is False  # no record carries headers
    assert [m.offset for m in out] == [0, 1]
    for m, r in zip(out, recs, strict=True):
        assert m.record is r and m.value == r.value and m.timestamp_ms == r.timestamp_ms
        assert (m.delivery_count, m._group, m._epoch, m._state, m._due) == \
            (3, owner, 7, 0, 123456)


def test_says_whether_a_record_carries_headers():
    out: list = []
    maker = _ext.MessageMaker(groups.Message)
    assert maker.build([_record(0), _record(1, {"h": b"x"})], out, None, 1, 0, 0, 0)
    assert len(out) == 2


def test_reference_counts_and_collection():
    rec = _record(5)
    owner = type("Owner", (), {})()
    before = (sys.getrefcount(rec), sys.getrefcount(owner))
    out: list = []
    _ext.MessageMaker(groups.Message).build([rec], out, owner, 1, 0, 0, 0)
    assert (sys.getrefcount(rec), sys.getrefcount(owner)) == (before[0] + 1, before[1] + 1)
    out[0]._group = None  # a slot store through Python replaces the C one cleanly
    assert sys.getrefcount(owner) == before[1]
    ref = weakref.ref(owner)
    out[0]._group = owner
    owner_cycle = out[0]
    owner.message = owner_cycle  # a cycle through the message: the GC collects it
    del out, owner, owner_cycle
    gc.collect()
    assert ref() is None
    assert sys.getrefcount(rec) == before[0]


def test_a_class_without_such_slots_is_refused():
    class Plain:
        pass

    with pytest.raises((TypeError, AttributeError)):
        _ext.MessageMaker(Plain)
    with pytest.raises(TypeError):
        _ext.MessageMaker(42)
