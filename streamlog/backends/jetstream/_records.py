"""How a record becomes a JetStream message, and back.

The message payload is the record's value, byte for byte, so NATS's own
tools show it as it is. Everything else rides in headers that streamlog
owns (their names start with ``SL-``):

* ``SL-Ts``: the record's timestamp in ms since the epoch (the append's
  ``timestamp_ms``, or the appender's clock), decimal. A message without it
  (published by another tool) reads with the server's receive time.
* ``SL-Key``: the key. Text keys that survive a header unchanged go as they
  are; any other key (binary, empty, with surrounding spaces or control
  characters, or starting with ``~``) goes as ``~`` + base64.
* Application headers whose name is a plain header token and not reserved go
  under their own name, with the value encoded as the key is. Reserved are
  names starting with ``Nats-`` (server directives: an application header of
  that name must never change what the server does), ``SL-`` (ours),
  ``Status`` and ``Description`` (NATS status lines), in any letter case.
  Those, and names that are not header tokens, go together in one
  ``SL-Headers`` header as JSON ``[[name, encoded value], ...]``.

On read, every ``Nats-*`` header (the server's directives stored with the
message: ``Nats-Msg-Id``, ``Nats-Batch-*``, ``Nats-Expected-*``...) and every
``SL-*`` header is removed, and the application's headers come back with
their names and bytes exactly as appended.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence

from streamlog import _ext

__all__ = [
    "H_HEADERS",
    "H_KEY",
    "H_TS",
    "decode_headers",
    "decode_key",
    "encode_headers",
    "msg_id_header",
    "partition_for_msg_id",
    "timestamp_of",
    "wire_size",
]

H_TS = "SL-Ts"
H_KEY = "SL-Key"
H_HEADERS = "SL-Headers"
# Ids longer than this are sent as a SHA-256 digest (same id, same digest).
MSG_ID_MAX_CHARS = 200

# A header value that comes back unchanged: printable ASCII, no surrounding spaces
# (the parser strips them), not starting with the escape character; or empty.
_PLAIN_VALUE = re.compile(r"(?:[!-}](?:[ -~]*[!-~])?)?\Z")
# An HTTP token: the header names NATS accepts as they are.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_RESERVED_PREFIXES = ("nats-", "sl-")
_RESERVED_NAMES = ("status", "description")
# A msg id that can go into Nats-Msg-Id as it is.
_PLAIN_ID = re.compile(r"[!-}][!-~]*\Z")


def partition_for_msg_id(msg_id: bytes, partitions: int) -> int:
    """The partition a keyless record with ``msg_id`` goes to (Kafka's murmur2 formula).

    The same placement as the embedded store, so a retry of a keyless
    append lands in the partition that holds the first attempt.
    """
    if partitions == 1:
        return 0
    return _ext.partition_for_key(msg_id, partitions)


def _encode_value(v: bytes) -> str:
    try:
        text = v.decode("ascii")
    except UnicodeDecodeError:
        text = None
    if text is not None and _PLAIN_VALUE.match(text):
        return text
    return "~" + base64.b64encode(v).decode("ascii")


def _decode_value(s: str) -> bytes:
    if s.startswith("~"):
        return base64.b64decode(s[1:])
    return s.encode("utf-8")


def _plain_name(name: str) -> bool:
    if not _TOKEN.match(name):
        return False
    low = name.lower()
    return not low.startswith(_RESERVED_PREFIXES) and low not in _RESERVED_NAMES


def encode_headers(key: bytes | None, hdrs: Sequence[tuple[bytes, bytes]] | None,
                   ts: int) -> dict[str, str]:
    """The NATS headers of a record: timestamp, key, and the application's headers."""
    out = {H_TS: str(ts)}
    if key is not None:
        out[H_KEY] = _encode_value(key)
    if hdrs:
        odd = []
        for nb, vb in hdrs:
            name = nb.decode("utf-8")
            if _plain_name(name):
                out[name] = _encode_value(vb)
            else:
                odd.append([name, _encode_value(vb)])
        if odd:
            out[H_HEADERS] = json.dumps(odd, ensure_ascii=True, separators=(",", ":"))
    return out


def wire_size(payload_len: int, headers: dict[str, str]) -> int:
    """Bytes of the message as NATS counts it against ``max_payload``: the header
    block (``NATS/1.0`` line, one ``Name: value`` line each, blank line) and payload."""
    block = 10 + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items()) + 2
    return payload_len + block


def decode_key(headers: dict[str, str]) -> bytes | None:
    """The record's key from its message headers (None: no key)."""
    s = headers.get(H_KEY)
    return None if s is None else _decode_value(s)


def timestamp_of(headers: dict[str, str], time_ns: int) -> int:
    """The record's timestamp: ``SL-Ts``, else the server's receive time."""
    s = headers.get(H_TS)
    if s is not None:
        try:
            return int(s)
        except ValueError:
            pass
    return time_ns // 1_000_000


def decode_headers(headers: dict[str, str]) -> dict[str, bytes]:
    """The application's headers of a message: directives and streamlog's own removed."""
    out: dict[str, bytes] = {}
    for name, value in headers.items():
        low = name.lower()
        if low.startswith(_RESERVED_PREFIXES):
            continue
        out[name] = _decode_value(value)
    odd = headers.get(H_HEADERS)
    if odd:
        for name, value in json.loads(odd):
            out[name] = _decode_value(value)
    return out


def msg_id_header(msg_id: bytes) -> str:
    """The ``Nats-Msg-Id`` value for a msg_id: the id itself when it is plain printable
    ASCII of at most 200 characters, else ``~`` + its SHA-256 (never equal to a plain id)."""
    try:
        text = msg_id.decode("ascii")
    except UnicodeDecodeError:
        text = None
    if text is not None and len(text) <= MSG_ID_MAX_CHARS and _PLAIN_ID.match(text):
        return text
    return "~" + hashlib.sha256(msg_id).hexdigest()
