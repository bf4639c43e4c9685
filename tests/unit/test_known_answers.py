"""Known-answer vectors that pin the on-disk format and the key-to-partition mapping.

A format change must update these vectors (and docs/format.md) in the same commit.
"""

from __future__ import annotations

import os
import struct

import pytest

import streamlog
from streamlog import _ext, _limits
from streamlog.backends.local import codec as _codec
from streamlog.backends.local.codec import reference as _format
from streamlog.backends.local.storage import files
from streamlog.backends.local.storage.partition import boot_id
from streamlog.errors import CorruptionError

CODECS = {"ext": _ext, "format": _format}

# Published in Kafka's UtilsTest (org.apache.kafka.common.utils): what the Java
# client's murmur2 returns, as a signed 32-bit int.
KAFKA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}

# encode_batch([b"key", None, b""], [b"hello", b"", None],
#              [[(b"h", b"v")], None, []], [1700000000000, 1700000000005, 1699999999990])
PINNED_BATCH_HEX = (
    "0000000000000000"  # base_offset 0 (set by the append)
    "6c000000"  # batch_length 108
    "93ffffff"  # length_check 108 ^ 0xFFFFFFFF
    "63e760fa"  # crc32c of bytes [20, 108)
    "534c"  # magic "SL"
    "01"  # version 1
    "00"  # attributes
    "03000000"  # record_count 3
    "0068e5cf8b010000"  # first_timestamp_ms 1700000000000
    "0568e5cf8b010000"  # max_timestamp_ms 1700000000005
    # record 0: delta 0, key 3, value 5, headers 8 | b"key" b"hello" | u16 1 b"h" u32 1 b"v"
    "00000000" "03000000" "05000000" "08000000" "6b6579" "68656c6c6f" "0100" "68" "01000000" "76"
    # record 1: delta 5, no key, empty value, no headers
    "05000000" "ffffffff" "00000000" "00000000"
    # record 2: delta -10, empty key, tombstone, no headers
    "f6ffffff" "00000000" "ffffffff" "00000000"
)
PINNED_ARGS = ([b"key", None, b""], [b"hello", b"", None], [[(b"h", b"v")], None, []],
               [1700000000000, 1700000000005, 1699999999990])


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_crc32c_check_value(codec):
    """CRC32C (Castagnoli) of b"123456789" is the standard check value 0xE3069283."""
    assert CODECS[codec].crc32c(b"123456789") == 0xE3069283
    assert _codec.crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("data, expected", sorted(KAFKA_MURMUR2.items()))
def test_murmur2_matches_kafka(codec, data, expected):
    """murmur2 returns what Kafka's Java client returns for its published test strings."""
    assert CODECS[codec].murmur2(data) == expected
    assert CODECS[codec].partition_for_key(data, 7) == (expected & 0x7FFFFFFF) % 7


@pytest.mark.parametrize("partitions", [2, 3, 7, 16])
def test_key_picks_kafkas_partition(store, partitions):
    """Topic.append(key=...) lands on (murmur2(key) & 0x7fffffff) % partitions, for bytes
    and str keys, on the C fast path and on the Python path (headers)."""
    t = store.topic(f"kp{partitions}", partitions=partitions)
    keys = list(KAFKA_MURMUR2) + [b"", b"x", "k\u00e9y", "order-42"]
    for k in keys:
        kb = k.encode("utf-8") if isinstance(k, str) else k
        want = (_format.murmur2(kb) & 0x7FFFFFFF) % partitions
        assert t.append(b"v", key=k).partition == want
        assert t.append(b"v", key=k, headers={"h": b"1"}).partition == want
        assert {p.partition for p in t.append_many([b"a", b"b"], keys=[k, k])} == {want}


