"""The narrow log interface that views (queue, pub-sub, rpc, event store) are built on.

Views import this module only, never ``streamlog.storage``: a second backend
(NATS JetStream, later) implements the same surface and the views run on it
unchanged. docs/backend.md describes the contract; this module names it.

The surface, in terms of the local implementation:

* ``LogBackend``: ``topic(name, **options)`` (create or open),
  ``existing_topic(name)``, ``topics()``, ``delete_topic(name)``,
  ``kv(name)`` (a key-value namespace: ``get``, ``put``, ``delete``,
  ``scan(prefix)``, ``transact(fn)``), ``path``, ``_check()``.
* ``TopicBackend``: ``name``, ``partitions``, ``append``, ``append_many``,
  ``append_with(partition, build)`` (conditional append under the
  partition's append lock), ``read``, ``get``, ``start_offset``,
  ``end_offset``, ``offset_for_time``, ``notify_seq(partition)`` and
  ``wait(partition, seen, timeout)`` (wake-ups on append), ``group(...)``.
* Groups: ``Group.poll``, ``ack``, ``nack``, ``lag``, ``pending``,
  ``seek``, ``close``; ``Message`` with ``ack()``, ``nack()``,
  ``in_progress()``.
"""

from __future__ import annotations

from typing import Any, Protocol

from streamlog._limits import (  # noqa: F401  (the limits the views apply)
    DERIVED_NAME_MAX_CHARS,
    NAME_MAX_CHARS,
    RPC_INDEX_GRACE_S,
    RPC_INDEX_PRUNE_INTERVAL_S,
    RPC_SERVER_POLL_S,
    VIEW_POLL_S,
)
from streamlog._types import Position, Record, Retention, now_ms  # noqa: F401  (now_ms: the views' clock)
from streamlog.backends.local.codec import decode_headers, encode_batch, encode_record  # noqa: F401
from streamlog.errors import (  # noqa: F401
    ConfigMismatch,
    OffsetOutOfRange,
    RecordTooLarge,
    RemoteError,
    RequestTimeout,
    StoreClosed,
    StreamlogError,
    TopicNotFound,
    WrongExpectedVersion,
)


class KeyValue(Protocol):
    def get(self, key: bytes) -> bytes | None: ...
    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> bool: ...
    def scan(self, prefix: bytes = b"") -> list[tuple[bytes, bytes]]: ...
    def transact(self, fn) -> Any: ...


class TopicBackend(Protocol):
    name: str
    partitions: int

    def append(self, value, key=None, headers=None, timestamp_ms=None, msg_id=None) -> Position: ...
    def append_many(self, values, keys=None, headers=None) -> list[Position]: ...
    def append_with(self, partition: int, build) -> tuple[int, Any]: ...
    def read(self, partition: int, offset: int = 0, limit: int | None = None): ...
    def get(self, partition: int, offset: int) -> Record: ...
    def start_offset(self, partition: int) -> int: ...
    def end_offset(self, partition: int) -> int: ...
    def notify_seq(self, partition: int) -> int: ...
    def wait(self, partition: int, seen: int, timeout: float) -> bool: ...
    def group(self, name: str, **options): ...


class LogBackend(Protocol):
    path: str

    def topic(self, name: str, **options) -> TopicBackend: ...
    def existing_topic(self, name: str) -> TopicBackend: ...
    def topics(self) -> list[str]: ...
    def delete_topic(self, name: str) -> None: ...
    def kv(self, name: str) -> KeyValue: ...


# --------------------------------------------------------------------------
# Helpers the views call. Each takes the backend object it works on, so a
# second backend provides the same functions for its own objects. The local
# implementations below reach into the local Log/Topic; views never do.

BACKENDS = ("local",)


def open_backend(kind: str, where, **options) -> LogBackend:
    """Open a backend by kind: ``"local"`` opens a store directory (``streamlog.open``).

    The conformance suite runs the views' behaviours once per kind listed in
    ``BACKENDS``.
    """
    if kind == "local":
        from streamlog.backends.local.log import open_log

        return open_log(where, **options)
    raise ValueError(f"unknown backend {kind!r}: known backends are {', '.join(BACKENDS)}")


def validate_name(value, what: str = "name") -> str:
    """A view, subscription, topic or group name: ``[A-Za-z0-9][A-Za-z0-9._-]{0,199}``."""
    from streamlog._validate import name

    return name(value, what)


def store_id(log: LogBackend) -> str:
    """A string naming the store ``log`` is open on, equal for every handle on it."""
    import os

    return os.path.realpath(log.path)


