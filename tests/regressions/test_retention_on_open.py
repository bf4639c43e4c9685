"""Regression: retention ran only when a segment rolled and on log.apply_retention(), not
after a partition was opened, so segments that aged while the store was closed stayed.

Retention on open runs in streamlog.open() (not read-only); a read-only open, as the
CLI's inspecting commands make, removes nothing."""

import time

import streamlog


def test_segments_that_aged_while_closed_go_on_open(tmp_path):
    """Segments whose newest record passed max_age_s while the store was closed are kept
    by a read-only open and removed by the next open for writing, the active segment's
    records too (it is rolled); appends go on densely."""
    path = tmp_path / "s"
    young_ms = int(time.time() * 1000) - 500
    with streamlog.open(path) as log:
        t = log.topic("t", segment_bytes=1024, retention=streamlog.Retention(max_age_s=1))
        for _ in range(30):
            t.append(b"x" * 100, timestamp_ms=young_ms)
        assert t.start_offset(0) == 0  # young enough at the last roll
        segments = t._parts[0].segments_info()
        assert len(segments) > 2
    time.sleep(0.7)  # the records are now older than max_age_s
    with streamlog.open(path, read_only=True) as log:
        t = log.existing_topic("t")
        assert t.start_offset(0) == 0  # looking removes nothing
        assert len(t._parts[0].segments_info()) == len(segments)
    with streamlog.open(path) as log:
        t = log.topic("t")
        assert t.start_offset(0) == t.end_offset(0) == 30
        assert [s["base_offset"] for s in t._parts[0].segments_info()] == [30]
        assert t.append(b"y" * 10).offset == 30
        assert [r.offset for r in t.read(0)] == [30]
