"""The backends: engines that implement the contract of ``streamlog.api``.

``local`` is the embedded engine (a directory of segment files and an LMDB
environment). Each backend is a sibling folder; the views run unchanged on
any of them.
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from typing import Any

# URL schemes of stores on NATS JetStream servers.
JETSTREAM_SCHEMES = ("nats", "tls")


def open_store(where: str | os.PathLike, **options: Any) -> Any:
    """Open a store (``streamlog.open``): a directory, a ``file://`` URL, or a
    ``nats://``/``tls://`` URL of a store on JetStream.

    ``options`` are the chosen backend's (``durability``, ``read_only``; on
    JetStream also ``replicas``, ``connect_timeout``, ``nats_options``). Any
    other ``scheme://`` is a ValueError before anything is created.
    """
    if isinstance(where, str) and "://" in where:
        scheme = where.split("://", 1)[0].lower()
        if scheme in JETSTREAM_SCHEMES:
            try:
                from streamlog.backends.jetstream.log import open_store as open_jetstream
            except ModuleNotFoundError as e:
                if e.name != "nats" and not (e.name or "").startswith("nats."):
                    raise
                raise ModuleNotFoundError(
                    f"{scheme}:// stores need the NATS client nats-py: "
                    'pip install "streamlog-embedded[nats]"', name=e.name) from e
            return open_jetstream(where, **options)
        if scheme == "file":
            parsed = urllib.parse.urlsplit(where)
            if parsed.netloc not in ("", "localhost") or parsed.query or parsed.fragment:
                raise ValueError(f"{where!r}: a file:// URL names a local directory "
                                 "(file:///abs/dir)")
            where = urllib.request.url2pathname(parsed.path)
        else:
            raise ValueError(f"unsupported store scheme {scheme!r}:// (a directory, file://, "
                             "nats:// or tls://)")
    from streamlog.backends.local.log import open_log

    return open_log(where, **options)


async def open_store_async(where: str | os.PathLike, **options: Any) -> Any:
    """A store bound to the running event loop, for a backend that can be (JetStream:
    its connection runs on that loop, no thread); None for the others (open those
    with ``open_store``, in a thread: opening may create files and recover)."""
    if isinstance(where, str) and where.split("://", 1)[0].lower() in JETSTREAM_SCHEMES \
            and "://" in where:
        try:
            from streamlog.backends.jetstream.log import JetStreamLog
        except ModuleNotFoundError:
            return None  # open_store says what is missing
        return await JetStreamLog.open_async(where, **options)
    return None
