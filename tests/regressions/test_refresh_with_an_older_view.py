"""Regression: a thread refreshing the segment cache with a view older than another
thread's refresh rebuilt it backwards, dropping the newer segments and closing their file
descriptors under the thread using them (EBADF during rolls with reader threads)."""

import pytest

import streamlog


def test_an_older_view_never_undoes_a_newer_refresh(store):
    """After a roll seen by one caller, a refresh with the view from before the roll keeps
    the new active segment and its open file."""
    t = store.topic("t", segment_bytes=1024)
    part = t._parts[0]
    t.append(b"x" * 100)
    old_view = part.view()
    while part.ctl.view()[1] == old_view[1]:
        t.append(b"y" * 100)  # until a roll
    new_view = part.view()
    active = new_view[1]
    fd = part._fd(active)
    part._refresh(old_view)  # a slower thread, still holding the pre-roll view
    assert part._bases[-1] == active
    assert part._fds.get(active) == fd
    assert [len(r.value) for r in t.read(0)][-1] == 100
    t.append(b"z")
    assert list(t.read(0))[-1].value == b"z"
    assert store.verify() == []


@pytest.mark.parametrize("trim", ["background", "pending"])
def test_closed_segment_never_read_through_its_active_map(tmp_path, monkeypatch, trim):
    """A map made at capacity while a segment was active is not used to read it once closed
    (it would run past the file's end once trimmed), whether the background syncer has
    trimmed the closed segment yet or not."""
    from streamlog.backends.local.storage import prefault

    held: list = []
    if trim == "pending":
        monkeypatch.setattr(prefault, "request_sync", held.append)
    with streamlog.open(tmp_path / "s") as log:
        t = log.topic("t", segment_bytes=64 * 1024)
        part = t._parts[0]
        for i in range(50):
            t.append(b"%03d" % i)
        first = part.view()
        seg = part._segments[first[1]]
        part._map(seg, True, first[4])  # mapped as active, at capacity
        while part.ctl.view()[1] == first[1]:
            t.append(b"." * 2000)
        part.view()
        part._map(seg, True, first[4])  # a thread with the old view maps it again
        assert part._map(seg, False, 0).length == seg.size < first[4]
        assert [r.value for r in t.read(0, 0, limit=50)] == [b"%03d" % i for i in range(50)]
        assert (len(held) == 1) == (trim == "pending")
        for job in held:  # the trim, late: reads go on through the data-sized map
            job()
        assert [r.value for r in t.read(0, 0, limit=50)] == [b"%03d" % i for i in range(50)]
