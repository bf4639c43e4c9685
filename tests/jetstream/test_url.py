"""nats:// URLs: parsing and validation before anything connects, and connect-time refusals."""

from __future__ import annotations

import time

import pytest

from streamlog.backends.jetstream._client import (
    CONNECT_TIMEOUT_S,
    Connection,
    check_server,
    parse_url,
)
from streamlog.backends.jetstream.server import NatsServer
from streamlog.errors import StreamlogError


def test_hosts_ports_and_store():
    """Several hosts, default port 4222, and the store from the path."""
    u = parse_url("nats://h1:4222,h2,h3:5000/shop")
    assert u.hosts == (("h1", 4222), ("h2", 4222), ("h3", 5000))
    assert u.store == "shop" and not u.tls
    assert u.server_urls == ["nats://h1:4222", "nats://h2:4222", "nats://h3:5000"]


def test_empty_path_is_the_default_store():
    """No path (or a bare '/') names the store 'streamlog'."""
    assert parse_url("nats://127.0.0.1:4222").store == "streamlog"
    assert parse_url("nats://127.0.0.1:4222/").store == "streamlog"


def test_credentials_and_tls():
    """user:pass@ and token@ go to every host; tls:// asks for TLS; secrets never print."""
    u = parse_url("tls://al%40ice:s3cr%3At@h1:4222,h2:4222/s")
    assert (u.user, u.password, u.token, u.tls) == ("al@ice", "s3cr:t", None, True)
    assert u.server_urls == ["tls://h1:4222", "tls://h2:4222"]
    assert "s3cr" not in repr(u) and "s3cr" not in str(u)
    assert str(u) == "tls://al%40ice:***@h1:4222,h2:4222/s"
    t = parse_url("nats://tok123@host/s")
    assert (t.token, t.user) == ("tok123", None) and str(t) == "nats://***@host:4222/s"


def test_ipv6_host():
    """A bracketed IPv6 literal keeps its brackets in the client URL."""
    u = parse_url("nats://[::1]:4333/s")
    assert u.hosts == (("::1", 4333),) and u.server_urls == ["nats://[::1]:4333"]


@pytest.mark.parametrize(
    "url",
    [
        "http://h:4222/s",
        "nats:/h:4222/s",
        "nats://h:0/s",
        "nats://h:65536/s",
        "nats://h:abc/s",
        "nats://h1:4222,,h2/s",
        "nats:///s",
        "nats://h/-s",
        "nats://h/s.x",
        "nats://h/a/b",
        "nats://h/" + "x" * 65,
        "nats://h/s?replicas=3",
        "nats://@h/s",
        "nats://:pw@h/s",
    ],
)
def test_malformed_urls_are_value_errors(url):
    """Each malformed URL or store name is a ValueError that names the URL."""
    with pytest.raises(ValueError, match="nats|tls|URL"):
        parse_url(url)


def test_error_text_hides_the_password():
    """A malformed URL's error does not echo its password."""
    with pytest.raises(ValueError) as info:
        parse_url("nats://u:hunter2@h/bad.name")
    assert "hunter2" not in str(info.value)


def test_old_server_or_no_jetstream_is_refused():
    """The server check names the URL and the reason."""
    with pytest.raises(StreamlogError, match=r"nats://x/s: nats-server 2\.11\.4 is too old"):
        check_server({"version": "2.11.4", "jetstream": True}, "nats://x/s")
    with pytest.raises(StreamlogError, match="does not have JetStream"):
        check_server({"version": "2.15.1"}, "nats://x/s")
    assert check_server({"version": "2.15.1", "jetstream": True}, "u") == (2, 15, 1)


def test_server_without_jetstream_is_refused(tmp_path):
    """Connecting to a core-only NATS server fails clearly, naming the URL."""
    server = NatsServer.start_single(tmp_path, jetstream=False)
    try:
        url = f"{server.client_url}/s"
        with pytest.raises(StreamlogError, match=f"{url}: .*JetStream"):
            Connection(url)
    finally:
        server.stop()


def test_unreachable_server_fails_within_the_connect_timeout():
    """A host that never answers (a non-routable address) is a StreamlogError naming the
    URL after the connect timeout, not a hang."""
    url = "nats://10.255.255.1:4222/s"
    start = time.monotonic()
    with pytest.raises(StreamlogError, match=r"nats://10\.255\.255\.1:4222/s: cannot connect "
                                             r"within 1 s"):
        Connection(url, connect_timeout=1.0)
    assert time.monotonic() - start < 1.0 + CONNECT_TIMEOUT_S  # bounded, with a wide margin


def test_refused_port_is_a_streamlog_error(nats_server):
    """A closed port is refused at once, with the URL in the error."""
    with pytest.raises(StreamlogError, match="127.0.0.1:1/s: cannot connect"):
        Connection("nats://127.0.0.1:1/s", connect_timeout=1.0)


def test_credentials_in_the_url_authenticate(tmp_path):
    """user:pass in the URL logs in; a wrong password is a StreamlogError without it, at
    once rather than after the connect timeout (the test would take 30 s otherwise)."""
    server = NatsServer(tmp_path, extra_config='authorization { user: "u", password: "pw" }')
    server.start()
    try:
        with Connection(f"nats://u:pw@{server.host_port}/s") as c:
            assert c.run(c.stream_names("streamlog.s.>")) == []
        with pytest.raises(StreamlogError, match="refused the credentials") as info:
            Connection(f"nats://u:wrong@{server.host_port}/s", connect_timeout=30.0)
        assert "wrong" not in str(info.value) and server.host_port in str(info.value)
    finally:
        server.stop()
