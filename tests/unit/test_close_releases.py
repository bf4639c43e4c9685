"""Closing a store lets go of everything of it that the process held.

After ``log.close()`` no file descriptor, mapping, LMDB environment (reader
slot, locks) or thread of the store may stay in the process: a repair, a
backup tool or a second program must see the store as closed. Counted from
``/proc/self/fd`` and ``/proc/self/maps`` (Linux).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner
from typer.main import get_command

import streamlog
from streamlog import inspection as sl_inspect
from streamlog import repair as repair_mod
from streamlog.backends.local.codec import HEADER_SIZE, RECORD_HEADER_SIZE
from streamlog.cli import app
from streamlog.errors import StoreClosed


def _fds() -> list[str]:
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:  # the descriptor listdir itself used, closed meanwhile
            continue
    return out


def _held(root: str) -> tuple[list[str], list[str]]:
    """Descriptors and mapping lines of this process that name a file under ``root``."""
    root = os.path.realpath(root)
    fds = [t for t in _fds() if t.startswith(root)]
    with open("/proc/self/maps") as f:
        maps = [line.rstrip() for line in f if root in line]
    return fds, maps


def _use_everything(log: streamlog.Log) -> None:
    """Touch every part of the store that opens files: topics, reads, groups, views."""
    t = log.topic("orders", partitions=4, segment_bytes=1 << 20)
    for i in range(500):
        t.append(b"v%d" % i, key=b"k%d" % (i % 17))
    t.append_many([b"m%d" % i for i in range(50)])
    for p in range(t.partitions):
        assert list(t.read(p))  # plain reads map every segment and its indexes
        t.read_batch(p, 0, 100)
        t.offset_for_time(p, 0)
    t.flush()
    g = t.group("billing")
    got = g.poll(max_records=100, timeout=0)
    assert got
    g.ack(got)
    k = t.group("by-key", mode="key_shared")
    k.ack(k.poll(max_records=10, timeout=0))
    q = log.queue("jobs")
    q.put(b"job")
    m = q.get(timeout=1)
    assert m is not None
    m.ack()
    es = log.event_store("accounts")
    es.append("acc-1", [b"opened", b"credited"])
    assert [e.value for e in es.read("acc-1")] == [b"opened", b"credited"]
    rpc = log.rpc("echo")
    with rpc.serve(lambda msg: msg.value.upper()):
        assert rpc.request(b"hi", timeout=10) == b"HI"
    log.pubsub("news").publish(b"hello")
    log.kv("settings").put(b"a", b"1")
    log.stats()
    assert log.verify() == []


@pytest.mark.parametrize("durability", ["always", "interval", "never"])
def test_close_lets_go_of_every_descriptor_and_mapping(tmp_path, durability):
    """Descriptors and mappings under the store are what they were before open."""
    d = str(tmp_path / "store")
    threads_before = set(threading.enumerate())
    fds_before = len(_fds())
    assert _held(str(tmp_path)) == ([], [])
    log = streamlog.open(d, durability=durability)
    _use_everything(log)
    assert _held(d)[1], "the store was open: its files were mapped"
    log.close()
    fds, maps = _held(str(tmp_path))
    assert fds == []
    assert maps == []
    assert len(_fds()) == fds_before
    # the store's own threads (interval syncer, rpc servers) are gone too
    left = [t for t in set(threading.enumerate()) - threads_before
            if t.name.startswith("streamlog") and t.name != "streamlog-prefault"]
    assert left == []


def test_handles_kept_after_close_hold_nothing(tmp_path):
    """Topic, group and view handles that outlive the store hold no file of it."""
    d = str(tmp_path / "store")
    with streamlog.open(d) as log:
        t = log.topic("t", partitions=3)
        t.append(b"x")
        g = t.group("g")
        q = log.queue("q")
        q.put(b"y")
        es = log.event_store("e")
        es.append("s", [b"z"])
    assert _held(d) == ([], [])
    with pytest.raises(StoreClosed):
        t.append(b"after")
    with pytest.raises(StoreClosed):
        t.read(0)
    with pytest.raises(StoreClosed):
        g.poll(timeout=0)
    with pytest.raises(StoreClosed):
        q.put(b"after")
    with pytest.raises(StoreClosed):
        es.append("s", [b"after"])
    assert _held(d) == ([], [])


def test_close_twice_and_reopen(tmp_path):
    """close() is idempotent, and the store opens again in the same process."""
    d = str(tmp_path / "store")
    log = streamlog.open(d)
    t = log.topic("t", partitions=2)
    t.append_many([b"a", b"b", b"c"])
    log.close()
    log.close()
    assert _held(d) == ([], [])
    for _ in range(3):
        with streamlog.open(d) as again:
            t2 = again.existing_topic("t")
            assert sorted(r.value for p in range(2) for r in t2.read(p)) == [b"a", b"b", b"c"]
        assert _held(d) == ([], [])


def test_second_log_keeps_the_shared_environment_until_it_closes(tmp_path):
    """Two Logs of one directory share LMDB: it goes when the last of them closes."""
    d = str(tmp_path / "store")
    a = streamlog.open(d)
    b = streamlog.open(d)
    a.topic("t").append(b"1")
    a.close()
    assert b.existing_topic("t").end_offset(0) == 1  # b still works
    assert any("data.mdb" in line for line in _held(d)[1])
    b.close()
    assert _held(d) == ([], [])


def _damaged_store(d: str):
    """A store whose oldest segment has a flipped byte (a CRC failure) that repair cuts;
    returns a topic handle that the caller keeps, as a script would, after closing."""
    with streamlog.open(d) as log:
        _use_everything(log)
        t = log.topic("t", segment_bytes=4096)
        for i in range(300):
            t.append(b"v" * 40 + b"%05d" % i)
    seg = sl_inspect.segment_files(d, "t", 0)[0]
    batch = list(sl_inspect.dump_segment(seg, records=False))[3]
    pos = batch.file_pos + HEADER_SIZE + RECORD_HEADER_SIZE + 3
    with open(seg, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x5A]))
    return t


def test_repair_in_the_same_process_after_close(tmp_path):
    """``streamlog repair DIR --yes`` works right after the process closed the store."""
    d = str(tmp_path / "store")
    t = _damaged_store(d)
    result = CliRunner().invoke(get_command(app), ["repair", d, "--yes"])
    assert result.exit_code == 0, result.output
    assert "repaired 1 partition" in result.output
    with streamlog.open(d) as log:
        assert log.verify() == []
    with pytest.raises(StoreClosed):
        t.append(b"after")


def test_repair_from_a_child_process_sees_the_store_closed(tmp_path):
    """A repair run by another process does not count a process that closed the store
    (it refuses while one has it open)."""
    d = str(tmp_path / "store")
    t = _damaged_store(d)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-m", "streamlog", "repair", d, "--yes"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "repaired 1 partition" in r.stdout
    with pytest.raises(StoreClosed):
        t.append(b"after")


def test_repair_refuses_a_store_open_in_this_process(tmp_path):
    """Repair needs the store to itself: an open Log of this process is named."""
    d = str(tmp_path / "store")
    log = streamlog.open(d)
    log.topic("t").append(b"x")
    try:
        with pytest.raises(streamlog.StreamlogError, match="open in this process"):
            repair_mod.repair(d)
        assert repair_mod.repair(d, dry_run=True) == []  # looking is fine
    finally:
        log.close()
    assert repair_mod.repair(d) == []


def test_close_while_other_threads_append_leaves_the_lock_free(tmp_path):
    """Closing while threads append: they end with StoreClosed, every append that
    returned is stored, and the partitions' locks are free for the next open."""
    d = str(tmp_path / "store")
    log = streamlog.open(d)
    t = log.topic("t", partitions=2)
    started = threading.Barrier(5)
    acked: list[list] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def append(i: int) -> None:
        started.wait()
        try:
            while True:
                acked[i].append(t.append(b"%d" % i, key=b"k%d" % i))
        except StoreClosed:
            return
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=append, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    started.wait()
    while sum(map(len, acked)) < 200:  # let them run a while
        threading.Event().wait(0.001)
    log.close()
    for th in threads:
        th.join(30)
        assert not th.is_alive()
    assert errors == []
    assert _held(d) == ([], [])
    with streamlog.open(d) as again:
        t2 = again.existing_topic("t")
        stored = {(p, r.offset) for p in range(2) for r in t2.read(p)}
        assert {tuple(pos) for a in acked for pos in a} <= stored
        t2.append(b"after", key=b"k0")  # the lock is not left held
        t2.append(b"after", key=b"k1")