def test_keyless_appends_spread_round_robin(store):
    """Keyless appends visit every partition in turn."""
    t = store.topic("rr", partitions=3)
    parts = [t.append(b"v").partition for _ in range(9)]
    assert sorted(parts) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_field_offsets_agree_and_match_the_documented_table():
    """The extension's BATCH_OFFSETS/RECORD_OFFSETS/HEADER_SIZE equal _format's, which
    derives them from the field sizes, and both equal the table in docs/format.md."""
    assert _ext.BATCH_OFFSETS == _format.BATCH_OFFSETS
    assert _ext.RECORD_OFFSETS == _format.RECORD_OFFSETS
    assert _ext.HEADER_SIZE == _format.HEADER_SIZE == 44
    assert _ext.RECORD_HEADER_SIZE == _format.RECORD_HEADER_SIZE == 16
    assert _ext.CRC_START == _format.CRC_START == 20
    assert _ext.MAGIC == _format.MAGIC == 0x4C53
    assert _ext.VERSION == _format.VERSION == 1
    assert _ext.LENGTH_CHECK_XOR == _format.LENGTH_CHECK_XOR == 0xFFFFFFFF
    assert _format.BATCH_OFFSETS == {
        "base_offset": 0, "batch_length": 8, "length_check": 12, "crc": 16, "magic": 20,
        "version": 22, "attributes": 23, "record_count": 24, "first_timestamp_ms": 28,
        "max_timestamp_ms": 36}
    assert _format.RECORD_OFFSETS == {
        "timestamp_delta": 0, "key_length": 4, "value_length": 8, "headers_length": 12}
    assert _ext.INDEX_INTERVAL_BYTES == _limits.INDEX_INTERVAL_BYTES
    assert (_ext.INDEX_ENTRY_BYTES, _ext.TIMEINDEX_ENTRY_BYTES) == (8, 12)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_pinned_batch_encoding(codec):
    """A fixed small batch encodes to the pinned bytes, and they decode back to it."""
    c = CODECS[codec]
    want = bytes.fromhex(PINNED_BATCH_HEX)
    assert c.encode_batch(*PINNED_ARGS) == want
    # the vector is self-consistent: its CRC is the CRC32C of [20, end)
    length, check, crc = struct.unpack_from("<III", want, 8)
    assert length == len(want) and check == length ^ 0xFFFFFFFF
    assert crc == _format.crc32c(want[20:])
    base, n, recs = c.decode_batch(want, 0, len(want), 0)
    assert (base, n) == (0, len(want))
    assert [tuple(r) for r in recs] == [
        (0, 1700000000000, b"key", b"hello", {"h": b"v"}),
        (1, 1700000000005, None, b"", {}),
        (2, 1699999999990, b"", None, {}),
    ]


# A gap batch (format 2): base 7, 3 offsets removed, timestamps 1700000000000..009.
PINNED_GAP_HEX = ("07000000000000002c000000d3ffffff3daaf6bd534c0101030000000068e5cf8b01"
                  "00000968e5cf8b010000")


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_pinned_gap_batch_I2(codec):
    """A gap batch is a bare 44-byte header with attributes bit 0 set: it covers
    record_count offsets (dense offsets, I2) and yields no records."""
    c = CODECS[codec]
    gap = bytes.fromhex(PINNED_GAP_HEX)
    assert _codec.encode_gap(7, 3, 1700000000000, 1700000000009) == gap
    assert gap[c.BATCH_OFFSETS["attributes"]] == c.ATTR_GAP == 1
    assert struct.unpack_from("<I", gap, 16)[0] == _format.crc32c(gap[20:])
    assert c.batch_info(gap, 0, len(gap), 7, True) == (44, 3, 1700000000000, 1700000000009)
    assert c.decode_batch(gap, 0, len(gap), 7) == (7, 44, [])
    rec = bytearray(c.encode_batch([b"k"], [b"v"], None, [1700000000010]))
    c.set_base_offset(rec, 0, 10)
    buf = gap + bytes(rec)
    out: list = []
    assert c.read_span(buf, 0, len(buf), 7, 0, 10, "t", 0, out, 0) == (len(buf), 11, True)
    assert [(r.offset, r.key, r.value) for r in out] == [(10, b"k", b"v")]
    assert c.hop(buf, 0, len(buf), 7, 9) == (0, 7)  # an offset in the gap: its gap batch
    assert c.hop(buf, 0, len(buf), 7, 10) == (44, 10)
    assert c.time_search(buf, 0, len(buf), 7, -1, 1700000000005)[0] == 7
    assert list(c.read_columns(buf, 0, len(buf), 7, 0, 10, 0)[0]["offsets"]) == [10]
    # a gap batch never holds records, and no other attribute bit is defined
    with pytest.raises(CorruptionError, match="minimum|gap batch"):
        bad = bytearray(rec)
        bad[c.BATCH_OFFSETS["attributes"]] = 1
        c.batch_info(bytes(bad), 0, len(bad), 10, False)
    bad = bytearray(gap)
    bad[c.BATCH_OFFSETS["attributes"]] = 2
    with pytest.raises(CorruptionError):
        c.batch_info(bytes(bad), 0, len(bad), 7, False)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_set_base_offset_writes_u64_le_outside_the_crc_I3(codec):
    """The base offset is the first 8 bytes, little-endian, and leaves the CRC valid (I3)."""
    c = CODECS[codec]
    buf = bytearray.fromhex(PINNED_BATCH_HEX)
    c.set_base_offset(buf, 0, 0x0102030405060708)
    assert bytes(buf[:8]) == bytes.fromhex("0807060504030201")
    assert bytes(buf[8:]) == bytes.fromhex(PINNED_BATCH_HEX)[8:]
    assert c.decode_batch(bytes(buf), 0, len(buf), 0x0102030405060708)[0] == 0x0102030405060708


