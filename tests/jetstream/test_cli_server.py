"""`streamlog server` as a real process: it starts JetStream, prints the URL a store
opens with, serves appends and reads, and stops every node on Ctrl-C with status 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

import streamlog

TIMEOUT_S = 90

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(streamlog.__file__)))
_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)}


def _default_sigint() -> None:
    # A test run started in the background ignores SIGINT and children inherit that:
    # give them Ctrl-C back, as a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streamlog", "server", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_ENV,
                            preexec_fn=_default_sigint)


def _ready(proc: subprocess.Popen) -> tuple[str, list[int]]:
    """Read the banner up to the ready line: (the printed URL, the node pids)."""
    pids: list[int] = []
    proc.banner = ""  # type: ignore[attr-defined]
    while True:
        line = proc.stderr.readline().decode()
        proc.banner += line  # type: ignore[attr-defined]
        if not line:
            raise AssertionError(f"server ended before it was ready: {proc.stderr.read()!r}")
        m = re.search(r"pid (\d+)", line)
        if m:
            pids.append(int(m.group(1)))
        if "Ctrl-C stops the servers" in line:
            break
    return proc.stdout.readline().decode().strip(), pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _interrupt(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=TIMEOUT_S)
    return proc.returncode, err.decode()


@pytest.mark.parametrize("nodes", [1, 3])
def test_server_prints_a_url_that_opens_a_store_and_stops_on_ctrl_c(tmp_path, nodes):
    d = tmp_path / "nats"
    args = ["--dir", d] + (["--cluster", nodes] if nodes > 1 else [])
    proc = _start(*args)
    try:
        url, pids = _ready(proc)
        assert url.startswith("nats://")
        assert len(url[len("nats://"):].split(",")) == nodes
        assert len(pids) == nodes and all(_alive(p) for p in pids)
        with streamlog.open(f"{url}/cli", replicas=nodes) as log:
            t = log.topic("orders", partitions=2)
            pos = t.append(b"v1", key=b"k1", headers={"h": b"1"})
            r = next(iter(t.read(pos.partition, pos.offset, 1)))
            assert (r.key, r.value, r.headers) == (b"k1", b"v1", {"h": b"1"})
    finally:
        code, err = _interrupt(proc)
    assert code == 0, err
    assert "stopped" in err and "Traceback" not in err
    # Every node is gone (reaped by the CLI), and --dir keeps the data.
    assert not any(_alive(p) for p in pids)
    assert any(d.rglob("jetstream"))


def test_a_restart_on_the_same_dir_keeps_the_streams(tmp_path):
    d = tmp_path / "nats"
    proc = _start("--dir", d)
    try:
        url, _ = _ready(proc)
        with streamlog.open(f"{url}/keep") as log:
            log.topic("t").append(b"kept")
    finally:
        assert _interrupt(proc)[0] == 0
    proc = _start("--dir", d)
    try:
        url, _ = _ready(proc)
        with streamlog.open(f"{url}/keep") as log:
            assert [r.value for r in log.topic("t").read(0, 0, 10)] == [b"kept"]
    finally:
        assert _interrupt(proc)[0] == 0


def test_durability_always_makes_every_node_sync_each_write(tmp_path):
    d = tmp_path / "nats"
    proc = _start("--cluster", 3, "--dir", d, "--durability", "always")
    try:
        _, pids = _ready(proc)
        confs = sorted(d.rglob("nats-server.conf"))
        assert len(confs) == 3
        assert all("sync_interval: always" in c.read_text() for c in confs)
    finally:
        assert _interrupt(proc)[0] == 0


def test_without_dir_the_temporary_data_is_removed_and_sigterm_also_stops_cleanly():
    proc = _start()
    _, pids = _ready(proc)
    data = re.search(r"data in (\S+) \(temporary\)", proc.banner).group(1)
    assert os.path.isdir(data)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, err
    assert not any(_alive(p) for p in pids)
    assert not os.path.exists(data)


def test_a_dir_that_is_a_file_is_refused_before_anything_starts(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = subprocess.run([sys.executable, "-m", "streamlog", "server", "--dir", str(f)],
                       capture_output=True, timeout=TIMEOUT_S, env=_ENV)
    assert r.returncode == 1
    assert b"is a file, not a directory" in r.stderr and b"Traceback" not in r.stderr
