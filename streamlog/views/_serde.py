"""Serializers on handles: Python objects in, Python objects out, over any backend.

``log.topic(name, serializer="json")`` and every view's ``serializer=`` wrap the
contract's Topic (``streamlog.api``) in a ``SerializedTopic``: appends encode
the value with the handle's serializer and add the ``content-type`` header
(and ``schema-version`` when the handle has one); reads, group polls and
event-store reads decode with the handle's serializer. A serializer belongs
to the handle, not to the topic: two handles on one topic may use different
ones, and a handle without a serializer sees the bytes. Without a serializer
nothing is wrapped, so the bytes path keeps its speed.

``None`` stays a tombstone (never encoded, never decoded). A value that does
not encode raises TypeError before anything is written; a record that does
not decode raises DecodeError naming its topic, partition and offset. A group
consumer does not raise: it settles a record that does not decode with
``nack(error=...)`` (a delivery, so after ``max_deliver`` it moves to the
dead-letter topic with the error) and hands out the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from streamlog import api
from streamlog._types import Position, Record, RecordBatch
from streamlog.errors import DecodeError

__all__ = ["Codec", "DecodedMessage", "SerializedGroup", "SerializedTopic", "resolve", "wrap"]

CONTENT_TYPE = "content-type"
SCHEMA_VERSION = "schema-version"
_logger = logging.getLogger("streamlog")


class Codec:
    """A resolved serializer: ``dumps``/``loads`` and the ``content-type`` it writes."""

    __slots__ = ("name", "content_type", "dumps", "loads")

    def __init__(self, name: str, content_type: str | None, dumps: Callable[[Any], Any],
                 loads: Callable[[bytes], Any]) -> None:
        self.name = name
        self.content_type = content_type
        self.dumps = dumps
        self.loads = loads

    def __repr__(self) -> str:
        return f"Codec({self.name!r}, content_type={self.content_type!r})"

    def encode(self, value: Any) -> bytes:
        """``value`` as bytes; TypeError (naming the serializer) when it does not encode."""
        try:
            out = self.dumps(value)
        except Exception as e:
            raise TypeError(f"a value of type {type(value).__name__} does not serialize with "
                            f"serializer {self.name!r}: {e}") from e
        if type(out) is not bytes:
            if isinstance(out, bytearray | memoryview):
                return bytes(out)
            raise TypeError(f"serializer {self.name!r} returned {type(out).__name__}, "
                            "not bytes")
        return out


def _str_dumps(v: Any) -> bytes:
    if not isinstance(v, str):
        raise TypeError(f"expected str, not {type(v).__name__}")
    return v.encode("utf-8")


def _bytes_dumps(v: Any) -> bytes:
    if not isinstance(v, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes-like, not {type(v).__name__}")
    return bytes(v)


def _builtin(name: str) -> Codec:
    if name in ("json", "msgpack"):
        try:
            import msgspec
        except ImportError as e:  # pragma: no cover - msgspec is a dependency
            raise ImportError(f"serializer {name!r} needs msgspec") from e
        if name == "json":
            return Codec("json", "application/json", msgspec.json.Encoder().encode,
                         msgspec.json.Decoder().decode)
        return Codec("msgpack", "application/msgpack", msgspec.msgpack.Encoder().encode,
                     msgspec.msgpack.Decoder().decode)
    if name == "str":
        return Codec("str", "text/plain; charset=utf-8", _str_dumps,
                     lambda b: b.decode("utf-8"))
    if name == "bytes":
        return Codec("bytes", "application/octet-stream", _bytes_dumps, bytes)
    raise ValueError(f"serializer must be 'json', 'msgpack', 'str', 'bytes' or an object with "
                     f"dumps/loads, not {name!r}")


def resolve(serializer: Any) -> Codec | None:
    """The Codec of a ``serializer=`` option (None: none, the bytes path).

    A name ("json", "msgpack", "str", "bytes") or an object with ``dumps``
    and ``loads``; its ``content_type`` attribute, if any, is written as the
    ``content-type`` header (without one, no header is written).
    """
    if serializer is None:
        return None
    if isinstance(serializer, Codec):
        return serializer
    if isinstance(serializer, str):
        return _builtin(serializer)
    dumps = getattr(serializer, "dumps", None)
    loads = getattr(serializer, "loads", None)
    if not callable(dumps) or not callable(loads):
        raise TypeError("serializer must be 'json', 'msgpack', 'str', 'bytes' or an object "
                        f"with dumps and loads, not {type(serializer).__name__}")
    ct = getattr(serializer, "content_type", None)
    if ct is not None and not isinstance(ct, str):
        raise TypeError(f"serializer.content_type must be a str, not {type(ct).__name__}")
    name = getattr(serializer, "__name__", None) or type(serializer).__name__
    return Codec(name, ct, dumps, loads)


def schema_version_bytes(v: Any) -> bytes | None:
    """The ``schema-version`` header value of a handle option (an int >= 0 or a str)."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise TypeError(f"schema_version must be an int or a str, not {type(v).__name__}")
    if isinstance(v, int) and v < 0:
        raise ValueError(f"schema_version must be >= 0, not {v}")
    if isinstance(v, str) and not v:
        raise ValueError("schema_version must not be empty")
    return str(v).encode("utf-8")


