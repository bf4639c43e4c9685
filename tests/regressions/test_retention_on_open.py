"""Regression: retention ran only when a segment rolled and on log.apply_retention(), not
after a partition was opened, so segments that aged while the store was closed stayed.

Retention on open runs at the opening process's first append (opening only to look, as
`streamlog retention --dry-run` does, removes nothing)."""

import time

import streamlog


def test_segments_that_aged_while_closed_go_on_open(tmp_path):
    """Segments whose newest record passed max_age_s while the store was closed are kept
    by an open that only reads, and removed at the first append after opening; the
    active segment stays."""
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
    with streamlog.open(path) as log:
        t = log.topic("t")
        assert t.start_offset(0) == 0  # looking removes nothing
        t.append(b"y" * 10, timestamp_ms=young_ms)
        active_base = t._parts[0].segments_info()[-1]["base_offset"]
        assert active_base >= segments[-1]["base_offset"]
        assert t.start_offset(0) == active_base
        assert [s["base_offset"] for s in t._parts[0].segments_info()] == [active_base]
        assert [r.offset for r in t.read(0)] == list(range(active_base, 31))
