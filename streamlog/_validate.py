"""Checks of caller input: TypeError/ValueError before any byte is written."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping

from streamlog._limits import DERIVED_NAME_MAX_CHARS, MAX_HEADER_NAME_BYTES, NAME_MAX_CHARS
from streamlog.errors import RecordTooLarge

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,%s}\Z" % str(NAME_MAX_CHARS - 1))  # noqa: UP031
_BYTES_LIKE = (bytes, bytearray, memoryview)


def name(value, what: str = "name") -> str:
    """A topic, group, view or subscription name: [A-Za-z0-9][A-Za-z0-9._-]{0,199}."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not NAME_RE.match(value):
        raise ValueError(f"invalid {what} {value!r}: use 1-200 characters of "
                         "[A-Za-z0-9._-], starting with a letter or digit")
    return value


def path(value) -> str:
    if isinstance(value, str | os.PathLike):
        p = os.fspath(value)
        if isinstance(p, bytes):
            p = os.fsdecode(p)
        return p
    raise TypeError(f"path must be a str or os.PathLike, not {type(value).__name__}")


def value(v, allow_none: bool) -> bytes | None:
    """A record value: bytes-like; None (a tombstone) only on compacted topics."""
    if type(v) is bytes:
        return v
    if v is None:
        if not allow_none:
            raise ValueError("value=None (a tombstone) is allowed only on compacted topics")
        return None
    if isinstance(v, _BYTES_LIKE):
        return bytes(v)
    if isinstance(v, str):
        raise TypeError("value must be bytes-like, not str: encode it first")
    raise TypeError(f"value must be bytes-like, not {type(v).__name__}")


def key(k) -> bytes | None:
    """A key: bytes or str (UTF-8); None means no key; b"" is a key."""
    if k is None or type(k) is bytes:
        return k
    if isinstance(k, str):
        return k.encode("utf-8")
    if isinstance(k, _BYTES_LIKE):
        return bytes(k)
    raise TypeError(f"key must be bytes or str, not {type(k).__name__}")


def headers(h) -> list[tuple[bytes, bytes]] | None:
    """Headers: a mapping of str to bytes or str; returned as encoded (name, value) pairs."""
    if h is None:
        return None
    if not isinstance(h, Mapping):
        raise TypeError(f"headers must be a mapping of str to bytes, not {type(h).__name__}")
    out = []
    for n, v in h.items():
        if not isinstance(n, str):
            raise TypeError(f"header names must be str, not {type(n).__name__}")
        nb = n.encode("utf-8")
        if len(nb) > MAX_HEADER_NAME_BYTES:
            raise ValueError(f"header name {n[:40]!r}... is longer than "
                             f"{MAX_HEADER_NAME_BYTES} bytes")
        if isinstance(v, str):
            vb = v.encode("utf-8")
        elif isinstance(v, _BYTES_LIKE):
            vb = bytes(v)
        else:
            raise TypeError(f"header {n!r} must be bytes or str, not {type(v).__name__}")
        out.append((nb, vb))
    return out or None


def timestamp(ts) -> int:
    if type(ts) is not int:
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise TypeError(f"timestamp_ms must be an int, not {type(ts).__name__}")
        ts = int(ts)
    if ts < 0 or ts >= 1 << 62:
        raise ValueError(f"timestamp_ms must be >= 0 (and below 2**62), not {ts}")
    return ts


def msg_id(m) -> bytes | None:
    if m is None:
        return None
    if isinstance(m, str):
        m = m.encode("utf-8")
    elif isinstance(m, _BYTES_LIKE):
        m = bytes(m)
    else:
        raise TypeError(f"msg_id must be str or bytes, not {type(m).__name__}")
    if not m:
        raise ValueError("msg_id must not be empty")
    return m


