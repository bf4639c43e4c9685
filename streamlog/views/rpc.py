"""The request-reply view: requests on one topic, replies on another, matched by correlation id.

``log.rpc("users")`` is made of ordinary log objects (docs/views.md):

* topic ``users.requests``: one record per request, with headers
  ``streamlog.reply-to`` (the reply topic), ``streamlog.correlation-id`` and
  ``streamlog.deadline-ms`` (wall clock, epoch milliseconds);
* shared group ``users.servers`` on it: every server worker is one consumer,
  so servers in any number of threads and processes share the requests;
* topic ``users.replies``: one record per reply, carrying the correlation id
  (and ``streamlog.error-type`` when the handler raised);
* the reply box of ``users.replies`` (``Store.reply_box``): replies by
  correlation id.

A requester opens its correlation id in the reply box before sending, sleeps
on the box's wake-ups and takes its own reply, so it never scans other
requesters' replies and never polls on a timer. On the embedded engine the
box is the reply topic plus a correlation index (key-value namespace
``rpc``), and a server in the requester's own process hands the reply over
directly (no reply record) and wakes it.

Deadlines are checked by the server before the handler runs: a request whose
deadline has passed is acknowledged and dropped, so a request not served in
time is never served later.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from streamlog import _tracing, _validate, api
from streamlog._limits import RPC_SERVER_POLL_S
from streamlog._types import now_ms
from streamlog.errors import (
    RecordTooLarge,
    RemoteError,
    RequestTimeout,
    StoreClosed,
    TopicNotFound,
)
from streamlog.views import _serde, check_view_topic, derive_names, ensure_view_group

REPLY_TO = "streamlog.reply-to"
CORRELATION_ID = "streamlog.correlation-id"
DEADLINE_MS = "streamlog.deadline-ms"
ERROR_TYPE = "streamlog.error-type"

_logger = logging.getLogger("streamlog")
_TOKEN: tuple[int, bytes] = (-1, b"")
_COUNTER = itertools.count()


def _new_correlation_id(deadline_ms: int) -> bytes:
    """``<deadline, 12 hex><process token, 16 hex><counter, hex>``: unique and deadline-sorted.

    Starting with the deadline, ids sort by it: a reply box can drop the
    entries of requests long past their deadline by reading their ids.
    """
    global _TOKEN
    pid = os.getpid()
    if _TOKEN[0] != pid:  # a new process (or a forked child) draws its own token
        _TOKEN = (pid, os.urandom(8).hex().encode())
    return b"%012x%s%x" % (deadline_ms, _TOKEN[1], next(_COUNTER))


def _timeout_s(timeout: float) -> float:
    return _validate.seconds(timeout, "timeout", allow_zero=False) or 0.0


class Rpc:
    """A request-reply view (``log.rpc(name)``): ``serve`` handlers, send ``request``s.

    Thread-safe: any number of threads may call ``request`` at once on one
    handle, and servers run their own worker threads.
    """

    def __init__(self, log: api.Store, name: str, serializer: Any = None,
                 schema_version: int | str | None = None) -> None:
        _validate.name(name, "rpc name")
        self._stamp = _serde.check(serializer, schema_version)
        names = derive_names(name, requests=".requests", replies=".replies",
                             servers=".servers", dead_letter=".requests.dlq")
        self._log = log
        self.name = name
        self.request_topic_name: str = names["requests"]
        self.reply_topic_name: str = names["replies"]
        self.server_group: str = names["servers"]
        self.dead_letter_topic: str = names["dead_letter"]
        raw = log.topic(self.request_topic_name)
        self._requests: api.Topic = raw if self._stamp is None else \
            _serde.SerializedTopic(raw, self._stamp)
        self._replies = log.topic(self.reply_topic_name)
        check_view_topic(raw, "rpc", name)
        check_view_topic(self._replies, "rpc", name)
        ensure_view_group(self._requests, self.server_group, "rpc", name, mode="shared",
                          dead_letter=self.dead_letter_topic)
        self._box = log.reply_box(self.reply_topic_name)
        self._watch = self._box.watch()

    def __repr__(self) -> str:
        return f"Rpc({self.name!r})"

    @property
    def requests(self) -> api.Topic:
        """The request topic (``<name>.requests``), with the rpc's serializer."""
        return self._requests

    @property
    def replies(self) -> api.Topic:
        """The reply topic (``<name>.replies``)."""
        return self._replies

    # -------------------------------------------------------------- requester
    def request(self, value: Any, timeout: float = 1.0, headers: Any = None) -> Any:
        """Send ``value`` to a server and return its reply (bytes; with a serializer,
        both are Python objects, encoded and decoded with it).

        Raises RequestTimeout when no reply came within ``timeout`` seconds
        (the request is then never served: servers drop it at its deadline),
        RemoteError when the handler raised (its type name and message).
        ``headers`` travel with the request to the handler.
        """
        self._log.raise_if_closed()
        timeout = _timeout_s(timeout)
        if headers is not None and not hasattr(headers, "items"):
            raise TypeError(f"headers must be a mapping of str to bytes, not "
                            f"{type(headers).__name__}")
        deadline = time.monotonic() + timeout
        deadline_ms = now_ms() + max(1, int(timeout * 1000))
        corr = _new_correlation_id(deadline_ms)
        hdrs = dict(headers) if headers else {}
        hdrs[REPLY_TO] = self.reply_topic_name
        hdrs[CORRELATION_ID] = corr
        hdrs[DEADLINE_MS] = b"%d" % deadline_ms
        tracer = _tracing.tracer()
        if tracer is not None:
            # The request's span: the append's producer span is its child, and the
            # wait for the reply its time.
            with _tracing.Processing(tracer, self._requests.name, "request", None, None,
                                     None, {"messaging.operation.type": "send"},
                                     client=True):
                return self._request(value, timeout, hdrs, corr, deadline)
        return self._request(value, timeout, hdrs, corr, deadline)

    def _request(self, value: Any, timeout: float, hdrs: dict[str, bytes], corr: bytes,
                 deadline: float) -> Any:
        box = self._box
        watch = self._watch
        box.open(corr)
        try:
            # The wake-up counter is read before the request goes out: no reply can
            # come before the request, so the first look can be the wait itself.
            seen = watch.seq()
            self._requests.append(value, headers=hdrs)
            while True:
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    watch.wait(seen, remaining)
                # Read the counter again before looking, so that a reply arriving
                # between the look and the next wait still wakes that wait.
                seen = watch.seq()
                reply = box.take(corr)
                if reply is not None:
                    out = _unpack(reply)
                    if self._stamp is not None:
                        return self._stamp.decode(out, self.reply_topic_name, -1, -1)
                    return out
                if deadline - time.monotonic() <= 0:
                    raise RequestTimeout(f"no reply on rpc {self.name!r} within {timeout} s "
                                         f"(correlation id {corr.decode()})")
        finally:
            box.close(corr)

    # ----------------------------------------------------------------- server
    def serve(self, handler: Callable[[api.Message], Any], workers: int = 1,
              ack_wait_s: float = 30, max_deliver: int = 5) -> Server:
        """Start ``workers`` threads that answer requests with ``handler(message)``.

        ``handler`` gets the request as a group Message and returns a bytes-like
        reply (with a serializer: the request's value decoded, and any value the
        serializer encodes); an exception it raises goes back to the requester as RemoteError
        and the server goes on. Returns the running Server (``stop()`` it, or use
        it as a context manager).
        """
        self._log.raise_if_closed()
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise TypeError(f"workers must be an int, not {type(workers).__name__}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, not {workers}")
        return Server(self, handler, workers, ack_wait_s, max_deliver)


