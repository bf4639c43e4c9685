"""CloudEvents on records: binary and structured mode, checked against the SDK's own Kafka
binding, round trips through a topic, a queue, pub-sub and the event store."""

from __future__ import annotations

import json

import pytest
from cloudevents import kafka as ce_kafka
from cloudevents.http import CloudEvent

import streamlog
from streamlog import cloudevents as sce


def order_placed(**extra) -> CloudEvent:
    attrs = {"type": "com.example.order.placed", "source": "/shop/eu", "id": "A-1001",
             "subject": "orders.eu.created", "time": "2026-12-07T06:00:00Z",
             "datacontenttype": "application/json", "partitionkey": "cust-9"}
    attrs.update(extra)
    return CloudEvent(attrs, {"order_id": "o-1", "amount_cents": 1250})


def test_binary_mode_matches_the_sdk_kafka_binding():
    """Headers, key and value are what cloudevents.kafka.to_binary makes of the event."""
    ev = order_placed()
    rec = sce.to_record(ev)
    sdk = ce_kafka.to_binary(ev)
    assert rec.headers == sdk.headers
    assert rec.key == sdk.key.encode() and rec.value == sdk.value
    assert {"ce_id", "ce_source", "ce_type", "ce_specversion", "ce_time", "ce_subject",
            "content-type"} <= set(rec.headers)
    assert json.loads(rec.msg_id) == ["/shop/eu", "A-1001"]
    # and the SDK reads our record back as the same event
    assert ce_kafka.from_binary(ce_kafka.KafkaMessage(rec.headers, sdk.key, rec.value)) == ev


def test_structured_mode_matches_the_sdk_event_format():
    """The value is the SDK's JSON event; content-type is application/cloudevents+json."""
    ev = order_placed()
    rec = sce.to_record(ev, mode="structured")
    sdk = ce_kafka.to_structured(ev)
    assert json.loads(rec.value) == json.loads(sdk.value)
    assert rec.headers == {"content-type": b"application/cloudevents+json"}
    assert rec.key == b"cust-9"
    assert sce.from_record(_rec(rec)) == ev
    # a record the SDK wrote in structured mode reads back too
    sdk_rec = streamlog.Record("t", 0, 0, 0, sdk.key.encode(), sdk.value, sdk.headers)
    assert sce.from_record(sdk_rec) == ev


def _rec(r: sce.CloudEventRecord) -> streamlog.Record:
    return streamlog.Record("t", 0, 0, 0, r.key, r.value, r.headers)


def test_bytes_data_both_modes():
    """Binary data stays bytes: as the value in binary mode, as data_base64 in structured."""
    ev = CloudEvent({"type": "t", "source": "s", "datacontenttype": "image/png"}, b"\x89PNG")
    for mode in ("binary", "structured"):
        back = sce.from_record(_rec(sce.to_record(ev, mode)))
        assert back.data == b"\x89PNG" and back["datacontenttype"] == "image/png"
        assert back == ev


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_round_trip_through_topic_with_dedupe(store, mode):
    """append() returns the Position; the same event again (same source and id) is
    written once; from_record of what read and a group hand out is the event."""
    t = store.topic("orders", partitions=4)
    ev = order_placed()
    pos = sce.append(t, ev, mode=mode)
    assert sce.append(t, ev, mode=mode) == pos
    assert sum(t.end_offset(p) for p in range(4)) == 1
    assert sce.from_record(t.get(*pos)) == ev
    (m,) = t.group("g").poll(timeout=1)
    assert sce.from_record(m) == ev and m.key == b"cust-9"


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_round_trip_through_queue_pubsub_event_store(store, mode):
    ev = order_placed()
    rec = sce.to_record(ev, mode)
    q = store.queue("work")
    q.put(rec.value, key=rec.key, headers=rec.headers)
    m = q.get(timeout=1)
    assert sce.from_record(m) == ev
    m.ack()
    ps = store.pubsub("feed")
    ps.publish(rec.value, key=rec.key, headers=rec.headers)
    (m,) = list(ps.subscribe("s").listen(timeout=0.1))
    assert sce.from_record(m) == ev
    es = store.event_store("shop")
    es.append("order-o-1", [(rec.value, rec.headers)])
    (e,) = es.read("order-o-1")
    back = sce.from_record(e)  # an Event has no key: partitionkey is not in it
    assert back.get_data() == ev.get_data() and back["id"] == "A-1001"
    assert back.get_attributes().get("partitionkey") == (
        "cust-9" if mode == "structured" else None)


def test_append_through_a_serialized_handle_writes_the_event_bytes(store):
    """A handle with a serializer does not re-encode the event."""
    t = store.topic("ser", serializer="json")
    pos = sce.append(t, order_placed(), subject="orders.eu.created")
    r = t.raw.get(*pos)
    assert r.headers["subject"] == b"orders.eu.created"
    assert sce.from_record(r) == order_placed()


def test_bad_input():
    with pytest.raises(TypeError):
        sce.to_record({"type": "x"})
    with pytest.raises(ValueError):
        sce.to_record(order_placed(), mode="batch")
    with pytest.raises(ValueError, match="no CloudEvent"):
        sce.from_record(streamlog.Record("t", 0, 0, 0, None, b"x", {}))
