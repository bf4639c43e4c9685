"""Event store: commits with an expected version, and reading a 1,000-event stream.

Baseline: the eventsourcing library's own SQLite persistence module
(``eventsourcing.sqlite``, 9.5.x) on a file database in the same scratch
directory, measured in the same rounds (bench/conftest.py pairs them). It
runs in WAL mode, as the library sets it; durability is matched pair by
pair:

* streamlog ``durability="interval"`` (an append survives ``kill -9``, the
  last ~200 ms may be lost on power loss) against SQLite
  ``synchronous=NORMAL`` (a commit survives a crash of the process, the last
  transactions may roll back on power loss);
* streamlog ``durability="always"`` (fsync before an append returns) against
  SQLite ``synchronous=FULL``, the library's default (the WAL is synced at
  every commit).

Contenders per commit of N events (N = 1 or 10) to one aggregate:
``EventStore.append(stream, events, expected_version=v)``;
``StreamlogApplicationRecorder.insert_events`` (this package's module for the
library: what an eventsourcing application on streamlog does); and the
baseline ``SQLiteApplicationRecorder.insert_events`` (what the same
application does on SQLite; a duplicate version is an IntegrityError there
too). Event payload: a 60-byte JSON state with the library's topic string.

Reads: the 1,000 events of one aggregate, written as 100 commits of 10,
either alone or interleaved 1:1 with another aggregate's commits:
``EventStore.read`` and ``StreamlogAggregateRecorder.select_events`` against
``SQLiteApplicationRecorder.select_events``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import ExitStack
from uuid import uuid4

import pytest
from conftest import Contender, Figure, Goal, paired_rounds, rate, report, spread
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

import streamlog
from streamlog.eventsourcing import StreamlogApplicationRecorder

ROUNDS = 9
COMMITS = {("interval", 1): 2000, ("interval", 10): 1000, ("always", 1): 300,
           ("always", 10): 300}  # commits per round (fsync-bound rounds are shorter)
READ_EVENTS = 1000
READS_PER_ROUND = 20
TOPIC = "bank.domain:Account.Credited"
STATE = b'{"amount":"10.00","currency":"EUR","note":"monthly","ref":123456}'
SQLITE_SYNC = {"interval": "NORMAL", "always": "FULL"}
GOAL = 5.0
BASELINE = "eventsourcing SQLite recorder"


def _scratch(stack: ExitStack, bench_dir: str) -> str:
    path = tempfile.mkdtemp(dir=bench_dir)
    stack.callback(shutil.rmtree, path, ignore_errors=True)
    return path


def open_sqlite_recorder(stack: ExitStack, bench_dir: str,
                         durability: str) -> SQLiteApplicationRecorder:
    """The library's SQLite application recorder on a file database, WAL, with the
    synchronous level matching streamlog's ``durability``."""
    path = os.path.join(_scratch(stack, bench_dir), "events.db")
    datastore = SQLiteDatastore(db_name=f"file:{path}")
    pool = datastore.pool
    create = pool._create_connection
    sync = SQLITE_SYNC[durability]

    def create_connection():
        conn = create()
        conn._sqlite_conn.execute(f"PRAGMA synchronous={sync}")
        return conn

    pool._create_connection = create_connection  # every pooled connection, same level
    stack.callback(datastore.close)
    recorder = SQLiteApplicationRecorder(datastore)
    recorder.create_table()
    with datastore.transaction(commit=False) as c:
        c.execute("PRAGMA journal_mode")
        assert c.fetchone()[0] == "wal"
        c.execute("PRAGMA synchronous")
        assert c.fetchone()[0] == {"NORMAL": 1, "FULL": 2}[sync]
    return recorder


def open_log(stack: ExitStack, bench_dir: str, durability: str) -> streamlog.Log:
    log = streamlog.open(_scratch(stack, bench_dir), durability=durability)
    stack.callback(log.close)
    return log


def stored(oid, first: int, n: int) -> list[StoredEvent]:
    return [StoredEvent(originator_id=oid, originator_version=first + i, topic=TOPIC,
                        state=STATE) for i in range(n)]


