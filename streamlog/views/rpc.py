"""The request-reply view: requests on one topic, replies on another, matched by correlation id.

``log.rpc("users")`` is made of ordinary log objects (docs/views.md):

* topic ``users.requests``: one record per request, with headers
  ``streamlog.reply-to`` (the reply topic), ``streamlog.correlation-id`` and
  ``streamlog.deadline-ms`` (wall clock, epoch milliseconds);
* shared group ``users.servers`` on it: every server worker is one consumer,
  so servers in any number of threads and processes share the requests;
* topic ``users.replies``: one record per reply, carrying the correlation id
  (and ``streamlog.error-type`` when the handler raised);
* the correlation index: key-value namespace ``rpc``, key
  ``<reply topic> NUL <correlation id>`` → the reply's (partition, offset).

A server writes the index entry and appends the reply under the reply
partition's append lock (``append_with``), so the entry is committed before
the append wakes anyone: a requester woken by the append always finds it. A
requester sleeps on the reply topic's wake-up word and looks its own
correlation id up, so it never scans other requesters' replies and never
polls on a timer. In one process, a server hands the reply to a waiting
requester directly (no reply record, no index entry) and wakes it.

Deadlines are checked by the server before the handler runs: a request whose
deadline has passed is acknowledged and dropped, so a request not served in
time is never served later.
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from streamlog import _validate, backend
from streamlog.backend import (
    RecordTooLarge,
    RemoteError,
    RequestTimeout,
    StoreClosed,
    TopicNotFound,
)
from streamlog.views import check_view_topic, derive_names, ensure_view_group

REPLY_TO = "streamlog.reply-to"
CORRELATION_ID = "streamlog.correlation-id"
DEADLINE_MS = "streamlog.deadline-ms"
ERROR_TYPE = "streamlog.error-type"

INDEX_NAMESPACE = "rpc"
_logger = logging.getLogger("streamlog")
_INDEX_VALUE = struct.Struct(">IQ")  # partition, offset of the reply
# Correlation ids start with the deadline (12 hex digits of epoch ms), so the
# index sorts by deadline and pruning can read the deadline off the key.
_DEADLINE_HEX = 12

# The process-wide table of requests waiting in this process, for the
# in-process hand-over: (pid, store, reply topic) -> {correlation id: slot}.
# Keyed by pid so that a forked child never answers its parent's requests.
# IN_PROCESS_HANDOVER = False makes every reply take the durable path (tests
# and benchmarks measure both paths in one process).
IN_PROCESS_HANDOVER = True
_LOCAL_LOCK = threading.Lock()
_LOCAL: dict[tuple[int, str, str], dict[bytes, _Slot]] = {}
_TOKEN: tuple[int, bytes] = (-1, b"")
_COUNTER = itertools.count()


class _Slot:
    """Where a server in this process leaves the reply of a waiting request."""

    __slots__ = ("reply",)

    def __init__(self) -> None:
        self.reply: tuple[bytes, str | None] | None = None


def _local_table(store: str, reply_topic: str) -> dict[bytes, _Slot]:
    key = (os.getpid(), store, reply_topic)
    table = _LOCAL.get(key)
    if table is None:
        with _LOCAL_LOCK:
            table = _LOCAL.setdefault(key, {})
    return table


def _new_correlation_id(deadline_ms: int) -> bytes:
    """``<deadline, 12 hex><process token, 16 hex><counter, hex>``: unique and deadline-sorted."""
    global _TOKEN
    pid = os.getpid()
    if _TOKEN[0] != pid:  # a new process (or a forked child) draws its own token
        _TOKEN = (pid, os.urandom(8).hex().encode())
    return b"%012x%s%x" % (deadline_ms, _TOKEN[1], next(_COUNTER))


def index_key(reply_topic: str, correlation_id: bytes) -> bytes:
    """The correlation index key of a reply: ``<reply topic> NUL <correlation id>``."""
    return reply_topic.encode() + b"\0" + correlation_id


def _drop_index_of(tx, topic: str) -> None:
    """When a topic is deleted, its replies' index entries go with it (same transaction)."""
    tx.delete_prefix(topic.encode() + b"\0")


backend.on_topic_deleted(INDEX_NAMESPACE, _drop_index_of)


def _deadline_of(correlation_id: bytes) -> int | None:
    try:
        return int(correlation_id[:_DEADLINE_HEX], 16)
    except ValueError:
        return None


def _timeout_s(timeout) -> float:
    return _validate.seconds(timeout, "timeout", allow_zero=False)