class Stamp:
    """What a handle adds to every record it writes: encoded value and its headers."""

    __slots__ = ("codec", "extra")

    def __init__(self, codec: Codec | None, schema_version: Any) -> None:
        self.codec = codec
        extra: dict[str, bytes] = {}
        if codec is not None and codec.content_type is not None:
            extra[CONTENT_TYPE] = codec.content_type.encode("utf-8")
        sv = schema_version_bytes(schema_version)
        if sv is not None:
            extra[SCHEMA_VERSION] = sv
        self.extra = extra

    def value(self, value: Any) -> Any:
        """The value to store (None stays None: a tombstone is never encoded)."""
        if value is None or self.codec is None:
            return value
        return self.codec.encode(value)

    def headers(self, headers: Any, tombstone: bool = False) -> Any:
        """``headers`` with the handle's own added (a caller's header of the same name wins)."""
        if not self.extra or tombstone:
            return headers
        if headers is None:
            return dict(self.extra)
        if not isinstance(headers, Mapping):
            raise TypeError(f"headers must be a mapping of str to bytes, not "
                            f"{type(headers).__name__}")
        out: dict[str, Any] = dict(self.extra)
        out.update(headers)
        return out

    def decode(self, value: bytes | None, topic: str, partition: int, offset: int) -> Any:
        """The stored value decoded; DecodeError naming where the record is."""
        if value is None or self.codec is None:
            return value
        try:
            return self.codec.loads(value)
        except Exception as e:
            raise DecodeError(topic, partition, offset, self.codec.name, e) from e


class DecodedMessage:
    """A group Message whose ``value`` is decoded; settle it as the message itself."""

    __slots__ = ("_m", "value")

    def __init__(self, m: api.Message, value: Any) -> None:
        self._m = m
        self.value = value

    def __repr__(self) -> str:
        return (f"DecodedMessage(topic={self._m.topic!r}, partition={self._m.partition}, "
                f"offset={self._m.offset}, value={self.value!r})")

    @property
    def raw(self) -> api.Message:
        """The message as the backend delivered it (its value the stored bytes)."""
        return self._m

    @property
    def topic(self) -> str:
        return self._m.topic

    @property
    def partition(self) -> int:
        return self._m.partition

    @property
    def offset(self) -> int:
        return self._m.offset

    @property
    def timestamp_ms(self) -> int:
        return self._m.timestamp_ms

    @property
    def key(self) -> bytes | None:
        return self._m.key

    @property
    def headers(self) -> dict[str, bytes]:
        return self._m.headers

    @property
    def delivery_count(self) -> int:
        return self._m.delivery_count

    def ack(self) -> bool:
        return self._m.ack()

    def nack(self, delay_s: float = 0, error: str | None = None) -> bool:
        return self._m.nack(delay_s, error)

    def in_progress(self) -> bool:
        return self._m.in_progress()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._m, name)


