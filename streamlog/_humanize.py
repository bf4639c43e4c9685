"""Words and times for people: counted nouns with their plural, and epoch ms as ISO 8601 UTC."""

from __future__ import annotations

import time


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 record``, ``2 records``, ``0 records`` (``many`` for an irregular plural)."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def iso_ms(timestamp_ms: int | None) -> str:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds (``2023-11-14T22:13:20.000Z``),
    ``-`` for None: the form people and ``date -d`` read, next to the number machines use."""
    if timestamp_ms is None:
        return "-"
    secs, ms = divmod(int(timestamp_ms), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}Z"
