"""OpenTelemetry tracing: producer spans on appends, consumer spans on deliveries.

Active only when ``opentelemetry-api`` is installed *and* a real tracer provider is
set (``opentelemetry.trace.set_tracer_provider``). Otherwise every entry point here
returns at its first test and the append fast path is not touched at all: a topic
handle installs its tracing wrapper only when tracing is active at the moment the
handle is created (see ``docs/operations.md``).

The trace context travels in the record's headers as W3C ``traceparent`` and
``tracestate`` (through the globally configured propagator). Consumer spans are
*linked* to the producer's span (not its children), as the OpenTelemetry messaging
conventions say for a message consumed later and elsewhere. Attributes follow the
messaging semantic conventions: ``messaging.system`` = ``"streamlog"``,
``messaging.destination.name``, ``messaging.operation.type`` (``send``, ``receive``,
``process``), ``messaging.operation.name``, ``messaging.message.id``
(``"<partition>-<offset>"``), ``messaging.destination.partition.id`` and
``messaging.streamlog.offset``.

A leaf module: it imports nothing of the package, so the views may use it.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Iterable
from typing import Any

try:  # optional: tracing costs nothing without the API package
    from opentelemetry import context as _otel_context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - the test extra installs it
    _trace = None  # type: ignore[assignment]

SYSTEM = "streamlog"
TRACE_HEADERS = ("traceparent", "tracestate")
_SCOPE = "streamlog"


# What ``get_tracer_provider`` reads, looked at directly on the hot paths (a poll, a
# queue get): with no provider set and none named in the environment there is nothing
# to trace, and that answer costs two lookups instead of a call and an environ encode.
_PROVIDER_ENV = b"OTEL_PYTHON_TRACER_PROVIDER"
_ENVIRON_DATA: Any = getattr(os.environ, "_data", None)


def tracer() -> Any | None:
    """The package's tracer when tracing is active (API installed, a provider set), else None."""
    if _trace is None:
        return None
    if getattr(_trace, "_TRACER_PROVIDER", _trace) is None and _ENVIRON_DATA is not None \
            and _PROVIDER_ENV not in _ENVIRON_DATA:
        return None  # what get_tracer_provider() would say: only the proxy provider
    provider = _trace.get_tracer_provider()
    cached = _cache
    if cached and cached[0] is provider:
        return cached[1]
    if isinstance(provider, _trace.ProxyTracerProvider | _trace.NoOpTracerProvider):
        return None
    tr = provider.get_tracer(_SCOPE)
    _cache[:] = [provider, tr]
    return tr


_cache: list[Any] = []