def _unpack(reply: tuple[bytes, str | None]) -> bytes:
    value, err = reply
    if err is not None:
        raise RemoteError(err, value.decode("utf-8", "replace"))
    return value


class Server:
    """Worker threads answering an rpc's requests; ``stop()`` ends them.

    Each worker is one consumer of the shared group ``<name>.servers``. Thread-
    safe; stopped when the store closes.
    """

    def __init__(self, rpc: Rpc, handler: Callable[[api.Message], Any], workers: int,
                 ack_wait_s: float, max_deliver: int) -> None:
        self.rpc = rpc
        self.handler = handler
        self.served = 0      # replies sent (handler results and handler errors)
        self.expired = 0     # requests dropped because their deadline had passed
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._groups = [rpc._requests.group(rpc.server_group, mode="shared",
                                            ack_wait_s=ack_wait_s, max_deliver=max_deliver,
                                            dead_letter=rpc.dead_letter_topic)
                        for _ in range(workers)]
        for g in self._groups:
            # A worker polls one request and settles it before the next: the backend
            # may then batch its acks and lease ahead (Group.one_at_a_time), so a
            # request costs one state transaction on the server, not two.
            g.one_at_a_time()
        self._threads = [threading.Thread(target=self._work, args=(g,), daemon=True,
                                          name=f"streamlog-rpc-{rpc.name}-{i}")
                         for i, g in enumerate(self._groups)]
        # Stop with the store. A weak reference: a stopped server is not kept alive.
        ref = weakref.ref(self)
        rpc._log.on_close(lambda: _stop_ref(ref))
        for t in self._threads:
            t.start()

    def __repr__(self) -> str:
        state = "stopped" if self._stopping.is_set() else "running"
        return f"Server({self.rpc.name!r}, workers={len(self._threads)}, {state})"

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return not self._stopping.is_set() and any(t.is_alive() for t in self._threads)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the workers (each finishes the request in hand) and release their leases.

        Idempotent. Waits up to ``timeout`` seconds per worker.
        """
        self._stopping.set()  # a worker sees it within RPC_SERVER_POLL_S
        me = threading.current_thread()
        for t in self._threads:
            if t is not me and t.is_alive():
                t.join(timeout)

    # ---------------------------------------------------------------- workers
    def _work(self, group: api.Group) -> None:
        try:
            while not self._stopping.is_set():
                tracer = _tracing.tracer()
                if tracer is None:
                    for m in group.poll(max_records=1, timeout=RPC_SERVER_POLL_S):
                        self._handle(m, group)
                    continue
                for m in _tracing.view_poll(group, 1, RPC_SERVER_POLL_S):
                    # A process span around the handler and the reply.
                    with _tracing.Processing(tracer, m.topic, "serve", m.headers,
                                             m.partition, m.offset):
                        self._handle(m, group)
        except (StoreClosed, TopicNotFound):
            return  # the store closed or the view's topic went away: nothing left to serve
        finally:
            try:
                group.close()  # hands unfinished requests to the other servers at once
            except (StoreClosed, TopicNotFound):
                pass

    def _handle(self, m: api.Message, group: api.Group) -> None:
        hdrs = m.headers
        raw_deadline = hdrs.get(DEADLINE_MS)
        if raw_deadline is not None:
            deadline_ms: int | None
            try:
                deadline_ms = int(raw_deadline)
            except ValueError:
                deadline_ms = None
            if deadline_ms is not None and now_ms() >= deadline_ms:
                m.ack()  # too late: its requester has given up, so it is never served
                with self._lock:
                    self.expired += 1
                return
        err: str | None = None
        try:
            out = self.handler(m)
            stamp = self.rpc._stamp
            if stamp is not None and stamp.codec is not None:
                value = stamp.codec.encode(out)
            elif isinstance(out, bytes):
                value = out
            elif isinstance(out, bytearray | memoryview):
                value = bytes(out)
            else:
                raise TypeError(f"rpc handler must return bytes-like, not {type(out).__name__}")
        except Exception as e:  # noqa: BLE001 - the requester gets it as RemoteError
            value, err = _describe(e)
        corr = hdrs.get(CORRELATION_ID)
        reply_to = hdrs.get(REPLY_TO)
        group.ready_for_next()  # the handler is done: the next request may come now
        if corr is not None and reply_to is not None:
            try:
                self._reply(reply_to.decode("utf-8", "replace"), corr, value, err)
            except StoreClosed:
                raise
            except TopicNotFound:
                pass  # the reply topic was deleted: nobody can be waiting for the reply
            except Exception as e:  # noqa: BLE001 - e.g. a full disk: this worker goes on
                _logger.warning("rpc %r: could not reply to request %s/%d: %s; it is handed "
                                "back for another try", self.rpc.name, m.partition, m.offset,
                                e, exc_info=True)
                m.nack(error=f"reply failed: {type(e).__name__}: {e}")
                return
            else:
                with self._lock:
                    self.served += 1
        m.ack()

    def _reply(self, reply_to: str, corr: bytes, value: bytes, err: str | None) -> None:
        rpc = self.rpc
        if reply_to == rpc.reply_topic_name:
            box = rpc._box
        else:
            try:
                box = rpc._log.reply_box(reply_to)
            except (TopicNotFound, ValueError, TypeError):
                return  # nowhere to reply to: the requester will time out
        try:
            box.put(corr, value, err)
        except RecordTooLarge as e:
            value, err = _describe(e)
            box.put(corr, value[:1024], err)


def _stop_ref(ref: weakref.ref[Server]) -> None:
    server = ref()
    if server is not None:
        server.stop()


def _describe(e: BaseException) -> tuple[bytes, str]:
    return str(e).encode("utf-8", "replace"), type(e).__name__
