"""The one connection to NATS a JetStream store handle owns, on its own loop or the caller's.

nats-py is asyncio-only. :class:`Connection` runs it on one private event-loop
thread per store handle: synchronous callers hand it a coroutine with
:meth:`Connection.run` and get the result (or the exception) back on their
own thread; asyncio callers can await the same coroutines on that loop.
Opened with ``loop=`` (and ``await connect_async()``), it runs on that loop
instead, with no thread: the loop's own tasks await its coroutines directly
(:func:`completing` keeps their cancellations whole), and ``run`` still works
from other threads while the loop runs.

The coroutine methods are the JetStream operations the backend is built
from (streams per topic partition, acknowledged and atomic-batch publishes,
reads through the stream leader, batch direct gets, durable pull consumers,
purges). This is the only module that imports ``nats``: every NATS exception
is translated here into a :class:`JetStreamError` (a ``StreamlogError``) or a
builtin ``TimeoutError``.

Thread safety: :meth:`Connection.run` may be called from any number of
threads at once (the loop serialises the work); never from the loop thread.
"""

from __future__ import annotations

import _thread
import asyncio
import base64
import itertools
import json
import logging
import re
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as _NatsClient
from nats.aio.msg import Msg as _NatsMsg

from ...errors import StreamlogError
from ._naming import STORE_NAME_RE

__all__ = [
    "ATOMIC_BATCH_MAX_MSGS",
    "CONNECT_TIMEOUT_S",
    "DEFAULT_STORE",
    "MIN_SERVER_VERSION",
    "BatchAck",
    "Connection",
    "ConsumerState",
    "Delivery",
    "JetStreamError",
    "NatsURL",
    "NoResponders",
    "NotFound",
    "OutMsg",
    "PubAck",
    "StoredMsg",
    "StreamState",
    "WrongLastSequence",
    "check_server",
    "completing",
    "parse_url",
    "subscribe_inline",
]

log = logging.getLogger("streamlog.jetstream")

T = TypeVar("T")

#: Store name used when a ``nats://`` URL has no path.
DEFAULT_STORE = "streamlog"
#: Port used for a host given without one (the NATS client port).
DEFAULT_PORT = 4222
#: How long opening a connection may take before it is an error.
CONNECT_TIMEOUT_S = 5.0
#: How long a JetStream API call or publish acknowledgement is awaited. Longer
#: than the 4-9 s raft election a stream needs after losing its leader, so a
#: publish retried once rides out a leader loss.
REQUEST_TIMEOUT_S = 10.0
#: Times a stream creation or a stream's info is asked for before its TimeoutError is
#: the caller's.
STREAM_CREATE_ATTEMPTS = 3
#: Oldest nats-server this backend runs on: atomic batch publish
#: (``Nats-Batch-*`` headers, ``allow_atomic``) first shipped in 2.12.0.
MIN_SERVER_VERSION = (2, 12, 0)
#: The server's default ``jetstream { limits { batch { max_msgs } } }``: an
#: atomic batch of more messages is refused whole (error 10199).
ATOMIC_BATCH_MAX_MSGS = 1000

# Header names of the JetStream protocol (nats-server 2.15).
H_MSG_ID = "Nats-Msg-Id"
H_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
H_EXPECTED_LAST_SUBJECT_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
H_EXPECTED_LAST_SEQ = "Nats-Expected-Last-Sequence"
H_EXPECTED_STREAM = "Nats-Expected-Stream"
H_BATCH_ID = "Nats-Batch-Id"
H_BATCH_SEQ = "Nats-Batch-Sequence"
H_BATCH_COMMIT = "Nats-Batch-Commit"
# Headers a direct get adds to each message it returns (not stored ones).
_DIRECT_GET_HEADERS = frozenset(
    {
        "Nats-Stream",
        "Nats-Subject",
        "Nats-Sequence",
        "Nats-Time-Stamp",
        "Nats-Num-Pending",
        "Nats-Last-Sequence",
        "Nats-UpTo-Sequence",
    }
)
_API = "$JS.API"
# How often a call waiting for its result checks whether another thread closed the
# connection (its loop then never finishes the call).
_CLOSED_CHECK_S = 0.5
_NS = 1_000_000_000

# JetStream API error codes this module tells apart.
ERR_WRONG_LAST_SEQUENCE = 10071
ERR_STREAM_NOT_FOUND = 10059
ERR_CONSUMER_NOT_FOUND = 10014
ERR_NO_MESSAGE_FOUND = 10037
#: "no suitable peers for placement": a replicated stream's create while too few
#: servers are known to be up (a node restarting, or not yet seen back by the meta
#: leader).
ERR_NO_PEERS = 10005
#: How long a stream creation is asked for again while no peers are suitable.
NO_PEERS_WAIT_S = 10.0


# --------------------------------------------------------------------------
# Errors


class JetStreamError(StreamlogError):
    """The JetStream server refused an operation; nothing it refused was stored.

    ``code`` is the HTTP-like status (400, 404, 503...), ``err_code`` the
    JetStream error code (10071...), ``description`` the server's text.
    """

    def __init__(self, description: str, code: int | None = None, err_code: int | None = None):
        self.description = description
        self.code = code
        self.err_code = err_code
        tag = f" (error {err_code})" if err_code else (f" (status {code})" if code else "")
        super().__init__(f"JetStream: {description}{tag}")


class NotFound(JetStreamError, LookupError):
    """The stream, consumer or message does not exist."""


class WrongLastSequence(JetStreamError):
    """An expected-last-sequence check failed; ``actual`` is the sequence the server has.

    For a per-subject check it is the subject's last sequence (0: no message).
    """

    def __init__(self, description: str, code: int | None, err_code: int | None):
        super().__init__(description, code, err_code)
        m = re.search(r"wrong last sequence: (\d+)", description)
        self.actual = int(m.group(1)) if m else None


class NoResponders(TimeoutError):
    """Nothing listened on the subject: no stream leader (an election, or no such
    stream). The request reached no stream, so sending it again cannot store it twice."""


def _from_api_error(e: nats.js.errors.APIError) -> JetStreamError:
    desc = e.description or type(e).__name__
    if e.err_code == ERR_WRONG_LAST_SEQUENCE:
        return WrongLastSequence(desc, e.code, e.err_code)
    if e.err_code in (ERR_STREAM_NOT_FOUND, ERR_CONSUMER_NOT_FOUND, ERR_NO_MESSAGE_FOUND):
        return NotFound(desc, e.code, e.err_code)
    if e.code == 404 and e.err_code is None:
        return NotFound(desc, e.code, e.err_code)
    return JetStreamError(desc, e.code, e.err_code)


def _from_error_json(err: Mapping[str, Any]) -> JetStreamError:
    desc = str(err.get("description", "unknown error"))
    code, err_code = err.get("code"), err.get("err_code")
    if err_code == ERR_WRONG_LAST_SEQUENCE:
        return WrongLastSequence(desc, code, err_code)
    if err_code in (ERR_STREAM_NOT_FOUND, ERR_CONSUMER_NOT_FOUND, ERR_NO_MESSAGE_FOUND):
        return NotFound(desc, code, err_code)
    return JetStreamError(desc, code, err_code)