# ------------------------------------------------------------------ appends
@pytest.mark.benchmark(group="event-store-append")
@pytest.mark.parametrize("durability", ["interval", "always"])
@pytest.mark.parametrize("events_per_commit", [1, 10])
def test_event_store_append(benchmark, bench_dir, durability, events_per_commit):
    """Commits of 1 or 10 events with an expected version, beside the SQLite module."""
    n = events_per_commit
    commits = COMMITS[(durability, n)]
    events = [STATE] * n
    headers_events = [(STATE, {"topic": TOPIC})] * n
    with ExitStack() as stack:
        es = open_log(stack, bench_dir, durability).event_store("bank")
        rec = StreamlogApplicationRecorder(open_log(stack, bench_dir, durability), "bank")
        sqlite = open_sqlite_recorder(stack, bench_dir, durability)

        def streamlog_run(_):
            stream = str(uuid4())
            v = streamlog.NO_STREAM
            append = es.append
            for _ in range(commits):
                v = append(stream, headers_events, expected_version=v)
            assert v == commits * n - 1

        def batches():  # StoredEvents built outside the timed region
            oid = uuid4()
            return [stored(oid, 1 + i * n, n) for i in range(commits)]

        def recorder_run(batches):
            insert = rec.insert_events
            for b in batches:
                insert(b)

        def sqlite_run(batches):
            insert = sqlite.insert_events
            for b in batches:
                insert(b)

        baselines = [Contender(BASELINE, sqlite_run, batches),
                     Contender("streamlog.eventsourcing recorder", recorder_run, batches)]
        times = paired_rounds(benchmark, Contender("streamlog", streamlog_run), baselines,
                              ROUNDS)
    assert events  # the plain-bytes form of the same events (documentation of the API)
    fig = Figure(benchmark.name, f"event store append, {n}-event commits, "
                 f"durability={durability}", rate(commits, times["streamlog"]), "commits/s",
                 {b.name: rate(commits, times[b.name]) for b in baselines},
                 rounds=len(times["streamlog"]), spread=spread(times["streamlog"]),
                 note=f"{commits} commits per round to a new stream, expected_version "
                      f"checked; SQLite synchronous={SQLITE_SYNC[durability]} (WAL)")
    fig.goals = [Goal(f">= {GOAL:g}x {BASELINE}", fig.ratio(BASELINE), GOAL)]
    report(benchmark, fig)
    rec_fig = Figure(benchmark.name, f"streamlog.eventsourcing insert_events, {n}-event "
                     f"commits, durability={durability}",
                     rate(commits, times["streamlog.eventsourcing recorder"]), "commits/s",
                     {BASELINE: rate(commits, times[BASELINE])},
                     rounds=len(times["streamlog"]),
                     spread=spread(times["streamlog.eventsourcing recorder"]))
    report(benchmark, rec_fig)


# -------------------------------------------------------------------- reads
@pytest.mark.benchmark(group="event-store-read")
@pytest.mark.parametrize("layout", ["alone", "interleaved"])
def test_event_store_read_stream(benchmark, bench_dir, layout):
    """Read the 1,000 events of one stream, beside the SQLite module's select_events."""
    with ExitStack() as stack:
        es = open_log(stack, bench_dir, "interval").event_store("bank")
        rec = StreamlogApplicationRecorder(open_log(stack, bench_dir, "interval"), "bank")
        sqlite = open_sqlite_recorder(stack, bench_dir, "interval")
        oid, other = uuid4(), uuid4()
        stream = str(oid)
        for i in range(READ_EVENTS // 10):
            es.append(stream, [(STATE, {"topic": TOPIC})] * 10, expected_version=i * 10 - 1)
            rec.insert_events(stored(oid, 1 + i * 10, 10))
            sqlite.insert_events(stored(oid, 1 + i * 10, 10))
            if layout == "interleaved":
                es.append(str(other), [(STATE, {"topic": TOPIC})] * 10)
                rec.insert_events(stored(other, 1 + i * 10, 10))
                sqlite.insert_events(stored(other, 1 + i * 10, 10))

        def streamlog_run(_):
            for _ in range(READS_PER_ROUND):
                assert len(es.read(stream)) == READ_EVENTS

        def recorder_run(_):
            for _ in range(READS_PER_ROUND):
                assert len(rec.select_events(oid)) == READ_EVENTS

        def sqlite_run(_):
            for _ in range(READS_PER_ROUND):
                assert len(sqlite.select_events(oid)) == READ_EVENTS

        baselines = [Contender(BASELINE, sqlite_run),
                     Contender("streamlog.eventsourcing recorder", recorder_run)]
        times = paired_rounds(benchmark, Contender("streamlog", streamlog_run), baselines,
                              ROUNDS)
    fig = Figure(benchmark.name, f"event store read of a {READ_EVENTS:,}-event stream "
                 f"({layout})", rate(READS_PER_ROUND, times["streamlog"]), "reads/s",
                 {b.name: rate(READS_PER_ROUND, times[b.name]) for b in baselines},
                 rounds=len(times["streamlog"]), spread=spread(times["streamlog"]),
                 note="written as 100 commits of 10 events" +
                      (", each followed by a commit to another stream"
                       if layout == "interleaved" else ""))
    fig.goals = [Goal(f">= {GOAL:g}x {BASELINE}", fig.ratio(BASELINE), GOAL)]
    report(benchmark, fig)
    rec_fig = Figure(benchmark.name, f"streamlog.eventsourcing select_events of a "
                     f"{READ_EVENTS:,}-event stream ({layout})",
                     rate(READS_PER_ROUND, times["streamlog.eventsourcing recorder"]),
                     "reads/s", {BASELINE: rate(READS_PER_ROUND, times[BASELINE])},
                     rounds=len(times["streamlog"]),
                     spread=spread(times["streamlog.eventsourcing recorder"]))
    report(benchmark, rec_fig)
