"""tls:// URLs against a real nats-server with a self-signed certificate made here."""

from __future__ import annotations

import ssl
import subprocess

import pytest

from streamlog.backends.jetstream._client import Connection
from streamlog.backends.jetstream.server import NatsServer
from streamlog.errors import StreamlogError


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """A JetStream node that requires TLS, with a fresh self-signed cert for 127.0.0.1."""
    d = tmp_path_factory.mktemp("nats-tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    server = NatsServer(d / "server",
                        extra_config=f'tls {{ cert_file: "{cert}", key_file: "{key}" }}')
    server.start()
    yield server, cert
    server.stop()


def test_tls_url_with_a_trusted_certificate(tls_server):
    """tls:// plus an SSL context that trusts the certificate connects and publishes."""
    server, cert = tls_server
    ctx = ssl.create_default_context(cafile=str(cert))
    with Connection(f"tls://{server.host_port}/secure", nats_options={"tls": ctx}) as c:
        c.run(c.ensure_stream("TLS", ["tls.x"]))
        assert c.run(c.publish("tls.x", b"over tls")).seq == 1
        assert c.run(c.get_message("TLS", 1)).data == b"over tls"


def test_tls_url_with_an_untrusted_certificate_is_refused(tls_server):
    """Without trust in the self-signed certificate the default TLS check fails: a
    StreamlogError naming the URL, within the connect timeout."""
    server, _ = tls_server
    with pytest.raises(StreamlogError, match=f"tls://{server.host_port}/secure: cannot connect"):
        Connection(f"tls://{server.host_port}/secure", connect_timeout=2.0)
