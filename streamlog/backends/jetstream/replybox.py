"""The reply box of a request-reply view on JetStream: replies by correlation id.

A reply is one record of the reply topic (partition 0), published on its own
subject below the partition's subject: ``<partition subject>.r.<correlation
id token>`` (``_naming.entry_subject``), with the headers
``streamlog.correlation-id`` and, for a handler error, ``streamlog.error-type``.
A requester sleeps on the reply topic's watch and takes its reply with one
get-last-by-subject through the stream leader: it never scans other
requesters' replies and never polls on a timer.

Every reply takes this durable path, also when the requester waits in the
same process (the embedded store hands those over in memory). Reply records
stay in the reply topic until its retention drops them, as on the embedded
store; a reply to a requester that is gone is never read again.
"""

from __future__ import annotations

from typing import Any

from streamlog._types import now_ms
from streamlog.api import Watch

from . import _naming

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

    def __init__(self, store: Any, name: str) -> None:
        self._store = store
        self.name = name
        self._topic = store.existing_topic(name)
        self._conn = store._conn
        self._stream = self._topic.stream_name(0)
        self._psubject = self._topic.subject(0)
        self._watch: Watch = self._topic.watch()

    def __repr__(self) -> str:
        return f"JetStreamReplyBox({self.name!r})"

    def _subject(self, correlation_id: bytes) -> str:
        return _naming.entry_subject(self._psubject, "r", correlation_id)

    def watch(self) -> Watch:
        """Wake-ups on every reply put (the reply topic's watch)."""
        return self._watch

    def open(self, correlation_id: bytes) -> None:
        """Nothing to prepare: a reply is found by its subject."""

    def close(self, correlation_id: bytes) -> None:
        """Nothing to release: the reply record stays under the topic's retention."""

    def take(self, correlation_id: bytes) -> tuple[bytes, str | None] | None:
        """The reply if it has come (read through the stream leader), else None."""
        conn, stream, subject = self._conn, self._stream, self._subject(correlation_id)
        topic = self._topic
        m = topic._read_run(lambda: conn.get_last_message(stream, subject))
        if m is None:
            return None
        rec = topic._record(0, m)
        if rec.headers.get(CORRELATION_ID) != correlation_id:
            return None  # a hashed subject shared with another id (never seen)
        err = rec.headers.get(ERROR_TYPE)
        return rec.value or b"", None if err is None else err.decode("utf-8", "replace")

    def put(self, correlation_id: bytes, value: bytes, error: str | None) -> None:
        """Deliver a reply: a record of the reply topic on the correlation id's subject.

        Raises RecordTooLarge (nothing written) when the reply does not fit a record.
        """
        self._store._check_writable(f"reply to {self.name!r}")
        topic, conn = self._topic, self._conn
        hdrs = [(_HB_CORRELATION_ID, correlation_id)]
        if error is not None:
            hdrs.append((_HB_ERROR_TYPE, error.encode("utf-8")))
        wire = topic._encode(value, None, hdrs, now_ms())
        subject = self._subject(correlation_id)
        topic._run(topic._sending(0, lambda: conn.publish(subject, value, wire),
                                  idempotent=False))
        topic._appended()
