"""The tour behind ``streamlog demo``: each feature of the store, run for real, with its numbers.

Every step runs against a real store and prints what it did and what it
measured. A step whose feature is not part of this build (groups, the
views) says so and is skipped, so the tour grows with the package; a step
that fails is reported and the tour goes on (the command then exits 1).
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

import streamlog
from streamlog._humanize import iso_ms, plural


class _Missing(Exception):
    """The feature a step shows is not in this build."""


class _EmbeddedOnly(Exception):
    """The step shows a feature of the embedded store's files."""


def _need(module: str) -> None:
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise _Missing(module)


def _rate(n: int, secs: float) -> str:
    return f"{n / max(secs, 1e-9):,.0f}/s"


class _Tour:
    def __init__(self, log: streamlog.Log, out: Console) -> None:
        self.log = log
        self.out = out
        # The embedded store's URL is file://...; a store on servers has another scheme.
        self.embedded = log.url.startswith("file:")

    def say(self, text: str) -> None:
        self.out.print(f"  {text}", highlight=False)

    # -------------------------------------------------------------- steps
    def topics(self) -> None:
        """Topics, partitions and keyed appends"""
        t = self.log.topic("orders", partitions=3)
        keys = [f"customer-{i % 100}" for i in range(30_000)]
        t0 = time.perf_counter()
        for i, k in enumerate(keys):
            t.append(b'{"order": %d}' % i, key=k)
        secs = time.perf_counter() - t0
        self.say(f"topic 'orders' with {t.partitions} partitions; 30,000 keyed appends in "
                 f"{secs:.3f} s ({_rate(30_000, secs)}), one call each")
        table = Table(box=None, pad_edge=False)
        table.add_column("key")
        table.add_column("partition", justify="right")
        table.add_column("records of the key", justify="right")
        for k in ("customer-7", "customer-8", "customer-42"):
            p = t.append(b'{"order": "last"}', key=k).partition
            n = sum(1 for r in t.read(p) if r.key == k.encode())
            table.add_row(k, str(p), f"{n:,}")
        self.out.print(table)
        self.say("a key always lands in the same partition (Kafka's murmur2), in append order")
        self.say("topics: " + ", ".join(self.log.topics()))

    def append_many(self) -> None:
        """Batched appends: append_many"""
        t = self.log.topic("events")
        # A store on JetStream takes at most 1,000 records per partition in one atomic
        # append (the server's batch limit); the embedded store has no such limit.
        per_call = 10_000 if self.embedded else 1_000
        calls = 100_000 // per_call
        values = [b"x" * 100] * per_call
        t0 = time.perf_counter()
        for _ in range(calls):
            t.append_many(values)
        secs = time.perf_counter() - t0
        self.say(f"100,000 records of 100 bytes in {calls} calls: {secs:.3f} s "
                 f"({_rate(100_000, secs)}); each partition's share of a call is one "
                 "atomic batch")

    def reads(self) -> None:
        """Reading: read, get, offsets"""
        t = self.log.existing_topic("events")
        t0 = time.perf_counter()
        n = sum(1 for _ in t.read(0))
        secs = time.perf_counter() - t0
        self.say(f"read(0) iterated {n:,} records in {secs:.3f} s ({_rate(n, secs)})")
        r = t.get(0, 12_345)
        self.say(f"get(0, 12345) -> offset {r.offset}, {len(r.value)}-byte value, "
                 f"timestamp {r.timestamp_ms} ms ({iso_ms(r.timestamp_ms)})")
        self.say(f"start_offset(0) = {t.start_offset(0)}, end_offset(0) = {t.end_offset(0)} "
                 "(the next offset to be written)")

    def read_batch(self) -> None:
        """Columnar reads: read_batch"""
        t = self.log.existing_topic("events")
        t0 = time.perf_counter()
        n, nbytes, off = 0, 0, 0
        while True:
            b = t.read_batch(0, off, 50_000)
            if not len(b):
                break
            n += len(b)
            nbytes += int(b.value_offsets[-1])
            off = int(b.offsets[-1]) + 1
        secs = time.perf_counter() - t0
        self.say(f"read_batch: {n:,} records as numpy columns in {secs:.3f} s "
                 f"({_rate(n, secs)}), {nbytes:,} value bytes, no Python object per record")

    def time_index(self) -> None:
        """Finding records by time: offset_for_time"""
        t = self.log.topic("clicks")
        start = 1_700_000_000_000
        for i in range(1000):
            t.append(b"click", timestamp_ms=start + i * 1000)
        target = start + 500 * 1000
        t0 = time.perf_counter()
        off = t.offset_for_time(0, target)
        secs = time.perf_counter() - t0
        found = t.get(0, off).timestamp_ms
        self.say(f"1,000 clicks one second apart from t0 = {start} ms ({iso_ms(start)})")
        self.say(f"offset_for_time(t0 + 500 s = {target} ms, {iso_ms(target)}) = {off}, "
                 f"whose record is at {found} ms ({iso_ms(found)}); looked up in "
                 f"{secs * 1e6:,.0f} µs via the sparse time index")
        self.say(f"a time after the last record gives end_offset: "
                 f"{t.offset_for_time(0, start + 10**9)}")

    def retention(self) -> None:
        """Retention by size"""
        if not self.embedded:
            raise _EmbeddedOnly("segments and apply_retention; JetStream servers apply "
                                "a stream's limits themselves")
        t = self.log.topic("logs", segment_bytes=64 * 1024,
                           retention=streamlog.Retention(max_bytes=256 * 1024))
        for _ in range(20):
            t.append_many([b"l" * 200] * 250)
        info = self.log.stats()["topics"]["logs"]["partitions"][0]
        self.say(f"1 MB appended to a topic keeping 256 KiB in 64 KiB segments: "
                 f"{info['segments']} segments, {info['bytes']:,} bytes kept, "
                 f"offsets {info['start_offset']:,}..{info['end_offset'] - 1:,}")
        gone = self.log.apply_retention(dry_run=True)
        self.say(f"retention runs at each roll; apply_retention(dry_run=True) now lists "
                 f"{plural(len(gone), 'segment')} past the limit")

    def verify(self) -> None:
        """Integrity: verify"""
        t0 = time.perf_counter()
        problems = self.log.verify()
        secs = time.perf_counter() - t0
        total = sum(p["bytes"] for info in self.log.stats()["topics"].values()
                    for p in info["partitions"])
        what = (f"the CRC32C of every batch ({total / 1e6:,.1f} MB)" if self.embedded else
                "on the servers that every partition's stream is whole and dense")
        self.say(f"verify() checked {what} in {secs:.3f} s: {plural(len(problems), 'problem')}")

    def groups(self) -> None:
        """Consumer groups"""
        _need("streamlog.backends.local.groups")
        t = self.log.existing_topic("orders")
        g = t.group("billing")
        try:
            t0 = time.perf_counter()
            n = 0
            while True:
                msgs = g.poll(max_records=500, timeout=0.2)
                if not msgs:
                    break
                g.ack(msgs)
                n += len(msgs)
            secs = time.perf_counter() - t0
            self.say(f"group 'billing' polled and acked {n:,} records in {secs:.3f} s "
                     f"({_rate(n, secs)}); lag now {g.lag()}")
            t.append(b'{"order": "new"}', key="customer-1")
            self.say(f"one more append: lag {g.lag()}; a second group would start from "
                     "the earliest record on its own")
        finally:
            g.close()

    def queue(self) -> None:
        """Point-to-point queue view"""
        _need("streamlog.views.queue")
        q = self.log.queue("emails")
        t0 = time.perf_counter()
        for i in range(1000):
            q.put(b"mail %d" % i)
        n = 0
        while (m := q.get(timeout=0.2)) is not None:
            m.ack()
            n += 1
        secs = time.perf_counter() - t0
        self.say(f"queue 'emails': 1,000 put, {n:,} got and acked in {secs:.3f} s")

    def pubsub(self) -> None:
        """Fan-out: pub-sub view"""
        _need("streamlog.views.pubsub")
        ps = self.log.pubsub("prices")
        a = ps.subscribe("analytics", start="earliest")
        b = ps.subscribe("alerts", start="earliest")
        for i in range(100):
            ps.publish(b"price %d" % i)
        na = sum(1 for _ in a.listen(timeout=0.3))
        nb = sum(1 for _ in b.listen(timeout=0.3))
        self.say(f"pubsub 'prices': 100 published; subscription 'analytics' got {na}, "
                 f"'alerts' got {nb}: every subscription sees every message")

    def rpc(self) -> None:
        """Request-reply view"""
        _need("streamlog.views.rpc")
        rpc = self.log.rpc("upper")
        with rpc.serve(lambda m: bytes(m.value).upper(), workers=1):
            reply = rpc.request(b"hello", timeout=5.0)
            t0 = time.perf_counter()
            for _ in range(50):
                rpc.request(b"ping", timeout=5.0)
            secs = time.perf_counter() - t0
        self.say(f"rpc 'upper': request(b'hello') -> {reply!r}; 50 round trips in "
                 f"{secs:.3f} s ({secs / 50 * 1e3:.2f} ms each)")

    def event_store(self) -> None:
        """Event sourcing view"""
        _need("streamlog.views.event_store")
        es = self.log.event_store("bank")
        v = es.append("account-1", [b"opened", b"deposited 100"],
                      expected_version=getattr(streamlog, "NO_STREAM", -1))
        v = es.append("account-1", [b"withdrew 30"], expected_version=v)
        try:
            es.append("account-1", [b"withdrew 999"], expected_version=0)
            conflict = "accepted (unexpected)"
        except streamlog.WrongExpectedVersion as e:
            conflict = f"refused: {e}"
        events = es.read("account-1")
        self.say(f"event store 'bank': stream account-1 at version {v}, "
                 f"{len(events)} events; a stale writer is {conflict}")

    def table(self) -> None:
        """Compaction and tables: a local read model"""
        if not hasattr(self.log, "table"):
            raise _Missing("Log.table")
        # The order service's events carry the customer's data; the shipping
        # service keeps the newest data per customer, with no call back.
        self.log.topic("shipping-customers", compact=True, segment_bytes=256 * 1024)
        customers = self.log.table("shipping-customers")
        t0 = time.perf_counter()
        for i in range(20_000):
            customers.put(f"customer-{i % 100}", b'{"address": "%d Quay St"}' % i)
        secs = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(20_000):
            customers.get(f"customer-{i % 100}")
        get_secs = time.perf_counter() - t0
        res = self.log.compact("shipping-customers")
        self.say(f"table 'shipping-customers': 20,000 puts over {len(customers)} keys in "
                 f"{secs:.3f} s ({_rate(20_000, secs)}), 20,000 gets in {get_secs:.3f} s "
                 f"({_rate(20_000, get_secs)})")
        try:
            self.log.existing_topic("shipping-customers").get(0, 7)
            first = "still there"
        except streamlog.OffsetOutOfRange as e:
            first = str(e).split(" (")[0]
        self.say(f"customer-7 -> {customers['customer-7'].decode()}; compaction removed "
                 f"{res.records_removed:,} superseded records ({res.bytes_freed:,} bytes); "
                 f"offsets never change: {first}")

    def stats(self) -> None:
        """Figures: stats"""
        stats = self.log.stats()
        table = Table(box=None, pad_edge=False)
        for col in ("topic", "partitions", "records", "bytes", "appends/s (1 min)"):
            table.add_column(col, justify="left" if col == "topic" else "right")
        for name, info in stats["topics"].items():
            parts = info["partitions"]
            rate = info.get("append_rate_per_s")
            table.add_row(name, str(len(parts)), f"{sum(p['records'] for p in parts):,}",
                          f"{sum(p['bytes'] for p in parts):,}",
                          "-" if rate is None else f"{rate:,.0f}")
        self.out.print(table)