def copies(records, allow_none: bool, limit: int) -> tuple[list, list, list, list]:
    """Records to copy (objects with ``timestamp_ms``, ``key``, ``value`` and ``headers``,
    as ``read`` yields them) as four lists: keys, values, encoded headers (or None) and
    timestamps, each record checked as an append checks it (TypeError, ValueError,
    RecordTooLarge against ``limit``) before anything is written."""
    keys: list = []
    values: list = []
    hdrs: list = []
    stamps: list = []
    for r in records:
        try:
            ts, k, v, h = r.timestamp_ms, r.key, r.value, r.headers
        except AttributeError:
            raise TypeError(f"a record to copy needs timestamp_ms, key, value and headers, "
                            f"not {type(r).__name__}") from None
        v = value(v, allow_none)
        k = key(k)
        eh = headers(h) if h else None
        record_size(k, v, eh, limit)
        keys.append(k)
        values.append(v)
        hdrs.append(eh)
        stamps.append(timestamp(ts))
    return keys, values, hdrs, stamps


def record_size(k: bytes | None, v: bytes | None, hdrs, limit: int) -> None:
    """RecordTooLarge when the encoded key + value + headers exceed ``limit`` bytes."""
    size = (len(k) if k is not None else 0) + (len(v) if v is not None else 0)
    if hdrs:
        size += sum(6 + len(n) + len(x) for n, x in hdrs)
    if size > limit:
        raise RecordTooLarge(f"record of {size} bytes (key + value + headers) exceeds "
                             f"max_record_bytes={limit}")


def partition(p, partitions: int) -> int:
    if type(p) is not int:
        if isinstance(p, bool) or not isinstance(p, int):
            raise TypeError(f"partition must be an int, not {type(p).__name__}")
        p = int(p)
    if not 0 <= p < partitions:
        raise ValueError(f"partition {p} out of range: the topic has {partitions} "
                         f"partition{'s' if partitions != 1 else ''} (0..{partitions - 1})")
    return p


def offset(o, what: str = "offset") -> int:
    if type(o) is not int:
        if isinstance(o, bool) or not isinstance(o, int):
            raise TypeError(f"{what} must be an int, not {type(o).__name__}")
        o = int(o)
    if o < 0:
        raise ValueError(f"{what} must be >= 0, not {o}")
    return o


