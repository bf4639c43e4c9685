"""Regression: on a store where no topic was ever created, listing or looking up topics
failed with an LMDB "Invalid argument" (the catalogue was first opened inside a read
transaction that could not see it)."""

import pytest

import streamlog


def test_topic_queries_on_a_fresh_store(tmp_path):
    """topics() is [] and a missing topic is TopicNotFound on a brand-new store."""
    with streamlog.open(tmp_path / "s") as log:
        assert log.topics() == []
        with pytest.raises(streamlog.TopicNotFound):
            log.existing_topic("missing")
        with pytest.raises(streamlog.TopicNotFound):
            log.delete_topic("missing")
        assert log.verify() == []
        assert log.apply_retention() == []
        assert log.stats()["topics"] == {}