def _str_carrier(headers: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    if not headers:
        return out
    for name in TRACE_HEADERS:
        v = headers.get(name)
        if v is not None:
            out[name] = v.decode("ascii", "replace") if isinstance(v, bytes | bytearray) else str(v)
    return out


def links_of(headers_list: Iterable[Any]) -> list[Any]:
    """Span links to the producer spans whose context the given headers carry."""
    links = []
    for headers in headers_list:
        carrier = _str_carrier(headers)
        if not carrier:
            continue
        ctx = _trace.get_current_span(_propagate.extract(carrier)).get_span_context()
        if ctx.is_valid:
            links.append(_trace.Link(ctx))
    return links


def _attrs(destination: str, operation: str, name: str, partition: int | None = None,
           offset: int | None = None, count: int | None = None) -> dict[str, Any]:
    a: dict[str, Any] = {"messaging.system": SYSTEM, "messaging.destination.name": destination,
                         "messaging.operation.type": operation,
                         "messaging.operation.name": name}
    if partition is not None:
        a["messaging.destination.partition.id"] = str(partition)
    if partition is not None and offset is not None:
        a["messaging.message.id"] = f"{partition}-{offset}"
        a["messaging.streamlog.offset"] = offset
    if count is not None:
        a["messaging.batch.message_count"] = count
    return a


def inject(headers: Any) -> dict[str, bytes]:
    """A copy of ``headers`` (a mapping or None) with the current trace context added."""
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    out = dict(headers) if headers else {}
    for k, v in carrier.items():
        out[k] = v.encode("ascii")
    return out


def traced_append(tr: Any, topic: str, append: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a topic handle's ``append``: a PRODUCER span around it, its context in the
    record's headers; the span gets the record's partition and offset."""
    kind = _trace.SpanKind.PRODUCER
    span_name = f"send {topic}"

    def append_traced(value: Any, key: Any = None, headers: Any = None,
                      timestamp_ms: int | None = None, msg_id: Any = None,
                      subject: str | None = None) -> Any:
        extra = {} if subject is None else {"subject": subject}
        if headers is not None and not hasattr(headers, "items"):
            return append(value, key, headers, timestamp_ms, msg_id, **extra)  # its own clear error
        with tr.start_as_current_span(span_name, kind=kind,
                                      attributes=_attrs(topic, "send", "send")) as span:
            pos = append(value, key, inject(headers), timestamp_ms, msg_id, **extra)
            if span.is_recording():
                span.set_attributes(_attrs(topic, "send", "send", pos[0], pos[1]))
            return pos

    append_traced.__doc__ = append.__doc__
    return append_traced


def traced_append_async(tr: Any, topic: str,
                        append_async: Callable[..., Any]) -> Callable[..., Any]:
    """``traced_append`` for a coroutine twin (``append_async``): the same PRODUCER span
    around the awaited append."""
    kind = _trace.SpanKind.PRODUCER
    span_name = f"send {topic}"

    async def append_traced(value: Any, key: Any = None, headers: Any = None,
                            timestamp_ms: int | None = None, msg_id: Any = None,
                            subject: str | None = None) -> Any:
        extra = {} if subject is None else {"subject": subject}
        if headers is not None and not hasattr(headers, "items"):
            return await append_async(value, key, headers, timestamp_ms, msg_id, **extra)
        with tr.start_as_current_span(span_name, kind=kind,
                                      attributes=_attrs(topic, "send", "send")) as span:
            pos = await append_async(value, key, inject(headers), timestamp_ms, msg_id, **extra)
            if span.is_recording():
                span.set_attributes(_attrs(topic, "send", "send", pos[0], pos[1]))
            return pos

    append_traced.__doc__ = append_async.__doc__
    return append_traced


def traced_append_many(tr: Any, topic: str,
                       append_many: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a topic handle's ``append_many``: one PRODUCER span for the call, its context
    in every record's headers."""
    kind = _trace.SpanKind.PRODUCER
    span_name = f"send {topic}"

    def append_many_traced(values: Any, keys: Any = None, headers: Any = None) -> Any:
        if isinstance(values, str | bytes | bytearray | memoryview) or \
                not hasattr(values, "__iter__"):
            return append_many(values, keys, headers)  # its own clear error
        values = list(values)
        if headers is not None:
            headers = list(headers)
            if len(headers) != len(values) or \
                    any(h is not None and not hasattr(h, "items") for h in headers):
                return append_many(values, keys, headers)  # its own clear error
        with tr.start_as_current_span(span_name, kind=kind, attributes=_attrs(
                topic, "send", "send", count=len(values))):
            ctx = inject(None)
            if headers is None:
                hs = [ctx] * len(values)
            else:
                hs = [{**h, **ctx} if h else ctx for h in headers]
            return append_many(values, keys, hs)

    append_many_traced.__doc__ = append_many.__doc__
    return append_many_traced


def producer_span(tr: Any, topic: str, count: int) -> Any:
    """A PRODUCER span (a context manager) for an append of ``count`` records made elsewhere
    (the event store's commits): inject its context with ``inject`` inside it."""
    return tr.start_as_current_span(f"send {topic}", kind=_trace.SpanKind.PRODUCER,
                                    attributes=_attrs(topic, "send", "send", count=count))


# Set while a view polls for a message it records its own span for: the group's
# ``poll`` then records none, so that one delivery makes one consumer span.
_view_polling: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "streamlog_view_polling", default=False)


def view_poll(group: Any, max_records: int, timeout: float | None) -> list[Any]:
    """``group.poll`` for a view that records its own consumer span for what it gets."""
    token = _view_polling.set(True)
    try:
        return group.poll(max_records=max_records, timeout=timeout)  # type: ignore[no-any-return]
    finally:
        _view_polling.reset(token)


def receive(tr: Any, topic: str, messages: list[Any]) -> None:
    """Record a ``receive`` CONSUMER span for a poll that returned ``messages``, linked to
    each message's producer span."""
    if not messages or _view_polling.get():
        return
    one = messages[0] if len(messages) == 1 else None
    attrs = _attrs(topic, "receive", "poll",
                   None if one is None else one.partition, None if one is None else one.offset,
                   None if one is not None else len(messages))
    span = tr.start_span(f"poll {topic}", kind=_trace.SpanKind.CONSUMER,
                         links=links_of(m.headers for m in messages), attributes=attrs)
    span.end()


def receive_batch(tr: Any, topic: str, batch: Any) -> None:
    """Record a ``receive`` CONSUMER span for a ``poll_batch`` that returned ``batch`` (a
    RecordBatch of one partition): one span for the batch, as ``receive`` for a poll.
    Unlinked: a columnar batch does not carry its records' headers, where the
    producers' span contexts travel."""
    if not len(batch) or _view_polling.get():
        return
    one = len(batch) == 1
    attrs = _attrs(topic, "receive", "poll", batch.partition,
                   int(batch.offsets[0]) if one else None, None if one else len(batch))
    span = tr.start_span(f"poll {topic}", kind=_trace.SpanKind.CONSUMER, attributes=attrs)
    span.end()


class Processing:
    """A ``process`` CONSUMER span for one delivered message, made current until ``end()``
    (a CLIENT span with ``client=True``: an rpc request waiting for its reply).

    For views that hand a message to the caller (``listen``, ``get``, a subscription):
    the span covers the caller's work on it until the view is asked for the next one.
    """

    __slots__ = ("_span", "_token")

    def __init__(self, tr: Any, destination: str, operation: str, headers: Any,
                 partition: int | None = None, offset: int | None = None,
                 attributes: dict[str, Any] | None = None, client: bool = False) -> None:
        attrs = _attrs(destination, "process", operation, partition, offset)
        if attributes:
            attrs.update(attributes)
        kind = _trace.SpanKind.CLIENT if client else _trace.SpanKind.CONSUMER
        self._span = tr.start_span(f"{operation} {destination}", kind=kind,
                                   links=links_of([headers]), attributes=attrs)
        self._token = _otel_context.attach(_trace.set_span_in_context(self._span))

    def end(self, error: BaseException | None = None) -> None:
        """End the span (recording ``error`` when given); idempotent."""
        span, self._span = self._span, None
        if span is None:
            return
        try:
            _otel_context.detach(self._token)
        except Exception:  # noqa: BLE001 - detached in another context: nothing to restore
            pass
        if error is not None:
            span.record_exception(error)
            span.set_status(_trace.Status(_trace.StatusCode.ERROR, str(error)))
        span.end()

    def __enter__(self) -> Processing:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.end(exc)


def process(destination: str, operation: str, headers: Any, partition: int | None = None,
            offset: int | None = None) -> Processing | None:
    """Start a ``process`` span for one message when tracing is active, else None."""
    tr = tracer()
    if tr is None:
        return None
    return Processing(tr, destination, operation, headers, partition, offset)