def positive_int(v, what: str, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{what} must be an int, not {type(v).__name__}")
    if v < minimum or (maximum is not None and v > maximum):
        hi = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{what} must be >= {minimum}{hi}, not {v}")
    return int(v)


def seconds(v, what: str, *, allow_zero: bool = True, allow_inf: bool = False,
            allow_none: bool = False) -> float | None:
    """``v`` as a float number of seconds, checked against the range the caller names.

    Every duration of the API goes through here, so they all agree: an int or
    a float (a bool is not a number); never negative, never NaN; zero only
    with ``allow_zero`` (else it must be > 0); ``math.inf`` only with
    ``allow_inf`` (a wait without limit; else it must be finite); None only
    with ``allow_none`` (returned as is). TypeError for a wrong type,
    ValueError for a value out of range, both naming ``what`` and the range.
    """
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        alt = " or None" if allow_none else ""
        raise TypeError(f"{what} must be a number of seconds{alt}, not {type(v).__name__}")
    try:
        f = float(v)
    except OverflowError:  # an int beyond any float
        f = math.inf
    if not ((f >= 0 if allow_zero else f > 0) and (allow_inf or f < math.inf)):
        kind = "a number of seconds" if allow_inf else "a finite number of seconds"
        limit = ">= 0" if allow_zero else "> 0"
        extra = " (inf: no limit)" if allow_inf else ""
        alt = " or None" if allow_none else ""
        raise ValueError(f"{what} must be {kind} {limit}{extra}{alt}, not {v}")
    return f


def dedupe_within_retention(dedupe_window_s: float | None, retention) -> None:
    """ValueError when the dedupe window outlives the records: a repeat of an id whose first
    record retention already removed could not return that record's position."""
    max_age_s = retention[1] if retention else None
    if dedupe_window_s is not None and max_age_s is not None and dedupe_window_s > max_age_s:
        raise ValueError(f"dedupe_window_s={dedupe_window_s:g} is longer than the retention "
                         f"max_age_s={max_age_s:g}: a repeat inside the window could name a "
                         "record retention removed (make the window at most max_age_s)")


GROUP_MODES = ("shared", "key_shared", "exclusive")
GROUP_STARTS = ("earliest", "latest")


def group_options(topic: str, group: str, mode, ack_wait_s, max_deliver, backoff_s, start,
                  dead_letter, consumer) -> dict:
    """The options of group ``group`` of topic ``topic``, checked as every backend checks
    them (TypeError/ValueError before anything is created); the dead-letter topic
    defaults to ``<topic>.<group>.dlq``."""
    name(group, "group name")
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, not {type(mode).__name__}")
    if mode not in GROUP_MODES:
        raise ValueError(f"mode must be one of {', '.join(GROUP_MODES)}, not {mode!r}")
    seconds(ack_wait_s, "ack_wait_s", allow_zero=False)
    max_deliver = positive_int(max_deliver, "max_deliver", 1)
    backoff: list[float] | None = None
    if backoff_s is not None:
        if isinstance(backoff_s, str | bytes) or not isinstance(backoff_s, Iterable):
            raise TypeError("backoff_s must be a sequence of seconds")
        backoff = []
        for i, b in enumerate(backoff_s):
            backoff.append(seconds(b, f"backoff_s[{i}]") or 0.0)
        backoff = backoff or None
    if not isinstance(start, str):
        raise TypeError(f"start must be a str, not {type(start).__name__}")
    if start not in GROUP_STARTS:
        raise ValueError(f"start must be 'earliest' or 'latest', not {start!r}")
    if dead_letter is None:
        dead_letter = f"{topic}.{group}.dlq"
        if len(dead_letter) > DERIVED_NAME_MAX_CHARS:
            raise ValueError(f"the dead-letter topic name {dead_letter[:40]!r}... would be "
                             f"{len(dead_letter)} characters (at most "
                             f"{DERIVED_NAME_MAX_CHARS}): pass dead_letter=")
    else:
        name(dead_letter, "dead_letter topic name")
    if dead_letter == topic:
        raise ValueError("a group's dead-letter topic cannot be its own topic")
    if consumer is not None:
        name(consumer, "consumer name")
    return {"mode": mode, "ack_wait_s": float(ack_wait_s), "max_deliver": max_deliver,
            "backoff_s": backoff, "start": start, "dead_letter": dead_letter}


# The header of a record appended with ``append_delayed``: its due time (epoch ms), before
# which no group delivers it.
DELIVER_AT_MS = "streamlog.deliver-at-ms"


def delayed_headers(headers, deliver_at_ms) -> dict:
    """The headers of a delayed append: the caller's (a mapping) plus the due time
    (an epoch-ms int >= 0); TypeError/ValueError before anything is written."""
    if isinstance(deliver_at_ms, bool) or not isinstance(deliver_at_ms, int):
        raise TypeError(f"deliver_at_ms must be an int, not {type(deliver_at_ms).__name__}")
    if deliver_at_ms < 0:
        raise ValueError(f"deliver_at_ms must be >= 0, not {deliver_at_ms}")
    if headers is not None and not hasattr(headers, "items"):
        raise TypeError(f"headers must be a mapping of str to bytes, not "
                        f"{type(headers).__name__}")
    hdrs = dict(headers) if headers else {}
    hdrs[DELIVER_AT_MS] = b"%d" % deliver_at_ms
    return hdrs


def deliver_at(headers: Mapping[str, bytes]) -> int | None:
    """A record's due time from its ``streamlog.deliver-at-ms`` header (None: no delay,
    or a value that is not ours to interpret: deliver it)."""
    raw = headers.get(DELIVER_AT_MS)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None
# The header a record's subject travels in (``append(..., subject=)``).
SUBJECT_HEADER = "subject"
_SUBJECT_BAD = re.compile(r"[\s*>]")


def subject(s) -> str:
    """A record's subject: dot-separated non-empty tokens, no whitespace, no wildcards."""
    if not isinstance(s, str):
        raise TypeError(f"subject must be a str, not {type(s).__name__}")
    if not s or "" in s.split(".") or _SUBJECT_BAD.search(s):
        raise ValueError(f"subject {s[:80]!r} must be non-empty dot-separated tokens without "
                         "whitespace or wildcards (like 'orders.eu.created')")
    return s


def subject_pattern(s) -> str:
    """A subject filter: tokens, where ``*`` is any one token and a last ``>`` the rest."""
    if not isinstance(s, str):
        raise TypeError(f"a subject filter must be a str, not {type(s).__name__}")
    toks = s.split(".")
    bad = (not s or any(not t or re.search(r"\s", t) for t in toks)
           or any(("*" in t and t != "*") or (">" in t and t != ">") for t in toks)
           or ">" in toks[:-1])
    if bad:
        raise ValueError(f"subject filter {s[:80]!r} must be dot-separated tokens, where '*' "
                         "stands for one token and a last '>' for one or more")
    return s


def subjects(patterns) -> list[str] | None:
    """The ``subjects=`` option of a group: None, or a non-empty list of filters (sorted,
    without repeats, so that equal filters compare equal in the stored options)."""
    if patterns is None:
        return None
    if isinstance(patterns, str) or not hasattr(patterns, "__iter__"):
        raise TypeError(f"subjects must be a list of str, not {type(patterns).__name__}")
    out = sorted({subject_pattern(p) for p in patterns})
    if not out:
        raise ValueError("subjects must not be empty (None: every record)")
    return out


def with_subject(h, s) -> dict:
    """``h`` (headers, a mapping or None) with header ``subject`` set to ``s``."""
    subject(s)
    if h is None:
        return {SUBJECT_HEADER: s}
    if not isinstance(h, Mapping):
        raise TypeError(f"headers must be a mapping of str to bytes, not {type(h).__name__}")
    out = dict(h)
    out[SUBJECT_HEADER] = s
    return out


def many(values, keys, headers) -> tuple[list, list | None, list | None]:
    """The arguments of ``append_many`` as lists of one length (keys and headers may be
    None for "none on any record"); TypeError/ValueError before anything is written."""
    if isinstance(values, str | bytes | bytearray | memoryview) or \
            not hasattr(values, "__iter__"):
        raise TypeError("values must be a sequence of bytes-like values")
    values = list(values)
    n = len(values)
    if keys is not None:
        keys = list(keys)
        if len(keys) != n:
            raise ValueError(f"keys has {len(keys)} entries for {n} values")
    if headers is not None:
        headers = list(headers)
        if len(headers) != n:
            raise ValueError(f"headers has {len(headers)} entries for {n} values")
    return values, keys, headers


def reset_target(to):
    """A group reset's target (``Topic.reset_group``): ``"earliest"``, ``"latest"``, an
    offset, or an aware ``datetime`` (a naive one would depend on this machine's zone)."""
    import datetime as _dt

    if isinstance(to, str):
        if to not in ("earliest", "latest"):
            raise ValueError(f"to must be 'earliest', 'latest', an offset or a datetime, "
                             f"not {to!r}")
    elif isinstance(to, _dt.datetime):
        if to.tzinfo is None:
            raise ValueError("to: a datetime needs a time zone (e.g. datetime.UTC), or the "
                             "position would depend on this machine's")
    elif isinstance(to, bool) or not isinstance(to, int):
        raise TypeError(f"to must be 'earliest', 'latest', an offset (int) or a datetime, "
                        f"not {type(to).__name__}")
    else:
        offset(to)
    return to
