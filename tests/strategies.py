"""Hypothesis strategies for streamlog's tests: every generated input lives here.

Records are generated in the shapes the codec and the public API accept:
keys None / b"" / bytes, values None (tombstones) or bytes, headers with
unique UTF-8 names, and timestamps that fit one batch (deltas within i32).
"""

from __future__ import annotations

from hypothesis import strategies as st

# A batch stores timestamp deltas as i32 milliseconds against its first record.
MAX_DELTA_MS = (1 << 31) - 1
# Public timestamps are ints >= 0 and below 2**62 (streamlog._validate.timestamp).
MAX_PUBLIC_TIMESTAMP_MS = (1 << 62) - 1

small_bytes = st.binary(max_size=64)
keys = st.one_of(st.none(), st.just(b""), small_bytes)
values = st.one_of(st.none(), st.just(b""), st.binary(max_size=256))
non_null_values = st.binary(max_size=256)

header_names = st.text(max_size=12)  # any str: UTF-8 encoded by the caller
header_values = st.binary(max_size=32)
header_dicts = st.dictionaries(header_names, header_values, max_size=4)


def header_pairs(d: dict[str, bytes]) -> list[tuple[bytes, bytes]]:
    """The codec's header form: (UTF-8 name, value) pairs."""
    return [(k.encode("utf-8"), v) for k, v in d.items()]


@st.composite
def bytes_like(draw, inner=small_bytes):
    """The same bytes as bytes, bytearray or memoryview (the codec accepts any)."""
    b = draw(inner)
    kind = draw(st.sampled_from(["bytes", "bytearray", "memoryview"]))
    if kind == "bytearray":
        return bytearray(b)
    if kind == "memoryview":
        return memoryview(b)
    return b


@st.composite
def batches(draw, min_records: int = 1, max_records: int = 8):
    """Arguments of encode_batch: (keys|None, values, headers|None, timestamps_ms).

    Timestamps start anywhere in [0, 2**62) and stay within 2**31 ms of the
    first record, in any order (a batch's max timestamp need not be its last).
    """
    n = draw(st.integers(min_records, max_records))
    first = draw(st.integers(0, MAX_PUBLIC_TIMESTAMP_MS - MAX_DELTA_MS))
    deltas = draw(st.lists(st.integers(-min(first, MAX_DELTA_MS), MAX_DELTA_MS),
                           min_size=n - 1, max_size=n - 1))
    ts = [first] + [first + d for d in deltas]
    vals = draw(st.lists(values, min_size=n, max_size=n))
    ks = draw(st.one_of(st.none(), st.lists(keys, min_size=n, max_size=n)))
    hs = draw(st.one_of(
        st.none(),
        st.lists(st.one_of(st.none(), header_dicts.map(header_pairs)), min_size=n, max_size=n)))
    return ks, vals, hs, ts


@st.composite
def single_records(draw):
    """Arguments of encode_record: (key, value, headers|None, timestamp_ms)."""
    key = draw(keys)
    value = draw(values)
    hdrs = draw(st.one_of(st.none(), header_dicts.map(header_pairs)))
    ts = draw(st.integers(0, MAX_PUBLIC_TIMESTAMP_MS))
    return key, value, hdrs, ts


def expected_records(base: int, ks, vals, hs, ts) -> list[tuple]:
    """What decode_batch must return for a batch encoded from these arguments."""
    out = []
    for i, v in enumerate(vals):
        key = None if ks is None or ks[i] is None else bytes(ks[i])
        value = None if v is None else bytes(v)
        hdr = {} if hs is None or not hs[i] else {n.decode("utf-8"): bytes(x) for n, x in hs[i]}
        out.append((base + i, ts[i], key, value, hdr))
    return out


# --- the public Topic API --------------------------------------------------

api_keys = st.one_of(st.none(), st.just(b""), st.binary(min_size=1, max_size=16),
                     st.text(max_size=8))
api_values = st.binary(max_size=300)
api_headers = st.one_of(st.none(), st.dictionaries(
    st.text(max_size=6), st.one_of(st.binary(max_size=16), st.text(max_size=6)), max_size=3))
# Explicit timestamps in a narrow window, out of order on purpose, so
# offset_for_time's running maximum differs from the timestamps themselves.
api_timestamps = st.one_of(st.none(), st.integers(1_000_000, 1_000_200))


