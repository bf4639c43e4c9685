"""The columnar poll of the embedded engine (``Group.poll_batch``) where its read path
differs from ``poll``'s: records with headers (delayed ones), compaction gaps, the
column cache of small polls, exclusive takeovers, one-at-a-time consumers, tracing
spans, and pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import streamlog
from streamlog._types import now_ms
from streamlog.backends.local.storage import compaction
from tests.unit.test_compaction import _fill


@pytest.fixture(autouse=True)
def _small_segments(monkeypatch):
    """1 MiB segments: the default 64 MiB preallocation would dominate the run time."""
    monkeypatch.setattr(streamlog.backends.local.log, "DEFAULT_SEGMENT_BYTES", 1 << 20)


def _values(b) -> list:
    return [None if b.value(i) is None else bytes(b.value(i)) for i in range(len(b))]


def test_a_delayed_record_in_a_batch_is_held_back_and_the_rest_go_out(store):
    """Records with headers take poll's one-by-one look: a delayed one goes back until
    due (uncounted), the others (with and without headers) come out as columns."""
    t = store.topic("d")
    t.append(b"a")
    t.append_delayed(b"late", now_ms() + 300)
    t.append(b"b", headers={"h": b"1"})
    t.append_many([b"c", b"d"])
    g = t.group("g")
    b = g.poll_batch(100, timeout=0)
    assert _values(b) == [b"a", b"b", b"c", b"d"]
    assert b.offsets.tolist() == [0, 2, 3, 4] and b.delivery_counts.tolist() == [1] * 4
    assert g.ack_batch(b).all()
    b = g.poll_batch(100, timeout=5)
    assert _values(b) == [b"late"] and b.delivery_counts.tolist() == [1]
    assert now_ms() >= int(t.get(0, 1).headers["streamlog.deliver-at-ms"])
    assert g.ack_batch(b).all() and g.lag() == 0


def test_a_compacted_topic_gives_what_remains(store, monkeypatch):
    """Offsets compaction removed are not in the batch (nor leased on): every batch holds
    what a read finds, in order."""
    monkeypatch.setattr(compaction.Background, "check", lambda self, log: None)
    t = store.topic("c", compact=True, segment_bytes=1024)
    g = t.group("g")
    _fill(t, n=200)
    store.compact("c")
    remaining = [r.offset for r in t.read(0)]
    got = []
    while len(b := g.poll_batch(37, timeout=0)):
        assert b.offsets.tolist() == sorted(b.offsets.tolist())
        got.extend(b.offsets.tolist())
        assert g.ack_batch(b).all()
    assert got == remaining and g.lag() == 0


def test_small_polls_slice_one_read_and_match_read_batch(store):
    """Polls of 7 from batches of 1,000 (the column cache) hand out exactly the records
    read_batch returns, each batch's key and value boundaries starting at 0."""
    t = store.topic("s")
    values = [b"v%d" % i * (i % 5) for i in range(2500)]
    for i in range(0, 2500, 1000):
        t.append_many(values[i:i + 1000], keys=[None if j % 3 else b"k%d" % j
                                               for j in range(i, min(i + 1000, 2500))])
    g = t.group("g")
    seen = 0
    while len(b := g.poll_batch(7, timeout=0)):
        ref = t.read_batch(0, int(b.offsets[0]), len(b))
        assert b.offsets.tolist() == ref.offsets.tolist()
        assert b.value_offsets[0] == 0 and b.key_offsets[0] == 0
        assert _values(b) == _values(ref)
        assert [b.key(i) and bytes(b.key(i)) for i in range(len(b))] == \
            [ref.key(i) and bytes(ref.key(i)) for i in range(len(ref))]
        assert b.timestamps_ms.tolist() == ref.timestamps_ms.tolist()
        assert g.ack_batch(b).all()
        seen += len(b)
    assert seen == 2500 and g.lag() == 0


