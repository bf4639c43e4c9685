"""Columnar polls against a model, on the embedded store: any interleaving of ``poll``,
``poll_batch``, ``ack``, ``ack_batch``, ``nack``, ``nack_batch`` and appends by two
consumers of one shared group leases each record to one consumer at a time, counts its
deliveries, never delivers an acked record again, answers every settle as the model
does, and in the end every record is acked exactly once (lag 0)."""

from __future__ import annotations

import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

import streamlog

ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(1, 30)),
    st.tuples(st.just("poll"), st.integers(0, 1), st.integers(1, 12)),
    st.tuples(st.just("poll_batch"), st.integers(0, 1), st.integers(1, 12)),
    st.tuples(st.just("ack"), st.integers(0, 1), st.integers(0, 2**8)),
    st.tuples(st.just("nack"), st.integers(0, 1), st.integers(0, 2**8)),
    st.tuples(st.just("ack_batch"), st.integers(0, 1), st.integers(0, 7)),
    st.tuples(st.just("nack_batch"), st.integers(0, 1), st.integers(0, 7)),
    st.tuples(st.just("again"), st.integers(0, 1), st.integers(0, 7)),
), max_size=30)


@settings(max_examples=500, deadline=None)
@given(ops)
def test_columnar_and_message_polls_match_the_model(steps):
    with tempfile.TemporaryDirectory() as d, streamlog.open(d) as log:
        t = log.topic("t", partitions=2)
        names = ["a", "b"]
        g = {c: t.group("g", consumer=c, ack_wait_s=600) for c in names}
        msgs: dict[str, list] = {c: [] for c in names}  # Messages not settled yet
        batches: dict[str, list] = {c: [] for c in names}  # open batches, oldest first
        settled: dict[str, list] = {c: [] for c in names}  # batches settled, with answers
        holder: dict[tuple[int, int], str] = {}  # leased record -> consumer
        counts: dict[tuple[int, int], int] = {}  # deliveries so far
        appended: set[tuple[int, int]] = set()
        acked: set[tuple[int, int]] = set()

        def delivered(c: str, key: tuple[int, int], count: int) -> None:
            assert key in appended and key not in acked, key
            assert key not in holder, (key, holder.get(key), c)  # one consumer at a time
            counts[key] = counts.get(key, 0) + 1
            assert count == counts[key], (key, count, counts[key])
            holder[key] = c

        for i, step in enumerate(steps):
            kind = step[0]
            if kind == "append":
                for pos in t.append_many([b"%d.%d" % (i, j) for j in range(step[1])],
                                         keys=[b"k%d" % j for j in range(step[1])]):
                    appended.add((pos.partition, pos.offset))
                continue
            c = names[step[1]]
            if kind == "poll":
                for m in g[c].poll(step[2], timeout=0):
                    delivered(c, (m.partition, m.offset), m.delivery_count)
                    msgs[c].append(m)
            elif kind == "poll_batch":
                b = g[c].poll_batch(step[2], timeout=0)
                assert len(b) <= step[2]
                offs = b.offsets.tolist()
                assert offs == sorted(set(offs))
                for off, n in zip(offs, b.delivery_counts.tolist(), strict=True):
                    delivered(c, (b.partition, off), n)
                if len(b):
                    batches[c].append(b)
            elif kind in ("ack", "nack"):
                mine, keep = [], []
                for k, m in enumerate(msgs[c]):
                    (mine if (step[2] >> (k % 8)) & 1 else keep).append(m)
                msgs[c] = keep
                answers = g[c].ack(mine) if kind == "ack" else g[c].nack(mine)
                assert answers == [True] * len(mine)
                for m in mine:
                    key = (m.partition, m.offset)
                    del holder[key]
                    if kind == "ack":
                        acked.add(key)
            elif kind in ("ack_batch", "nack_batch"):
                if not batches[c]:
                    continue
                b = batches[c].pop(step[2] % len(batches[c]))
                out = g[c].ack_batch(b) if kind == "ack_batch" else g[c].nack_batch(b)
                assert out.tolist() == [True] * len(b)
                settled[c].append((b, kind, out.tolist()))
                for off in b.offsets.tolist():
                    key = (b.partition, off)
                    del holder[key]
                    if kind == "ack_batch":
                        acked.add(key)
            elif kind == "again" and settled[c]:
                # a settled batch settled again: no change, the first ack's answer repeats
                b, how, first = settled[c][step[2] % len(settled[c])]
                assert g[c].ack_batch(b).tolist() == (first if how == "ack_batch"
                                                      else [False] * len(b))
                assert g[c].nack_batch(b).tolist() == [False] * len(b)
        # the end: settle what is held, then drain everything left with both kinds of poll
        for c in names:
            assert g[c].ack(msgs[c]) == [True] * len(msgs[c])
            for m in msgs[c]:
                acked.add((m.partition, m.offset))
                del holder[(m.partition, m.offset)]
            for b in batches[c]:
                assert all(g[c].ack_batch(b))
                for off in b.offsets.tolist():
                    acked.add((b.partition, off))
                    del holder[(b.partition, off)]
        assert not holder
        for k in range(1000):
            c = names[k % 2]
            if k % 3:
                b = g[c].poll_batch(7, timeout=0)
                ms = []
                keys = [(b.partition, o) for o in b.offsets.tolist()]
                assert all(g[c].ack_batch(b))
            else:
                ms = g[c].poll(7, timeout=0)
                keys = [(m.partition, m.offset) for m in ms]
                assert g[c].ack(ms) == [True] * len(ms)
            for key in keys:
                assert key in appended and key not in acked, key
                acked.add(key)
            if not keys and k > 4:
                break
        assert acked == appended
        assert g["a"].lag() == 0