def test_close_waits_for_the_writeback_thread_to_let_go_of_its_descriptors(tmp_path):
    """The background writeback works on a duplicate of a segment's descriptor; a close
    that comes while such a job is still queued waits for it, so that nothing of the
    store is open in this process when ``close()`` returns."""
    from streamlog.backends.local.storage import prefault

    d = str(tmp_path / "store")
    log = streamlog.open(d)
    t = log.topic("t")
    release = threading.Event()

    class _Stall:  # a prefault job that holds the thread until released
        def prefault(self, start: int, end: int) -> None:
            release.wait(10)

    prefault.request(_Stall(), 0, 1)  # the writeback jobs queue up behind this one
    value = b"x" * 4096
    for _ in range(3000):  # 12 MiB: several allocation chunks, each starting a writeback
        t.append(value)
    threading.Timer(0.3, release.set).start()
    log.close()
    assert _held(d) == ([], [])


def test_a_thread_that_reaches_the_lock_after_close_gets_store_closed(tmp_path):
    """A thread that looked up a partition's control block before close() and takes its
    lock afterwards is refused with StoreClosed: it must not lock (and go on to map
    files under) a control block whose mapping was let go."""
    log = streamlog.open(str(tmp_path / "store"))
    t = log.topic("t")
    t.append(b"v")
    ctl = log._parts[("t", 0)].ctl  # what a thread in the middle of an append holds
    log.close()
    with pytest.raises(StoreClosed):
        ctl.lock()
    assert ctl.users == 0
