"""OpenTelemetry tracing: producer spans and W3C headers on appends, consumer spans
linked to them on every consuming path; nothing at all without a tracer provider."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import streamlog
from streamlog import _tracing

TIMEOUT_S = 60
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(streamlog.__file__)))
_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)}


def _reset_globals() -> None:
    # The API sets its provider once per process; tests undo it (as OpenTelemetry's own
    # test utilities do) so that no other test runs with tracing on.
    trace._TRACER_PROVIDER_SET_ONCE._done = False  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


@pytest.fixture
def spans():
    """An SDK provider exporting to memory, set globally for the test only."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_globals()
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()
    _reset_globals()


def _by_kind(exporter, kind):
    return [s for s in exporter.get_finished_spans() if s.kind == kind]


def _linked_to(span, producer) -> bool:
    return any(link.context.trace_id == producer.context.trace_id
               and link.context.span_id == producer.context.span_id for link in span.links)


def test_without_a_provider_append_is_the_bare_fast_path_and_adds_no_headers(store):
    assert _tracing.tracer() is None
    t = store.topic("plain")
    if t._appender is not None:
        assert t.append == t._appender.append  # the C appender itself, no wrapper
    t.append(b"v", headers={"a": b"1"})
    assert next(iter(t.read(0))).headers == {"a": b"1"}


def test_append_injects_traceparent_and_records_a_producer_span(store, spans):
    t = store.topic("orders", partitions=2)
    pos = t.append(b"v", key=b"k", headers={"a": b"1"})
    rec = t.get(pos.partition, pos.offset)
    assert rec.headers["a"] == b"1"
    (producer,) = _by_kind(spans, trace.SpanKind.PRODUCER)
    assert producer.name == "send orders"
    tp = rec.headers["traceparent"].decode()
    assert tp.split("-")[1] == format(producer.context.trace_id, "032x")
    assert tp.split("-")[2] == format(producer.context.span_id, "016x")
    a = producer.attributes
    assert a["messaging.system"] == "streamlog"
    assert a["messaging.destination.name"] == "orders"
    assert a["messaging.operation.type"] == "send"
    assert a["messaging.destination.partition.id"] == str(pos.partition)
    assert a["messaging.streamlog.offset"] == pos.offset
    assert a["messaging.message.id"] == f"{pos.partition}-{pos.offset}"


def test_a_traced_append_keeps_its_subject_and_a_filtered_group_gets_it(store, spans):
    """Tracing wraps append; the wrapper passes ``subject`` on, so the record carries both
    its subject and the trace context, and a group filtering by subject delivers it."""
    t = store.topic("orders", partitions=1)
    t.append(b"eu", subject="orders.eu.created")
    t.append(b"us", subject="orders.us.created")
    (m,) = t.group("g", subjects=["orders.eu.*"]).poll(timeout=2)
    assert m.value == b"eu" and m.headers["subject"] == b"orders.eu.created"
    assert "traceparent" in m.headers
    assert len(_by_kind(spans, trace.SpanKind.PRODUCER)) == 2


def test_append_many_records_one_producer_span_and_every_record_carries_it(store, spans):
    t = store.topic("orders", partitions=2)
    positions = t.append_many([b"a", b"b", b"c"], keys=[b"1", b"2", b"3"],
                              headers=[None, {"x": b"1"}, {}])
    (producer,) = _by_kind(spans, trace.SpanKind.PRODUCER)
    assert producer.attributes["messaging.batch.message_count"] == 3
    tid = format(producer.context.trace_id, "032x")
    recs = [t.get(p.partition, p.offset) for p in positions]
    assert all(r.headers["traceparent"].decode().split("-")[1] == tid for r in recs)
    assert recs[1].headers["x"] == b"1"
    with pytest.raises(ValueError):
        t.append_many([b"a", b"b"], headers=[None])  # the same error as without tracing
    with pytest.raises(TypeError):
        t.append_many(b"ab")


def test_append_under_a_current_span_is_its_child(store, spans):
    t = store.topic("orders")
    with trace.get_tracer("app").start_as_current_span("checkout") as parent:
        t.append(b"v")
    (producer,) = _by_kind(spans, trace.SpanKind.PRODUCER)
    assert producer.parent.span_id == parent.get_span_context().span_id


def test_bad_input_still_fails_before_writing(store, spans):
    t = store.topic("orders")
    with pytest.raises(TypeError):
        t.append("not bytes")
    with pytest.raises(TypeError):
        t.append(b"v", headers=[("a", b"1")])
    assert t.end_offset(0) == 0


def test_poll_records_a_receive_span_linked_to_each_producer(store, spans):
    t = store.topic("orders")
    t.append(b"1")
    t.append(b"2")
    g = t.group("billing")
    msgs = g.poll(max_records=10, timeout=1)
    assert len(msgs) == 2
    producers = _by_kind(spans, trace.SpanKind.PRODUCER)
    (receive,) = _by_kind(spans, trace.SpanKind.CONSUMER)
    assert receive.name == "poll orders"
    assert receive.attributes["messaging.operation.type"] == "receive"
    assert receive.attributes["messaging.batch.message_count"] == 2
    assert all(_linked_to(receive, p) for p in producers)


def test_queue_get_records_one_consumer_span_per_message(store, spans):
    q = store.queue("jobs")
    q.put(b"job")
    m = q.get(timeout=1)
    m.ack()
    (producer,) = _by_kind(spans, trace.SpanKind.PRODUCER)
    (consumer,) = _by_kind(spans, trace.SpanKind.CONSUMER)
    assert consumer.name == "get jobs"
    assert consumer.attributes["messaging.operation.type"] == "receive"
    assert consumer.attributes["messaging.message.id"] == f"{m.partition}-{m.offset}"
    assert _linked_to(consumer, producer)


