"""Serializers on topic handles and views: objects in and out, content-type, schema version,
tombstones, bad values refused before any write, poison records to the dead-letter topic."""

from __future__ import annotations

import json

import msgspec
import pytest

import streamlog
from streamlog.errors import DecodeError

ORDER = {"order_id": "o-1", "amount_cents": 1250, "items": ["book", "pen"]}


@pytest.mark.parametrize("name, value, content_type", [
    ("json", ORDER, b"application/json"),
    ("msgpack", ORDER, b"application/msgpack"),
    ("str", "naïve café", b"text/plain; charset=utf-8"),
    ("bytes", b"\x00\x01raw", b"application/octet-stream"),
])
def test_builtin_serializers_round_trip(store, name, value, content_type):
    """A value appended through a handle comes back equal from read, get and a group,
    with a content-type header naming the format."""
    t = store.topic("orders", serializer=name)
    pos = t.append(value, key="k")
    r = t.get(*pos)
    assert r.value == value and r.headers["content-type"] == content_type
    assert [x.value for x in t.read(0)] == [value]
    (m,) = t.group("g").poll(timeout=1)
    assert (m.value, m.key, m.headers["content-type"]) == (value, b"k", content_type)
    assert m.ack() is True


def test_stored_bytes_are_the_standard_encodings(store):
    """Readers without the serializer see plain JSON / MessagePack bytes."""
    store.topic("j", serializer="json").append(ORDER)
    store.topic("m", serializer="msgpack").append(ORDER)
    assert json.loads(store.topic("j").get(0, 0).value) == ORDER
    assert msgspec.msgpack.decode(store.topic("m").get(0, 0).value) == ORDER


def test_serializer_belongs_to_the_handle_not_the_topic(store):
    """Handles with different serializers open the same topic (no ConfigMismatch); each
    decodes with its own."""
    tj = store.topic("t", serializer="json")
    ts = store.topic("t", serializer="str")
    tj.append([1, 2])
    assert ts.get(0, 0).value == "[1,2]"
    assert store.topic("t").get(0, 0).value == b"[1,2]"
    assert tj.raw.name == "t" and tj.config == store.topic("t").config


def test_custom_serializer_object(store):
    """An object with dumps/loads (and optionally content_type) is a serializer."""
    class Upper:
        content_type = "text/x-upper"

        @staticmethod
        def dumps(v):
            return v.upper().encode()

        @staticmethod
        def loads(b):
            return b.decode().lower()

    t = store.topic("c", serializer=Upper())
    t.append("hello")
    r = t.get(0, 0)
    assert r.value == "hello" and r.headers["content-type"] == b"text/x-upper"
    assert store.topic("c").get(0, 0).value == b"HELLO"


def test_schema_version_header(store):
    """schema_version= on a handle writes header schema-version; the next handle may differ."""
    store.topic("s", serializer="json", schema_version=1).append({"a": 1})
    store.topic("s", serializer="json", schema_version="2").append({"a": 1, "b": 2})
    hs = [r.headers.get("schema-version") for r in store.topic("s").read(0)]
    assert hs == [b"1", b"2"]
    t = store.topic("s2", schema_version=3)  # bytes values, version only
    t.append(b"x")
    assert t.get(0, 0).headers == {"schema-version": b"3"} and t.get(0, 0).value == b"x"


def test_caller_headers_kept_and_may_override(store):
    """A caller's headers ride beside the handle's; a caller's content-type wins."""
    t = store.topic("h", serializer="json")
    t.append(1, headers={"trace": "t1"})
    t.append(2, headers={"content-type": "application/vnd.orders+json"})
    r0, r1 = t.read(0)
    assert r0.headers == {"content-type": b"application/json", "trace": b"t1"}
    assert r1.headers["content-type"] == b"application/vnd.orders+json"


def test_none_stays_a_tombstone(store):
    """None is never encoded: on a compacted topic it is a tombstone (no content-type)."""
    t = store.topic("kv", compact=True, serializer="json")
    t.append({"v": 1}, key="a")
    t.append(None, key="a")
    recs = list(t.read(0))
    assert recs[1].value is None and "content-type" not in recs[1].headers
    assert store.topic("kv").get(0, 1).value is None
    # JSON null is a value only as bytes
    t.raw.append(b"null", key="b")
    assert t.get(0, 2).value is None and store.topic("kv").get(0, 2).value == b"null"


@pytest.mark.parametrize("name, bad", [
    ("json", object()), ("msgpack", {1j: 2}), ("str", b"bytes"), ("bytes", "text"),
])
def test_value_that_does_not_serialize_raises_before_writing(store, name, bad):
    """TypeError, and nothing is written."""
    t = store.topic("bad", serializer=name)
    with pytest.raises(TypeError, match=name):
        t.append(bad)
    with pytest.raises(TypeError):
        t.append_many([ORDER if name in ("json", "msgpack") else None, bad])
    assert t.end_offset(0) == 0


