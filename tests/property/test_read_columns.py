"""The columnar decoder (``read_columns``, behind ``Topic.read_batch``): the extension
and the pure-Python twin give the same columns, continuation and checked extent on any
run of batches, and the same verdict on damaged ones."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlog import _ext
from streamlog.backends.local import codec as _codec
from streamlog.backends.local.codec import reference as _format
from streamlog.errors import CorruptionError, TornTail
from tests.strategies import batches

COLUMNS = ("offsets", "timestamps_ms", "value_offsets", "value_data", "value_null",
           "key_offsets", "key_data", "key_null")


@st.composite
def runs(draw, max_batches: int = 4):
    """Consecutive batches from a random base offset: (bytes, base, batch starts)."""
    base = draw(st.integers(0, 10_000))
    buf, starts, off = bytearray(), [], base
    for ks, vals, hs, ts in draw(st.lists(batches(max_records=5), min_size=1,
                                          max_size=max_batches)):
        b = bytearray(_format.encode_batch(ks, vals, hs, ts))
        _format.set_base_offset(b, 0, off)
        starts.append((len(buf), off))
        buf += b
        off += len(vals)
    starts.append((len(buf), off))
    return buf, base, starts


def _outcome(fn, *args):
    try:
        cols, pos, base, checked = fn(*args)
    except (CorruptionError, TornTail) as e:
        return (type(e).__name__, e.file_pos)
    return ({name: cols[name].tolist() for name in COLUMNS}, cols["headers"], pos, base,
            checked)


@settings(max_examples=300, deadline=None)
@given(runs(), st.data())
def test_same_columns_as_the_reference(run, data):
    """From any batch start, any min_offset and max_count, CRCs checked or trusted."""
    buf, base, starts = run
    end_offset = starts[-1][1]
    pos, first = data.draw(st.sampled_from(starts), label="start")
    tail = data.draw(st.sampled_from([0, 0, 20]), label="zero tail")
    buf = bytes(buf) + bytes(tail)
    min_offset = data.draw(st.integers(first, end_offset + 1), label="min_offset")
    max_count = data.draw(st.integers(0, end_offset - base + 2), label="max_count")
    crc_from = data.draw(st.sampled_from([0, len(buf) // 2, len(buf)]), label="crc_from")
    args = (buf, pos, len(buf), first, min_offset, max_count, crc_from)
    got, want = _outcome(_ext.read_columns, *args), _outcome(_codec.py_read_columns, *args)
    assert got == want
    cols = got[0]
    taken = [o for o in range(max(min_offset, first), end_offset)][:max_count]
    assert cols["offsets"] == taken


@settings(max_examples=400, deadline=None)
@given(runs(max_batches=3), st.data())
def test_same_verdict_on_damaged_runs(run, data):
    """Random byte changes anywhere, CRCs checked: the same columns, or the same error
    at the same batch (a walk meets damage in batch order)."""
    buf, base, starts = run
    for _ in range(data.draw(st.integers(1, 4), label="changes")):
        i = data.draw(st.integers(0, len(buf) - 1), label="at")
        buf[i] = data.draw(st.integers(0, 255), label="byte")
    buf = bytes(buf)
    max_count = data.draw(st.integers(1, starts[-1][1] - base + 1), label="max_count")
    args = (buf, 0, len(buf), base, base, max_count, 0)
    assert _outcome(_ext.read_columns, *args) == _outcome(_codec.py_read_columns, *args)


def _recrc(buf: bytearray, pos: int) -> None:
    length = int.from_bytes(buf[pos:pos + 4], "little")
    buf[pos + 16:pos + 20] = _format.crc32c(bytes(buf[pos + 20:pos + length])).to_bytes(
        4, "little")


def test_framing_damage_under_a_valid_crc_is_caught():
    """A record whose lengths run out of its batch, a length below -1, or records that do
    not fill the batch: CorruptionError at that batch, CRC checked or trusted, and only
    when the read reaches that batch."""
    first = _format.encode_batch([b"k0", b"k1"], [b"v0", b"v1"], None, [1, 2])
    second = bytearray(_format.encode_batch([b"k2", b"k3"], [b"v2", b"v3"], None, [3, 4]))
    _format.set_base_offset(second, 0, 2)
    at = len(first)
    rec = 44  # the second batch's first record header
    damage = {
        "key runs past the batch": (rec + 4, (1000).to_bytes(4, "little")),
        "length below -1": (rec + 8, (-2).to_bytes(4, "little", signed=True)),
        "records short of the batch end": (rec + 8, (1).to_bytes(4, "little")),
    }
    for what, (where, raw) in damage.items():
        bad = bytearray(second)
        bad[where:where + 4] = raw
        _recrc(bad, 0)
        buf = first + bytes(bad)
        for crc_from in (0, len(buf)):
            try:
                _ext.read_columns(buf, 0, len(buf), 0, 0, 10, crc_from)
            except CorruptionError as e:
                assert e.file_pos == at, what
            else:
                raise AssertionError(f"{what}: not caught (crc_from={crc_from})")
            cols = _ext.read_columns(buf, 0, len(buf), 0, 0, 2, crc_from)[0]
            assert cols["offsets"].tolist() == [0, 1]  # the damage lies beyond the read
        assert _outcome(_codec.py_read_columns, buf, 0, len(buf), 0, 0, 10, 0) == \
            ("CorruptionError", at)


def test_columns_are_read_only_and_stay_so(store):
    """Columns cannot be written, nor made writable (their memory is reused once the
    batch is gone, so nothing may write into it behind the reader's back)."""
    t = store.topic("t")
    t.append_many([b"v%d" % i for i in range(10)], keys=[b"k"] * 10)
    batch = t.read_batch(0, 0, 10)
    for name in COLUMNS:
        arr = getattr(batch, name)
        assert not arr.flags.writeable
        try:
            arr.flags.writeable = True
        except ValueError:
            pass
        else:  # pragma: no cover - would let a caller scribble on pooled memory
            raise AssertionError(f"{name} could be made writable")


def test_reused_column_memory_never_changes_a_live_batch(store):
    """Batches big enough for pooled memory: a batch kept alive is untouched by later
    reads, and memory of a dropped batch serves the next read with the right data."""
    t = store.topic("t")
    n = 20_000
    values = [(b"%08d" % i) * 8 for i in range(n)]
    t.append_many(values, keys=[b"key-%d" % (i % 7) for i in range(n)])

    def expect(batch, first):
        assert batch.offsets.tolist() == list(range(first, first + len(batch)))
        assert bytes(batch.value(0)) == values[first]
        assert bytes(batch.value(len(batch) - 1)) == values[first + len(batch) - 1]
        assert bytes(batch.value_data) == b"".join(values[first:first + len(batch)])

    a = t.read_batch(0, 0, 10_000)
    a_copy = {name: np.array(getattr(a, name)) for name in COLUMNS}
    b = t.read_batch(0, 10_000, 10_000)
    for name in COLUMNS:
        assert np.array_equal(getattr(a, name), a_copy[name])
    expect(b, 10_000)
    value_data = a.value_data  # one column kept keeps all of a's memory
    del a
    c = t.read_batch(0, 5_000, 10_000)
    assert bytes(value_data) == bytes(a_copy["value_data"])
    del value_data
    d = t.read_batch(0, 0, 10_000)  # may now take a's memory
    expect(b, 10_000)
    expect(c, 5_000)
    expect(d, 0)
