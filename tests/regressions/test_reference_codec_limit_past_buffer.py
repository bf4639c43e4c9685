"""Regression: the reference codec (_format) raised struct.error when ``limit`` ran past the
end of the buffer, where the extension clamps the limit and reports a torn tail or the end
of the data, as the two must agree."""

import pytest

from streamlog import _ext
from streamlog.backends.local.codec import reference as _format
from streamlog.errors import TornTail


@pytest.mark.parametrize("codec", [_ext, _format], ids=["ext", "format"])
def test_limit_past_the_buffer_is_clamped(codec):
    """A cut batch, a whole batch and zeros, each with a limit past the buffer's end."""
    b = _format.encode_batch(None, [b"abc"], None, [5])
    with pytest.raises(TornTail):
        codec.batch_info(b[:30], 0, 100, 0, True)
    with pytest.raises(TornTail):
        codec.decode_batch(b[:30], 0, 100, 0)
    assert codec.batch_info(b, 0, len(b) + 50, 0, True) == (len(b), 1, 5, 5)
    assert codec.decode_batch(b, 0, len(b) + 50, 0)[:2] == (0, len(b))
    assert codec.batch_info(bytes(10), 0, 100, 0, True) == (0, 0, 0, 0)
    with pytest.raises(TornTail):
        codec.decode_batch(bytes(10), 0, 100, 0)
