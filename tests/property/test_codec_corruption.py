"""Damage detection in both codecs: any flipped byte is corruption, any truncation a torn tail."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlog import _ext
from streamlog.backends.local.codec import reference as _format
from streamlog.errors import CorruptionError, TornTail
from tests.strategies import batches

CODECS = {"ext": _ext, "format": _format}


def _encoded(batch, base: int) -> bytes:
    ks, vals, hs, ts = batch
    buf = bytearray(_format.encode_batch(ks, vals, hs, ts))
    _format.set_base_offset(buf, 0, base)
    return bytes(buf)


@settings(max_examples=300, deadline=None)
@given(batches(max_records=4), st.integers(0, 1 << 40), st.data())
@pytest.mark.parametrize("codec", sorted(CODECS))
def test_any_flipped_byte_is_corruption_I2_I3(codec, batch, base, data):
    """Changing any one byte of a batch raises CorruptionError from decode_batch.

    Bytes under the CRC are caught by it, the length pair by its check word,
    and the base offset (outside the CRC, I3) by the expected-offset check (I2).
    """
    c = CODECS[codec]
    buf = bytearray(_encoded(batch, base))
    i = data.draw(st.integers(0, len(buf) - 1), label="byte")
    mask = data.draw(st.integers(1, 255), label="xor mask")
    buf[i] ^= mask
    with pytest.raises(CorruptionError) as ei:
        c.decode_batch(bytes(buf), 0, len(buf), base)
    assert ei.value.file_pos == 0
    # scan (recovery and verify) classifies it as corruption too, never as a torn
    # tail: a damaged length fails its check word before it is compared with the data
    pos, _, _, problem = _ext.scan(bytes(buf), 0, len(buf), base, -1, 0, None)
    assert pos == 0 and problem is not None and problem[:2] == ("corrupt", 0)


@settings(max_examples=300, deadline=None)
@given(batches(max_records=4), st.integers(0, 1 << 40), st.data())
@pytest.mark.parametrize("codec", sorted(CODECS))
def test_any_truncation_is_a_torn_tail(codec, batch, base, data):
    """Cutting a batch short anywhere is a torn tail (TornTail), never corruption.

    batch_info reports a prefix that is all zero as the end of the data (what
    a preallocated segment looks like past its end); anything else is TornTail.
    """
    c = CODECS[codec]
    buf = _encoded(batch, base)
    k = data.draw(st.integers(0, len(buf) - 1), label="kept bytes")
    cut = buf[:k]
    with pytest.raises(TornTail):
        c.decode_batch(cut, 0, k, base)
    if any(cut):
        with pytest.raises(TornTail):
            c.batch_info(cut, 0, k, base, True)
    else:
        assert c.batch_info(cut, 0, k, base, True) == (0, 0, 0, 0)
    # the same truncation seen through a limit inside a larger buffer
    with pytest.raises(TornTail):
        c.decode_batch(buf, 0, k, base)


@settings(max_examples=100, deadline=None)
@given(batches(max_records=3), st.integers(0, 1000))
@pytest.mark.parametrize("codec", sorted(CODECS))
def test_wrong_expected_base_offset_is_corruption_I2(codec, batch, base):
    """A batch whose base offset is not the expected one is CorruptionError (I2)."""
    c = CODECS[codec]
    buf = _encoded(batch, base)
    with pytest.raises(CorruptionError, match="I2"):
        c.decode_batch(buf, 0, len(buf), base + 1)
    # -1 skips the check
    assert c.decode_batch(buf, 0, len(buf), -1)[0] == base


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_all_zero_header_is_the_end_marker(codec):
    """A zeroed region (preallocated space, I5) reads as the end of the data, not damage."""
    c = CODECS[codec]
    zeros = bytes(200)
    assert c.batch_info(zeros, 0, 200, 0, True) == (0, 0, 0, 0)
    assert c.batch_info(zeros, 0, 10, 0, True) == (0, 0, 0, 0)
    with pytest.raises(TornTail):
        c.decode_batch(zeros, 0, 200, 0)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_structural_damage_with_a_valid_crc_is_caught(codec):
    """Records that do not fill the batch, or a bad header block, fail even with a good CRC."""
    c = CODECS[codec]
    good = bytearray(_format.encode_batch([b"k"], [b"value"], [[(b"h", b"x")]], [5]))

    def recrc(buf):
        buf[16:20] = _format.crc32c(bytes(buf[20:])).to_bytes(4, "little")
        return bytes(buf)

    # key length claims more bytes than the batch holds
    bad = bytearray(good)
    bad[44 + 4:44 + 8] = (100).to_bytes(4, "little")
    with pytest.raises(CorruptionError):
        c.decode_batch(recrc(bad), 0, len(bad), 0)
    # a negative length other than -1
    bad = bytearray(good)
    bad[44 + 8:44 + 12] = (-2).to_bytes(4, "little", signed=True)
    with pytest.raises(CorruptionError):
        c.decode_batch(recrc(bad), 0, len(bad), 0)
    # header name that is not UTF-8
    bad = bytearray(good)
    name_at = len(good) - 1 - 4 - 1  # ... | u16 1 | b"h" | u32 1 | b"x"
    bad[name_at] = 0xFF
    with pytest.raises(CorruptionError):
        c.decode_batch(recrc(bad), 0, len(bad), 0)
    # reserved attribute bits
    bad = bytearray(good)
    bad[23] = 1
    with pytest.raises(CorruptionError):
        c.decode_batch(recrc(bad), 0, len(bad), 0)
    # record count of zero
    bad = bytearray(good)
    bad[24:28] = bytes(4)
    with pytest.raises(CorruptionError):
        c.decode_batch(recrc(bad), 0, len(bad), 0)
    # max timestamp below the first
    bad = bytearray(good)
    bad[36:44] = (4).to_bytes(8, "little")
    with pytest.raises(CorruptionError):
        c.decode_batch(recrc(bad), 0, len(bad), 0)
