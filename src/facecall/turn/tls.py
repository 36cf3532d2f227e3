"""TLS for the stream listeners (RFC 8656 §3.1 TLS-over-TCP): the server side of a TLS
session over a plain TCP transport, and a self-signed certificate for development."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def write_self_signed(directory: Path, names: list[str], days: int = 30) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (ECDSA P-256) for ``names`` (DNS names or IP
    addresses) into ``directory``; returns their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "facecall")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


TLS_READ_SIZE = 65536


class TlsClosed(Exception):
    """The client ended the TLS session (close_notify) or broke it (a TLS error)."""


class ServerTls:
    """The server side of one TLS session run over a plain TCP transport with
    :class:`ssl.SSLObject` on memory BIOs. The listener accepts TLS clients as plain TCP, so
    a connection is counted (and capped) from accept, and the handshake is timed by the
    connection itself; ``asyncio``'s ``start_tls`` would not do (under uvloop the
    ClientHello can reach the plain protocol before it takes over)."""

    def __init__(self, context: ssl.SSLContext, write: Callable[[bytes], None]) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._session = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._write = write
        self.established = False

    def receive(self, data: bytes) -> bytes:
        """Take ``data`` from the client; returns the application bytes it completed (none
        during the handshake). Raises :class:`TlsClosed` when the session is over."""
        self._incoming.write(data)
        try:
            if not self.established:
                self._session.do_handshake()
                self.established = True
            return self._read_all()
        except ssl.SSLWantReadError:
            return b""
        except (ssl.SSLError, OSError) as exc:  # SSLZeroReturnError (close_notify) included
            raise TlsClosed(str(exc)) from exc
        finally:
            self._flush()

    def _read_all(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._session.read(TLS_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def send(self, data: bytes) -> None:
        """Encrypt ``data`` to the client; dropped once the session has failed (the
        connection is then being closed)."""
        try:
            self._session.write(data)
        except (ssl.SSLError, OSError):
            return
        self._flush()

    def _flush(self) -> None:
        pending = self._outgoing.read()
        if pending:
            self._write(pending)
