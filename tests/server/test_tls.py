"""HTTPS and WSS on the node's own port (FACECALL_TLS_CERT / FACECALL_TLS_KEY).

The fixture's teardown stops the node while the test's HTTP client still holds an idle TLS
connection: the node must not wait for that client's close_notify (it used to, 30 s)."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from facecall.config import Settings, SettingsError
from facecall.turn.tls import write_self_signed
from tests.live import LiveServer, live_server


@pytest.fixture
def pem(tmp_path: Path) -> tuple[Path, Path]:
    return write_self_signed(tmp_path / "tls", ["127.0.0.1", "localhost"])


@pytest.fixture
async def tls_server(tmp_path: Path, pem: tuple[Path, Path]) -> AsyncIterator[LiveServer]:
    cert, key = pem
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}", tls_cert=str(cert),
                           tls_key=str(key)) as live:
        yield live


async def test_api_and_signaling_over_tls(tls_server: LiveServer, pem: tuple[Path, Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert tls_server.base_url.startswith("https://") and tls_server.ws_url.startswith("wss://")
    assert (await tls_server.http.get("/healthz")).json()["status"] == "ok"
    # the SDK's signaling trusts what the system does; SSL_CERT_FILE adds a private CA
    monkeypatch.setenv("SSL_CERT_FILE", str(pem[0]))
    _alice, (a1,) = await tls_server.user_with_devices("alice", 1)
    bob, (b1,) = await tls_server.user_with_devices("bob", 1)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    assert (await b1.next_event("call.ring"))["call_id"] == call_id
    # plain HTTP on the TLS port gets nowhere, and the node goes on
    async with httpx.AsyncClient(timeout=5) as plain:
        with pytest.raises(httpx.HTTPError):
            await plain.get(tls_server.base_url.replace("https://", "http://") + "/healthz")
    # a client that does not trust the certificate is refused by its own TLS
    async with httpx.AsyncClient(timeout=5, trust_env=False) as untrusting:
        with pytest.raises(httpx.ConnectError):
            await untrusting.get(tls_server.base_url + "/healthz")
    assert (await b1.request("ping"))["type"] == "pong"


def test_tls_settings_are_checked(tmp_path: Path, pem: tuple[Path, Path]) -> None:
    cert, key = pem
    other_cert, other_key = write_self_signed(tmp_path / "other", ["127.0.0.1"])
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    settings = Settings.from_env({"FACECALL_TLS_CERT": str(cert), "FACECALL_TLS_KEY": str(key)})
    assert settings.base_url.startswith("https://")
    cases = [
        ({"FACECALL_TLS_CERT": str(cert)},
         "(--tls-cert / --tls-key): a certificate and its key go together"),
        ({"FACECALL_TLS_CERT": str(tmp_path / "missing.pem"), "FACECALL_TLS_KEY": str(key)},
         "FACECALL_TLS_CERT="),
        ({"FACECALL_TLS_CERT": str(garbage), "FACECALL_TLS_KEY": str(key)}, "do not load together"),
        ({"FACECALL_TLS_CERT": str(cert), "FACECALL_TLS_KEY": str(other_key)}, "do not load together"),
    ]
    for env, message in cases:
        with pytest.raises(SettingsError) as refused:
            Settings.from_env(env)
        assert message in str(refused.value), (env, str(refused.value))
    assert other_cert.exists()


def test_serve_refuses_a_key_without_its_certificate(tmp_path: Path, pem: tuple[Path, Path]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "facecall", "serve", "--no-turn", "--port", "9", "--tls-key", str(pem[1]),
         "--database-url", f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("facecall: FACECALL_TLS_CERT / FACECALL_TLS_KEY (--tls-cert / "
                                   "--tls-key): a certificate and its key go together: give both or neither")
    assert ssl.OPENSSL_VERSION  # the node's TLS is Python's ssl (OpenSSL)