_STEPS: list[Callable[[_Tour], None]] = [
    _Tour.topics, _Tour.append_many, _Tour.reads, _Tour.read_batch, _Tour.time_index,
    _Tour.retention, _Tour.verify, _Tour.groups, _Tour.queue, _Tour.pubsub, _Tour.rpc,
    _Tour.event_store, _Tour.table, _Tour.stats,
]


def run(directory: str | None, out: Console) -> list[str]:
    """Run the tour in ``directory`` (a temporary one, removed afterwards, when None).

    Returns the titles of the steps that failed ([] when all ran or were skipped).
    """
    tmp = None
    if directory is None:
        tmp = tempfile.mkdtemp(prefix="streamlog-demo-")
        directory = tmp
    failed: list[str] = []
    try:
        with streamlog.open(directory) as log:
            out.print(f"[bold]streamlog {streamlog.__version__}[/bold] demo store in "
                      f"{log.url}", highlight=False)
            tour = _Tour(log, out)
            for step in _STEPS:
                title = (step.__doc__ or step.__name__).strip()
                out.print(f"\n[bold cyan]{title}[/bold cyan]", highlight=False)
                try:
                    step(tour)
                except _Missing as e:
                    out.print(f"  [dim]not in this build yet ({e.args[0]}): skipped[/dim]",
                              highlight=False)
                except _EmbeddedOnly as e:
                    out.print(f"  [dim]embedded store only ({e.args[0]}): skipped[/dim]",
                              highlight=False)
                except NotImplementedError as e:
                    out.print(f"  [dim]{e}: skipped[/dim]", highlight=False)
                except Exception as e:  # noqa: BLE001 - one failed step must not end the tour
                    failed.append(title)
                    out.print(f"  [red]failed: {type(e).__name__}: {e}[/red]", highlight=False)
        if tmp is None:
            out.print(f"\nthe store stays in {directory}: try `streamlog topics {directory}`",
                      highlight=False)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return failed