def test_control_block_and_file_names_on_disk(tmp_path):
    """The control file starts with SLCTRL01, version 1, this boot's id at offset 16, and
    segments are named by their 20-digit base offset."""
    with streamlog.open(tmp_path / "s") as log:
        t = log.topic("names", segment_bytes=1024)
        for i in range(40):
            t.append(b"%03d" % i + b"." * 60)
        pdir = files.partition_dir(log.path, "names", 0)
        with open(os.path.join(pdir, files.CONTROL_FILE), "rb") as f:
            ctl = f.read()
        assert len(ctl) == _ext.CONTROL_BYTES == 4096
        assert ctl[:8] == b"SLCTRL01"
        assert struct.unpack_from("<I", ctl, 8)[0] == 1
        assert ctl[16:32] == boot_id()
        assert struct.unpack_from("<Q", ctl, 120)[0] == t.end_offset(0) == 40
        logs = sorted(n for n in os.listdir(pdir) if n.endswith(".log"))
        assert logs[0] == "00000000000000000000.log"
        assert all(len(n) == 24 and n[:20].isdigit() for n in logs)
        assert len(logs) > 1
        with open(os.path.join(log.path, files.FORMAT_FILE)) as f:
            assert '"format": 2' in f.read()


@pytest.mark.parametrize("size", [0, 1, 100, 65_535, 65_536, 300_001])
def test_batch_crc_is_the_crc32c_package_s(size):
    """The extension calls the crc32c package's C function directly when it agrees with
    crc32c.crc32c at import (CRC_DIRECT); either way a batch's stored CRC is exactly
    crc32c.crc32c over its bytes from the magic on, small or large (no GIL)."""
    import crc32c

    value = bytes((i * 7) & 0xFF for i in range(size))
    buf = _ext.encode_batch(None, [value], None, [1])
    assert int.from_bytes(buf[16:20], "little") == crc32c.crc32c(buf[20:])
    assert _ext.batch_info(buf, 0, len(buf), 0, True)[0] == len(buf)


@pytest.mark.parametrize("durability", ["never", "always"])
def test_appended_bytes_are_the_reference_encoding_I3(tmp_path, durability):
    """What the per-record fast path writes into the segment (encoded in place under the
    lock), what append_many and append_batch write, are byte for byte the reference
    codec's batches with the base offset stamped (I3): the same format whichever path."""
    from streamlog.backends.local.codec import reference as ref

    recs = [(b"k1", b"v" * 10, 5), (None, b"", 6), (b"", b"x" * 70_000, 7),
            (b"key", b"value", 1 << 40)]
    with streamlog.open(tmp_path / "s", durability=durability) as log:
        t = log.topic("bytes")
        for k, v, ts in recs:
            t.append(v, key=k, timestamp_ms=ts)
        t.append_many([b"a", b"bb"], keys=[b"1", None])
        t.append_batch(0, streamlog.RecordBatch.from_arrays([b"c", b"dd"], keys=[None, b"2"],
                                                            timestamps_ms=[9, 8]))
        many_ts = next(iter(t.read(0, 4))).timestamp_ms
        want = []
        for i, (k, v, ts) in enumerate(recs):
            want.append(bytearray(ref.encode_record(k, v, None, ts)))
            ref.set_base_offset(want[-1], 0, i)
        want.append(bytearray(ref.encode_batch([b"1", None], [b"a", b"bb"], None,
                                               [many_ts, many_ts])))
        ref.set_base_offset(want[-1], 0, 4)
        want.append(bytearray(ref.encode_batch([None, b"2"], [b"c", b"dd"], None, [9, 8])))
        ref.set_base_offset(want[-1], 0, 6)
        pdir = files.partition_dir(log.path, "bytes", 0)
        with open(os.path.join(pdir, files.segment_name(0)), "rb") as f:
            data = f.read(sum(len(w) for w in want))
        assert data == b"".join(bytes(w) for w in want)
