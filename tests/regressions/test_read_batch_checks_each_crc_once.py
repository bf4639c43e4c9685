"""Regression: read_batch calls that ended exactly on a batch boundary reported the start
of the last batch as where to continue, so the segment's checked extent stopped there
and every later read_batch checked the CRC of every batch it touched again."""

import pytest


@pytest.mark.parametrize("chunk", [2_000, 2_500, 1])
def test_sequential_read_batches_mark_all_they_checked(store, chunk):
    t = store.topic("t")
    for _ in range(10):
        t.append_many([b"x" * 50] * 1_000)
    part = t._parts[0]
    end_pos = part.view()[3]
    offset = 0
    while offset < 10_000:
        batch = t.read_batch(0, offset, chunk if chunk > 1 else 1_000 + 1)
        assert batch.offsets[0] == offset
        offset = int(batch.offsets[-1]) + 1
    (seg,) = part._segments.values()
    assert seg.verified_to == end_pos