# --- self-describing values for cross-process and crash tests ---------------
#
# A value names its writer, its sequence number and its size, and carries a
# digest-derived body, so a reader can tell a whole record from interleaved,
# torn or foreign bytes without knowing what was acknowledged.


def record_value(writer: int, seq: int, size: int = 32) -> bytes:
    """The value writer ``writer`` appends as its ``seq``-th record (``size`` body bytes)."""
    import hashlib

    head = b"W%03d:%09d:%07d:" % (writer, seq, size)
    digest = hashlib.blake2b(head, digest_size=16).digest()
    return head + (digest * (size // 16 + 1))[:size]


def parse_value(value: bytes) -> tuple[int, int]:
    """(writer, seq) of a value made by record_value; AssertionError if it is damaged."""
    assert value[:1] == b"W" and len(value) >= 20, value[:40]
    writer, seq, size = int(value[1:4]), int(value[5:14]), int(value[15:22])
    assert value == record_value(writer, seq, size), f"damaged value of {writer}/{seq}"
    return writer, seq


@st.composite
def column_batches(draw, max_records: int = 12):
    """Arguments of ``RecordBatch.from_arrays`` (values, keys, timestamps_ms) in the
    shapes it takes: values as a list of bytes or a 2-D uint8 array of fixed-width
    rows; keys None, a list of bytes/None, or fixed-width rows; timestamps None, one
    int, or one per record within 2**31 ms of the first."""
    n = draw(st.integers(1, max_records))
    if draw(st.booleans()):
        width = draw(st.integers(0, 40))
        values = draw(st.lists(st.binary(min_size=width, max_size=width), min_size=n,
                               max_size=n))
        as_rows = True
    else:
        values = draw(st.lists(non_null_values, min_size=n, max_size=n))
        as_rows = False
    kind = draw(st.sampled_from(["none", "list", "rows"]))
    if kind == "none":
        ks = None
    elif kind == "list":
        ks = draw(st.lists(keys, min_size=n, max_size=n))
    else:
        width = draw(st.integers(0, 16))
        ks = draw(st.lists(st.binary(min_size=width, max_size=width), min_size=n, max_size=n))
    first = draw(st.integers(0, MAX_PUBLIC_TIMESTAMP_MS - MAX_DELTA_MS))
    ts = draw(st.one_of(
        st.none(), st.just(first),
        st.lists(st.integers(first, first + MAX_DELTA_MS), min_size=n, max_size=n)
        .map(lambda xs: [first] + xs[1:])))
    return values, as_rows, ks, kind == "rows", ts

# ------------------------------------------------------------------ subjects
# Tokens from a small alphabet so that patterns and subjects often share tokens (a
# random pattern would almost never match a random subject); the '*' and '>'
# characters and empty tokens appear in subjects too, as a raw header could hold them.
subject_tokens = st.sampled_from(["a", "b", "ab", "orders", "eu", "", "*", ">", "é"])
subject_strings = st.lists(subject_tokens, min_size=1, max_size=5).map(".".join)


@st.composite
def subject_patterns(draw):
    """A pattern as the API accepts it: tokens, '*' anywhere, '>' only last."""
    toks = draw(st.lists(st.sampled_from(["a", "b", "ab", "orders", "eu", "é", "*"]),
                         min_size=1, max_size=4))
    if draw(st.booleans()):
        toks[-1] = ">"
    return ".".join(toks)


@st.composite
def subject_batches(draw, max_records: int = 8):
    """Records (key, value, headers, timestamp) of one batch, some with a ``subject``
    header (sometimes twice, sometimes beside others), as ``encode_batch`` takes them."""
    n = draw(st.integers(1, max_records))
    headers = []
    for _ in range(n):
        pairs = draw(st.lists(st.tuples(st.sampled_from([b"subject", b"other", b"subjec"]),
                                        subject_strings.map(str.encode)), max_size=3))
        headers.append(pairs or None)
    values = draw(st.lists(st.one_of(st.none(), st.binary(max_size=16)), min_size=n,
                           max_size=n))
    keys = draw(st.lists(st.one_of(st.none(), st.binary(max_size=4)), min_size=n, max_size=n))
    return keys, values, headers, [1_000_000 + i for i in range(n)]
