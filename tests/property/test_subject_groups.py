"""Groups with a subject filter on the embedded store, against a model: whatever the
consumers do (polls of any size, acks, nacks, closes, appends in between), every record
whose subject matches is delivered until acked, no other record is ever delivered, and
the group's lag ends at 0 with every match acked once."""

from __future__ import annotations

import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

import streamlog
from streamlog.backends.local.codec import reference as ref

SUBJECTS = ["orders.eu.created", "orders.eu.paid", "orders.us.created", "billing.eu.x"]
FILTER = ["orders.eu.*"]

ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.lists(st.sampled_from(SUBJECTS + [None]), min_size=1,
                                          max_size=60)),
    st.tuples(st.just("poll"), st.integers(0, 1), st.integers(1, 20)),
    st.tuples(st.just("ack"), st.integers(0, 1), st.integers(0, 2**16)),
    st.tuples(st.just("nack"), st.integers(0, 1), st.integers(0, 2**16)),
    st.tuples(st.just("close"), st.integers(0, 1)),
), max_size=25)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_filtered_group_matches_the_model(steps):
    flt = ref.SubjectFilter(FILTER)
    with tempfile.TemporaryDirectory() as d, streamlog.open(d) as log:
        t = log.topic("o", partitions=2)
        names = ["a", "b"]
        handles = {c: t.group("g", subjects=FILTER, consumer=c) for c in names}
        held: dict[str, list] = {c: [] for c in names}
        matching: set[tuple[int, int]] = set()
        acked: set[tuple[int, int]] = set()
        for i, step in enumerate(steps):
            kind = step[0]
            if kind == "append":
                for j, s in enumerate(step[1]):
                    pos = t.append(b"%d.%d" % (i, j), key=b"k%d" % (j % 3), subject=s)
                    if s is not None and flt.matches(s):
                        matching.add((pos.partition, pos.offset))
            elif kind == "poll":
                c = names[step[1]]
                for m in handles[c].poll(step[2], timeout=0):
                    assert flt.matches(m.headers["subject"]), m
                    assert (m.partition, m.offset) not in acked
                    held[c].append(m)
            elif kind in ("ack", "nack"):
                c = names[step[1]]
                mine, keep = [], []
                for k, m in enumerate(held[c]):
                    (mine if (step[2] >> (k % 16)) & 1 else keep).append(m)
                held[c] = keep
                if kind == "ack":
                    for m, ok in zip(mine, handles[c].ack(mine), strict=True):
                        if ok:
                            acked.add((m.partition, m.offset))
                else:
                    handles[c].nack(mine)
            else:
                c = names[step[1]]
                handles[c].close()
                held[c] = []
                handles[c] = t.group("g", subjects=FILTER, consumer=c)
        for c in names:  # let every lease go back, then drain with one consumer
            handles[c].close()
        g = t.group("g", subjects=FILTER, consumer="drain")
        while True:
            msgs = g.poll(50, timeout=0)
            if not msgs:
                break
            for m in msgs:
                assert flt.matches(m.headers["subject"])
            for m, ok in zip(msgs, g.ack(msgs), strict=True):
                assert ok
                acked.add((m.partition, m.offset))
        assert acked == matching
        assert g.lag() == 0