def test_listen_span_covers_the_loop_body(store, spans):
    ps = store.pubsub("news")
    sub = ps.subscribe("reader")
    ps.publish(b"a")
    tracer = trace.get_tracer("app")
    for m in sub.listen(timeout=0.2):
        with tracer.start_as_current_span("handle"):
            assert m.value == b"a"
    (producer,) = _by_kind(spans, trace.SpanKind.PRODUCER)
    (process,) = _by_kind(spans, trace.SpanKind.CONSUMER)
    (handle,) = [s for s in spans.get_finished_spans() if s.name == "handle"]
    assert process.name == "listen news"
    assert process.attributes["messaging.operation.type"] == "process"
    assert _linked_to(process, producer)
    assert handle.parent.span_id == process.context.span_id  # the user's work is inside


def test_rpc_request_and_serve_are_traced_end_to_end(store, spans):
    rpc = store.rpc("calc")
    seen = []

    def handler(m):
        seen.append(trace.get_current_span().get_span_context())
        return m.value * 2

    with rpc.serve(handler):
        assert rpc.request(b"ab", timeout=5) == b"abab"
    finished = spans.get_finished_spans()
    (request,) = [s for s in finished if s.name == "request calc.requests"]
    (producer,) = [s for s in finished if s.kind == trace.SpanKind.PRODUCER
                   and s.attributes["messaging.destination.name"] == "calc.requests"]
    (serve,) = [s for s in finished if s.name == "serve calc.requests"]
    assert request.kind == trace.SpanKind.CLIENT
    assert producer.parent.span_id == request.context.span_id
    assert _linked_to(serve, producer)
    assert serve.attributes["messaging.operation.type"] == "process"
    assert seen == [serve.context]  # the handler runs inside the serve span


def test_event_store_subscribe_links_each_event_to_its_commit(store, spans):
    es = store.event_store("bank")
    es.append("acct-1", [b"opened", (b"deposited", {"who": b"me"})])
    sub = es.subscribe(timeout=0.2)
    events = list(sub)
    assert [e.value for e in events] == [b"opened", b"deposited"]
    assert events[1].headers["who"] == b"me"
    (producer,) = _by_kind(spans, trace.SpanKind.PRODUCER)
    assert producer.attributes["messaging.batch.message_count"] == 2
    consumers = _by_kind(spans, trace.SpanKind.CONSUMER)
    assert [c.name for c in consumers] == ["subscribe bank", "subscribe bank"]
    assert all(_linked_to(c, producer) for c in consumers)
    assert [c.attributes["messaging.streamlog.offset"] for c in consumers] == [0, 1]


def test_handles_made_before_the_provider_stay_untraced(tmp_path):
    # The decision is taken when the handle is made: documented, and kept.
    _reset_globals()
    log = streamlog.open(tmp_path / "s")
    try:
        t = log.topic("early")
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        try:
            t.append(b"x")
            assert exporter.get_finished_spans() == ()
            log.topic("late").append(b"y")
            assert len(exporter.get_finished_spans()) == 1
        finally:
            provider.shutdown()
    finally:
        log.close()
        _reset_globals()


_CHILD = r"""
import json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import streamlog

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
role, path = sys.argv[1], sys.argv[2]
with streamlog.open(path) as log:
    q = log.queue("work")
    if role == "produce":
        q.put(b"job")
    else:
        print("ready", flush=True)
        m = q.get(timeout=30)
        m.ack()
out = []
for s in exporter.get_finished_spans():
    out.append({"name": s.name, "kind": s.kind.name, "trace_id": s.context.trace_id,
                "span_id": s.context.span_id, "pid": s.resource.attributes.get("process.pid"),
                "links": [[l.context.trace_id, l.context.span_id] for l in s.links]})
print(json.dumps(out), flush=True)
"""


def test_a_consumer_process_links_to_the_producer_process_span(tmp_path):
    path = str(tmp_path / "s")
    streamlog.open(path).close()
    consumer = subprocess.Popen([sys.executable, "-c", _CHILD, "consume", path],
                                stdout=subprocess.PIPE, text=True, env=_ENV)
    try:
        assert consumer.stdout.readline().strip() == "ready"  # waiting in get()
        produced = subprocess.run([sys.executable, "-c", _CHILD, "produce", path],
                                  capture_output=True, text=True, env=_ENV, timeout=TIMEOUT_S)
        assert produced.returncode == 0, produced.stderr
        out, _ = consumer.communicate(timeout=TIMEOUT_S)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    assert consumer.returncode == 0
    (producer,) = [s for s in json.loads(produced.stdout) if s["kind"] == "PRODUCER"]
    (got,) = [s for s in json.loads(out) if s["kind"] == "CONSUMER"]
    assert got["name"] == "get work"
    assert got["links"] == [[producer["trace_id"], producer["span_id"]]]


def test_tracing_from_threads_keeps_spans_apart(store, spans):
    t = store.topic("orders")
    barrier = threading.Barrier(4)

    def work():
        barrier.wait()
        for _ in range(25):
            t.append(b"x")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    producers = _by_kind(spans, trace.SpanKind.PRODUCER)
    assert len(producers) == 100
    assert len({p.context.trace_id for p in producers}) == 100  # each its own root
    headers = {r.headers["traceparent"] for r in t.read(0)}
    assert len(headers) == 100
