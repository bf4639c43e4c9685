"""Names of the JetStream streams and subjects that hold a store's topic partitions.

One stream per topic partition. Topic names may hold ``.`` (a subject token
separator, forbidden in stream names) and ``_``, so every name part goes
through one reversible token encoding (:func:`encode_token`) that yields only
``[A-Za-z0-9_-]``:

* ``_`` becomes ``__`` and ``.`` becomes ``_-``; letters, digits and ``-``
  stay as they are. A ``_`` followed by a letter or digit never occurs inside
  an encoded part (both codes are ``_`` + a non-alphanumeric character), and
  every store, topic and partition starts with a letter or digit, so a lone
  ``_`` separates parts without ambiguity.
* Stream ``SL_<store>_<topic>_<partition>``, e.g. store ``shop``, topic
  ``orders.eu``, partition 3 → ``SL_shop_orders_-eu_3``.
* Subject ``streamlog.<store>.<topic>.<partition>``, each part one token,
  e.g. ``streamlog.shop.orders_-eu.3``. A partition stream also owns every
  subject below its own (``….3.>``), so per-record subjects need no change
  to existing streams: ``….3.s.<subject>`` a record appended with
  ``subject=`` (:func:`message_subject`; groups with ``subjects=`` filter on
  it), ``….3.e.<id>`` / ``.t.`` / ``.r.`` keyed entries (:func:`entry_subject`). Because
  the topic is a single token, no two partitions' subjects overlap (JetStream
  refuses overlapping streams), and ``streamlog.<store>.>`` selects exactly
  one store's streams.
* JetStream limits stream names to 255 characters. A name that would be
  longer becomes ``SLH_<store>_<32 hex of SHA-256(store, topic)>_<partition>``;
  the ``SLH_`` prefix keeps hashed names apart from plain ones.

The exact store, topic and partition are also written into each stream's
metadata (:func:`stream_metadata`), which is what listings read back.
"""

from __future__ import annotations

import base64
import hashlib
import re

__all__ = [
    "MAX_STREAM_NAME_LEN",
    "STORE_NAME_RE",
    "decode_token",
    "entry_subject",
    "encode_token",
    "message_filter",
    "message_subject",
    "partition_subject",
    "store_subjects",
    "stream_metadata",
    "stream_name",
    "stream_subjects",
]

#: A store name as a ``nats://…/STORE`` URL may give it.
STORE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
#: The longest stream name nats-server 2.15 accepts (256 is refused).
MAX_STREAM_NAME_LEN = 255
#: The first subject token of everything streamlog stores in JetStream.
SUBJECT_ROOT = "streamlog"
#: Metadata keys on every partition stream.
META_STORE = "streamlog.store"
META_TOPIC = "streamlog.topic"
META_PARTITION = "streamlog.partition"

_TOKEN_OK = re.compile(r"[A-Za-z0-9._-]+")


def encode_token(name: str) -> str:
    """Encode a store or topic name (``[A-Za-z0-9._-]``) as ``[A-Za-z0-9_-]``, reversibly."""
    if not _TOKEN_OK.fullmatch(name):
        raise ValueError(f"cannot encode {name!r}: only letters, digits, '.', '_' and '-'")
    return name.replace("_", "__").replace(".", "_-")


def decode_token(token: str) -> str:
    """Invert :func:`encode_token`; ValueError on text it cannot have produced."""
    out = []
    i = 0
    while i < len(token):
        c = token[i]
        if c == "_":
            nxt = token[i + 1 : i + 2]
            if nxt == "_":
                out.append("_")
            elif nxt == "-":
                out.append(".")
            else:
                raise ValueError(f"{token!r} is not an encoded name (lone '_' at {i})")
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _check(store: str, topic: str, partition: int) -> None:
    if not STORE_NAME_RE.fullmatch(store):
        raise ValueError(f"invalid store name {store!r}: must match {STORE_NAME_RE.pattern}")
    if not topic or not topic[0].isalnum():
        raise ValueError(f"invalid topic name {topic!r}")
    if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
        raise ValueError(f"invalid partition {partition!r}")


def stream_name(store: str, topic: str, partition: int) -> str:
    """The JetStream stream that holds one partition of a topic of a store."""
    _check(store, topic, partition)
    name = f"SL_{encode_token(store)}_{encode_token(topic)}_{partition}"
    if len(name) <= MAX_STREAM_NAME_LEN:
        return name
    digest = hashlib.sha256(f"{store}\0{topic}".encode()).hexdigest()[:32]
    return f"SLH_{encode_token(store)}_{digest}_{partition}"


def partition_subject(store: str, topic: str, partition: int) -> str:
    """The subject records of one topic partition are published to."""
    _check(store, topic, partition)
    return f"{SUBJECT_ROOT}.{encode_token(store)}.{encode_token(topic)}.{partition}"


def stream_subjects(store: str, topic: str, partition: int) -> list[str]:
    """The subjects a partition stream owns: its own and every one below it."""
    base = partition_subject(store, topic, partition)
    return [base, f"{base}.>"]


# Ids longer than this (UTF-8 bytes) go into a subject as a SHA-256 digest.
ENTRY_ID_MAX_BYTES = 180


def entry_subject(partition_subject: str, kind: str, ident: bytes) -> str:
    """The subject of one keyed entry below a partition's subject (which its stream
    owns): ``<partition subject>.<kind>.<id>``, the id as an unpadded base64url token
    prefixed ``b`` (``h`` + SHA-256 hex for ids over ENTRY_ID_MAX_BYTES). Kinds: ``e``
    events of one event stream, ``t`` tracking records of one application, ``r`` the
    reply of one correlation id."""
    if len(ident) > ENTRY_ID_MAX_BYTES:
        token = "h" + hashlib.sha256(ident).hexdigest()
    else:
        token = "b" + base64.urlsafe_b64encode(ident).rstrip(b"=").decode("ascii")
    return f"{partition_subject}.{kind}.{token}"


#: The token below a partition's subject that message subjects hang from.
MESSAGE_KIND = "s"
# What a NATS subject token may not hold (besides '.', which separates them).
_SUBJECT_BAD = re.compile(rb"[\s*>]")


def message_subject(partition_subject: str, subject: bytes) -> str:
    """The subject a record whose ``subject`` header is ``subject`` is published to:
    ``<partition subject>.s.<subject>``; the partition's own subject when ``subject``
    is not a valid NATS subject (empty tokens, whitespace, wildcards, not UTF-8: a raw
    header no filter on the server can match)."""
    if not subject or _SUBJECT_BAD.search(subject) or b"" in subject.split(b"."):
        return partition_subject
    try:
        text = subject.decode("utf-8")
    except UnicodeDecodeError:
        return partition_subject
    return f"{partition_subject}.{MESSAGE_KIND}.{text}"


def message_filter(partition_subject: str, pattern: str) -> str:
    """The consumer filter subject of a group's subject pattern (NATS wildcards)."""
    return f"{partition_subject}.{MESSAGE_KIND}.{pattern}"


def store_subjects(store: str) -> str:
    """A subject filter that matches every stream of ``store`` and no other store's."""
    if not STORE_NAME_RE.fullmatch(store):
        raise ValueError(f"invalid store name {store!r}: must match {STORE_NAME_RE.pattern}")
    return f"{SUBJECT_ROOT}.{encode_token(store)}.>"


def stream_metadata(store: str, topic: str, partition: int) -> dict[str, str]:
    """The stream metadata that names a partition stream's store, topic and partition."""
    _check(store, topic, partition)
    return {META_STORE: store, META_TOPIC: topic, META_PARTITION: str(partition)}
