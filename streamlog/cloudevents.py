"""CloudEvents on streamlog records, as the CloudEvents Kafka protocol binding maps them.

Needs the ``cloudevents`` SDK (``pip install 'streamlog-embedded[cloudevents]'``).
Events are the SDK's own (``cloudevents.http.CloudEvent``); this module maps
one to a record and back, on any store (it uses only ``Topic.append`` and the
``value``/``headers``/``key`` of what a read, a group or a view hands out):

* **binary mode** (the default): the value is the event's data; each context
  attribute is a ``ce_<name>`` header (``ce_id``, ``ce_source``, ``ce_type``,
  ``ce_specversion``, ``ce_time``, ``ce_subject``, extensions) and
  ``datacontenttype`` is the ``content-type`` header.
* **structured mode**: the value is the whole event in the JSON event format,
  and ``content-type`` is ``application/cloudevents+json``.

In both, the ``partitionkey`` extension is the record key (so one entity's
events stay in one partition, in order), and the record's ``msg_id`` is the
pair ``(source, id)`` that CloudEvents says is unique: appending the same
event twice within the topic's dedupe window writes it once.
"""

from __future__ import annotations

import base64
import json
from typing import Any, NamedTuple

from cloudevents.http import CloudEvent

from streamlog._types import Position

__all__ = ["CloudEvent", "CloudEventRecord", "STRUCTURED_CONTENT_TYPE", "append",
           "from_record", "to_record"]

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
_MODES = ("binary", "structured")
_KEY_ATTRIBUTE = "partitionkey"


class CloudEventRecord(NamedTuple):
    """What an event becomes on a topic: pass the fields to ``append`` (or ``put``,
    ``publish``, an event-store ``(value, headers)`` pair)."""

    value: bytes
    headers: dict[str, bytes]
    key: bytes | None
    msg_id: str


def _mode(mode: Any) -> str:
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, not {type(mode).__name__}")
    if mode not in _MODES:
        raise ValueError(f"mode must be 'binary' or 'structured', not {mode!r}")
    return mode


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if hasattr(v, "isoformat"):
        return str(v.isoformat())
    return str(v)


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return True  # the event format's default for data that is not bytes
    ct = content_type.split(";", 1)[0].strip().lower()
    return ct == "application/json" or ct.endswith("+json") or ct == "text/json"


def _event(event: Any) -> CloudEvent:
    if not isinstance(event, CloudEvent):
        raise TypeError(f"event must be a cloudevents.http.CloudEvent, not "
                        f"{type(event).__name__}")
    return event


def to_record(event: CloudEvent, mode: str = "binary") -> CloudEventRecord:
    """The record for ``event``: ``(value, headers, key, msg_id)``.

    TypeError when ``event`` is not an SDK event or its data does not encode
    (data that is not bytes is JSON, as the event format says).
    """
    mode = _mode(mode)
    attrs = dict(_event(event).get_attributes())
    data = event.get_data()
    pk = attrs.pop(_KEY_ATTRIBUTE, None)
    key = None if pk is None else _text(pk).encode("utf-8")
    msg_id = json.dumps([_text(attrs["source"]), _text(attrs["id"])], ensure_ascii=False)
    if mode == "binary":
        ct = attrs.pop("datacontenttype", None)
        headers: dict[str, bytes] = {}
        if ct is not None:
            headers["content-type"] = _text(ct).encode("utf-8")
        for name, v in attrs.items():
            if v is not None:
                headers[f"ce_{name}"] = _text(v).encode("utf-8")
        if data is None:
            value = b""
        elif isinstance(data, bytes | bytearray | memoryview):
            value = bytes(data)
        elif isinstance(data, str) and not _is_json(ct):
            value = data.encode("utf-8")
        else:
            try:
                value = json.dumps(data).encode("utf-8")
            except (TypeError, ValueError) as e:
                raise TypeError(f"the event's data does not encode as JSON: {e}") from e
        return CloudEventRecord(value, headers, key, msg_id)
    doc: dict[str, Any] = {k: _text(v) for k, v in attrs.items() if v is not None}
    if pk is not None:
        doc[_KEY_ATTRIBUTE] = _text(pk)
    if isinstance(data, bytes | bytearray | memoryview):
        doc["data_base64"] = base64.b64encode(bytes(data)).decode("ascii")
    elif data is not None:
        doc["data"] = data
    try:
        value = json.dumps(doc).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise TypeError(f"the event's data does not encode as JSON: {e}") from e
    return CloudEventRecord(value, {"content-type": STRUCTURED_CONTENT_TYPE.encode()}, key,
                            msg_id)