def topic_config(topic: TopicBackend) -> dict:
    """The options a topic was created with (partitions, compact, max_record_bytes, ...)."""
    return dict(topic.config)  # type: ignore[attr-defined]


def wake_any(topic: TopicBackend) -> None:
    """Wake every waiter on the topic's wake-up word without appending a record.

    Waiters re-check their condition and sleep again if nothing is theirs;
    rpc uses it to wake a requester whose reply it handed over in-process.
    """
    topic._log._check()  # type: ignore[attr-defined]
    topic._log._notifier_of(topic.name).notify()  # type: ignore[attr-defined]


def encode_one(topic: TopicBackend, value, key=None, headers=None,
               timestamp_ms: int | None = None) -> tuple[bytes, int]:
    """Validate one record as ``append`` does and encode it as a one-record batch.

    Returns ``(batch, timestamp_ms)`` for ``append_with``'s ``build``; raises
    TypeError/ValueError/RecordTooLarge as ``append`` would.
    """
    from streamlog import _validate

    cfg = topic.config  # type: ignore[attr-defined]
    value = _validate.value(value, bool(cfg["compact"]))
    key = _validate.key(key)
    hdrs = _validate.headers(headers)
    ts = now_ms() if timestamp_ms is None else _validate.timestamp(timestamp_ms)
    _validate.record_size(key, value, hdrs, cfg["max_record_bytes"])
    return encode_record(key, value, hdrs, ts), ts


def on_close(log: LogBackend, fn) -> None:
    """Call ``fn()`` when ``log`` closes, before its handles stop working."""
    log._on_close(fn)  # type: ignore[attr-defined]


def view_topic(log: LogBackend, name: str) -> TopicBackend:
    """Create or open a topic whose name a view derived from its own (stored options kept)."""
    return log.topic(name)


# --------------------------------------------------------------------------
# Event store (views/event_store.py): the public Event type, the expected-
# version constants, and the checks the view shares with ``Topic.append``.

from streamlog import _validate as _validate_mod  # noqa: E402
from streamlog._limits import (  # noqa: E402,F401
    EVENT_INDEX_CACHED_STREAMS,
    EVENT_INDEX_CHUNK_VERSIONS,
    EVENT_INDEX_FLUSH_RECORDS,
    EVENT_READ_GAP_RECORDS,
    EVENT_STREAM_ID_INLINE_BYTES,
    EVENT_STREAM_ID_MAX_BYTES,
    EVENT_SUBSCRIBE_BATCH_RECORDS,
)
from streamlog.api import ANY, NO_STREAM, Event  # noqa: E402,F401
from streamlog.errors import CorruptionError  # noqa: E402,F401


def validate_value(v) -> bytes:
    """A record value that must not be None: bytes-like (TypeError otherwise)."""
    if v is None:
        raise TypeError("value must be bytes-like, not None")
    return _validate_mod.value(v, False)


def validate_headers(h) -> list[tuple[bytes, bytes]] | None:
    """Headers as ``Topic.append`` takes them, encoded to ``[(name, value), ...]``."""
    return _validate_mod.headers(h)


def on_topic_deleted(namespace: str, fn) -> None:
    """Call ``fn(tx, topic_name)`` inside the transaction that deletes a topic, ``tx``
    a key-value transaction on ``namespace``: a view's state for the topic goes with it."""
    from streamlog.backends.local.log import _TOPIC_DELETE_HOOKS
    from streamlog.backends.local.storage.meta import Tx

    def hook(meta, txn, topic: str) -> None:
        fn(Tx(txn, meta.db_in(txn, namespace)), topic)

    _TOPIC_DELETE_HOOKS.append(hook)


def defer(message, delay_s: float) -> bool:
    """Hand a message back to its group until ``delay_s`` from now, without counting the
    delivery it came in (delayed queue messages drawn before they are due)."""
    return message.defer(delay_s)


def group_config(topic: TopicBackend, name: str) -> dict | None:
    """The stored options of group ``name`` of ``topic`` (``mode``, ``ack_wait_s``, ...),
    or None when there is no such group. Reads only: opens no consumer."""
    import json

    from streamlog.backends.local.groups import _NS, _cfg_key

    topic._log._check()  # type: ignore[attr-defined]
    raw = topic._log.kv(_NS).get(_cfg_key(topic.name, name))  # type: ignore[attr-defined]
    return None if raw is None else json.loads(raw)