class Rpc:
    """A request-reply view (``log.rpc(name)``): ``serve`` handlers, send ``request``s.

    Thread-safe: any number of threads may call ``request`` at once on one
    handle, and servers run their own worker threads.
    """

    def __init__(self, log, name: str) -> None:
        backend.validate_name(name, "rpc name")
        names = derive_names(name, requests=".requests", replies=".replies",
                             servers=".servers", dead_letter=".requests.dlq")
        self._log = log
        self.name = name
        self.request_topic_name: str = names["requests"]
        self.reply_topic_name: str = names["replies"]
        self.server_group: str = names["servers"]
        self.dead_letter_topic: str = names["dead_letter"]
        self._requests = backend.view_topic(log, self.request_topic_name)
        self._replies = backend.view_topic(log, self.reply_topic_name)
        check_view_topic(self._requests, "rpc", name)
        check_view_topic(self._replies, "rpc", name)
        ensure_view_group(self._requests, self.server_group, "rpc", name, mode="shared",
                          dead_letter=self.dead_letter_topic)
        self._index = log.kv(INDEX_NAMESPACE)
        self._store = backend.store_id(log)

    def __repr__(self) -> str:
        return f"Rpc({self.name!r})"

    @property
    def requests(self):
        """The request topic (``<name>.requests``)."""
        return self._requests

    @property
    def replies(self):
        """The reply topic (``<name>.replies``)."""
        return self._replies

    # -------------------------------------------------------------- requester
    def request(self, value, timeout: float = 1.0, headers=None) -> bytes:
        """Send ``value`` to a server and return its reply (bytes).

        Raises RequestTimeout when no reply came within ``timeout`` seconds
        (the request is then never served: servers drop it at its deadline),
        RemoteError when the handler raised (its type name and message).
        ``headers`` travel with the request to the handler.
        """
        self._log._check()
        timeout = _timeout_s(timeout)
        if headers is not None and not hasattr(headers, "items"):
            raise TypeError(f"headers must be a mapping of str to bytes, not "
                            f"{type(headers).__name__}")
        deadline = time.monotonic() + timeout
        deadline_ms = backend.now_ms() + max(1, int(timeout * 1000))
        corr = _new_correlation_id(deadline_ms)
        hdrs = dict(headers) if headers else {}
        hdrs[REPLY_TO] = self.reply_topic_name
        hdrs[CORRELATION_ID] = corr
        hdrs[DEADLINE_MS] = b"%d" % deadline_ms
        replies = self._replies
        table = _local_table(self._store, self.reply_topic_name)
        slot = _Slot()
        table[corr] = slot
        try:
            # The wake-up word is read before the request goes out: no reply can
            # come before the request, so the first look can be the wait itself.
            seen = replies.notify_seq_any()
            self._requests.append(value, headers=hdrs)
            key = index_key(self.reply_topic_name, corr)
            while True:
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    replies.wait_any(seen, remaining)
                # Read the word again before looking, so that a reply arriving
                # between the look and the next wait still wakes that wait.
                seen = replies.notify_seq_any()
                reply = slot.reply
                if reply is not None:
                    return _unpack(reply)
                rec = self._lookup(key, corr)
                if rec is not None:
                    # The entry served its purpose (pruning would remove it later).
                    self._index.delete(key)
                    return _unpack((rec.value or b"", rec.headers.get(ERROR_TYPE)))
                if deadline - time.monotonic() <= 0:
                    raise RequestTimeout(f"no reply on rpc {self.name!r} within {timeout} s "
                                         f"(correlation id {corr.decode()})")
        finally:
            table.pop(corr, None)

    def _lookup(self, key: bytes, corr: bytes):
        raw = self._index.get(key)
        if raw is None:
            return None
        partition, offset = _INDEX_VALUE.unpack(raw)
        try:
            if offset >= self._replies.end_offset(partition):
                return None  # indexed, not yet appended: its append will wake us
            rec = self._replies.get(partition, offset)
        except (IndexError, ValueError):
            return None  # gone (retention) or a stale entry
        # Entries are checked against the record they point at, so a stale one
        # (a crash between index and append) is never taken for a reply.
        if rec.headers.get(CORRELATION_ID) != corr:
            return None
        return rec

    # ----------------------------------------------------------------- server
    def serve(self, handler: Callable[[Any], Any], workers: int = 1,
              ack_wait_s: float = 30, max_deliver: int = 5) -> Server:
        """Start ``workers`` threads that answer requests with ``handler(message)``.

        ``handler`` gets the request as a group Message and returns a bytes-like
        reply; an exception it raises goes back to the requester as RemoteError
        and the server goes on. Returns the running Server (``stop()`` it, or use
        it as a context manager).
        """
        self._log._check()
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise TypeError(f"workers must be an int, not {type(workers).__name__}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, not {workers}")
        return Server(self, handler, workers, ack_wait_s, max_deliver)


def _unpack(reply: tuple[bytes, Any]) -> bytes:
    value, err = reply
    if err is not None:
        type_name = err.decode("utf-8", "replace") if isinstance(err, bytes) else err
        raise RemoteError(type_name, value.decode("utf-8", "replace"))
    return value


