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

from ._codec import decode_headers, encode_batch, encode_record  # noqa: F401
from ._types import Position, Record, Retention  # noqa: F401
from .errors import (  # noqa: F401
    ConfigMismatch,
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