def append(topic: Any, event: CloudEvent, mode: str = "binary",
           subject: str | None = None) -> Position:
    """Append ``event`` to ``topic`` (any store's Topic) in ``mode``; returns its Position.

    The append carries ``msg_id`` (source and id), so a repeat within the
    topic's dedupe window returns the first Position and writes nothing.
    ``subject`` is the record's subject (for groups filtering with ``subjects=``).
    """
    rec = to_record(event, mode)
    raw = getattr(topic, "raw", topic)  # a handle with a serializer: the bytes under it
    if subject is not None:
        return raw.append(rec.value, key=rec.key, headers=rec.headers, msg_id=rec.msg_id,
                          subject=subject)
    result: Position = raw.append(rec.value, key=rec.key, headers=rec.headers,
                                  msg_id=rec.msg_id)
    return result


def _bytes_of(record: Any, name: str) -> bytes | None:
    v = getattr(record, name, None)
    if v is None or isinstance(v, bytes):
        return v
    raw = getattr(record, "raw", None)  # a decoded message: the bytes it came from
    if raw is not None:
        return _bytes_of(raw, name)
    if isinstance(v, bytearray | memoryview):
        return bytes(v)
    raise TypeError(f"record.{name} must be bytes (read it without a serializer), not "
                    f"{type(v).__name__}")


def from_record(record: Any) -> CloudEvent:
    """The event a record holds (a Record, a group Message, a view's message, an
    event-store Event): binary mode when it has a ``ce_specversion`` header,
    structured mode when its ``content-type`` is ``application/cloudevents+json``
    (or JSON). ValueError when it holds no CloudEvent.
    """
    headers = getattr(record, "headers", None)
    if headers is None:
        raise TypeError(f"record must have headers, not {type(record).__name__}")
    value = _bytes_of(record, "value") or b""
    key = _bytes_of(record, "key")
    ct_raw = headers.get("content-type")
    ct = None if ct_raw is None else ct_raw.decode("utf-8")
    if "ce_specversion" in headers:
        attrs: dict[str, Any] = {n[3:]: v.decode("utf-8") for n, v in headers.items()
                                 if n.startswith("ce_")}
        if ct is not None:
            attrs["datacontenttype"] = ct
        if key is not None:
            attrs[_KEY_ATTRIBUTE] = key.decode("utf-8")
        data: Any
        if not value and ct is None:
            data = None
        elif ct is None:
            try:  # no datacontenttype: JSON data, or bytes that are not JSON
                data = json.loads(value)
            except ValueError:
                data = value
        elif _is_json(ct):
            try:
                data = json.loads(value)
            except ValueError as e:
                raise ValueError(f"the event's data is not the JSON its content-type "
                                 f"{ct!r} says: {e}") from e
        else:
            data = value
        return CloudEvent(attrs, data)
    if ct is None or not _is_json(ct):
        raise ValueError(f"the record holds no CloudEvent: no ce_specversion header and "
                         f"content-type {ct!r} is not {STRUCTURED_CONTENT_TYPE!r}")
    try:
        doc = json.loads(value)
    except ValueError as e:
        raise ValueError(f"the record's value is not a JSON CloudEvent: {e}") from e
    if not isinstance(doc, dict) or "specversion" not in doc:
        raise ValueError("the record's value is not a JSON CloudEvent (no specversion)")
    if "data_base64" in doc:
        data = base64.b64decode(doc.pop("data_base64"))
    else:
        data = doc.pop("data", None)
    if key is not None and _KEY_ATTRIBUTE not in doc:
        doc[_KEY_ATTRIBUTE] = key.decode("utf-8")
    return CloudEvent(doc, data)
