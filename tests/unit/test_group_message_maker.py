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


def _batch(offsets, partition=0, group=None, epoch=0, state=0):
    out: list = []
    recs = [_ext.Record("t", partition, o, 0, None, b"v", None) for o in offsets]
    _ext.MessageMaker(groups.Message).build(recs, out, group, 1, epoch, state, 0)
    return out


def test_scan_recognises_one_polls_batch_and_nothing_else():
    maker = _ext.MessageMaker(groups.Message)
    g = object()
    assert maker.scan(_batch([5, 6, 7], 2, g), g, False) == (2, 0, 5, 8)
    assert maker.scan(_batch([5, 6, 7], 2, g, epoch=4), g, True) == (2, 4, 5, 8)
    assert maker.scan([], g, False) is None
    assert maker.scan(_batch([5, 7], 0, g), g, False) is None  # a gap
    assert maker.scan(_batch([6, 5], 0, g), g, False) is None  # out of order
    assert maker.scan(_batch([5, 5], 0, g), g, False) is None  # a repeat
    assert maker.scan(_batch([5, 6], 0, object()), g, False) is None  # another handle's
    assert maker.scan(_batch([5, 6], 0, g, state=1), g, False) is None  # settled
    assert maker.scan(_batch([5], 0, g) + _batch([6], 1, g), g, False) is None
    assert maker.scan(_batch([5], 0, g, epoch=1) + _batch([6], 0, g, epoch=2), g,
                      True) is None
    assert maker.scan(_batch([5], 0, g) + ["not a message"], g, False) is None
    empty = groups.Message.__new__(groups.Message)  # slots never set: refused, no crash
    assert maker.scan(_batch([5], 0, g) + [empty], g, False) is None


def test_set_state_stores_into_every_message():
    msgs = _batch([1, 2, 3])
    _ext.MessageMaker(groups.Message).set_state(msgs, 1)
    assert [m._state for m in msgs] == [1, 1, 1]


def test_a_group_ack_of_a_mixed_list_still_answers_per_message(store):
    """The one-pass settle does not hide the careful path's answers: a batch with an
    already-acked message and a message of another handle is judged per message."""
    t = store.topic("t")
    t.append_many([b"%d" % i for i in range(4)])
    g = t.group("g")
    msgs = g.poll(4, timeout=0)
    assert msgs[1].ack()
    assert g.ack(msgs) == [True, True, True, True]  # the repeat answers its first ack
    t.append(b"4")
    other = t.group("g").poll(1, timeout=0)
    assert len(other) == 1
    with pytest.raises(ValueError):
        g.ack(other)


def test_a_plain_poll_keeps_its_messages_out_of_the_cyclic_gc(tmp_path):
    """A group that never keeps its Messages itself hands out untracked ones (a poll of
    thousands would otherwise set off collections that walk them all); a one-at-a-time
    consumer, whose group holds prefetched Messages and batched acks, keeps them tracked,
    so that a cycle through its group can still be collected. Either way a group and its
    messages go away once nothing refers to them."""
    import streamlog

    with streamlog.open(str(tmp_path / "s"), durability="never") as log:
        t = log.topic("t")
        t.append_many([b"v%d" % i for i in range(20)])
        g = t.group("plain")
        msgs = g.poll(max_records=5, timeout=0)
        assert len(msgs) == 5 and not any(gc.is_tracked(m) for m in msgs)
        assert g.ack(msgs) == [True] * 5
        ref = weakref.ref(g)
        del g, msgs
        assert ref() is None  # freed by reference counting: no cycle held it

        q = t.group("queue")
        q.one_at_a_time()
        first = q.poll(max_records=1, timeout=0)
        assert len(first) == 1 and gc.is_tracked(first[0])
        q.close()
