"""Public exception types: one per way a caller's request can fail."""

from __future__ import annotations


class StreamlogError(Exception):
    """Base of every error streamlog raises on its own account."""


class TopicNotFound(StreamlogError, LookupError):
    """The topic does not exist (or was deleted while a handle was open).

    Nothing was written.
    """


class ConfigMismatch(StreamlogError, ValueError):
    """An option differs from the value stored with an existing topic or group.

    The stored configuration is unchanged and nothing was written.
    """


class RecordTooLarge(StreamlogError, ValueError):
    """A record's encoded key + value + headers exceed the topic's max_record_bytes.

    Raised during validation, before any byte of the call is written.
    """


class OffsetOutOfRange(StreamlogError, IndexError):
    """An offset lies outside [start_offset, end_offset) of its partition."""


class CorruptionError(StreamlogError):
    """Stored bytes failed a check (CRC32C, magic, length, offset continuity).

    The damaged data is never returned. ``path`` is the file, ``file_pos`` the
    byte position of the damaged batch, ``reason`` what check failed. The store
    is left as it was; ``streamlog verify DIR`` lists every damaged place and
    ``streamlog repair DIR`` quarantines it.
    """

    def __init__(self, path: str | None, file_pos: int, reason: str) -> None:
        self.path = path
        self.file_pos = file_pos
        self.reason = reason
        where = f"{path} at byte {file_pos}" if path else f"byte {file_pos}"
        super().__init__(f"corrupt data in {where}: {reason}; run `streamlog verify`")

    def __reduce__(self):  # keep the attributes across pickling (multiprocessing)
        return (type(self), (self.path, self.file_pos, self.reason))


class TornTail(Exception):
    """Internal: a batch ends past the available bytes (a writer died mid-write).

    Not public: recovery truncates a torn tail and logs a warning; it is never
    raised to a caller.
    """

    def __init__(self, file_pos: int, reason: str) -> None:
        self.file_pos = file_pos
        self.reason = reason
        super().__init__(f"torn tail at byte {file_pos}: {reason}")


class WrongExpectedVersion(StreamlogError):
    """An event-store append named a version the stream is not at; nothing was written."""

    def __init__(self, expected: int, actual: int, stream_id: str | None = None) -> None:
        self.expected = expected
        self.actual = actual
        self.stream_id = stream_id
        name = f"stream {stream_id!r}" if stream_id is not None else "stream"
        super().__init__(f"{name}: expected version {expected}, actual {actual}")

    def __reduce__(self):
        return (type(self), (self.expected, self.actual, self.stream_id))


class RequestTimeout(StreamlogError, TimeoutError):
    """No reply arrived before the request's deadline; the request will never be served."""


class RemoteError(StreamlogError):
    """The request handler raised; ``type_name`` and ``remote_message`` say what."""

    def __init__(self, type_name: str, remote_message: str) -> None:
        self.type_name = type_name
        self.remote_message = remote_message
        super().__init__(f"{type_name}: {remote_message}")

    def __reduce__(self):
        return (type(self), (self.type_name, self.remote_message))


class StoreClosed(StreamlogError):
    """The store (or the handle's store) was closed; nothing was done."""


class ReadOnlyStore(StreamlogError, PermissionError):
    """A write was asked of a store opened with ``read_only=True``; nothing was written."""


class GroupActive(StreamlogError):
    """A consumer group has live consumers, so moving or deleting its positions was refused
    (``force=True`` does it anyway); nothing was changed. ``consumers`` names them."""

    def __init__(self, message: str, consumers: list[str] | None = None) -> None:
        super().__init__(message)
        self.consumers = list(consumers or [])


__all__ = [
    "StreamlogError",
    "TopicNotFound",
    "ConfigMismatch",
    "RecordTooLarge",
    "OffsetOutOfRange",
    "CorruptionError",
    "WrongExpectedVersion",
    "RequestTimeout",
    "RemoteError",
    "StoreClosed",
    "ReadOnlyStore",
    "GroupActive",
]


class DecodeError(StreamlogError, ValueError):
    """A stored value does not decode with the reading handle's serializer.

    ``topic``, ``partition`` and ``offset`` say which record; the serializer's
    own error is the ``__cause__``.
    """

    def __init__(self, topic: str, partition: int, offset: int, serializer: str,
                 cause: BaseException) -> None:
        super().__init__(f"record {offset} of topic {topic!r} partition {partition} does not "
                         f"decode with serializer {serializer!r}: {type(cause).__name__}: {cause}")
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.serializer = serializer
