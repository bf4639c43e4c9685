"""Columnar appends: ``RecordBatch.from_arrays`` -> ``Topic.append_batch`` ->
``read_batch`` gives back the same keys, values and timestamps at dense offsets
from the returned one; the compiled column encoder and its pure-Python twin give
the same bytes and the same errors; a batch that ``read_batch`` returned appends
back to the same bytes of records."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamlog
from streamlog import _ext
from streamlog.backends.local import codec as _codec
from streamlog.errors import RecordTooLarge
from tests.strategies import column_batches

COLUMNS = ("timestamps_ms", "value_offsets", "value_data", "value_null", "key_offsets",
           "key_data", "key_null")


def _build(values, as_rows, ks, keys_as_rows, ts) -> streamlog.RecordBatch:
    v = np.frombuffer(b"".join(values), np.uint8).reshape(len(values), -1) \
        if as_rows else values
    k = ks
    if ks is not None and keys_as_rows:
        k = np.frombuffer(b"".join(ks), np.uint8).reshape(len(ks), -1)
    return streamlog.RecordBatch.from_arrays(v, keys=k, timestamps_ms=ts)


@pytest.fixture(scope="module")
def topic(tmp_path_factory):
    log = streamlog.open(tmp_path_factory.mktemp("cols") / "store", durability="never")
    yield log.topic("cols", partitions=2)
    log.close()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=column_batches(), partition=st.integers(0, 1))
def test_from_arrays_append_batch_read_batch_round_trips(topic, args, partition):
    """Every record comes back with its key, value and timestamp, at dense offsets
    starting at the offset append_batch returned; then the batch read back appends
    again to identical records."""
    values, _as_rows, ks, _keys_as_rows, ts = args
    batch = _build(*args)
    end = topic.end_offset(partition)
    first = topic.append_batch(partition, batch)
    n = len(values)
    assert first == end and topic.end_offset(partition) == end + n
    got = topic.read_batch(partition, first, n)
    assert list(got.offsets) == list(range(first, first + n))
    assert [bytes(got.value(i)) for i in range(n)] == values
    assert [None if got.key(i) is None else bytes(got.key(i)) for i in range(n)] == \
        (ks if ks is not None else [None] * n)
    want_ts = list(batch.timestamps_ms)
    if isinstance(ts, list):
        assert want_ts == ts
    assert list(got.timestamps_ms) == want_ts
    second = topic.append_batch(partition, got)
    again = topic.read_batch(partition, second, n)
    for name in COLUMNS:
        assert np.array_equal(getattr(again, name), getattr(got, name)), name


@settings(max_examples=200, deadline=None)
@given(args=column_batches(), max_record=st.integers(0, 80), allow_null=st.booleans(),
       need_key=st.booleans(), null_at=st.one_of(st.none(), st.integers(0, 11)))
def test_compiled_and_reference_encoders_agree(args, max_record, allow_null, need_key,
                                               null_at):
    """Same bytes and max timestamp, or the same error type, from both encoders, and the
    bytes decode (reference decoder) to the columns' records."""
    batch = _build(*args)
    cols = [getattr(batch, c) for c in COLUMNS]
    if null_at is not None and null_at < len(batch):
        vn = cols[3].copy()
        vn[null_at] = True
        cols[3] = vn
    outcomes = []
    for fn in (_ext.encode_columns, _codec.py_encode_columns):
        try:
            outcomes.append(fn(*cols, max_record, allow_null, need_key))
        except (ValueError, TypeError) as e:
            outcomes.append(type(e))
    assert outcomes[0] == outcomes[1]
    if isinstance(outcomes[0], tuple):
        data, max_ts = outcomes[0]
        _base, _length, recs = _codec.py_decode_batch(data, 0, len(data))
        assert [r[1] for r in recs] == list(batch.timestamps_ms)
        assert max_ts == max(r[1] for r in recs)
        vals = [None if cols[3][i] else batch.value(i) for i in range(len(batch))]
        assert [r[3] for r in recs] == [None if v is None else bytes(v) for v in vals]
    else:
        assert outcomes[0] in (ValueError, RecordTooLarge)


def test_malformed_columns_are_refused_by_both():
    """Offsets past the data, decreasing offsets and wrong dtypes raise the same error
    in both encoders."""
    good = streamlog.RecordBatch.from_arrays([b"ab", b"c"], keys=[b"k", None])
    cols = {c: getattr(good, c) for c in COLUMNS}
    cases = [({"value_offsets": np.array([0, 2, 9], np.int64)}, ValueError),
             ({"value_offsets": np.array([0, 2, 1], np.int64)}, ValueError),
             ({"key_offsets": np.array([-1, 1, 1], np.int64)}, ValueError),
             ({"value_offsets": np.array([0, 2, 3], np.int32)}, TypeError),
             ({"value_null": np.zeros(3, np.bool_)}, ValueError),
             ({"timestamps_ms": np.array([5, -1], np.int64)}, ValueError),
             ({"value_data": [97, 98, 99]}, TypeError)]
    for change, err in cases:
        args = [change.get(c, cols[c]) for c in COLUMNS]
        for fn in (_ext.encode_columns, _codec.py_encode_columns):
            with pytest.raises(err):
                fn(*args, 100, False, False)


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.one_of(st.none(), st.binary(max_size=40)), max_size=30),
       as_tuple=st.booleans(), odd=st.sampled_from([None, bytearray(b"ba"), "s", 7]))
def test_the_compiled_bytes_column_matches_the_general_path(items, as_tuple, odd):
    """``from_arrays`` takes a list of bytes / None through one compiled pass; it must
    give the columns the general per-item path gives, and hand anything else (a
    bytearray, a str, an int among them) to that path, which converts or refuses it."""
    seq = tuple(items) if as_tuple else list(items)
    fast = _ext.bytes_column(seq)
    assert fast is not None
    offsets, data, null = fast
    assert offsets.dtype == np.int64 and data.dtype == np.uint8 and null.dtype == np.bool_
    assert list(null) == [x is None for x in items]
    assert [None if null[i] else data[offsets[i]:offsets[i + 1]].tobytes()
            for i in range(len(items))] == items
    assert offsets[0] == 0 and all(offsets[i] <= offsets[i + 1] for i in range(len(items)))
    if odd is not None:
        mixed = [*items, odd]
        assert _ext.bytes_column(mixed) is None  # the general path decides
        if isinstance(odd, bytearray):
            b = streamlog.RecordBatch.from_arrays(mixed)
            assert b.value(len(items)).tobytes() == b"ba"
        else:
            with pytest.raises(TypeError):
                streamlog.RecordBatch.from_arrays(mixed)
