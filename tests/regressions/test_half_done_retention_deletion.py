"""Regression: a retention step killed after publishing the new start_offset left its
segment files (or a renamed .deleted file) behind for good while the machine stayed up:
only a rebuild after a reboot removed them."""

import os

import streamlog
from streamlog.backends.local.storage import files


def test_leftovers_of_a_deletion_go_at_the_next_retention_pass(tmp_path):
    """Files below the start and .deleted leftovers are removed when the partition is opened
    again (retention on open), the records from the start stay readable."""
    path = tmp_path / "s"
    with streamlog.open(path) as log:
        t = log.topic("t", segment_bytes=1024, retention=streamlog.Retention(max_bytes=2500))
        for i in range(60):
            t.append(b"r%03d" % i + b"." * 100)
        start = t.start_offset(0)
    assert start > 0
    pdir = files.partition_dir(str(path), "t", 0)
    # what a killed deletion leaves: a segment below the start, and a renamed one
    stale = [files.segment_name(0), files.segment_name(0, files.INDEX_SUFFIX),
             files.segment_name(1) + files.DELETED_SUFFIX]
    for name in stale:
        with open(os.path.join(pdir, name), "wb") as f:
            f.write(b"\x01" * 64)
    with streamlog.open(path) as log:
        t = log.topic("t")
        assert not set(stale) & set(os.listdir(pdir))
        start = t.start_offset(0)  # the pass on open may remove one more segment
        assert [r.offset for r in t.read(0)] == list(range(start, 60))
        assert log.verify() == []