class _translate:
    """Context manager: NATS exceptions become JetStreamError / TimeoutError."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None:
            return False
        if isinstance(exc, nats.js.errors.APIError):
            raise _from_api_error(exc) from exc
        if isinstance(exc, nats.js.errors.NoStreamResponseError | nats.errors.NoRespondersError):
            # No stream leader answered: during an election, or no such stream.
            raise NoResponders(f"{self.what}: no JetStream responder (no stream leader?)") from exc
        if isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError):
            raise TimeoutError(f"{self.what}: no answer from the server in time") from exc
        if isinstance(exc, nats.errors.Error):
            raise JetStreamError(f"{self.what}: {type(exc).__name__}: {exc}") from exc
        return False


# --------------------------------------------------------------------------
# URLs


@dataclass(frozen=True)
class NatsURL:
    """A parsed ``nats://[user:pass@|token@]host:port[,host:port...]/STORE`` URL."""

    scheme: str
    hosts: tuple[tuple[str, int], ...]
    store: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        """True for ``tls://`` URLs: the connection must use TLS."""
        return self.scheme == "tls"

    @property
    def server_urls(self) -> list[str]:
        """One ``scheme://host:port`` per server, as the client takes them."""
        return [f"{self.scheme}://{_host_text(h)}:{p}" for h, p in self.hosts]

    def redacted(self) -> str:
        """The URL with any password or token replaced by ``***``, for messages and logs."""
        cred = ""
        if self.user is not None:
            cred = urllib.parse.quote(self.user, safe="") + (
                ":***@" if self.password is not None else "@"
            )
        elif self.token is not None:
            cred = "***@"
        hosts = ",".join(f"{_host_text(h)}:{p}" for h, p in self.hosts)
        return f"{self.scheme}://{cred}{hosts}/{self.store}"

    def __str__(self) -> str:
        return self.redacted()


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


_HOST_RE = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>.*))?")


