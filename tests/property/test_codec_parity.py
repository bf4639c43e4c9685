"""Codec parity: the Cython extension and the Python reference agree byte for byte.

Both implementations are exercised in every run, whichever one
``streamlog._codec`` selected (STREAMLOG_NO_EXTENSIONS only changes what the
store itself uses).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlog import _ext
from streamlog.backends.local.codec import reference as _format
from tests.strategies import (
    MAX_DELTA_MS,
    batches,
    bytes_like,
    expected_records,
    single_records,
)

CODECS = {"ext": _ext, "format": _format}

def _with_base(buf: bytes, base: int, codec) -> bytearray:
    out = bytearray(buf)
    codec.set_base_offset(out, 0, base)
    return out


@settings(max_examples=200, deadline=None)
@given(batches())
def test_encode_batch_same_bytes_in_both(batch):
    """For any records, encode_batch of the extension and of _format give identical bytes."""
    ks, vals, hs, ts = batch
    assert _ext.encode_batch(ks, vals, hs, ts) == _format.encode_batch(ks, vals, hs, ts)


@settings(max_examples=200, deadline=None)
@given(single_records())
def test_encode_record_same_bytes_in_both(rec):
    """encode_record agrees in both codecs and equals a batch of one record."""
    key, value, hdrs, ts = rec
    a = _ext.encode_record(key, value, hdrs, ts)
    b = _format.encode_record(key, value, hdrs, ts)
    assert a == b
    assert a == _format.encode_batch(None if key is None else [key], [value],
                                     None if hdrs is None else [hdrs], [ts])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(bytes_like(), bytes_like()), min_size=1, max_size=5),
       st.integers(0, 1 << 40))
def test_bytes_like_inputs_encode_like_bytes(pairs, ts):
    """bytearray and memoryview keys/values encode exactly as the same bytes do."""
    ks = [k for k, _ in pairs]
    vs = [v for _, v in pairs]
    plain_k = [bytes(k) for k in ks]
    plain_v = [bytes(v) for v in vs]
    want = _format.encode_batch(plain_k, plain_v, None, [ts] * len(vs))
    assert _ext.encode_batch(ks, vs, None, [ts] * len(vs)) == want
    assert _format.encode_batch(ks, vs, None, [ts] * len(vs)) == want


@settings(max_examples=200, deadline=None)
@given(batches(), st.integers(0, (1 << 63) - 1),
       st.sampled_from(sorted(CODECS)), st.sampled_from(sorted(CODECS)))
def test_decode_of_encode_is_identity_across_codecs(batch, base, enc_name, dec_name):
    """decode(encode(x)) == x, whichever codec encodes and whichever decodes."""
    ks, vals, hs, ts = batch
    enc, dec = CODECS[enc_name], CODECS[dec_name]
    buf = _with_base(enc.encode_batch(ks, vals, hs, ts), base, enc)
    got_base, length, recs = dec.decode_batch(buf, 0, len(buf), base)
    assert got_base == base and length == len(buf)
    assert [tuple(r) for r in recs] == expected_records(base, ks, vals, hs, ts)
    info = dec.batch_info(buf, 0, len(buf), base, True)
    assert info == (len(buf), len(vals), ts[0], max(ts))


@settings(max_examples=100, deadline=None)
@given(st.lists(batches(max_records=3), min_size=1, max_size=4))
def test_scan_of_consecutive_batches_agrees_I2(batch_list):
    """The extension's scan walks consecutive batches to where _format's walk ends (I2)."""
    seg = bytearray()
    base = 0
    for ks, vals, hs, ts in batch_list:
        seg += _with_base(_format.encode_batch(ks, vals, hs, ts), base, _format)
        base += len(vals)
    data_end = len(seg)
    seg += bytes(100)  # preallocated zeros after the data: the end marker
    pos, next_off, _, problem = _ext.scan(bytes(seg), 0, len(seg), 0, -1, 0, None)
    assert (pos, next_off, problem) == (data_end, base, None)
    # the reference walk, batch by batch with every check
    pos, off = 0, 0
    while True:
        length, count, _, _ = _format.batch_info(seg, pos, len(seg), off, True)
        if length == 0:
            break
        _format.decode_batch(seg, pos, len(seg), off)
        pos, off = pos + length, off + count
    assert (pos, off) == (data_end, base)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_invalid_batches_raise_value_error_in_both(codec):
    """An empty batch, a count mismatch and too-distant timestamps are ValueError in both."""
    c = CODECS[codec]
    with pytest.raises(ValueError):
        c.encode_batch(None, [], None, [])
    with pytest.raises(ValueError):
        c.encode_batch(None, [b"a", b"b"], None, [1])
    with pytest.raises(ValueError):
        c.encode_batch(None, [b"a", b"b"], None, [0, MAX_DELTA_MS + 1])
    with pytest.raises(ValueError):
        c.encode_batch(None, [b"a", b"b"], None, [MAX_DELTA_MS + 2, 0])
    # the extreme deltas that do fit are accepted
    c.encode_batch(None, [b"a", b"b"], None, [0, MAX_DELTA_MS])
    c.encode_batch(None, [b"a", b"b"], None, [1 << 31, 0])


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=10), st.binary(max_size=20), max_size=5))
def test_decode_headers_agrees(d):
    """A header block decodes to the same dict in both codecs."""
    raw = _format._encode_headers([(k.encode(), v) for k, v in d.items()])
    assert _ext.decode_headers(raw) == _format.decode_headers(raw) == d
