"""Model-based test of the Topic API: random sequences of appends, reads and reopens are
checked against a plain Python list per partition (small segments, so rolls happen)."""

from __future__ import annotations

import shutil
import tempfile
import time

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import streamlog
from streamlog import OffsetOutOfRange
from streamlog.backends.local.codec import reference as _format
from tests.strategies import api_headers, api_keys, api_timestamps, api_values

PARTITIONS = 2
big_values = st.binary(min_size=1100, max_size=3000)  # bigger than a whole segment


def _key(k):
    return k.encode("utf-8") if isinstance(k, str) else k


def _headers(h):
    if not h:
        return {}
    return {n: v.encode("utf-8") if isinstance(v, str) else bytes(v) for n, v in h.items()}


class TopicModel(RuleBasedStateMachine):
    """The store against ``self.model[p]``: a list of (key, value, headers, timestamp_ms)."""

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="streamlog-model-")
        self.log = streamlog.open(self.dir, durability="never")
        self.t = self.log.topic("m", partitions=PARTITIONS, segment_bytes=1024)
        self.model: list[list[tuple]] = [[] for _ in range(PARTITIONS)]

    def teardown(self):
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _check_partition(self, pos, key):
        assert 0 <= pos.partition < PARTITIONS
        if key is not None:
            assert pos.partition == _format.partition_for_key(key, PARTITIONS)
        assert pos.offset == len(self.model[pos.partition])

    @rule(value=st.one_of(api_values, big_values), key=api_keys, headers=api_headers,
          ts=api_timestamps)
    def append(self, value, key, headers, ts):
        before = time.time_ns() // 1_000_000
        pos = self.t.append(value, key=key, headers=headers, timestamp_ms=ts)
        after = time.time_ns() // 1_000_000
        k = _key(key)
        self._check_partition(pos, k)
        if ts is None:
            ts = self.t.get(pos.partition, pos.offset).timestamp_ms
            assert before <= ts <= after
        self.model[pos.partition].append((k, value, _headers(headers), ts))

    @rule(items=st.lists(st.tuples(api_values, api_keys, api_headers), min_size=1, max_size=8),
          with_keys=st.booleans(), with_headers=st.booleans())
    def append_many(self, items, with_keys, with_headers):
        values = [v for v, _, _ in items]
        keys = [k for _, k, _ in items] if with_keys else None
        hdrs = [h for _, _, h in items] if with_headers else None
        positions = self.t.append_many(values, keys=keys, headers=hdrs)
        assert len(positions) == len(values)
        by_part: dict[int, list[int]] = {}
        for i, pos in enumerate(positions):
            by_part.setdefault(pos.partition, []).append(i)
        for p, idxs in by_part.items():
            base = len(self.model[p])
            assert [positions[i].offset for i in idxs] == list(range(base, base + len(idxs)))
            ts = self.t.get(p, base).timestamp_ms
            for i in idxs:
                k = _key(keys[i]) if keys else None
                if k is not None:
                    assert p == _format.partition_for_key(k, PARTITIONS)
                self.model[p].append((k, values[i], _headers(hdrs[i] if hdrs else None), ts))

    @rule(p=st.integers(0, PARTITIONS - 1), data=st.data())
    def read(self, p, data):
        n = len(self.model[p])
        offset = data.draw(st.integers(0, n + 2), label="offset")
        limit = data.draw(st.one_of(st.none(), st.integers(0, n + 2)), label="limit")
        got = [(r.offset, r.key, r.value, r.headers, r.timestamp_ms, r.topic, r.partition)
               for r in self.t.read(p, offset, limit)]
        want = [(o, *self.model[p][o], "m", p) for o in range(offset, n)][:limit]
        assert got == want

    @rule(p=st.integers(0, PARTITIONS - 1), data=st.data())
    def get(self, p, data):
        n = len(self.model[p])
        offset = data.draw(st.integers(0, n + 2), label="offset")
        if offset < n:
            r = self.t.get(p, offset)
            assert (r.key, r.value, r.headers, r.timestamp_ms) == self.model[p][offset]
        else:
            try:
                self.t.get(p, offset)
            except OffsetOutOfRange:
                pass
            else:
                raise AssertionError("get past the end did not raise OffsetOutOfRange")

    @rule(p=st.integers(0, PARTITIONS - 1), data=st.data())
    def read_batch(self, p, data):
        n = len(self.model[p])
        offset = data.draw(st.integers(0, n + 2), label="offset")
        max_records = data.draw(st.integers(0, n + 2), label="max_records")
        b = self.t.read_batch(p, offset, max_records)
        want = list(range(offset, n))[:max_records]
        assert list(b.offsets) == want and len(b) == len(want)
        for i, o in enumerate(want):
            k, v, _, ts = self.model[p][o]
            assert int(b.timestamps_ms[i]) == ts
            assert (None if b.value(i) is None else bytes(b.value(i))) == v
            assert (None if b.key(i) is None else bytes(b.key(i))) == k
            assert bool(b.key_null[i]) == (k is None)

    @rule(p=st.integers(0, PARTITIONS - 1),
          ts=st.one_of(st.integers(999_990, 1_000_210), st.integers(0, 1 << 45)))
    def offset_for_time(self, p, ts):
        running = -1
        want = len(self.model[p])
        for i, rec in enumerate(self.model[p]):
            running = max(running, rec[3])
            if running >= ts:
                want = i
                break
        assert self.t.offset_for_time(p, ts) == want

    @precondition(lambda self: any(self.model))
    @rule()
    def reopen(self):
        self.log.close()
        self.log = streamlog.open(self.dir, durability="never")
        self.t = self.log.topic("m")

    @invariant()
    def offsets(self):
        for p in range(PARTITIONS):
            assert self.t.start_offset(p) == 0
            assert self.t.end_offset(p) == len(self.model[p])


TopicModel.TestCase.settings = settings(max_examples=25, stateful_step_count=30,
                                        deadline=None)
test_topic_api_against_a_list_model = TopicModel.TestCase