class Server:
    """Worker threads answering an rpc's requests; ``stop()`` ends them.

    Each worker is one consumer of the shared group ``<name>.servers``. Thread-
    safe; stopped when the store closes.
    """

    def __init__(self, rpc: Rpc, handler: Callable, workers: int, ack_wait_s: float,
                 max_deliver: int) -> None:
        self.rpc = rpc
        self.handler = handler
        self.served = 0      # replies sent (handler results and handler errors)
        self.expired = 0     # requests dropped because their deadline had passed
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._rr = itertools.count()
        self._next_prune = 0.0
        self._groups = [rpc._requests.group(rpc.server_group, mode="shared",
                                            ack_wait_s=ack_wait_s, max_deliver=max_deliver,
                                            dead_letter=rpc.dead_letter_topic)
                        for _ in range(workers)]
        self._threads = [threading.Thread(target=self._work, args=(g,), daemon=True,
                                          name=f"streamlog-rpc-{rpc.name}-{i}")
                         for i, g in enumerate(self._groups)]
        # Stop with the store. A weak reference: a stopped server is not kept alive.
        ref = weakref.ref(self)
        backend.on_close(rpc._log, lambda: _stop_ref(ref))
        for t in self._threads:
            t.start()

    def __repr__(self) -> str:
        state = "stopped" if self._stopping.is_set() else "running"
        return f"Server({self.rpc.name!r}, workers={len(self._threads)}, {state})"

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
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
    def _work(self, group) -> None:
        try:
            while not self._stopping.is_set():
                for m in group.poll(max_records=1, timeout=backend.RPC_SERVER_POLL_S):
                    self._handle(m)
        except (StoreClosed, TopicNotFound):
            return  # the store closed or the view's topic went away: nothing left to serve
        finally:
            try:
                group.close()  # hands unfinished requests to the other servers at once
            except (StoreClosed, TopicNotFound):
                pass

    def _handle(self, m) -> None:
        hdrs = m.headers
        raw_deadline = hdrs.get(DEADLINE_MS)
        if raw_deadline is not None:
            try:
                deadline_ms = int(raw_deadline)
            except ValueError:
                deadline_ms = None
            if deadline_ms is not None and backend.now_ms() >= deadline_ms:
                m.ack()  # too late: its requester has given up, so it is never served
                with self._lock:
                    self.expired += 1
                return
        err: str | None = None
        try:
            out = self.handler(m)
            if isinstance(out, bytes):
                value = out
            elif isinstance(out, bytearray | memoryview):
                value = bytes(out)
            else:
                raise TypeError(f"rpc handler must return bytes-like, not {type(out).__name__}")
        except Exception as e:  # noqa: BLE001 - the requester gets it as RemoteError
            value, err = _describe(e)
        corr = hdrs.get(CORRELATION_ID)
        reply_to = hdrs.get(REPLY_TO)
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
        slot = _local_table(rpc._store, reply_to).get(corr) if IN_PROCESS_HANDOVER else None
        if slot is not None:
            # The requester waits in this process: hand the reply over and wake it.
            slot.reply = (value, err)
            replies = rpc._replies if reply_to == rpc.reply_topic_name else \
                rpc._log.existing_topic(reply_to)
            backend.wake_any(replies)
            return
        try:
            replies = rpc._replies if reply_to == rpc.reply_topic_name else \
                rpc._log.existing_topic(reply_to)
        except (TopicNotFound, ValueError, TypeError):
            return  # nowhere to reply to: the requester will time out
        hdrs = {CORRELATION_ID: corr}
        if err is not None:
            hdrs[ERROR_TYPE] = err
        try:
            data, ts = backend.encode_one(replies, value, None, hdrs)
        except RecordTooLarge as e:
            value, err = _describe(e)
            hdrs[ERROR_TYPE] = err
            data, ts = backend.encode_one(replies, value[:1024], None, hdrs)
        n = replies.partitions
        partition = 0 if n == 1 else next(self._rr) % n
        key = index_key(reply_to, corr)
        index = rpc._index

        def build(end_offset: int):
            # Indexed before the append (both under the partition lock), so the
            # wake-up of the append finds the entry committed.
            index.put(key, _INDEX_VALUE.pack(partition, end_offset))
            return data, 1, ts, None

        replies.append_with(partition, build)
        now = time.monotonic()
        if now >= self._next_prune:
            self._next_prune = now + backend.RPC_INDEX_PRUNE_INTERVAL_S
            prune_index(index, reply_to)


def _stop_ref(ref) -> None:
    server = ref()
    if server is not None:
        server.stop()


def _describe(e: BaseException) -> tuple[bytes, str]:
    return str(e).encode("utf-8", "replace"), type(e).__name__


def prune_index(index, reply_topic: str, now_ms: int | None = None) -> int:
    """Delete correlation entries whose request deadline passed long ago; returns how many.

    Requesters delete their entry when they read the reply; what is left
    belongs to requests that timed out or requesters that died.
    """
    cutoff = (backend.now_ms() if now_ms is None else now_ms) - \
        int(backend.RPC_INDEX_GRACE_S * 1000)
    prefix = reply_topic.encode() + b"\0"

    def prune(tx) -> int:
        stale = []
        for k, _ in tx.scan(prefix):
            deadline = _deadline_of(k[len(prefix):])
            if deadline is None or deadline >= cutoff:
                break  # keys sort by deadline: the rest are younger
            stale.append(k)
        for k in stale:
            tx.delete(k)
        return len(stale)

    return index.transact(prune)

