"""Smoke test: the basic append/read round trip through the public API."""

import streamlog


def test_append_then_read_round_trip(store):
    """What is appended comes back, in order, with dense offsets from 0."""
    t = store.topic("orders")
    positions = [t.append(b"v%d" % i, key=b"k") for i in range(10)]
    assert [p.offset for p in positions] == list(range(10))
    records = list(t.read(0))
    assert [r.value for r in records] == [b"v%d" % i for i in range(10)]
    assert all(r.key == b"k" and r.topic == "orders" for r in records)
    assert isinstance(positions[0], streamlog.Position)


def test_log_repr_and_url_name_the_store(tmp_path):
    """repr(log) names the store's URL; log.url is file:// plus the absolute path."""
    log = streamlog.open(tmp_path / "my store")
    try:
        assert log.url == (tmp_path / "my store").resolve().as_uri()
        assert log.url.startswith("file:///") and "my%20store" in log.url
        assert repr(log) == f"<streamlog.Log {log.url}>"
    finally:
        log.close()
    assert repr(log) == f"<streamlog.Log {log.url} (closed)>"


def test_partition_view_fields_by_name(store):
    """The View names match what the partition publishes: its end, start and newest time."""
    from streamlog._types import View

    t = store.topic("orders", partitions=1)
    for i in range(3):
        t.append(b"v%d" % i, timestamp_ms=1000 + i)
    v = View._make(t._parts[0].view())
    assert (v.start_offset, v.end_offset) == (0, 3) == (0, t.end_offset(0))
    assert v.max_timestamp_ms == 1002
    assert v.end_pos > 0 and v.capacity >= v.end_pos and v.index_count >= 1
