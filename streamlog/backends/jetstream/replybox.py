"""The reply box of a request-reply view on JetStream: replies by correlation id.

A reply is one record of the reply topic (partition 0), published on its own
subject below the partition's subject: ``<partition subject>.r.<correlation
id token>`` (``_naming.entry_subject``), with the headers
``streamlog.correlation-id`` and, for a handler error, ``streamlog.error-type``.
The server that replies waits for the stream's acknowledgement of the reply
before it acknowledges the request, so every answered request has its reply
stored, except one whose requester waits on the server's own store handle:
that requester gets the reply handed over in memory and no record is
written, as on the embedded store.

Each reply box (one per store handle and reply topic) subscribes to
``<partition subject>.r.>`` with a plain (core NATS) subscription: the
server routes each reply publish to it as it hands the message to the stream,
one hop, without waiting for a consumer to deliver the stored message. A reply
for a requester waiting on this handle is kept as it arrives and wakes that
requester alone, which then takes it from memory (as the embedded store hands
a reply over in one process). A reply the subscription did not see (one sent
before the box existed, or while the connection was down) is found with one
get-last-by-subject through the stream leader, at the latest when the
request's deadline wakes the requester. Requesters never scan other
requesters' replies and never poll on a timer.

Reply records stay in the reply topic until its retention drops them, as on
the embedded store; a reply to a requester that is gone is never read again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from streamlog._types import now_ms
from streamlog.api import Watch

from . import _naming, _records
from ._client import subscribe_inline

__all__ = ["CORRELATION_ID", "ERROR_TYPE", "JetStreamReplyBox"]

# The headers a reply record carries (the rpc view names the same ones).
CORRELATION_ID = "streamlog.correlation-id"
ERROR_TYPE = "streamlog.error-type"
_HB_CORRELATION_ID = CORRELATION_ID.encode()
_HB_ERROR_TYPE = ERROR_TYPE.encode()


class JetStreamReplyBox:
    """The replies of reply topic ``name`` by correlation id (``streamlog.api.ReplyBox``).

    Thread-safe. TopicNotFound when the reply topic does not exist.
    """

    def __init__(self, store: Any, name: str, watch: Watch | None = None,
                 wake: Callable[[], None] | None = None) -> None:
        self._store = store
        self.name = name
        self._topic = store.existing_topic(name)
        self._conn = store._conn
        self._stream = self._topic.stream_name(0)
        self._psubject = self._topic.subject(0)
        self._lock = threading.Lock()
        self._waiting: set[bytes] = set()
        self._replies: dict[bytes, tuple[bytes, str | None]] = {}
        if watch is None or wake is None:
            w = self._topic.watch()
            self._watch: Watch = w
            self._wake = w.wake
            return
        # The fast path: every reply published is routed to this handle as the
        # stream receives it; one for a requester waiting here is kept and wakes it
        # (and no one else).
        self._watch = watch
        self._wake = wake
        self._topic._run(self._subscribe())

    async def _subscribe(self) -> None:
        def on_msg(msg: Any) -> None:
            hdrs = msg.headers
            if not hdrs or not self._waiting:
                return  # nobody waits here (a reply to another handle): not decoded
            h = _records.decode_headers(hdrs)
            cid = h.get(CORRELATION_ID)
            if cid is None:
                return
            with self._lock:
                if cid not in self._waiting:
                    return
                err = h.get(ERROR_TYPE)
                self._replies[cid] = (msg.data or b"",
                                      None if err is None else err.decode("utf-8", "replace"))
            self._wake()

        # A plain subscription, kept by the client across reconnects (no server state
        # to lose on a restart); a subject wildcard as the stream's own. Handled from
        # the client's reader: the requester is woken one event-loop step sooner.
        await subscribe_inline(self._conn.nc, f"{self._psubject}.r.>", on_msg)

    def __repr__(self) -> str:
        return f"JetStreamReplyBox({self.name!r})"

    def _subject(self, correlation_id: bytes) -> str:
        return _naming.entry_subject(self._psubject, "r", correlation_id)

    def watch(self) -> Watch:
        """Wake-ups on every reply put (the reply topic's watch)."""
        return self._watch

    def open(self, correlation_id: bytes) -> None:
        """A requester here waits for ``correlation_id``: its reply is kept when delivered."""
        with self._lock:
            self._waiting.add(correlation_id)

    def close(self, correlation_id: bytes) -> None:
        """The requester stops waiting (the reply record stays under the topic's retention)."""
        with self._lock:
            self._waiting.discard(correlation_id)
            self._replies.pop(correlation_id, None)

    def take(self, correlation_id: bytes) -> tuple[bytes, str | None] | None:
        """The reply if it has come (delivered to this handle, else read through the
        stream leader), else None."""
        with self._lock:
            got = self._replies.pop(correlation_id, None)
        if got is not None:
            return got
        return self._topic._run(self._atake_stored(correlation_id))

    async def _atake_stored(self, correlation_id: bytes) -> tuple[bytes, str | None] | None:
        """The reply record of ``correlation_id`` read through the stream leader, or None."""
        conn, stream, subject = self._conn, self._stream, self._subject(correlation_id)
        topic = self._topic
        m = await topic._areading(lambda: conn.get_last_message(stream, subject))
        if m is None:
            return None
        rec = topic._record(0, m)
        if rec.headers.get(CORRELATION_ID) != correlation_id:
            return None  # a hashed subject shared with another id (never seen)
        err = rec.headers.get(ERROR_TYPE)
        return rec.value or b"", None if err is None else err.decode("utf-8", "replace")

    async def take_async(self, correlation_id: bytes) -> tuple[bytes, str | None] | None:
        """``take``, awaited."""
        with self._lock:
            got = self._replies.pop(correlation_id, None)
        if got is not None:
            return got
        return await self._topic._awaited(self._atake_stored(correlation_id))

    async def put_async(self, correlation_id: bytes, value: bytes, error: str | None) -> None:
        """``put``, awaited (a reply handed over in memory needs no task)."""
        if self._hand_over(correlation_id, value, error):
            return
        await self._topic._awaited(self._aput(correlation_id, value, error))

    def put(self, correlation_id: bytes, value: bytes, error: str | None) -> None:
        """Deliver a reply: to a requester waiting on this handle, handed over in memory
        (no record, as on the embedded store); else a record of the reply topic on the
        correlation id's subject, stored when this returns.

        Raises RecordTooLarge (nothing written) when a reply to be written does not
        fit a record.
        """
        if self._hand_over(correlation_id, value, error):
            # Handed over on this thread: no trip through the connection's event loop,
            # whose wake-up (and the one back) would sit between the handler's return
            # and the requester's wake-up.
            return
        self._topic._run(self._aput(correlation_id, value, error))

    def _hand_over(self, correlation_id: bytes, value: bytes, error: str | None) -> bool:
        """Give the reply to a requester waiting on this handle, if one is (True), and
        wake it; False when the reply must travel as a record. StoreClosed on a closed
        store, as every write."""
        self._store._check_writable(f"reply to {self.name!r}")
        with self._lock:
            handed = correlation_id in self._waiting
            if handed:
                self._replies[correlation_id] = (value, error)
        if handed:
            # The requester waits on this handle (the server runs in its process, on
            # the same store handle): it has its reply now and, as on the embedded
            # store, no record is written (the contract owes durability only to a
            # reply that travels).
            self._wake()
        return handed

    async def _aput(self, correlation_id: bytes, value: bytes, error: str | None) -> None:
        if self._hand_over(correlation_id, value, error):
            return
        topic, conn = self._topic, self._conn
        hdrs = [(_HB_CORRELATION_ID, correlation_id)]
        if error is not None:
            hdrs.append((_HB_ERROR_TYPE, error.encode("utf-8")))
        wire = topic._encode(value, None, hdrs, now_ms())
        subject = self._subject(correlation_id)
        await topic._sending(0, lambda: conn.publish_now(subject, value, wire), idempotent=False)
        topic._appended()