class SerializedGroup:
    """A group consumer that hands out DecodedMessages.

    A record that does not decode is not handed out: it is ``nack``ed with the
    DecodeError as its error (one delivery; after ``max_deliver`` the record
    moves to the dead-letter topic) and logged on the ``streamlog`` logger.
    """

    def __init__(self, group: api.Group, stamp: Stamp, topic: SerializedTopic) -> None:
        self._g = group
        self._stamp = stamp
        self._topic = topic
        self.name = group.name

    def __repr__(self) -> str:
        return f"SerializedGroup({self._g!r}, serializer={self._stamp.codec!r})"

    @property
    def raw(self) -> api.Group:
        """The group consumer as the backend made it."""
        return self._g

    def poll(self, max_records: int = 100,
             timeout: float | None = 1.0) -> Sequence[DecodedMessage]:
        """As ``Group.poll``, values decoded (see the class for records that do not)."""
        out, bad = self._decode_all(self._g.poll(max_records, timeout))
        for m, err in bad:
            m.nack(error=err)
        return out

    def _decode_all(self, msgs: Sequence[api.Message]
                    ) -> tuple[list[DecodedMessage], list[tuple[api.Message, str]]]:
        """The messages that decode, and (message, error) for those that do not."""
        out: list[DecodedMessage] = []
        bad: list[tuple[api.Message, str]] = []
        decode = self._stamp.decode
        for m in msgs:
            try:
                out.append(DecodedMessage(m, decode(m.value, m.topic, m.partition, m.offset)))
            except DecodeError as e:
                _logger.warning("%s; handed back as a failed delivery (%d so far)", e,
                                m.delivery_count)
                bad.append((m, str(e)))
        return out, bad

    async def poll_async(self, max_records: int = 100,
                         timeout: float | None = 1.0) -> Sequence[DecodedMessage]:
        """``poll``, awaited (on a backend whose group has coroutine twins)."""
        out, bad = self._decode_all(await self._g.poll_async(  # type: ignore[attr-defined]
            max_records, timeout))
        for m, err in bad:
            await m.nack_async(error=err)  # type: ignore[attr-defined]
        return out

    def ack(self, msgs: Iterable[Any]) -> list[bool]:
        """Ack many messages at once (see ``Group.ack``); decoded or raw ones."""
        return self._g.ack([_raw(m) for m in msgs])

    def nack(self, msgs: Iterable[Any], delay_s: float = 0,
             error: str | None = None) -> list[bool]:
        """Nack many messages at once (see ``Group.nack``); decoded or raw ones."""
        return self._g.nack([_raw(m) for m in msgs], delay_s, error)

    async def ack_async(self, msgs: Iterable[Any]) -> list[bool]:
        """``ack``, awaited."""
        return await self._g.ack_async([_raw(m) for m in msgs])  # type: ignore[attr-defined, no-any-return]

    async def nack_async(self, msgs: Iterable[Any], delay_s: float = 0,
                         error: str | None = None) -> list[bool]:
        """``nack``, awaited."""
        return await self._g.nack_async(  # type: ignore[attr-defined, no-any-return]
            [_raw(m) for m in msgs], delay_s, error)

    def poll_batch(self, max_records: int = 1000,
                   timeout: float | None = 1.0) -> RecordBatch:
        """As ``Group.poll_batch``: the stored bytes as columns, not decoded (as
        ``read_batch``); a value that would not decode is handed out as it is."""
        return self._g.poll_batch(max_records, timeout)

    def ack_batch(self, batch: RecordBatch) -> np.ndarray:
        """Ack a ``poll_batch`` result (see ``Group.ack_batch``)."""
        return self._g.ack_batch(batch)

    def nack_batch(self, batch: RecordBatch, delay_s: float = 0,
                   error: str | None = None) -> np.ndarray:
        """Nack a ``poll_batch`` result (see ``Group.nack_batch``)."""
        return self._g.nack_batch(batch, delay_s, error)

    async def poll_batch_async(self, max_records: int = 1000,
                               timeout: float | None = 1.0) -> RecordBatch:
        """``poll_batch``, awaited (on a backend whose group has coroutine twins)."""
        return await self._g.poll_batch_async(  # type: ignore[attr-defined, no-any-return]
            max_records, timeout)

    async def ack_batch_async(self, batch: RecordBatch) -> np.ndarray:
        """``ack_batch``, awaited."""
        return await self._g.ack_batch_async(batch)  # type: ignore[attr-defined, no-any-return]

    async def nack_batch_async(self, batch: RecordBatch, delay_s: float = 0,
                               error: str | None = None) -> np.ndarray:
        """``nack_batch``, awaited."""
        return await self._g.nack_batch_async(  # type: ignore[attr-defined, no-any-return]
            batch, delay_s, error)

    def lag(self, partition: int | None = None) -> int:
        return self._g.lag(partition)

    def one_at_a_time(self) -> None:
        self._g.one_at_a_time()

    def ready_for_next(self) -> None:
        self._g.ready_for_next()

    def dead_letters(self) -> SerializedTopic:
        """The dead-letter topic, read with this handle's serializer (``.raw`` for bytes)."""
        return SerializedTopic(self._g.dead_letters(), self._stamp)

    def close(self) -> None:
        self._g.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._g, name)


