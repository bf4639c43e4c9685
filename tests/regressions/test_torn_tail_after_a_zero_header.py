"""Regression: when a rebuilt partition's data ended at an all-zero header but a partial
write lay after it (its first page lost), recovery discarded it silently; it is a torn
tail and is now logged as one."""

import logging
import os

import streamlog
from streamlog.backends.local.storage import files


def test_bytes_after_a_zero_header_are_logged_as_a_torn_tail(tmp_path, caplog):
    """Non-zero bytes past the end of the data are cut at cold start with a warning."""
    path = tmp_path / "s"
    with streamlog.open(path) as log:
        t = log.topic("t")
        for i in range(5):
            t.append(b"v%d" % i)
        end_pos = t._parts[0].ctl.view()[3]
    pdir = files.partition_dir(str(path), "t", 0)
    seg = os.path.join(pdir, files.segment_name(0))
    with open(seg, "r+b") as f:  # the second page of an unfinished 5000-byte write
        f.seek(4096)
        f.write(b"\x5a" * 900)
    os.unlink(os.path.join(pdir, files.CONTROL_FILE))
    with caplog.at_level(logging.WARNING, logger="streamlog"):
        with streamlog.open(path) as log:
            t = log.topic("t")
            assert [r.value for r in t.read(0)] == [b"v%d" % i for i in range(5)]
    assert any(f"truncated at byte {end_pos}" in r.getMessage() for r in caplog.records)
    with open(seg, "rb") as f:
        assert not any(f.read()[end_pos:])
