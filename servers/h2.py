"""HTTP/2: the SSE stream and the POSTs of :mod:`wirewise.servers.sse`, multiplexed on one connection.

Nothing here handles requests: hypercorn serves the same application over HTTP/2, cleartext
with prior knowledge by default, or TLS with ALPN (browsers speak HTTP/2 only over TLS). This
module builds hypercorn's configuration and, for ``--tls`` alone, a self-signed certificate.
The two fixes hypercorn needs to be safe to expose are in :mod:`wirewise.servers.patches`.

Memory: hypercorn and h2 hold ~30 KiB per HTTP/2 connection and ~13 KiB per stream on it
(asyncio events and queues, the h2 state machines, hpack tables, the priority tree), which no
setting changes: ``max_app_queue_size`` bounds a queue's length, not its allocation, and
flow-control windows are counters, not buffers. ~9.6 KiB of it is h2 4.x keeping each of the
12-14 settings of a connection in its own ``collections.deque`` (a 64-slot block each); a list
would do, but wirewise measures the libraries as they ship, so that is not patched here.

    curl -N --http2-prior-knowledge -H "Authorization: Bearer $T" \\
        http://127.0.0.1:8000/rooms/general/stream?after=0
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypercorn.config import Config

from wirewise.servers.config import Settings

MAX_STREAMS = 1000
"""Concurrent streams per connection (hypercorn's default is 100)."""


def self_signed(directory: Path | None = None, host: str = "localhost") -> tuple[Path, Path]:
    """A certificate and key for localhost / 127.0.0.1 / ::1, valid for 30 days."""
    directory = directory or Path(tempfile.mkdtemp(prefix="wirewise-tls-"))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.timezone.utc)
    alt = x509.SubjectAlternativeName(
        [
            x509.DNSName(host),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(alt, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    keyfile.chmod(0o600)
    return certfile, keyfile


def hypercorn_config(
    fd: int, settings: Settings, certfile: Path | None = None, keyfile: Path | None = None
) -> Config:
    config = Config()
    config.bind = [f"fd://{fd}"]
    config.certfile = str(certfile) if certfile else None
    config.keyfile = str(keyfile) if keyfile else None
    config.loglevel = "WARNING"
    config.accesslog = None
    config.graceful_timeout = 5.0
    config.keep_alive_timeout = settings.header_timeout  # also closes slow-header connections
    config.h2_max_concurrent_streams = MAX_STREAMS
    # hypercorn's default (1000) sends GOAWAY after that many requests on a connection, which
    # ends every SSE stream multiplexed on it: one client's POSTs would cut its own streams.
    config.keep_alive_max_requests = 2**31
    config.h11_max_incomplete_size = 16 * 1024
    config.websocket_max_message_size = settings.max_frame
    config.backlog = 2048
    return config
