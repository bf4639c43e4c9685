"""Regression: a read iterator that had already decoded a chunk of records kept yielding
them after the store was closed, instead of raising StoreClosed."""

import pytest

import streamlog


def test_started_iterator_raises_store_closed(tmp_path):
    """An iterator part-way through a partition raises StoreClosed at the next record."""
    log = streamlog.open(tmp_path / "s")
    t = log.topic("t")
    for i in range(3000):
        t.append(b"v%d" % i)
    it = t.read(0)
    assert next(it).value == b"v0"
    assert next(it).value == b"v1"
    log.close()
    with pytest.raises(streamlog.StoreClosed):
        next(it)
    with pytest.raises(streamlog.StoreClosed):
        list(t.read(0))


def test_iterators_unaffected_while_open(store):
    """Two interleaved iterators over one partition each see every record once, in order."""
    t = store.topic("t")
    for i in range(2500):
        t.append(b"v%d" % i)
    a, b = t.read(0), t.read(0, limit=2000)
    got_a, got_b = [], []
    for rb in b:
        got_b.append(rb.offset)
        got_a.append(next(a).offset)
    got_a.extend(r.offset for r in a)
    assert got_a == list(range(2500)) and got_b == list(range(2000))
