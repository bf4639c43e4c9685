"""The quick benchmark behind ``streamlog bench nats://...``: streamlog on JetStream
against raw nats-py in the same run.

Each measurement has a baseline measured right beside it, on the same server
and the same connection: the plain nats-py way to do the same job on a plain
stream (``js.publish`` awaited per record; a chunk's ``js.publish`` calls in
flight together; an ordered consumer reading the stream back), without
streamlog's headers, keys, timestamps or dense-offset checks. Both run in a
store (and streams) of their own, removed afterwards.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

from ._client import parse_url
from .log import JetStreamLog

_CHUNK = 1000  # records per append_many call and per baseline chunk
_TICK = 1000

Progress = Callable[[str, int, int], None]


def _row(name: str, n: int, secs: float, nbytes: int, base: tuple[int, float],
         baseline: str) -> dict:
    rate = n / secs
    return {"name": name, "records": n, "seconds": secs, "records_per_s": rate,
            "mb_per_s": nbytes / secs / 1e6, "ratio": rate / (base[0] / base[1]),
            "baseline": baseline}


def _timed(fn: Callable[[], int]) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = fn()
    return n, max(time.perf_counter() - t0, 1e-9)


def bench_url(url: str) -> str:
    """A fresh store on the servers of ``url`` (same credentials and options)."""
    parsed = parse_url(url)
    parts = urllib.parse.urlsplit(url)
    name = f"{parsed.store[:40]}-bench-{uuid.uuid4().hex[:8]}"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


def run(url: str, records: int = 20_000, value_bytes: int = 100,
        progress: Progress | None = None) -> list[dict]:
    """Run the benchmark on the servers of ``url`` in a fresh store (removed afterwards);
    the same rows as the embedded store's quick benchmark: name, records, seconds,
    records_per_s, mb_per_s, ratio (rate / baseline rate) and baseline."""
    if records < 1:
        raise ValueError(f"records must be >= 1, not {records}")
    if value_bytes < 0:
        raise ValueError(f"value_bytes must be >= 0, not {value_bytes}")
    tick = progress or (lambda name, done, total: None)
    value = (b"0123456789abcdef" * (value_bytes // 16 + 1))[:value_bytes]
    payload = records * value_bytes
    out: list[dict] = []
    raw_stream = f"SLBENCH_{uuid.uuid4().hex[:12]}"
    raw_subject = f"slbench.{raw_stream}"
    with JetStreamLog(bench_url(url)) as log:
        conn: Any = log._conn
        js = conn.nc.jetstream()

        async def raw_setup() -> None:
            await js.add_stream(name=raw_stream, subjects=[raw_subject])

        async def raw_purge() -> None:
            await js.purge_stream(raw_stream)

        conn.run(raw_setup())
        try:
            t = log.topic("bench", partitions=1)

            # 1. one append per record
            name = "append (one record per call)"

            def appends() -> int:
                for i in range(records):
                    t.append(value)
                    if i % _TICK == _TICK - 1:
                        tick(name, i + 1, records)
                return records

            async def raw_publishes() -> int:
                for _ in range(records):
                    await js.publish(raw_subject, value)
                return records

            base = _timed(lambda: conn.run(raw_publishes()))
            out.append(_row(name, *_timed(appends), payload, base,
                            "nats-py js.publish per record"))

            # 2. append_many in chunks (one atomic batch each)
            name = "append_many (1000 per call)"
            t2 = log.topic("bench-many", partitions=1)

            def many() -> int:
                chunk = [value] * _CHUNK
                for i in range(0, records, _CHUNK):
                    n = min(_CHUNK, records - i)
                    t2.append_many(chunk if n == _CHUNK else chunk[:n])
                    tick(name, i + n, records)
                return records

            async def raw_chunks() -> int:
                for i in range(0, records, _CHUNK):
                    n = min(_CHUNK, records - i)
                    await asyncio.gather(*(js.publish(raw_subject, value) for _ in range(n)))
                return records

            conn.run(raw_purge())
            base = _timed(lambda: conn.run(raw_chunks()))
            out.append(_row(name, *_timed(many), payload, base,
                            "nats-py js.publish, a chunk in flight"))

            # 3. read everything back
            name = "read (iterate Records)"

            def reads() -> int:
                n = 0
                for _r in t.read(0):
                    n += 1
                    if n % _TICK == 0:
                        tick(name, n, records)
                tick(name, n, records)
                return n

            async def raw_reads() -> int:
                sub = await js.subscribe(raw_subject, ordered_consumer=True)
                try:
                    for _ in range(records):
                        await sub.next_msg(timeout=30)
                finally:
                    await sub.unsubscribe()
                return records

            base = _timed(lambda: conn.run(raw_reads()))
            out.append(_row(name, *_timed(reads), payload, base,
                            "nats-py ordered consumer"))
        finally:
            async def raw_drop() -> None:
                await js.delete_stream(raw_stream)

            try:
                conn.run(raw_drop())
            finally:
                for name in log.topics():
                    log.delete_topic(name)
    return out