def test_an_exclusive_takeover_fences_the_old_owners_batch(store):
    t = store.topic("x")
    t.append_many([b"a", b"b"])
    old = t.group("g", mode="exclusive", ack_wait_s=0.2, consumer="old")
    b = old.poll_batch(10, timeout=1)
    assert len(b) == 2
    new = t.group("g", mode="exclusive", ack_wait_s=0.2, consumer="new")
    got = None
    for _ in range(100):
        got = new.poll_batch(10, timeout=0.1)
        if len(got):
            break
    # as poll counts an exclusive rewind: the first record's delivery again, then on
    assert got is not None and got.offsets.tolist() == [0, 1]
    assert got.delivery_counts.tolist()[0] == 2
    assert old.ack_batch(b).tolist() == [False, False]
    assert new.ack_batch(got).tolist() == [True, True]
    assert new.lag() == 0


def test_a_one_at_a_time_consumer_gives_back_what_it_holds_first(store):
    t = store.topic("q")
    t.append_many([b"%d" % i for i in range(20)])
    g = t.group("g")
    g.one_at_a_time()
    for _ in range(5):  # quick polls: it prefetches, and an ack leases the next one
        (m,) = g.poll(1, timeout=0)
        assert m.ack()
    b = g.poll_batch(100, timeout=0)
    assert _values(b) == [b"%d" % i for i in range(5, 20)]
    assert b.delivery_counts.tolist() == [1] * 15  # those held were given back uncounted
    assert g.ack_batch(b).all() and g.lag() == 0


def test_a_batch_pickles_without_its_lease(store):
    t = store.topic("p")
    t.append_many([b"a", b"b"])
    g = t.group("g")
    b = g.poll_batch(10, timeout=0)
    copy = pickle.loads(pickle.dumps(b))
    assert _values(copy) == [b"a", b"b"] and copy.delivery_counts.tolist() == [1, 1]
    with pytest.raises(ValueError):
        g.ack_batch(copy)  # the copy is a plain batch
    assert t.append_batch(0, copy) == 2
    assert g.ack_batch(b).all()


def test_answers_are_read_only_arrays(store):
    t = store.topic("r")
    t.append_many([b"a"])
    g = t.group("g")
    b = g.poll_batch(10, timeout=0)
    out = g.ack_batch(b)
    assert out.dtype == np.bool_ and not out.flags.writeable
    assert not g.nack_batch(b).flags.writeable
    assert not b.delivery_counts.flags.writeable


def test_one_consumer_span_per_batch(store, monkeypatch):
    from streamlog import _tracing

    spans = []

    class Span:
        def end(self):
            pass

    class Tracer:
        def start_span(self, name, kind=None, links=None, attributes=None):
            spans.append((name, attributes))
            return Span()

    t = store.topic("tr")
    t.append_many([b"a", b"b", b"c"])
    g = t.group("g")
    monkeypatch.setattr(_tracing, "tracer", lambda: Tracer())
    b = g.poll_batch(10, timeout=0)
    assert len(spans) == 1
    name, attrs = spans[0]
    assert name == "poll tr" and attrs["messaging.batch.message_count"] == 3
    assert attrs["messaging.destination.partition.id"] == "0"
    g.ack_batch(b)
    assert len(g.poll_batch(10, timeout=0)) == 0 and len(spans) == 1  # none when empty


def test_read_ahead_of_small_polls_is_bounded_by_bytes(store):
    """Small polls of small records read ahead (one read serves many polls); of large
    records they read ahead only about a MiB of them."""
    from streamlog.backends.local import groups

    small, large = store.topic("small"), store.topic("large")
    small.append_many([b"x" * 100] * 3000)
    large.append_many([b"y" * 200_000] * 30)
    for t, most in ((small, groups._COLUMN_READ_AHEAD), (large, 6)):
        g = t.group("g")
        n = 0
        while len(b := g.poll_batch(2, timeout=0)):
            n += len(b)
            cached = g._col_cache.get(0)
            if cached is not None and cached[1] is not None:
                assert len(cached[1]["offsets"]) <= most
            assert g.ack_batch(b).all()
        assert n == t.end_offset(0) and g.lag() == 0
        assert g._col_cache[0][1] is not None or t is large
