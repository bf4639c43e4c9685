"""Differential fuzzing: on any bytes, damaged or not, the extension and the Python
reference reach the same verdict (same result, or the same error at the same position)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamlog import _ext
from streamlog.backends.local.codec import reference as _format
from streamlog.errors import CorruptionError, TornTail
from tests.strategies import batches


def _outcome(fn, *args):
    try:
        out = fn(*args)
    except (CorruptionError, TornTail) as e:
        return (type(e).__name__, e.file_pos)
    if isinstance(out, tuple) and len(out) == 3 and isinstance(out[2], list):
        return (out[0], out[1], [tuple(r) for r in out[2]])
    return out


def _same_verdict(buf, pos, limit, base):
    for check_crc in (True, False):
        a = _outcome(_ext.batch_info, buf, pos, limit, base, check_crc)
        b = _outcome(_format.batch_info, buf, pos, limit, base, check_crc)
        assert a == b, (check_crc, a, b)
    a = _outcome(_ext.decode_batch, buf, pos, limit, base)
    b = _outcome(_format.decode_batch, buf, pos, limit, base)
    assert a == b, (a, b)


@st.composite
def damaged(draw):
    """Two valid batches back to back, then up to 6 random byte changes anywhere."""
    buf = bytearray()
    base = draw(st.integers(0, 1000))
    off = base
    for _ in range(2):
        ks, vals, hs, ts = draw(batches(max_records=3))
        b = bytearray(_format.encode_batch(ks, vals, hs, ts))
        _format.set_base_offset(b, 0, off)
        buf += b
        off += len(vals)
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(buf) - 1))
        buf[i] = draw(st.integers(0, 255))
    return bytes(buf), base


@settings(max_examples=400, deadline=None)
@given(damaged(), st.data())
def test_same_verdict_on_damaged_batches(case, data):
    """Both codecs agree on damaged batches, whatever the position, limit and expected base."""
    buf, base = case
    pos = data.draw(st.sampled_from([0, 0, 1, 44, len(buf) // 2]), label="pos")
    limit = data.draw(st.one_of(st.just(len(buf)), st.integers(0, len(buf) + 10)), label="limit")
    expected = data.draw(st.sampled_from([base, -1, base + 1]), label="expected base")
    _same_verdict(buf, pos, limit, expected)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=200), st.integers(-1, 5))
def test_same_verdict_on_arbitrary_bytes(buf, base):
    """Both codecs agree on arbitrary bytes (mostly garbage headers)."""
    _same_verdict(buf, 0, len(buf), base)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=120))
def test_same_verdict_on_garbage_after_a_valid_header(tail):
    """A header whose length, check word and CRC are right but whose records are garbage:
    both codecs find the same structural error (or both accept it)."""
    length = 44 + len(tail)
    head = bytearray(_format._HEADER.pack(0, length, length ^ 0xFFFFFFFF, 0, _format.MAGIC,
                                          _format.VERSION, 0, 1 + len(tail) % 3, 7, 9))
    body = bytes(head[20:]) + tail
    head[16:20] = _format.crc32c(body).to_bytes(4, "little")
    buf = bytes(head) + tail
    _same_verdict(buf, 0, len(buf), 0)