def parse_url(url: str) -> NatsURL:
    """Parse and validate a JetStream store URL; ValueError naming the URL if malformed.

    ``nats://`` or ``tls://``; one or more ``host[:port]`` separated by commas
    (port 4222 when omitted); credentials before the hosts as ``user:pass@``
    or ``token@`` (percent-encoded), applying to every host; the path is the
    store name, ``[A-Za-z0-9][A-Za-z0-9_-]{0,63}``, ``streamlog`` when empty.
    Query strings and fragments are refused rather than ignored.
    """
    if not isinstance(url, str):
        raise TypeError(f"a nats URL is a str, not {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("nats", "tls"):
        raise ValueError(f"{url!r} is not a nats:// or tls:// URL")
    scheme = scheme.lower()
    if "?" in rest or "#" in rest:
        raise ValueError(f"nats URL {_redact_raw(url)!r}: query strings and fragments are not used")
    netloc, _, path = rest.partition("/")
    user = password = token = None
    if "@" in netloc:
        cred, _, netloc = netloc.rpartition("@")
        if ":" in cred:
            u, _, p = cred.partition(":")
            user, password = urllib.parse.unquote(u), urllib.parse.unquote(p)
            if not user:
                raise ValueError(f"nats URL {_redact_raw(url)!r}: empty user name")
        elif cred:
            token = urllib.parse.unquote(cred)
        else:
            raise ValueError(f"nats URL {_redact_raw(url)!r}: empty credentials before '@'")
    hosts = []
    for part in netloc.split(","):
        m = _HOST_RE.fullmatch(part)
        if not part or not m:
            raise ValueError(f"nats URL {_redact_raw(url)!r}: bad host {part!r}")
        host = m.group("v6") or m.group("name")
        port_text = m.group("port")
        if port_text is None:
            port = DEFAULT_PORT
        elif port_text.isdigit() and 0 < int(port_text) < 65536:
            port = int(port_text)
        else:
            raise ValueError(f"nats URL {_redact_raw(url)!r}: bad port {port_text!r}")
        hosts.append((host, port))
    store = path or DEFAULT_STORE
    if not STORE_NAME_RE.fullmatch(store):
        raise ValueError(
            f"nats URL {_redact_raw(url)!r}: invalid store name {store!r} "
            f"(letters, digits, '_' and '-', starting with a letter or digit, at most 64)"
        )
    return NatsURL(scheme, tuple(hosts), store, user, password, token)


def _redact_raw(url: str) -> str:
    # Messages about a URL that did not parse must not echo its secrets either.
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        cred, _, hosts = netloc.rpartition("@")
        cred = cred.partition(":")[0] + ":***" if ":" in cred else "***"
        netloc = f"{cred}@{hosts}"
    return f"{scheme}{sep}{netloc}{slash}{path}"


def _parse_version(text: str) -> tuple[int, int, int]:
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text or "")
    if not m:
        raise ValueError(f"unrecognised server version {text!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def check_server(info: Mapping[str, Any], url: str) -> tuple[int, int, int]:
    """Refuse a server that cannot hold a store: StreamlogError naming ``url`` and why.

    ``info`` is the server's INFO (``version``, ``jetstream``). Returns the version.
    """
    try:
        version = _parse_version(str(info.get("version", "")))
    except ValueError as e:
        raise StreamlogError(f"{url}: {e}") from None
    need = ".".join(map(str, MIN_SERVER_VERSION))
    if version < MIN_SERVER_VERSION:
        raise StreamlogError(
            f"{url}: nats-server {'.'.join(map(str, version))} is too old; the JetStream "
            f"backend needs {need} or newer (atomic batch publish)"
        )
    if not info.get("jetstream"):
        raise StreamlogError(
            f"{url}: the server does not have JetStream enabled (start nats-server with -js, "
            f"or a `jetstream {{}}` block in its config)"
        )
    return version


# --------------------------------------------------------------------------
# Results


class PubAck(NamedTuple):
    """The server's acknowledgement of one stored publish."""

    stream: str
    seq: int
    duplicate: bool


class BatchAck(NamedTuple):
    """The acknowledgement of an atomic batch: sequences ``first_seq..last_seq`` hold it."""

    stream: str
    batch_id: str
    first_seq: int
    last_seq: int
    count: int


class OutMsg(NamedTuple):
    """One message to publish: subject, payload and headers (names to text values)."""

    subject: str
    payload: bytes
    headers: Mapping[str, str] | None = None


class StoredMsg(NamedTuple):
    """A message as stored in a stream."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
    time_ns: int


@dataclass(frozen=True)
class StreamState:
    """What a stream holds: sequences, counts, bytes, and its current leader."""

    name: str
    first_seq: int
    last_seq: int
    messages: int
    bytes: int
    leader: str | None
    config: dict[str, Any]


@dataclass(frozen=True)
class ConsumerState:
    """A durable consumer's positions and counters as the server reports them."""

    name: str
    delivered_stream_seq: int
    ack_floor_stream_seq: int
    num_ack_pending: int
    num_redelivered: int
    num_pending: int
    num_waiting: int
    config: dict[str, Any]


@dataclass
class Delivery:
    """One message delivered to a pull consumer; ack it through the Connection."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int
    subject: str
    data: bytes
    headers: dict[str, str]
    time_ns: int
    _msg: _NatsMsg = field(repr=False)


# --------------------------------------------------------------------------
# Header block and timestamp parsing


def _parse_header_block(raw: bytes) -> dict[str, str]:
    """Parse ``NATS/1.0\\r\\nName: value\\r\\n...`` (the stored form) into a dict."""
    out: dict[str, str] = {}
    lines = raw.decode("utf-8", "replace").split("\r\n")
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip()] = value.strip()
    return out


def _rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch from the server's RFC 3339 time with up to 9 digits."""
    from datetime import datetime

    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", text)
    if not m:
        raise ValueError(f"unrecognised timestamp {text!r}")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    secs = int(datetime.fromisoformat(m.group(1) + zone).timestamp())
    frac = (m.group(2) or "").ljust(9, "0")
    return secs * _NS + int(frac)


def _consumer_state(resp: Mapping[str, Any]) -> ConsumerState:
    return ConsumerState(
        name=resp["name"],
        delivered_stream_seq=resp.get("delivered", {}).get("stream_seq", 0),
        ack_floor_stream_seq=resp.get("ack_floor", {}).get("stream_seq", 0),
        num_ack_pending=resp.get("num_ack_pending", 0),
        num_redelivered=resp.get("num_redelivered", 0),
        num_pending=resp.get("num_pending", 0),
        num_waiting=resp.get("num_waiting", 0),
        config=resp.get("config", {}),
    )


async def _send_batch(nc: _NatsClient, batch: Sequence[OutMsg], batch_id: str, reply: str,
                      max_payload: int) -> None:
    """Send one atomic batch: its messages with the batch headers (added to their header
    dicts), the last one committing it with ``reply`` as its reply subject.

    The HPUB frames of the whole batch are built here and handed to the client's
    outgoing buffer in one piece (as its own publish does per message: one Python
    call per message costs more than the server's work on it). Header names and
    values come from streamlog's record encoding, which keeps them to HTTP tokens
    and printable ASCII; a CR or LF is refused all the same. A client without that
    buffer (another nats-py version) publishes message by message."""
    n = len(batch)
    send = getattr(nc, "_send_command", None)
    if send is None or not nc.is_connected or getattr(nc, "_flush_queue", None) is None:
        for j, m in enumerate(batch, 1):
            hdrs = dict(m.headers or {})
            hdrs[H_BATCH_ID] = batch_id
            hdrs[H_BATCH_SEQ] = str(j)
            if j < n:
                await nc.publish(m.subject, m.payload, headers=hdrs)
            else:
                hdrs[H_BATCH_COMMIT] = "1"
                await nc.publish(m.subject, m.payload, reply=reply, headers=hdrs)
        return
    frames: list[bytes] = []
    for j, m in enumerate(batch, 1):
        hdrs = m.headers if isinstance(m.headers, dict) else dict(m.headers or {})
        hdrs[H_BATCH_ID] = batch_id
        hdrs[H_BATCH_SEQ] = str(j)
        if j == n:
            hdrs[H_BATCH_COMMIT] = "1"
        text = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        lines = len(hdrs) + 2
        if text.count("\n") != lines or text.count("\r") != lines:  # a CR or LF in a header
            raise ValueError("a header name or value holds a line break")
        head = text.encode()
        size = len(head) + len(m.payload)
        if size > max_payload:
            raise ValueError(f"message of {size} bytes exceeds max_payload={max_payload}")
        to = f" {reply}" if j == n else ""
        frames.append(f"HPUB {m.subject}{to} {len(head)} {size}\r\n".encode())
        frames.append(head)
        frames.append(m.payload)
        frames.append(b"\r\n")
    await send(b"".join(frames))
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()


def _expire(fut: asyncio.Future[Any], subject: str) -> None:
    """A batch's acknowledgement did not come in time (it may have been stored)."""
    if not fut.done():
        fut.set_exception(TimeoutError(f"no acknowledgement of an atomic batch to {subject}"))


class _AckWaiter:
    """A thread waiting for one publish's acknowledgement: a bare lock the reader
    releases, and the answer (or the error of sending)."""

    __slots__ = ("error", "lock", "msg")

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.lock.acquire()
        self.msg: _NatsMsg | None = None
        self.error: BaseException | None = None

    def deliver(self, msg: _NatsMsg) -> None:
        if self.msg is None and self.error is None:
            self.msg = msg
            self.lock.release()

    def fail(self, error: BaseException) -> None:
        if self.msg is None and self.error is None:
            self.error = error
            self.lock.release()


class _AckFuture:
    """A task on the loop waiting for one publish's acknowledgement (publish_now)."""

    __slots__ = ("fut",)

    def __init__(self, fut: asyncio.Future[_NatsMsg]) -> None:
        self.fut = fut

    def deliver(self, msg: _NatsMsg) -> None:
        if not self.fut.done():
            self.fut.set_result(msg)

    def expire(self, subject: str) -> None:
        if not self.fut.done():
            self.fut.set_exception(TimeoutError(
                f"publish to {subject}: no answer from the server in time"))


def _pub_ack(subject: str, msg: _NatsMsg) -> PubAck:
    """The acknowledgement of a publish from the server's answer, or its error."""
    if msg.headers and msg.headers.get("Status") == "503":
        # No stream took it (no leader: an election, or no such stream); as publish.
        raise NoResponders(f"publish to {subject}: no JetStream responder "
                           f"(no stream leader?)")
    resp = json.loads(msg.data or b"{}")
    if "error" in resp:
        raise _from_error_json(resp["error"])
    return PubAck(resp["stream"], int(resp["seq"]), bool(resp.get("duplicate", False)))


class _AckRouter:
    """Stands in for the ``future`` of a subscription (nats-py answers such a one from
    its reader, with ``set_result(msg)`` for every message and no task of its own):
    hands each acknowledgement to the thread waiting for it, by the reply token."""

    def __init__(self, prefix: str, waiters: dict[str, _AckWaiter | _AckFuture]) -> None:
        self._cut = len(prefix)
        self._waiters = waiters

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    def set_result(self, msg: _NatsMsg) -> None:
        waiter = self._waiters.get(msg.subject[self._cut:])
        if waiter is not None:  # else its caller gave up (a timeout): nobody to tell
            waiter.deliver(msg)


class _Inline:
    """Stands in for a subscription's ``future``: calls ``fn(msg)`` for every message,
    from the client's reader (see :func:`subscribe_inline`)."""

    def __init__(self, fn: Any) -> None:
        self._fn = fn

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    def set_result(self, msg: _NatsMsg) -> None:
        try:
            self._fn(msg)
        except Exception:  # a handler's bug must not stop the client's reader
            log.exception("handling a message on %s", msg.subject)


async def subscribe_inline(nc: _NatsClient, subject: str, fn: Any) -> Any:
    """Subscribe ``subject`` with a plain function called for each message from the
    client's reader itself, in order, one event-loop step sooner than a callback
    subscription (which hands every message to a task of its own first). ``fn`` must
    not block or await. With a client that cannot do that, an ordinary callback
    subscription calls ``fn``. Returns the subscription."""
    if _direct_publish_supported(nc):
        return await nc.subscribe(subject, future=_Inline(fn))

    async def cb(msg: _NatsMsg) -> None:
        fn(msg)

    return await nc.subscribe(subject, cb=cb)


_SUPPORTED: dict[type, bool] = {}


def _direct_publish_supported(nc: _NatsClient) -> bool:
    """Whether this nats-py has what publish_blocking relies on: a subscription answered
    through its ``future`` for every message, and the pending buffer and transport."""
    import inspect

    known = _SUPPORTED.get(type(nc))
    if known is not None:
        return known
    try:
        src = inspect.getsource(type(nc)._process_msg)
        ok = ("sub._future.set_result(msg)" in src and hasattr(nc, "_pending_data_size")
              and hasattr(nc, "_transport")
              and "future" in inspect.signature(nc.subscribe).parameters)
    except (OSError, TypeError, AttributeError):
        ok = False
    _SUPPORTED[type(nc)] = ok
    return ok


_HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _pub_frame(subject: str, reply: str, payload: bytes, hdrs: Mapping[str, str] | None,
               max_payload: int) -> bytes:
    """The PUB (HPUB with headers) frame nats-py's publish would write for this message,
    with its checks: a bad subject or header name, or a message over ``max_payload``,
    is an error before anything is sent."""
    if not subject or any(c in subject for c in " \t\r\n"):
        raise JetStreamError(f"publish to {subject!r}: bad subject")
    to = f" {reply}" if reply else ""
    if not hdrs:
        if len(payload) > max_payload:
            raise JetStreamError(f"publish to {subject}: message of {len(payload)} bytes "
                                 f"exceeds max_payload={max_payload}")
        return b"".join((f"PUB {subject}{to} {len(payload)}\r\n".encode(), payload,
                         b"\r\n"))
    parts = ["NATS/1.0\r\n"]
    for k, v in hdrs.items():
        key = k.strip()
        if not key:
            continue  # as nats-py: an empty name is skipped
        if not _HEADER_NAME_RE.fullmatch(key):
            raise JetStreamError(f"publish to {subject}: bad header name {key!r}")
        parts.append(f"{key}: {v.strip().replace(chr(13), ' ').replace(chr(10), ' ')}\r\n")
    parts.append("\r\n")
    head = "".join(parts).encode()
    if len(payload) > max_payload:
        raise JetStreamError(f"publish to {subject}: message of {len(payload)} bytes "
                             f"exceeds max_payload={max_payload}")
    total = len(head) + len(payload)
    return b"".join((f"HPUB {subject}{to} {len(head)} {total}\r\n".encode(), head,
                     payload, b"\r\n"))


# --------------------------------------------------------------------------
# Awaiting from the caller's tasks


async def completing(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` in a task of its own, shielded: a cancellation of the caller lands
    here, and ``coro`` runs to its end (an append, ack or commit is never left
    half-done; the caller just does not learn its result). This is also what makes a
    cancellation reach the caller at all: nats-py swallows a CancelledError that lands
    inside its publish (``Client._flush_pending``), so a task cancelled there would go
    on as if it never was."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_retrieve)
        raise


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark the outcome of a task nobody awaits any more as seen."""
    if not task.cancelled():
        task.exception()


# --------------------------------------------------------------------------
# The connection


# How long closing waits for the calls it cancels to unwind.
_CANCEL_WAIT_S = 2.0


async def _cancel_pending() -> None:
    """Cancel every task of the running loop but this one and wait for them to end."""
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=_CANCEL_WAIT_S)


class Connection:
    """A NATS connection on a private event-loop thread, with the JetStream calls the
    backend needs as coroutines.

    Opening connects within ``connect_timeout`` seconds and checks the server
    (JetStream enabled, version at least :data:`MIN_SERVER_VERSION`); on any
    failure the thread is stopped and a :class:`StreamlogError` naming the URL
    (without secrets) is raised. ``nats_options`` passes further keyword
    arguments to ``nats.connect`` (a creds file, an ``ssl.SSLContext`` as
    ``tls``...); they override what the URL implies.

    Thread-safe: :meth:`run` may be called from several threads at once.
    """

    def __init__(
        self,
        url: str | NatsURL,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        request_timeout: float = REQUEST_TIMEOUT_S,
        nats_options: Mapping[str, Any] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.url = url if isinstance(url, NatsURL) else parse_url(url)
        if connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be > 0, got {connect_timeout}")
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.server_version: tuple[int, int, int] = (0, 0, 0)
        self.max_payload = 0
        self._nc: _NatsClient | None = None
        self._js: Any = None
        self._pulls: dict[tuple[str, str], Any] = {}
        self._last_error: BaseException | None = None
        self._auth_failed: asyncio.Event | None = None
        self._closed = False
        self._options = dict(nats_options or {})
        self._thread: threading.Thread | None = None
        # publish_blocking: the acknowledgements' inbox prefix (None: that path is off)
        # and the callers waiting on it, by token.
        self._ack_prefix: str | None = None
        self._ack_waiters: dict[str, _AckWaiter | _AckFuture] = {}
        self._ack_tokens = itertools.count(1)
        if loop is not None:
            # Bound to the caller's loop: no thread; ``await connect_async()`` connects.
            self._loop = loop
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"streamlog-nats-{self.url.store}", daemon=True
        )
        self._thread.start()
        try:
            self.run(self._connect(self._options), timeout=None)
        except BaseException:
            self._stop_loop()
            raise

    async def connect_async(self) -> None:
        """Connect a connection bound to the caller's loop (``loop=``), on that loop:
        the checks and errors of opening are those of the threaded connection."""
        if self._thread is not None or asyncio.get_running_loop() is not self._loop:
            raise RuntimeError("connect_async is for a connection bound to the running loop")
        try:
            await self._connect(self._options)
        except BaseException:
            self._closed = True
            raise

    @property
    def bound(self) -> bool:
        """True when the connection runs on a loop of the caller's (no thread of its own):
        its coroutines are awaited there directly; ``run`` works from other threads."""
        return self._thread is None

    def on_loop(self) -> bool:
        """Whether the calling thread is running this connection's loop (a ``run`` from
        here could never finish: await the coroutine instead)."""
        if self._thread is not None:
            return threading.current_thread() is self._thread
        return asyncio._get_running_loop() is self._loop

    # -- running coroutines -------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop every coroutine of this connection runs on."""
        return self._loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the connection's loop; return its result or raise its error.

        ``timeout`` bounds the wait (TimeoutError, the coroutine is cancelled);
        None waits as long as the coroutine's own timeouts allow.
        """
        if self.on_loop():
            coro.close()
            raise RuntimeError("Connection.run called on its own event-loop thread; await instead")
        if self._closed:
            coro.close()
            raise StreamlogError(f"{self.url}: the connection is closed")
        # A bare lock as the waiter and a task created by a loop callback: about
        # 10 µs less per call than run_coroutine_threadsafe's Future plumbing,
        # which matters when a call is one acknowledged publish (~250 µs). The
        # task releases the lock as its last act, not from a done callback (one
        # event-loop step later): the caller is woken a step sooner.
        done = _thread.allocate_lock()
        done.acquire()
        box: list[asyncio.Task[None]] = []
        outcome: list[Any] = []

        async def runner() -> None:
            try:
                outcome.append(await coro)
            except BaseException as e:  # handed to the caller, raised there
                outcome.append(e)
                outcome.append(None)  # two entries: an error
            finally:
                done.release()

        def start() -> None:
            box.append(self._loop.create_task(runner()))

        self._loop.call_soon_threadsafe(start)
        waited = 0.0
        while not done.acquire(timeout=_CLOSED_CHECK_S if timeout is None
                               else min(_CLOSED_CHECK_S, timeout - waited)):
            waited += _CLOSED_CHECK_S
            if (self._closed or self._loop.is_closed()) and not self._loop.is_running():
                # Closed by another thread while this call waited (or, bound, its loop
                # was closed): the loop will never run the call (or finish it).
                if not box:
                    coro.close()
                raise StreamlogError(f"{self.url}: the connection is closed")
            if timeout is not None and waited >= timeout:
                # Runs after start() (callbacks run in order), so the task exists.
                self._loop.call_soon_threadsafe(lambda: box[0].cancel())
                raise TimeoutError(f"{self.url}: no result within {timeout} s")
        if len(outcome) == 1:
            return outcome[0]  # type: ignore[no-any-return]
        error = outcome[0]
        if isinstance(error, asyncio.CancelledError) and self._closed:
            # cancelled by close(): the call cannot finish
            raise StreamlogError(f"{self.url}: the connection is closed") from None
        raise error

    def close(self) -> None:
        """Close the connection (pending publishes are flushed) and stop the loop thread.

        Closing twice does nothing.
        """
        if self._closed:
            return
        if self._thread is None and self.on_loop():
            # Bound, and called on its own loop: it cannot wait for itself here.
            self._closed = True
            self._loop.create_task(self._close())
            return
        self._closed = True
        try:
            if self._nc is not None:
                fut = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
                fut.result(self.request_timeout)
        except Exception as e:  # a dead server: closing is still done locally
            log.debug("closing %s: %r", self.url, e)
        finally:
            self._stop_loop()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def aclose(self) -> None:
        """Close, awaited on the connection's loop (a bound connection's way to close from
        that loop); idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._close()
        except Exception as e:  # noqa: BLE001 - a dead server: closing is still done locally
            log.debug("closing %s: %r", self.url, e)
        if self._thread is not None:
            self._loop.call_soon(self._loop.stop)

    def _stop_loop(self) -> None:
        self._closed = True
        if self._thread is None:
            return  # the caller's loop: theirs to stop, with their own tasks on it
        if self._loop.is_running():
            if threading.current_thread() is not self._thread:
                # Cancel what is still running and let it unwind on the loop, so that no
                # half-run coroutine is left for the garbage collector to finalize at a
                # random moment in another thread.
                try:
                    asyncio.run_coroutine_threadsafe(_cancel_pending(), self._loop).result(
                        _CANCEL_WAIT_S + 1)
                except Exception as e:  # noqa: BLE001 - closing goes on regardless
                    log.debug("cancelling the calls of %s: %r", self.url, e)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _close(self) -> None:
        nc = self._nc
        if nc is not None and not nc.is_closed:
            await nc.close()

    # -- connecting ---------------------------------------------------------

    async def _on_error(self, e: BaseException) -> None:
        # nats-py reports lost connections and reconnect attempts here; the
        # operation that is affected raises on its own, so this only logs.
        self._last_error = e
        log.debug("nats %s: %r", self.url, e)
        if self._auth_failed is not None and "authoriz" in str(e).lower():
            # Wrong credentials do not get better by retrying until the timeout.
            self._auth_failed.set()

    async def _connect(self, options: dict[str, Any]) -> None:
        url = self.url
        opts: dict[str, Any] = {
            "servers": url.server_urls,
            "connect_timeout": self.connect_timeout,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,  # a store handle rides out server restarts
            "reconnect_time_wait": 0.5,
            "error_cb": self._on_error,
            "name": f"streamlog/{url.store}",
        }
        if url.user is not None:
            opts["user"], opts["password"] = url.user, url.password
        if url.token is not None:
            opts["token"] = url.token
        if url.tls and "tls" not in options:
            opts["tls"] = ssl.create_default_context()
        opts.update(options)
        nc = _NatsClient()
        self._nc = nc
        self._auth_failed = asyncio.Event()
        connecting = asyncio.ensure_future(nc.connect(**opts))
        refused = asyncio.ensure_future(self._auth_failed.wait())
        try:
            done, _ = await asyncio.wait(
                {connecting, refused}, timeout=self.connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if connecting not in done:
                connecting.cancel()
                raise TimeoutError("no server accepted the connection" if refused not in done
                                   else "authorization refused")
            connecting.result()
        except (TimeoutError, OSError, nats.errors.Error) as e:
            await self._abandon(nc)
            why = self._last_error or e
            if refused.done():
                raise StreamlogError(f"{url}: the server refused the credentials ({why})") from e
            raise StreamlogError(
                f"{url}: cannot connect within {self.connect_timeout:g} s "
                f"({type(why).__name__}: {why or e})"
            ) from e
        finally:
            refused.cancel()
            self._auth_failed = None
        try:
            self.server_version = check_server(nc._server_info, str(url))
            self.max_payload = nc.max_payload
            self._js = nc.jetstream(timeout=self.request_timeout)
            # The INFO flag says the server runs JetStream; the account must have it too.
            try:
                await nc.request(f"{_API}.INFO", b"", timeout=self.request_timeout)
            except nats.errors.NoRespondersError:
                raise StreamlogError(
                    f"{url}: JetStream is not enabled for this account on the server"
                ) from None
            if _direct_publish_supported(nc):
                prefix = nc.new_inbox() + "."
                # A subscription given a ``future`` is answered by the client's reader
                # itself, without a task of its own: the router wakes the waiting thread
                # straight from there (see publish_blocking). Kept across reconnects.
                await nc.subscribe(prefix + "*", future=_AckRouter(prefix, self._ack_waiters))
                self._ack_prefix = prefix
        except BaseException:
            await self._abandon(nc)
            raise

    async def _abandon(self, nc: _NatsClient) -> None:
        try:
            await nc.close()
        except Exception as e:  # it never connected: nothing to flush
            log.debug("closing a failed connection to %s: %r", self.url, e)

    @property
    def nc(self) -> _NatsClient:
        """The underlying nats-py client (for operations this module does not wrap)."""
        assert self._nc is not None
        return self._nc

    @property
    def connected_port(self) -> int | None:
        """The port of the server the client is connected to now (for fault tests)."""
        nc = self._nc
        if nc is None or not nc.is_connected or nc.connected_url is None:
            return None
        return nc.connected_url.port

    # -- raw API -----------------------------------------------------------

    async def api(self, subject: str, request: Mapping[str, Any] | None = None) -> dict:
        """Send a ``$JS.API.<subject>`` request; the answer, or JetStreamError."""
        payload = json.dumps(request).encode() if request is not None else b""
        with _translate(subject):
            msg = await self.nc.request(f"{_API}.{subject}", payload, timeout=self.request_timeout)
        resp = json.loads(msg.data or b"{}")
        if "error" in resp:
            raise _from_error_json(resp["error"])
        return resp

    # -- streams -----------------------------------------------------------

    async def ensure_stream(
        self,
        name: str,
        subjects: Sequence[str],
        *,
        replicas: int = 1,
        max_bytes: int = -1,
        max_age_s: float = 0,
        duplicate_window_s: float = 120.0,
        max_msg_size: int = -1,
        metadata: Mapping[str, str] | None = None,
    ) -> StreamState:
        """Create a partition stream, or return the existing one if its config is the same.

        Every stream is file-backed, limits-retained (oldest dropped first),
        with atomic batches and direct gets allowed, and message deletes
        denied, so sequences stay dense (purges from the front, which move the
        first sequence and leave no gap, stay allowed). An existing stream
        with a different config is a JetStreamError (the server's 10058).
        """
        if not 1 <= replicas <= 5:
            raise ValueError(f"replicas must be 1 to 5, got {replicas}")
        config: dict[str, Any] = {
            "name": name,
            "subjects": list(subjects),
            "retention": "limits",
            "storage": "file",
            "discard": "old",
            "num_replicas": replicas,
            "max_msgs": -1,
            "max_bytes": max_bytes,
            "max_age": int(max_age_s * _NS),
            "max_msg_size": max_msg_size,
            "max_msgs_per_subject": -1,
            "duplicate_window": int(duplicate_window_s * _NS),
            "allow_atomic": True,
            "allow_direct": True,
            "deny_delete": True,
            "deny_purge": False,
        }
        if metadata:
            config["metadata"] = dict(metadata)
        # Creating a replicated stream waits for the meta leader to place it and for the
        # stream's own election; on a loaded cluster that can outlast one request. Asking
        # again is safe: a create with the same config answers the existing stream.
        return self._stream_state(await self._api_again(f"STREAM.CREATE.{name}", config,
                                                        "creating stream"))

    async def _api_again(self, subject: str, request: Mapping[str, Any] | None,
                         what: str) -> dict:
        """``api`` asked up to STREAM_CREATE_ATTEMPTS times while no answer comes in time
        (no meta leader yet, or a new replicated stream still electing its leader), and
        for up to NO_PEERS_WAIT_S while the cluster has no suitable peers for a
        placement: for requests that are safe to repeat."""
        attempt = 0
        no_peers_until = time.monotonic() + NO_PEERS_WAIT_S
        while True:
            try:
                return await self.api(subject, request)
            except TimeoutError:
                attempt += 1
                if attempt == STREAM_CREATE_ATTEMPTS:
                    raise
                log.warning("%s %s on %s: no answer in time, asking again", what,
                            subject.rsplit(".", 1)[-1], self.url)
            except JetStreamError as e:
                # A server of the cluster down or not yet seen back: placement may
                # succeed a moment later; anything else is the caller's at once.
                if e.err_code != ERR_NO_PEERS or time.monotonic() > no_peers_until:
                    raise
                log.warning("%s %s on %s: %s; asking again", what,
                            subject.rsplit(".", 1)[-1], self.url, e.description)
                await asyncio.sleep(0.5)

    @staticmethod
    def _stream_state(resp: Mapping[str, Any]) -> StreamState:
        st = resp.get("state", {})
        return StreamState(
            name=resp["config"]["name"],
            first_seq=st.get("first_seq", 0),
            last_seq=st.get("last_seq", 0),
            messages=st.get("messages", 0),
            bytes=st.get("bytes", 0),
            leader=(resp.get("cluster") or {}).get("leader"),
            config=resp["config"],
        )

    async def stream_info(self, name: str) -> StreamState:
        """A stream's state as its leader reports it; NotFound if there is no such stream.
        Asked again when no answer comes in time (a replicated stream electing its leader
        answers nothing meanwhile)."""
        return self._stream_state(await self._api_again(f"STREAM.INFO.{name}", None,
                                                        "reading stream"))

    async def delete_stream(self, name: str) -> None:
        """Delete a stream with all its messages and consumers; NotFound if absent."""
        await self.api(f"STREAM.DELETE.{name}")

    async def stream_names(self, subject_filter: str) -> list[str]:
        """Names of every stream that owns a subject matching ``subject_filter``."""
        names: list[str] = []
        while True:
            resp = await self.api("STREAM.NAMES", {"subject": subject_filter, "offset": len(names)})
            page = resp.get("streams") or []
            names.extend(page)
            if not page or len(names) >= resp.get("total", 0):
                return names

    async def purge_to(self, name: str, seq: int) -> int:
        """Remove every message below sequence ``seq``; returns how many were removed.

        On an empty stream this sets where numbering continues: the next
        publish gets sequence ``seq`` (first_seq becomes ``seq``), which keeps
        offsets when a store whose start moved is copied in.
        """
        if seq < 1:
            raise ValueError(f"purge sequence must be >= 1, got {seq}")
        resp = await self.api(f"STREAM.PURGE.{name}", {"seq": seq})
        return int(resp.get("purged", 0))

    # -- publishing --------------------------------------------------------

    async def publish(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        msg_id: str | None = None,
        expected_last_subject_seq: int | None = None,
        expected_last_seq: int | None = None,
        expected_stream: str | None = None,
        timeout: float | None = None,
    ) -> PubAck:
        """Publish one message and await the stream's acknowledgement.

        ``msg_id`` sets ``Nats-Msg-Id`` (a duplicate inside the stream's
        duplicate window is not stored again: ``duplicate`` is True and ``seq``
        the first copy's). ``expected_last_subject_seq`` stores the message
        only if the subject's last sequence is that (0: no message yet),
        else WrongLastSequence carrying the actual one.
        """
        hdrs = self._directives(headers, msg_id, expected_last_subject_seq, expected_last_seq,
                                expected_stream)
        with _translate(f"publish to {subject}"):
            msg = await self.nc.request(
                subject, payload, timeout=timeout or self.request_timeout, headers=hdrs
            )
        resp = json.loads(msg.data or b"{}")
        if "error" in resp:
            raise _from_error_json(resp["error"])
        return PubAck(resp["stream"], int(resp["seq"]), bool(resp.get("duplicate", False)))

    def publish_blocking(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        msg_id: str | None = None,
        timeout: float | None = None,
    ) -> PubAck:
        """:meth:`publish` for a thread other than the loop's: the same message, the same
        acknowledgement awaited, the same errors, at the cost of two thread wake-ups.

        Where ``run(publish(...))`` creates a task on the loop, lets the client's
        flusher write the message and its subscription task take the answer, wait
        on a future, and then wakes this thread from the task's end, here this
        thread builds the message, one loop callback writes it to the socket, and
        the client's reader hands the acknowledgement to this thread directly: the
        same two thread wake-ups, and three to five event-loop steps fewer. While
        the client buffers (reconnecting, or other messages not yet written) the
        callback hands the message to the client's own ``publish`` instead, so the
        order of everything sent stays that of the calls. Returns only after the
        stream's acknowledgement; a connection without this path (bound to a
        caller's loop, or another client version) runs :meth:`publish`.
        """
        prefix = self._ack_prefix
        if prefix is None:
            return self.run(self.publish(subject, payload, headers, msg_id=msg_id,
                                         timeout=timeout))
        if self.on_loop():
            raise RuntimeError("Connection.publish_blocking called on its own event-loop "
                               "thread; await publish instead")
        if self._closed:
            raise StreamlogError(f"{self.url}: the connection is closed")
        hdrs = self._directives(headers, msg_id, None, None, None)
        token = str(next(self._ack_tokens))
        reply = prefix + token
        frame = _pub_frame(subject, reply, payload, hdrs, self.max_payload)
        waiter = _AckWaiter()
        self._ack_waiters[token] = waiter
        try:
            try:
                self._loop.call_soon_threadsafe(self._write_or_publish, frame, subject, payload,
                                                reply, hdrs, waiter)
            except RuntimeError:  # the loop is closed
                raise StreamlogError(f"{self.url}: the connection is closed") from None
            wait_s = timeout or self.request_timeout
            waited = 0.0
            lock = waiter.lock
            while not lock.acquire(timeout=min(_CLOSED_CHECK_S, wait_s - waited)):
                waited += _CLOSED_CHECK_S
                if (self._closed or self._loop.is_closed()) and not self._loop.is_running():
                    raise StreamlogError(f"{self.url}: the connection is closed")
                if waited >= wait_s:
                    raise TimeoutError(f"publish to {subject}: no answer from the server in time")
        finally:
            self._ack_waiters.pop(token, None)
        if waiter.error is not None:
            raise waiter.error
        assert waiter.msg is not None
        return _pub_ack(subject, waiter.msg)

    async def publish_now(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        msg_id: str | None = None,
        timeout: float | None = None,
    ) -> PubAck:
        """:meth:`publish` on the connection's loop without the client's request
        machinery: the message is written to the socket before the first await (the
        client's own publish when it buffers), and the acknowledgement resolves a
        future straight from the client's reader. Returns after the stream's
        acknowledgement, with :meth:`publish`'s errors. A caller cancelled while it
        waits leaves the message sent whole (it may be stored)."""
        prefix = self._ack_prefix
        if prefix is None:
            return await self.publish(subject, payload, headers, msg_id=msg_id,
                                      timeout=timeout)
        hdrs = self._directives(headers, msg_id, None, None, None)
        token = str(next(self._ack_tokens))
        reply = prefix + token
        frame = _pub_frame(subject, reply, payload, hdrs, self.max_payload)
        loop = asyncio.get_running_loop()
        waiter = _AckFuture(loop.create_future())
        self._ack_waiters[token] = waiter
        try:
            if not self._write_now(frame, payload):
                # The client buffers (reconnecting, or unwritten data): its own publish,
                # in a task of its own, so that a cancellation landing inside nats-py's
                # publish (which swallows it) still reaches the caller.
                self._ack_waiters.pop(token, None)
                return await completing(self.publish(subject, payload, headers, msg_id=msg_id,
                                                     timeout=timeout))
            timer = loop.call_later(timeout or self.request_timeout, waiter.expire, subject)
            try:
                msg = await waiter.fut
            finally:
                timer.cancel()
        finally:
            self._ack_waiters.pop(token, None)
        return _pub_ack(subject, msg)

    def _write_now(self, frame: bytes, payload: bytes) -> bool:
        """On the loop: write ``frame`` to the socket if nothing else waits to be written
        (so the order of everything sent stays that of the calls); False if not."""
        nc = self._nc
        if nc is not None and nc.is_connected and not nc.is_draining_pubs and \
                nc._pending_data_size == 0 and nc._transport is not None:
            try:
                nc._transport.write(frame)
            except Exception as e:  # noqa: BLE001 - a closing transport: the client's path
                log.debug("direct write to %s failed: %r", self.url, e)
                return False
            nc.stats["out_msgs"] += 1
            nc.stats["out_bytes"] += len(payload)
            return True
        return False

    def send_now(self, subject: str, payload: bytes, reply: str = "") -> None:
        """On the loop, from a plain callback: publish a message nobody answers with an
        acknowledgement awaited here (an ack, a pull request), without a task: written
        to the socket at once when nothing else waits to be written, else handed to the
        client's publish (a task), which keeps the order. A failure to send is logged;
        what it means is the caller's (an ack not sent: a redelivery after the lease)."""
        if self._write_now(_pub_frame(subject, reply, payload, None, self.max_payload),
                           payload):
            return

        async def via_client() -> None:
            try:
                await self.nc.publish(subject, payload, reply=reply)
            except Exception as e:  # noqa: BLE001 - see above
                log.debug("a message to %s was not sent: %r", subject, e)

        self._loop.create_task(via_client())

    def _write_or_publish(self, frame: bytes, subject: str, payload: bytes, reply: str,
                          hdrs: dict[str, str] | None, waiter: _AckWaiter) -> None:
        """On the loop: write ``frame`` to the socket now if nothing else waits to be
        written (so order is kept), else publish through the client (a task)."""
        if self._write_now(frame, payload):
            return

        async def via_client() -> None:
            try:
                with _translate(f"publish to {subject}"):
                    await self.nc.publish(subject, payload, reply=reply, headers=hdrs)
            except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
                waiter.fail(e if isinstance(e, Exception) else StreamlogError(
                    f"{self.url}: the connection is closed"))
                if not isinstance(e, Exception):
                    raise

        self._loop.create_task(via_client())

    @staticmethod
    def _directives(
        headers: Mapping[str, str] | None,
        msg_id: str | None,
        expected_last_subject_seq: int | None,
        expected_last_seq: int | None,
        expected_stream: str | None,
    ) -> dict[str, str] | None:
        if not (headers or msg_id is not None or expected_last_subject_seq is not None
                or expected_last_seq is not None or expected_stream is not None):
            return None
        hdrs = dict(headers or {})
        if msg_id is not None:
            hdrs[H_MSG_ID] = msg_id
        if expected_last_subject_seq is not None:
            hdrs[H_EXPECTED_LAST_SUBJECT_SEQ] = str(int(expected_last_subject_seq))
        if expected_last_seq is not None:
            hdrs[H_EXPECTED_LAST_SEQ] = str(int(expected_last_seq))
        if expected_stream is not None:
            hdrs[H_EXPECTED_STREAM] = expected_stream
        return hdrs

    async def publish_batch(
        self, messages: Sequence[OutMsg], *, timeout: float | None = None
    ) -> BatchAck:
        """Publish ``messages`` as one atomic batch: all are stored, or none.

        The stream must allow atomic batches and all subjects must belong to
        it. Messages 1..n-1 go out without a reply subject (no per-message
        ack); the last carries ``Nats-Batch-Commit: 1`` and its reply is the
        batch's acknowledgement. A batch over :data:`ATOMIC_BATCH_MAX_MSGS` is
        a ValueError before anything is sent. A rejection (a failed expected
        sequence inside the batch, a duplicate msg id in it...) raises
        JetStreamError and stores nothing.
        """
        n = len(messages)
        if n == 0:
            raise ValueError("an atomic batch needs at least one message")
        if n > ATOMIC_BATCH_MAX_MSGS:
            raise ValueError(
                f"an atomic batch holds at most {ATOMIC_BATCH_MAX_MSGS} messages "
                f"(the server's batch limit), got {n}"
            )
        batch_id = uuid.uuid4().hex
        nc = self.nc
        with _translate(f"atomic batch to {messages[0].subject}"):
            for i, m in enumerate(messages, 1):
                hdrs = dict(m.headers or {})
                hdrs[H_BATCH_ID] = batch_id
                hdrs[H_BATCH_SEQ] = str(i)
                if i < n:
                    await nc.publish(m.subject, m.payload, headers=hdrs)
                else:
                    hdrs[H_BATCH_COMMIT] = "1"
                    reply = await nc.request(
                        m.subject, m.payload, timeout=timeout or self.request_timeout,
                        headers=hdrs,
                    )
        resp = json.loads(reply.data or b"{}")
        if "error" in resp:
            raise _from_error_json(resp["error"])
        last, count = int(resp["seq"]), int(resp["count"])
        if count != n or resp.get("batch") != batch_id:  # checks that survive -O
            raise JetStreamError(f"batch ack does not match the batch sent: {resp}")
        return BatchAck(resp["stream"], batch_id, last - count + 1, last, count)

    async def publish_batches(
        self, batches: Iterable[Sequence[OutMsg]], *, in_flight: int,
        timeout: float | None = None,
    ) -> list[BatchAck | BaseException]:
        """Publish ``batches`` as atomic batches, in order, with up to ``in_flight``
        of them awaiting their acknowledgement at once (a pipeline: the client, not
        the server, bounds throughput). Returns one answer per batch, in order: its
        BatchAck, or the exception that says it was not stored (a rejection, a
        timeout: it may then have been stored). Every batch is sent in full before
        the next one starts, so the server sees their commits in this order; a
        batch whose first message carries ``Nats-Expected-Last-Sequence`` is then
        stored only right after the one before it.

        ``batches`` is iterated on the connection's loop, one batch at a time, as
        room frees up: a generator that encodes each batch overlaps that work with
        the server's storing of the batches before it. The messages' header dicts
        are the call's: the batch headers are added to them in place.
        """
        nc = self.nc
        loop = asyncio.get_running_loop()
        wait_s = timeout or self.request_timeout
        inbox = nc.new_inbox()
        futures: list[asyncio.Future[Any]] = []
        sizes: list[int] = []
        batch_subjects: list[str] = []
        ids: list[str] = []
        room = asyncio.Semaphore(max(1, in_flight))

        async def on_reply(msg: _NatsMsg) -> None:
            try:
                i = int(msg.subject.rsplit(".", 1)[1])
            except (IndexError, ValueError):
                return
            if 0 <= i < len(futures) and not futures[i].done():
                if msg.headers and msg.headers.get("Status") == "503":
                    # No stream took the batch: the stream has no leader (an election).
                    futures[i].set_exception(NoResponders(
                        f"no responders for an atomic batch to {batch_subjects[i]}"))
                    return
                futures[i].set_result(msg.data)

        def release(_f: asyncio.Future[Any]) -> None:
            room.release()

        out: list[BatchAck | BaseException] = []
        with _translate("atomic batches"):
            sub = await nc.subscribe(f"{inbox}.*", cb=on_reply)
            try:
                for i, batch in enumerate(batches):
                    n = len(batch)
                    if not 0 < n <= ATOMIC_BATCH_MAX_MSGS:
                        raise ValueError(
                            f"an atomic batch holds 1 to {ATOMIC_BATCH_MAX_MSGS} messages "
                            f"(the server's batch limit), got {n}")
                    await room.acquire()
                    fut = loop.create_future()
                    fut.add_done_callback(release)
                    futures.append(fut)
                    sizes.append(n)
                    batch_subjects.append(batch[0].subject)
                    bid = uuid.uuid4().hex
                    ids.append(bid)
                    await _send_batch(nc, batch, bid, f"{inbox}.{i}", self.max_payload)
                    loop.call_later(wait_s, _expire, fut, batch[0].subject)
                for i, fut in enumerate(futures):
                    try:
                        data = await fut
                    except asyncio.CancelledError:
                        if not fut.cancelled():
                            raise
                        out.append(TimeoutError("cancelled"))
                        continue
                    except Exception as e:  # noqa: BLE001 - handed back per batch
                        out.append(e)
                        continue
                    resp = json.loads(data or b"{}")
                    if "error" in resp:
                        out.append(_from_error_json(resp["error"]))
                        continue
                    if "seq" not in resp:
                        out.append(JetStreamError(f"an atomic batch to {batch_subjects[i]} "
                                                  f"got no acknowledgement: {resp!r}"))
                        continue
                    last, count = int(resp["seq"]), int(resp["count"])
                    if count != sizes[i] or resp.get("batch") != ids[i]:
                        out.append(JetStreamError(f"batch ack does not match the batch "
                                                  f"sent: {resp}"))
                        continue
                    out.append(BatchAck(resp["stream"], ids[i], last - count + 1, last, count))
            finally:
                for fut in futures:
                    if not fut.done():
                        fut.cancel()
                await sub.unsubscribe()
        return out

    # -- reading -----------------------------------------------------------

    async def get_message(self, stream: str, seq: int, *,
                          next_by_subj: str | None = None) -> StoredMsg:
        """The message at ``seq``, read through the stream leader (reads its own writes);
        with ``next_by_subj``, the first message at or after ``seq`` on that subject.

        NotFound if there is none (purged, or past the end).
        """
        req: dict[str, Any] = {"seq": seq}
        if next_by_subj is not None:
            req["next_by_subj"] = next_by_subj
        return self._stored(await self.api(f"STREAM.MSG.GET.{stream}", req))

    async def get_last_message(self, stream: str, subject: str) -> StoredMsg | None:
        """The last message on ``subject`` (wildcards allowed), read through the stream
        leader; None if the subject has none (NotFound if the stream does not exist)."""
        try:
            resp = await self.api(f"STREAM.MSG.GET.{stream}", {"last_by_subj": subject})
        except NotFound as e:
            if e.err_code == ERR_NO_MESSAGE_FOUND:
                return None
            raise
        return self._stored(resp)

    @staticmethod
    def _stored(resp: Mapping[str, Any]) -> StoredMsg:
        m = resp["message"]
        raw_hdrs = base64.b64decode(m["hdrs"]) if m.get("hdrs") else b""
        return StoredMsg(
            seq=int(m["seq"]),
            subject=m["subject"],
            data=base64.b64decode(m["data"]) if m.get("data") else b"",
            headers=_parse_header_block(raw_hdrs) if raw_hdrs else {},
            time_ns=_rfc3339_ns(m["time"]),
        )

    async def get_range(
        self,
        stream: str,
        start_seq: int,
        max_count: int,
        *,
        max_bytes: int | None = None,
        known_last_seq: int | None = None,
        timeout: float | None = None,
        next_by_subj: str | None = None,
    ) -> list[StoredMsg]:
        """Up to ``max_count`` messages from ``start_seq`` on, in order, in one batch direct get.

        Any replica may answer a direct get, and a follower can lag behind a
        write that was just acknowledged. ``known_last_seq`` is the last
        sequence the caller knows exists (from its own publish or the
        leader's stream info): messages up to it that the answering replica
        did not have yet are then read through the leader, so the result
        never stops short of it.

        With ``next_by_subj`` only messages on that subject count (``known_last_seq``
        is then ignored: the caller checks what it got).
        """
        if start_seq < 1 or max_count < 1:
            raise ValueError(f"need start_seq >= 1, max_count >= 1; got {start_seq}, {max_count}")
        req: dict[str, Any] = {"seq": start_seq, "batch": max_count}
        if max_bytes is not None:
            req["max_bytes"] = max_bytes
        if next_by_subj is not None:
            req["next_by_subj"] = next_by_subj
            known_last_seq = None
        out: list[StoredMsg] = []
        nc = self.nc
        inbox = nc.new_inbox()
        deadline = timeout or self.request_timeout
        # A callback, not next_msg(): one awaited future per batch instead of one
        # wait_for() per message halves the client's time per record.
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def on_msg(msg: _NatsMsg) -> None:
            if done.done():
                return
            hdrs = msg.headers or {}
            status = hdrs.get("Status")
            if status == "204" or status == "404":  # end of batch / nothing there
                done.set_result(None)
                return
            if status:
                done.set_exception(JetStreamError(
                    f"direct get from {stream}: {hdrs.get('Description', '')}".strip(),
                    int(status) if status.isdigit() else None,
                ))
                return
            out.append(
                StoredMsg(
                    seq=int(hdrs["Nats-Sequence"]),
                    subject=hdrs["Nats-Subject"],
                    data=msg.data,
                    headers={k: v for k, v in hdrs.items() if k not in _DIRECT_GET_HEADERS},
                    time_ns=_rfc3339_ns(hdrs["Nats-Time-Stamp"]),
                )
            )
            if len(out) >= max_count:
                done.set_result(None)

        with _translate(f"direct get from {stream}"):
            sub = await nc.subscribe(inbox, cb=on_msg)
            try:
                await nc.publish(f"{_API}.DIRECT.GET.{stream}", json.dumps(req).encode(),
                                 reply=inbox)
                await asyncio.wait_for(done, deadline)
            finally:
                await sub.unsubscribe()
        if known_last_seq is not None:
            want_last = min(known_last_seq, start_seq + max_count - 1)
            next_seq = out[-1].seq + 1 if out else start_seq
            while next_seq <= want_last:  # the replica that answered was behind
                try:
                    out.append(await self.get_message(stream, next_seq))
                except NotFound:
                    pass  # removed by retention meanwhile: not a lag
                next_seq += 1
        return out

    # -- consumers ---------------------------------------------------------

    async def ensure_consumer(
        self,
        stream: str,
        name: str,
        *,
        ack_wait_s: float = 30.0,
        max_deliver: int = -1,
        backoff_s: Sequence[float] | None = None,
        max_ack_pending: int = 10_000,
        max_waiting: int = 512,
        start_seq: int | None = None,
        filter_subject: str | None = None,
        replicas: int = 0,
        extra: Mapping[str, Any] | None = None,
    ) -> ConsumerState:
        """Create a durable pull consumer with explicit acks, or return it if identical.

        ``start_seq`` starts delivery at that stream sequence (default: the
        first message). ``backoff_s`` lists the redelivery delays after each
        unacked delivery; JetStream then ignores ``ack_wait`` for
        redeliveries, so the caller maps its own ack wait into the list.
        ``extra`` adds raw consumer config fields (priority groups...). A
        consumer with a different config: JetStreamError.
        """
        config: dict[str, Any] = {
            "durable_name": name,
            "ack_policy": "explicit",
            "ack_wait": int(ack_wait_s * _NS),
            "max_deliver": max_deliver,
            "max_ack_pending": max_ack_pending,
            "max_waiting": max_waiting,
            "replay_policy": "instant",
            "num_replicas": replicas,
        }
        if start_seq is not None:
            config["deliver_policy"] = "by_start_sequence"
            config["opt_start_seq"] = start_seq
        else:
            config["deliver_policy"] = "all"
        if backoff_s:
            config["backoff"] = [int(b * _NS) for b in backoff_s]
        if filter_subject:
            config["filter_subject"] = filter_subject
        if extra:
            config.update(extra)
        resp = await self.api(
            f"CONSUMER.CREATE.{stream}.{name}",
            {"stream_name": stream, "config": config, "action": "create"},
        )
        return _consumer_state(resp)

    async def consumer_info(self, stream: str, name: str) -> ConsumerState:
        """A durable consumer's state; NotFound if absent."""
        return _consumer_state(await self.api(f"CONSUMER.INFO.{stream}.{name}"))

    async def delete_consumer(self, stream: str, name: str) -> None:
        """Delete a durable consumer and its state; NotFound if absent."""
        self._pulls.pop((stream, name), None)
        await self.api(f"CONSUMER.DELETE.{stream}.{name}")

    async def fetch(
        self, stream: str, consumer: str, batch: int, *, timeout: float = 1.0
    ) -> list[Delivery]:
        """Pull up to ``batch`` messages from a durable consumer, waiting up to
        ``timeout`` s for the first; an empty list when none came."""
        key = (stream, consumer)
        sub = self._pulls.get(key)
        with _translate(f"fetch from {stream}/{consumer}"):
            if sub is None:
                sub = await self._js.pull_subscribe_bind(consumer, stream)
                self._pulls[key] = sub
            try:
                msgs = await sub.fetch(batch, timeout=timeout)
            except nats.errors.TimeoutError:
                return []
        out = []
        for m in msgs:
            md = m.metadata
            hdrs = dict(m.headers or {})
            out.append(
                Delivery(
                    stream=stream,
                    consumer=consumer,
                    stream_seq=md.sequence.stream,
                    deliveries=md.num_delivered,
                    subject=m.subject,
                    data=m.data,
                    headers=hdrs,
                    time_ns=int(md.timestamp.timestamp() * _NS) if md.timestamp else 0,
                    _msg=m,
                )
            )
        return out

    async def ack(self, d: Delivery, *, wait: bool = False) -> None:
        """Acknowledge a delivery; with ``wait``, until the server confirms it."""
        with _translate(f"ack {d.stream}/{d.consumer}:{d.stream_seq}"):
            if wait:
                await d._msg.ack_sync(timeout=self.request_timeout)
            else:
                await d._msg.ack()

    async def nak(self, d: Delivery, *, delay_s: float | None = None) -> None:
        """Negatively acknowledge: redeliver after ``delay_s`` (None or 0: at once)."""
        with _translate(f"nak {d.stream}/{d.consumer}:{d.stream_seq}"):
            await d._msg.nak(delay=delay_s or None)

    async def in_progress(self, d: Delivery) -> None:
        """Reset the delivery's ack timer: the consumer is still working on it."""
        with _translate(f"in-progress {d.stream}/{d.consumer}:{d.stream_seq}"):
            await d._msg.in_progress()

    async def term(self, d: Delivery, *, reason: str | None = None) -> None:
        """Stop redelivering this message; ``reason`` goes to the server's
        MSG_TERMINATED advisory (nats-py's ``term()`` cannot send one)."""
        payload = b"+TERM" + (b" " + reason.encode() if reason else b"")
        with _translate(f"term {d.stream}/{d.consumer}:{d.stream_seq}"):
            await self.nc.publish(d._msg.reply, payload)

    async def flush(self) -> None:
        """Wait until everything published so far (acks included) reached the server."""
        with _translate("flush"):
            await self.nc.flush(timeout=self.request_timeout)