class SerializedTopic:
    """A Topic handle with a serializer: values in and out are Python objects.

    Everything the contract's Topic offers, with values encoded on append and
    decoded on ``read``/``get`` and in the groups it opens; ``read_batch``
    returns the stored bytes (columns are not decoded). ``raw`` is the
    underlying handle.
    """

    def __init__(self, topic: api.Topic, stamp: Stamp) -> None:
        self._t = topic
        self._stamp = stamp

    def __repr__(self) -> str:
        return f"SerializedTopic({self._t!r}, serializer={self._stamp.codec!r})"

    @property
    def raw(self) -> api.Topic:
        """The handle without the serializer (values are the stored bytes)."""
        return self._t

    @property
    def serializer(self) -> Codec | None:
        """The handle's serializer."""
        return self._stamp.codec

    @property
    def name(self) -> str:
        return self._t.name

    @property
    def partitions(self) -> int:
        return self._t.partitions

    @property
    def config(self) -> Mapping[str, Any]:
        return self._t.config

    def append(self, value: Any, key: Any = None, headers: Any = None,
               timestamp_ms: int | None = None, msg_id: Any = None,
               subject: str | None = None) -> Position:
        """Encode ``value`` and append it (see Topic.append); TypeError before any write
        when it does not encode."""
        s = self._stamp
        hdrs = s.headers(headers, value is None)
        if subject is not None:
            return self._t.append(s.value(value), key, hdrs, timestamp_ms, msg_id,
                                  subject=subject)
        return self._t.append(s.value(value), key, hdrs, timestamp_ms, msg_id)

    def append_many(self, values: Sequence[Any], keys: Sequence[Any] | None = None,
                    headers: Sequence[Any] | None = None) -> list[Position]:
        """Encode every value, then append them (see Topic.append_many)."""
        vals, hdrs = self._encoded_many(values, headers)
        return self._t.append_many(vals, keys, hdrs)

    def append_delayed(self, value: Any, deliver_at_ms: int, key: Any = None,
                       headers: Any = None) -> Position:
        """Encode ``value`` and append it for delivery at ``deliver_at_ms``."""
        s = self._stamp
        return self._t.append_delayed(s.value(value), deliver_at_ms, key,
                                      s.headers(headers, value is None))

    def _encoded_many(self, values: Sequence[Any],
                      headers: Sequence[Any] | None) -> tuple[list[Any], list[Any]]:
        s = self._stamp
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise TypeError(f"values must be a sequence, not {type(values).__name__}")
        vals = [s.value(v) for v in values]
        if headers is None:
            return vals, [s.headers(None, v is None) for v in values]
        if len(headers) != len(values):
            raise ValueError("headers must have one entry per value")
        return vals, [s.headers(h, v is None) for v, h in zip(values, headers, strict=True)]

    # The coroutine twins (``api.AwaitableTopic``), used when the backend's topic has
    # them: the asyncio API awaits these on the caller's loop.
    async def append_async(self, value: Any, key: Any = None, headers: Any = None,
                           timestamp_ms: int | None = None, msg_id: Any = None,
                           subject: str | None = None) -> Position:
        """``append``, awaited."""
        s = self._stamp
        return await self._t.append_async(  # type: ignore[attr-defined, no-any-return]
            s.value(value), key=key, headers=s.headers(headers, value is None),
            timestamp_ms=timestamp_ms, msg_id=msg_id, subject=subject)

    async def append_many_async(self, values: Sequence[Any], keys: Sequence[Any] | None = None,
                                headers: Sequence[Any] | None = None) -> list[Position]:
        """``append_many``, awaited."""
        vals, hdrs = self._encoded_many(values, headers)
        return await self._t.append_many_async(  # type: ignore[attr-defined, no-any-return]
            vals, keys=keys, headers=hdrs)

    async def append_delayed_async(self, value: Any, deliver_at_ms: int, key: Any = None,
                                   headers: Any = None) -> Position:
        """``append_delayed``, awaited."""
        s = self._stamp
        return await self._t.append_delayed_async(  # type: ignore[attr-defined, no-any-return]
            s.value(value), deliver_at_ms, key=key, headers=s.headers(headers, value is None))

    async def read_async(self, partition: int, offset: int = 0,
                         limit: int | None = None) -> list[Record]:
        """``read``, awaited, as a list, values decoded."""
        return [self._decoded(r) for r in await self._t.read_async(  # type: ignore[attr-defined]
            partition, offset, limit)]

    async def get_async(self, partition: int, offset: int) -> Record:
        """``get``, awaited, its value decoded."""
        return self._decoded(await self._t.get_async(partition, offset))  # type: ignore[attr-defined]

    def _decoded(self, r: Record) -> Record:
        v = self._stamp.decode(r.value, self._t.name, r.partition, r.offset)
        return Record(r.topic, r.partition, r.offset, r.timestamp_ms, r.key, v, r.headers)

    def read(self, partition: int, offset: int = 0,
             limit: int | None = None) -> Iterator[Record]:
        """Records from ``offset`` on, values decoded (DecodeError at the first that does
        not decode, naming it)."""
        for r in self._t.read(partition, offset, limit):
            yield self._decoded(r)

    def get(self, partition: int, offset: int) -> Record:
        """The record at ``offset``, its value decoded."""
        return self._decoded(self._t.get(partition, offset))

    def append_batch(self, partition: int, batch: RecordBatch) -> int:
        """Append columns of stored bytes as they are (the serializer is not applied)."""
        return self._t.append_batch(partition, batch)

    def read_batch(self, partition: int, offset: int, max_records: int) -> RecordBatch:
        """The stored bytes as columns (not decoded)."""
        return self._t.read_batch(partition, offset, max_records)

    def start_offset(self, partition: int) -> int:
        return self._t.start_offset(partition)

    def end_offset(self, partition: int) -> int:
        return self._t.end_offset(partition)

    def offset_for_time(self, partition: int, timestamp_ms: int) -> int:
        return self._t.offset_for_time(partition, timestamp_ms)

    def watch(self) -> api.Watch:
        return self._t.watch()

    def group(self, name: str, mode: str = "shared", ack_wait_s: float = 30,
              max_deliver: int = 5, backoff_s: Sequence[float] | None = None,
              start: str = "earliest", dead_letter: str | None = None,
              consumer: str | None = None,
              subjects: Sequence[str] | None = None) -> SerializedGroup:
        """Open a group consumer (see Topic.group) whose messages are decoded."""
        if subjects is None:
            g = self._t.group(name, mode, ack_wait_s, max_deliver, backoff_s, start,
                              dead_letter, consumer)
        else:
            g = self._t.group(name, mode, ack_wait_s, max_deliver, backoff_s, start,
                              dead_letter, consumer, subjects=subjects)
        return SerializedGroup(g, self._stamp, self)

    def group_config(self, name: str) -> dict[str, Any] | None:
        return self._t.group_config(name)

    def groups(self) -> list[str]:
        return self._t.groups()

    def delete_group(self, name: str, force: bool = True) -> None:
        self._t.delete_group(name, force=force)

    def group_consumers(self, name: str) -> list[str]:
        return self._t.group_consumers(name)

    def reset_group(self, name: str, to: Any, dry_run: bool = False,
                    force: bool = False) -> list[Any]:
        return self._t.reset_group(name, to, dry_run=dry_run, force=force)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


def _raw(m: Any) -> Any:
    """The backend's message under a DecodedMessage (or ``m`` itself)."""
    return m.raw if isinstance(m, DecodedMessage) else m


def wrap(topic: api.Topic, serializer: Any = None, schema_version: Any = None) -> Any:
    """``topic`` itself without a serializer or schema version (the bytes path, unslowed),
    else a SerializedTopic over it. Bad options raise before anything is opened."""
    codec = resolve(serializer)
    if codec is None and schema_version is None:
        return topic
    return SerializedTopic(topic, Stamp(codec, schema_version))


def check(serializer: Any, schema_version: Any) -> Stamp | None:
    """Validate handle options early; the Stamp to use, or None for the bytes path."""
    codec = resolve(serializer)
    if codec is None and schema_version is None:
        return None
    return Stamp(codec, schema_version)