def test_bad_serializer_options(store):
    """Unknown names, objects without dumps/loads, and bad schema versions are refused."""
    with pytest.raises(ValueError, match="serializer"):
        store.topic("x", serializer="yaml")
    with pytest.raises(TypeError, match="dumps"):
        store.topic("x", serializer=object())
    with pytest.raises(TypeError):
        store.topic("x", schema_version=1.5)
    with pytest.raises(ValueError):
        store.topic("x", schema_version=-1)
    with pytest.raises(TypeError):
        store.queue("x", serializer=42)


def test_record_that_does_not_decode_names_topic_partition_offset(store):
    """read/get raise DecodeError (a ValueError) naming the record."""
    t = store.topic("p", serializer="json")
    t.append({"ok": True})
    t.raw.append(b"{not json")
    with pytest.raises(DecodeError) as ei:
        list(t.read(0))
    e = ei.value
    assert (e.topic, e.partition, e.offset) == ("p", 0, 1)
    assert "'p'" in str(e) and "partition 0" in str(e) and "record 1" in str(e)
    assert isinstance(e, ValueError) and isinstance(e, streamlog.StreamlogError)
    assert t.get(0, 0).value == {"ok": True}


def test_poison_record_goes_to_dead_letters_after_max_deliver(store):
    """A group counts a record that does not decode as a delivery; after max_deliver it is
    in the dead-letter topic with the decode error, and the good records are delivered."""
    t = store.topic("orders", serializer="json")
    t.append({"n": 1})
    t.raw.append(b"\xff poison")
    t.append({"n": 2})
    g = t.group("billing", max_deliver=3)
    got = []
    for _ in range(10):
        for m in g.poll(max_records=10, timeout=0.05):
            got.append(m.value)
            m.ack()
        if g.lag() == 0:
            break
    assert got == [{"n": 1}, {"n": 2}]
    (dl,) = list(g.dead_letters().raw.read(0))
    assert dl.value == b"\xff poison"
    assert b"does not decode" in dl.headers["sl-dlq-error"]
    assert dl.headers["sl-dlq-delivery-count"] == b"3"


def test_queue_with_serializer(store):
    """Queue put/get carry objects; a poison message ends in the queue's dead letters."""
    q = store.queue("jobs", serializer="msgpack", schema_version=4, max_deliver=2)
    q.put({"job": 1})
    q.topic.raw.append(b"\xc1")  # never valid MessagePack
    q.put({"job": 2}, delay_s=0.01)
    m = q.get(timeout=1)
    assert m.value == {"job": 1} and m.headers["schema-version"] == b"4"
    m.ack()
    m = q.get(timeout=2)
    assert m.value == {"job": 2}
    m.ack()
    assert [r.value for r in q.dead_letters().raw.read(0)] == [b"\xc1"]
    assert q.lag() == 0


def test_pubsub_with_serializer(store):
    """Each subscription decodes with the pub-sub handle's serializer."""
    ps = store.pubsub("prices", serializer="json")
    ps.publish({"sym": "ACME", "px": 10.5})
    sub = ps.subscribe("a")
    assert [m.value for m in sub.listen(timeout=0.1)] == [{"sym": "ACME", "px": 10.5}]
    raw_sub = store.pubsub("prices").subscribe("b")
    assert [m.value for m in raw_sub.listen(timeout=0.1)] == [b'{"sym":"ACME","px":10.5}']


def test_rpc_with_serializer(store):
    """Requests and replies are objects; a reply that does not serialize comes back as
    RemoteError."""
    r = store.rpc("calc", serializer="json")

    def handler(m):
        if m.value == "bad":
            return object()
        return {"sum": sum(m.value), "ct": m.headers["content-type"].decode()}

    with r.serve(handler):
        assert r.request([1, 2, 3], timeout=5) == {"sum": 6, "ct": "application/json"}
        with pytest.raises(streamlog.RemoteError, match="TypeError"):
            r.request("bad", timeout=5)


def test_event_store_with_serializer(store):
    """Events stay values or (value, headers) tuples; reads and subscriptions decode."""
    es = store.event_store("bank", serializer="json", schema_version=1)
    es.append("acct-1", [{"opened": True}, ({"deposit": 5}, {"by": "teller"}), [1, 2]])
    evs = es.read("acct-1")
    assert [e.value for e in evs] == [{"opened": True}, {"deposit": 5}, [1, 2]]
    assert evs[1].headers["by"] == b"teller" and evs[1].headers["schema-version"] == b"1"
    assert all(e.headers["content-type"] == b"application/json" for e in evs)
    assert [e.value for e in es.read_all()] == [e.value for e in evs]
    with es.subscribe(timeout=0.05) as sub:
        assert [e.value for e in sub] == [e.value for e in evs]
    assert store.event_store("bank").read("acct-1")[0].value == b'{"opened":true}'
    with pytest.raises(TypeError):
        es.append("acct-1", [object()])
    assert es.last_version("acct-1") == 2


def test_no_serializer_is_the_plain_handle(store):
    """Without serializer or schema version, log.topic returns the engine's own handle."""
    assert type(store.topic("plain")) is streamlog.Topic
    assert type(store.topic("plain", serializer="json")) is not streamlog.Topic
