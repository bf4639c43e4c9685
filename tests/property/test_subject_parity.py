"""Subject filters: the compiled matcher and the Python reference agree on every input.

The reference (``codec.reference``: ``subject_matches``, ``SubjectFilter``,
``match_span``) states the NATS wildcard rules plainly; the extension matches
the same subjects in place over record-batch bytes, without an object per
record. Both run in every test, whichever one the store selected.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from streamlog import _ext
from streamlog.backends.local.codec import reference as ref
from tests.strategies import subject_batches, subject_patterns, subject_strings


def _regex(pattern: str) -> re.Pattern[str]:
    """A third, independent statement of the rules for subjects without empty tokens."""
    parts = []
    toks = pattern.split(".")
    for i, t in enumerate(toks):
        if t == ">" and i == len(toks) - 1:
            parts.append(r"[^.]+(?:\.[^.]+)*")
        elif t == "*":
            parts.append(r"[^.]+")
        else:
            parts.append(re.escape(t))
    return re.compile(r"\.".join(parts) + r"\Z", re.S)


@settings(max_examples=500, deadline=None)
@given(st.lists(subject_patterns(), min_size=1, max_size=3), subject_strings)
def test_compiled_matcher_equals_reference(patterns, subject):
    """For any patterns and subject, _ext.SubjectFilter answers as the reference does."""
    want = ref.SubjectFilter(patterns).matches(subject)
    assert _ext.SubjectFilter(patterns).matches(subject) == want
    assert _ext.SubjectFilter(patterns).matches(subject.encode()) == want
    if "" not in subject.split("."):  # NATS subjects have no empty tokens
        assert want == any(_regex(p).match(subject) for p in patterns)


def test_wildcard_rules_known_answers():
    """'*' is exactly one token, a last '>' one or more, literals match whole tokens."""
    cases = [("orders.eu.*", "orders.eu.created", True), ("orders.eu.*", "orders.eu", False),
             ("orders.eu.*", "orders.eu.a.b", False), ("orders.>", "orders.eu", True),
             ("orders.>", "orders.eu.created", True), ("orders.>", "orders", False),
             ("*.eu.*", "orders.eu.paid", True), ("orders", "orders.eu", False),
             ("orders.e", "orders.eu", False), (">", "a", True), ("*", "a.b", False)]
    for f in (_ext.SubjectFilter, ref.SubjectFilter):
        for pattern, subject, want in cases:
            assert f([pattern]).matches(subject) is want, (f, pattern, subject)


@settings(max_examples=300, deadline=None)
@given(st.lists(subject_batches(), min_size=1, max_size=4),
       st.lists(subject_patterns(), min_size=1, max_size=2),
       st.integers(0, 12), st.integers(0, 40), st.integers(1, 6))
def test_match_span_equals_reference(batches, patterns, min_offset, width, max_matches):
    """match_span over encoded batches returns the same records, position and progress."""
    buf = bytearray()
    base = 0
    for ks, vs, hs, ts in batches:
        b = bytearray(ref.encode_batch(ks, vs, hs, ts))
        ref.set_base_offset(b, 0, base)
        buf += b
        base += len(vs)
    buf += bytes(64)  # the zeroed, never-written end of an active segment
    max_offset = min_offset + width
    got: list = []
    want: list = []
    a = _ext.match_span(bytes(buf), 0, len(buf), 0, min_offset, max_offset, max_matches,
                        _ext.SubjectFilter(patterns), "t", 3, got, 0)
    b = ref.match_span(bytes(buf), 0, len(buf), 0, min_offset, max_offset, max_matches,
                       ref.SubjectFilter(patterns), "t", 3, want, 0)
    assert a == b
    assert got == want
    flt = ref.SubjectFilter(patterns)
    offsets = [r.offset for r in got]
    # every record looked at and left out does not match; every kept one does
    every = []
    off = 0
    for _ks, vs, hs, _ts in batches:
        for i in range(len(vs)):
            every.append((off, dict((k.decode(), v) for k, v in (hs[i] or []))))
            off += 1
    for o, hdrs in every:
        if min_offset <= o < a[3]:
            s = hdrs.get("subject")
            assert (o in offsets) == (s is not None and flt.matches(s))
    assert len(got) <= max_matches
    assert a[3] <= max(min_offset, max_offset)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(subject_batches(), st.integers(1, 5)), min_size=1, max_size=6),
       st.lists(subject_patterns(), min_size=1, max_size=2),
       st.lists(st.tuples(st.integers(0, 8), st.integers(0, 30), st.integers(0, 40),
                          st.integers(0, 6)), min_size=1, max_size=6))
def test_subject_index_equals_reference(batches, patterns, queries):
    """A SubjectIndex answers every query as the reference walk over the same bytes does,
    while the data grows between queries (an active segment appended to): records,
    position, end and progress; gap batches (compaction) included."""
    from streamlog.backends.local.codec import encode_gap
    buf = bytearray()
    ends = []
    base = 0
    for item in batches:
        if isinstance(item, int):  # a gap batch of ``item`` offsets
            buf += encode_gap(base, item, 1_000_000, 1_000_000)
            base += item
        else:
            ks, vs, hs, ts = item
            b = bytearray(ref.encode_batch(ks, vs, hs, ts))
            ref.set_base_offset(b, 0, base)
            buf += b
            base += len(vs)
        ends.append(len(buf))
    data = bytes(buf) + bytes(64)
    idx = _ext.SubjectIndex(0)
    cflt = _ext.SubjectFilter(patterns)
    rflt = ref.SubjectFilter(patterns)
    for grow, min_offset, width, max_matches in queries:
        limit = ends[min(grow, len(ends) - 1)]  # the published end so far (never shrinks)
        ends = [e for e in ends if e >= limit] or [limit]
        got: list = []
        want: list = []
        a = idx.match(data, limit, min_offset, min_offset + width, max_matches, cflt,
                      "t", 3, got, 0)
        b = ref.match_span(data, 0, limit, 0, min_offset, min_offset + width, max_matches,
                           rflt, "t", 3, want, 0)
        assert got == want
        if max_matches > 0 and width > 0:
            assert a == b
        assert idx.end_pos <= limit


def test_subject_index_refuses_bytes_changed_under_it():
    """Bytes of an indexed batch that were zeroed or changed afterwards (damage the
    owner has not noticed yet) raise CorruptionError when a match is read from them,
    never a record made of other bytes."""
    import pytest

    from streamlog.errors import CorruptionError
    buf = bytearray()
    starts = []
    for i in range(6):
        b = bytearray(ref.encode_batch([None], [b"v%d" % i],
                                       [[(b"subject", b"orders.eu.created")]], [1_000_000]))
        ref.set_base_offset(b, 0, i)
        starts.append(len(buf))
        buf += b
    end = len(buf)
    buf += bytes(64)
    idx = _ext.SubjectIndex(0)
    flt = _ext.SubjectFilter(["orders.eu.*"])
    out: list = []
    idx.match(bytes(buf), end, 0, 6, 2, flt, "t", 0, out, 0)
    assert [r.offset for r in out] == [0, 1] and idx.end_pos == end
    zeroed = bytearray(buf)
    zeroed[starts[3]:end] = bytes(end - starts[3])
    with pytest.raises(CorruptionError):
        idx.match(bytes(zeroed), end, 2, 6, 5, flt, "t", 0, [], 0)
    moved = bytearray(buf)
    ref.set_base_offset(moved, starts[4], 40)
    with pytest.raises(CorruptionError):
        idx.match(bytes(moved), end, 4, 6, 5, flt, "t", 0, [], 0)
    out = []
    idx.match(bytes(buf), end, 2, 6, 5, flt, "t", 0, out, 0)
    assert [r.offset for r in out] == [2, 3, 4, 5]


def test_subject_index_refuses_a_record_count_the_batch_cannot_hold():
    """A batch whose record count is larger than its bytes can hold (damage in a batch
    whose CRC this process checked before) is CorruptionError from the index, as from
    the walk (the index checks the count before sizing its arrays by it)."""
    import pytest

    from streamlog.backends.local.codec import BATCH_OFFSETS
    from streamlog.errors import CorruptionError
    b = bytearray(ref.encode_batch([None], [b"v"], [[(b"subject", b"a.b")]], [1_000_000]))
    at = BATCH_OFFSETS["record_count"]
    b[at:at + 4] = (1 << 31).to_bytes(4, "little")
    data = bytes(b) + bytes(64)
    flt = _ext.SubjectFilter(["a.*"])
    for call in (lambda: _ext.SubjectIndex(0).match(data, len(b), 0, 10, 5, flt, "t", 0, [],
                                                     1 << 40),
                 lambda: _ext.match_span(data, 0, len(b), 0, 0, 10, 5, flt, "t", 0, [],
                                         1 << 40)):
        with pytest.raises(CorruptionError):
            call()
