"""Closed sign-up and the admin API (/v1/admin) over real HTTP, and `facecall admin` against it."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from facecall.cli import main
from facecall.client.signaling import SignalingConnection
from tests.live import LiveServer, live_server

ADMIN_TOKEN = "an-admin-token-of-32-characters!"
PASSWORD = "correct horse battery"


def admin(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def closed(tmp_path: Path) -> AsyncIterator[LiveServer]:
    """A node whose sign-up is closed, with the admin API on."""
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}", sign_up="closed",
                           admin_token=ADMIN_TOKEN) as live:
        yield live


async def made_by_the_admin(server: LiveServer, username: str, devices: int = 0,
                            ) -> tuple[dict[str, Any], list[SignalingConnection]]:
    """An account the admin API created, signed in, with ``devices`` connected devices."""
    made = await server.http.post("/v1/admin/users", headers=admin(),
                                  json={"username": username, "password": PASSWORD})
    assert made.status_code == 201, made.text
    session = (await server.http.post("/v1/sessions", json={"username": username,
                                                            "password": PASSWORD})).json()
    return session, await server.connected_devices(session, devices)


async def sign_in(server: LiveServer, username: str, password: str = PASSWORD) -> int:
    r = await server.http.post("/v1/sessions", json={"username": username, "password": password})
    return r.status_code


async def test_closed_sign_up_and_accounts_made_by_the_admin(closed: LiveServer) -> None:
    info = await closed.http.get("/v1/server")
    assert info.status_code == 200 and info.json()["sign_up"] == "closed"
    refused = await closed.http.post("/v1/accounts", json={"username": "alice", "password": PASSWORD})
    assert refused.status_code == 403
    assert refused.json()["detail"] == \
        "sign-up is closed on this server: ask its administrator for an account or an invitation"
    made = await closed.http.post("/v1/admin/users", headers=admin(), json={
        "username": "Alice", "password": PASSWORD, "display_name": "Alice Liddell"})
    assert made.status_code == 201
    assert made.json()["username"] == "alice" and made.json()["display_name"] == "Alice Liddell"
    assert await sign_in(closed, "alice") == 200
    again = await closed.http.post("/v1/admin/users", headers=admin(),
                                   json={"username": "alice", "password": PASSWORD})
    assert again.status_code == 409


async def test_list_users_pages_by_username(closed: LiveServer) -> None:
    for name in ("carol", "alice", "bob"):
        r = await closed.http.post("/v1/admin/users", headers=admin(),
                                   json={"username": name, "password": PASSWORD})
        assert r.status_code == 201
    session = (await closed.http.post("/v1/sessions", json={"username": "bob", "password": PASSWORD})).json()
    await closed.register_device(session["token"], "phone")
    first = (await closed.http.get("/v1/admin/users?limit=2", headers=admin())).json()
    assert [(u["username"], u["devices"]) for u in first["users"]] == [("alice", 0), ("bob", 1)]
    assert first["next_after"] == "bob"
    rest = (await closed.http.get("/v1/admin/users?limit=2&after=bob", headers=admin())).json()
    assert [u["username"] for u in rest["users"]] == ["carol"] and rest["next_after"] is None


async def test_reset_password_and_delete(closed: LiveServer) -> None:
    bob, (b1,) = await made_by_the_admin(closed, "bob", devices=1)
    carol, (c1,) = await made_by_the_admin(closed, "carol", devices=1)
    r = await closed.http.put("/v1/admin/users/bob/password", headers=admin(),
                              json={"new_password": "a new secret"})
    assert r.status_code == 204
    assert await sign_in(closed, "bob") == 401 and await sign_in(closed, "bob", "a new secret") == 200
    me = await closed.http.get("/v1/me", headers={"Authorization": f"Bearer {bob['token']}"})
    assert me.status_code == 401
    assert (await b1.request("ping"))["type"] == "pong"  # devices stay unless asked
    r = await closed.http.put("/v1/admin/users/bob/password", headers=admin(),
                              json={"new_password": "another secret", "sign_out_devices": True})
    assert r.status_code == 204
    assert (await b1.next_event("connection.closed"))["code"] == 4009

    r = await closed.http.delete("/v1/admin/users/carol", headers=admin())
    assert r.status_code == 204
    assert (await c1.next_event("connection.closed"))["code"] == 4009
    assert await sign_in(closed, "carol") == 401
    listed = (await closed.http.get("/v1/admin/users", headers=admin())).json()
    assert [u["username"] for u in listed["users"]] == ["bob"]
    assert carol["user"]["id"] not in {u["id"] for u in listed["users"]}


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/v1/admin/users", None),
    ("POST", "/v1/admin/users", {"username": "mallory", "password": PASSWORD}),
    ("PUT", "/v1/admin/users/alice/password", {"new_password": "pwned-pwned"}),
    ("DELETE", "/v1/admin/users/alice", None),
    ("GET", "/v1/admin/invites", None),
    ("POST", "/v1/admin/invites", {"note": "for mallory"}),
    ("DELETE", "/v1/admin/invites/some-id", None),
])
async def test_admin_api_wants_the_admin_token(closed: LiveServer, method: str, path: str,
                                               body: Any) -> None:
    alice, _ = await made_by_the_admin(closed, "alice")
    for headers in ({}, admin("wrong-token-of-32-characters-xx!"), admin(ADMIN_TOKEN[:-1]),
                    {"Authorization": f"Bearer {alice['token']}"}, {"Authorization": "Basic YWRtaW4="}):
        r = await closed.http.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["detail"] == "the admin API wants the admin token"
    assert await sign_in(closed, "alice") == 200
    assert await sign_in(closed, "mallory") == 401


async def test_admin_api_is_off_without_a_token(server: LiveServer) -> None:
    r = await server.http.get("/v1/admin/users", headers=admin())
    assert r.status_code == 403
    assert "FACECALL_ADMIN_TOKEN" in r.json()["detail"]
    # sign-up is open by default
    assert (await server.http.get("/v1/server")).json()["sign_up"] == "open"
    assert (await server.http.post("/v1/accounts", json={"username": "alice",
                                                         "password": PASSWORD})).status_code == 201


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("GET", "/v1/admin/users?limit=0", None, 422),
    ("GET", "/v1/admin/users?limit=100000", None, 422),
    ("GET", "/v1/admin/users?after=" + "x" * 65, None, 422),
    ("POST", "/v1/admin/users", {"username": "x", "password": PASSWORD}, 422),
    ("POST", "/v1/admin/users", {"username": "dave", "password": "short"}, 422),
    ("POST", "/v1/admin/users", {"username": "dave", "password": PASSWORD, "admin": True}, 422),
    ("PUT", "/v1/admin/users/nobody/password", {"new_password": "a new secret"}, 404),
    ("PUT", "/v1/admin/users/alice/password", {"new_password": "short"}, 422),
    ("PUT", "/v1/admin/users/alice/password", {}, 422),
    ("PUT", "/v1/admin/users/bad%20name/password", {"new_password": "a new secret"}, 422),
    ("DELETE", "/v1/admin/users/nobody", None, 404),
    ("DELETE", "/v1/admin/users/" + "a" * 300, None, 422),
])
async def test_admin_api_refuses_bad_input_and_changes_nothing(
        closed: LiveServer, method: str, path: str, body: Any, status: int) -> None:
    await made_by_the_admin(closed, "alice")
    r = await closed.http.request(method, path, json=body, headers=admin())
    assert r.status_code == status
    assert "detail" in r.json()
    assert await sign_in(closed, "alice") == 200
    listed = (await closed.http.get("/v1/admin/users", headers=admin())).json()
    assert [u["username"] for u in listed["users"]] == ["alice"]


async def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                  stdin: str = "") -> tuple[int, str, str]:
    """`facecall ARGV` in a thread (this loop serves the node), its output and exit status."""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    status = await asyncio.to_thread(main, argv)
    out, err = capsys.readouterr()
    return status, out, err


async def test_the_admin_command_line(closed: LiveServer, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    server = ["admin", "--server", closed.base_url, "users"]
    monkeypatch.delenv("FACECALL_ADMIN_TOKEN", raising=False)
    status, _, err = await run_cli([*server, "list"], monkeypatch, capsys)
    assert status == 2 and "set FACECALL_ADMIN_TOKEN" in err
    monkeypatch.setenv("FACECALL_ADMIN_TOKEN", "wrong-token-of-32-characters-xx!")
    status, _, err = await run_cli([*server, "list"], monkeypatch, capsys)
    assert status == 1 and "the admin API wants the admin token (HTTP 401)" in err
    monkeypatch.setenv("FACECALL_ADMIN_TOKEN", ADMIN_TOKEN + "\n")  # read from a file: the line break goes

    status, out, _ = await run_cli([*server, "add", "alice", "--display-name", "Alice L"],
                                   monkeypatch, capsys, stdin=PASSWORD + "\n")
    assert status == 0 and out.splitlines()[-1].startswith("created alice (")  # after the node's log
    assert await sign_in(closed, "alice") == 200
    status, _, err = await run_cli([*server, "add", "alice"], monkeypatch, capsys, stdin=PASSWORD + "\n")
    assert status == 1 and "username is taken (HTTP 409)" in err
    status, _, err = await run_cli([*server, "add", "bob"], monkeypatch, capsys, stdin="")
    assert status == 2 and "no password on standard input" in err
    status, _, err = await run_cli([*server, "add", "bob"], monkeypatch, capsys, stdin="short\n")
    assert status == 1 and "(HTTP 422)" in err and "password" in err

    status, out, _ = await run_cli([*server, "list"], monkeypatch, capsys)
    assert status == 0
    table = out.splitlines()[-2:]  # the node (in this process) may log before it
    assert table[0].split() == ["USERNAME", "CREATED", "DEVICES", "DISPLAY", "NAME"]
    assert table[1].split()[0] == "alice" and table[1].endswith("Alice L")

    status, out, _ = await run_cli([*server, "passwd", "alice"], monkeypatch, capsys,
                                   stdin="a new secret\n")
    assert status == 0 and "set the password of alice" in out
    assert await sign_in(closed, "alice", "a new secret") == 200

    status, _, err = await run_cli([*server, "delete", "alice"], monkeypatch, capsys)
    assert status == 2 and "--yes" in err
    assert await sign_in(closed, "alice", "a new secret") == 200
    status, out, _ = await run_cli([*server, "delete", "alice", "--yes"], monkeypatch, capsys)
    assert status == 0 and out.splitlines()[-1] == "deleted alice"
    assert await sign_in(closed, "alice", "a new secret") == 401
    status, _, err = await run_cli([*server, "delete", "alice", "--yes"], monkeypatch, capsys)
    assert status == 1 and "no user named alice (HTTP 404)" in err

    status, _, err = await run_cli(["admin", "--server", "http://127.0.0.1:9", "users", "list"],
                                   monkeypatch, capsys)
    assert status == 1 and "cannot reach http://127.0.0.1:9" in err


async def test_the_admin_command_line_never_takes_a_redirect_for_done(
        closed: LiveServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A proxy's http→https redirect (or any 3xx) did nothing: the command says so and fails."""
    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 301 Moved Permanently\r\nLocation: https://call.example.org/\r\n"
                     b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    front = await asyncio.start_server(redirect, "127.0.0.1", 0)
    port = front.sockets[0].getsockname()[1]
    monkeypatch.setenv("FACECALL_ADMIN_TOKEN", ADMIN_TOKEN)
    status, _, _ = await run_cli(["admin", "--server", closed.base_url, "users", "add", "victim"],
                                 monkeypatch, capsys, stdin=PASSWORD + "\n")
    assert status == 0
    try:
        for argv in (["users", "delete", "victim", "--yes"], ["users", "list"],
                     ["users", "passwd", "victim"], ["invites", "withdraw", "some-id"]):
            status, out, err = await run_cli(["admin", "--server", f"http://127.0.0.1:{port}", *argv],
                                             monkeypatch, capsys, stdin="a new secret\n")
            assert status == 1, argv
            assert "redirects to https://call.example.org/ (HTTP 301); nothing was done" in err
            assert "deleted" not in out and "withdrew" not in out and "Traceback" not in err
    finally:
        front.close()
        await front.wait_closed()
    assert await sign_in(closed, "victim") == 200  # still there
    for argv in (["users", "delete", "", "--yes"], ["invites", "withdraw", " "]):  # not "all of them"
        with pytest.raises(SystemExit) as usage:  # argparse: a usage error
            await run_cli(["admin", "--server", closed.base_url, *argv], monkeypatch, capsys)
        out, err = capsys.readouterr()
        assert usage.value.code == 2 and "must not be empty" in err and out == ""
    status, _, err = await run_cli(["admin", "--server", "127.0.0.1:9", "users", "list"], monkeypatch, capsys)
    assert status == 2 and "--server wants the node's URL" in err
    status, out, _ = await run_cli(["admin", "--server", closed.base_url, "users", "passwd", "victim"],
                                   monkeypatch, capsys, stdin="a new secret\n")
    assert status == 0 and "its devices stay signed in (--sign-out-devices removes them)" in out
