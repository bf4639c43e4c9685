"""Regression: a Topic handle whose topic was deleted by the same Log raised StoreClosed
(delete_topic closes the partitions) instead of TopicNotFound."""

import pytest

import streamlog


def test_deleted_topic_handle_raises_topic_not_found(store):
    """append (fast and slow path), read and end_offset on a deleted topic's handle raise
    TopicNotFound, while the store itself stays open."""
    t = store.topic("gone", partitions=2)
    t.append(b"v")
    store.delete_topic("gone")
    with pytest.raises(streamlog.TopicNotFound):
        t.append(b"v")
    with pytest.raises(streamlog.TopicNotFound):
        t.append(b"v", headers={"h": b"1"})
    with pytest.raises(streamlog.TopicNotFound):
        list(t.read(0))
    with pytest.raises(streamlog.TopicNotFound):
        t.end_offset(1)
    assert store.topic("other").append(b"v").offset == 0
