"""streamlog.open(path, read_only=True) never writes, creates or deletes anything in the
store directory: every write raises ReadOnlyStore first; the CLI's inspecting commands
open read-only, so looking at a store never changes it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import streamlog
from streamlog import ReadOnlyStore, Retention, StreamlogError


def snapshot(root) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: its bytes and its mtime (ns); directories by mtime."""
    out = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        out[dirpath] = (b"<dir>", os.stat(dirpath).st_mtime_ns)
        for name in filenames:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                out[p] = (f.read(), os.stat(p).st_mtime_ns)
    return out


def assert_unchanged(before: dict, root) -> None:
    after = snapshot(root)
    assert sorted(after) == sorted(before), "files were created or removed"
    changed = [p for p in before if before[p] != after[p]]
    assert changed == [], f"changed: {changed}"


@pytest.fixture
def store(tmp_path):
    """A closed store: topics with records (one with an expired retention policy), a
    consumer group with a committed position, an event store, a queue."""
    path = tmp_path / "data"
    old = int(time.time() * 1000) - 3_600_000
    with streamlog.open(path) as log:
        t = log.topic("orders", partitions=2, segment_bytes=1024)
        for i in range(60):
            t.append(b"order-%03d" % i + b"." * 40, key=b"c%d" % (i % 5))
        aged = log.topic("aged", retention=Retention(max_age_s=1))  # one active segment
        for i in range(30):
            aged.append(b"aged-%03d" % i + b"." * 60, timestamp_ms=old + i)
        g = t.group("billing")
        for m in g.poll(max_records=10, timeout=0):
            m.ack()
        g.close()
        log.event_store("es").append("s-1", [b"created"])
        log.queue("jobs").put(b"job")
    # a writable open would remove "aged"'s records: the store is left as it was written
    return path


def test_read_only_reads_and_changes_nothing(store):
    """Reads, stats, verify and a retention dry run work; no file changes."""
    before = snapshot(store)
    with streamlog.open(store, read_only=True) as log:
        assert log.read_only
        assert log.topics() == sorted(["aged", "orders", "es", "jobs"] +
                                      [n for n in log.topics() if n not in
                                       ("aged", "orders", "es", "jobs")])
        t = log.existing_topic("orders")
        assert sum(len(list(t.read(p))) for p in range(2)) == 60
        assert len(list(log.existing_topic("aged").read(0))) == 30
        assert log.verify() == []
        stats = log.stats()
        assert stats["groups"]["orders"]["billing"]
        assert log.apply_retention(dry_run=True)
        assert t.group  # handles exist; only their writes are refused
    assert_unchanged(before, store)


def test_every_write_raises_read_only_store_and_writes_nothing(store):
    """append, append_many, creating a topic, deleting one, group polls and commits,
    apply_retention, queue put, publish, event store append, rpc: all ReadOnlyStore."""
    before = snapshot(store)
    with streamlog.open(store, read_only=True) as log:
        t = log.existing_topic("orders")
        writes = [
            lambda: t.append(b"x"),
            lambda: t.append(b"x", key=b"k", headers={"h": b"v"}, msg_id="m-1"),
            lambda: t.append_many([b"a", b"b"]),
            lambda: t.append_with(0, lambda end: (None, 0, 0, None)),
            lambda: log.topic("missing"),
            lambda: log.delete_topic("orders"),
            lambda: log.apply_retention(),
            lambda: t.group("billing").poll(max_records=1, timeout=0),
            lambda: t.group("new-group"),
            lambda: t.delete_group("billing"),
            lambda: log.queue("jobs").put(b"job"),
            lambda: log.pubsub("news").publish(b"hello"),
            lambda: log.event_store("es").append("s-1", [b"more"]),
            lambda: log.rpc("svc").request(b"ping", timeout=0.1),
            lambda: log.kv("state").put(b"k", b"v"),
        ]
        for write in writes:
            with pytest.raises(ReadOnlyStore):
                write()
        assert issubclass(ReadOnlyStore, PermissionError)
        assert issubclass(ReadOnlyStore, StreamlogError)
        t.flush()  # nothing to make durable: not an error
        assert sum(len(list(t.read(p))) for p in range(2)) == 60
    assert_unchanged(before, store)


def test_an_existing_topic_opens_by_name_and_equal_options(store):
    """log.topic() of an existing topic with no or equal options writes nothing."""
    before = snapshot(store)
    with streamlog.open(store, read_only=True) as log:
        assert log.topic("orders").partitions == 2
        assert log.topic("orders", partitions=2).partitions == 2
        with pytest.raises(streamlog.ConfigMismatch):
            log.topic("orders", partitions=3)
    assert_unchanged(before, store)


def test_missing_directory_read_only_names_it(tmp_path):
    """A read-only open of a missing directory is a StreamlogError naming the path, and
    creates nothing; an empty directory reads as an empty store."""
    missing = tmp_path / "nope"
    with pytest.raises(StreamlogError, match="nope"):
        streamlog.open(missing, read_only=True)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with streamlog.open(empty, read_only=True) as log:
        assert log.topics() == []
        with pytest.raises(streamlog.TopicNotFound):
            log.existing_topic("orders")
        with pytest.raises(ReadOnlyStore):
            log.topic("orders")
    assert os.listdir(empty) == []
    with pytest.raises(TypeError):
        streamlog.open(empty, read_only="yes")


def test_read_only_beside_a_writer_sees_its_appends(store):
    """A read-only Log in the same process as a writable one reads what it appends
    (they share the LMDB environment) and a follower wakes up for it."""
    with streamlog.open(store) as w, streamlog.open(store, read_only=True) as ro:
        t = w.existing_topic("orders")
        r = ro.existing_topic("orders")
        seen = r.notify_seq_any()
        pos = t.append(b"new", key=b"c0")
        assert r.wait_any(seen, 5)
        assert r.get(pos.partition, pos.offset).value == b"new"
        with pytest.raises(ReadOnlyStore):
            r.append(b"x")


@pytest.mark.parametrize("damage", ["stale", "missing", "torn tail after a reboot"])
def test_a_stale_control_block_is_rebuilt_in_memory_read_only(store, damage):
    """A control block from before a reboot (or none) needs a rebuild: a read-only
    open rebuilds it in private memory, reads the records, and changes no file; a
    torn tail is skipped, not cut."""
    pdir = os.path.join(store, "topics", "orders", "0")
    ctl = os.path.join(pdir, "control")
    with streamlog.open(store) as log:
        expected = [r.value for r in log.existing_topic("orders").read(0)]
    assert expected
    if damage == "missing":
        os.unlink(ctl)
    else:
        with open(ctl, "r+b") as f:
            f.seek(16)
            f.write(b"\x03" * 16)  # another boot id
    if damage == "torn tail after a reboot":
        seg = os.path.join(pdir, sorted(n for n in os.listdir(pdir) if n.endswith(".log"))[-1])
        with open(seg, "r+b") as f:
            data = f.read()
            end = len(data.rstrip(b"\0"))
            f.seek(end - 3)
            f.write(b"\0\0\0")  # the last batch loses its end
    before = snapshot(store)
    with streamlog.open(store, read_only=True) as log:
        got = [r.value for r in log.existing_topic("orders").read(0)]
    if damage == "torn tail after a reboot":
        assert got == expected[:len(got)] and len(got) < len(expected)
    else:
        assert got == expected
    assert_unchanged(before, store)


# ----------------------------------------------------------------------- CLI
INSPECTING = [
    ("topics",),
    ("topics", "--json"),
    ("describe", "orders"),
    ("describe", "aged"),
    ("groups",),
    ("groups", "orders"),
    ("consume", "orders"),
    ("consume", "aged", "--format", "json"),
    ("consume", "orders", "--follow", "--timeout", "0.2"),
    ("tail", "orders", "--timeout", "0.2"),
    ("dump", "orders"),
    ("verify",),
    ("retention", "--dry-run"),
]


@pytest.mark.parametrize("args", INSPECTING, ids=" ".join)
def test_inspecting_commands_change_nothing(store, args):
    """Each inspecting command, run as `python -m streamlog`, leaves every file's bytes
    and mtime as they were and creates or removes no file."""
    before = snapshot(store)
    cmd = [sys.executable, "-m", "streamlog", args[0], str(store), *args[1:]]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(streamlog.__file__)))
    assert done.returncode == 0, done.stderr
    assert_unchanged(before, store)
