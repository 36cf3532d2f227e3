"""Accounts over real HTTP: sign up, sign in, tokens, and bad input."""

from __future__ import annotations

import pytest

from tests.live import LiveServer


async def test_sign_up_sign_in_me(server: LiveServer) -> None:
    account = await server.sign_up("alice")
    assert account["user"]["username"] == "alice"
    r = await server.http.post("/v1/sessions", json={"username": "ALICE",
                                                     "password": "correct horse battery"})
    assert r.status_code == 200
    token = r.json()["token"]
    assert token != account["token"]
    me = await server.http.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["id"] == account["user"]["id"]


async def test_duplicate_username_is_409_and_first_account_survives(server: LiveServer) -> None:
    await server.sign_up("bob")
    r = await server.http.post("/v1/accounts", json={"username": "Bob", "password": "x" * 12})
    assert r.status_code == 409
    assert r.json()["detail"] == "username is taken"
    ok = await server.http.post("/v1/sessions", json={"username": "bob",
                                                      "password": "correct horse battery"})
    assert ok.status_code == 200


@pytest.mark.parametrize("body", [
    {"username": "al", "password": "longenough"},  # too short
    {"username": "a" * 33, "password": "longenough"},  # too long
    {"username": "bad name", "password": "longenough"},  # space
    {"username": "carol", "password": "short"},
    {"username": "carol", "password": "x" * 257},
    {"username": "carol"},
    {"username": 5, "password": "longenough"},
    {"username": "carol", "password": "longenough", "admin": True},  # unknown field
])
async def test_sign_up_rejects_bad_input(server: LiveServer, body: dict[str, object]) -> None:
    r = await server.http.post("/v1/accounts", json=body)
    assert r.status_code == 422
    assert (await server.http.post("/v1/sessions", json={"username": "carol",
                                                         "password": "longenough"})).status_code == 401


async def test_malformed_json_body(server: LiveServer) -> None:
    r = await server.http.post("/v1/accounts", content=b"{not json",
                               headers={"content-type": "application/json"})
    assert r.status_code == 422


async def test_wrong_password_and_unknown_user_look_the_same(server: LiveServer) -> None:
    await server.sign_up("dave")
    wrong = await server.http.post("/v1/sessions", json={"username": "dave", "password": "nope-nope"})
    unknown = await server.http.post("/v1/sessions", json={"username": "erin", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


@pytest.mark.parametrize("header", [
    None, "Bearer", "Bearer nonsense", "Basic abc", "Bearer " + "x" * 5000,
])
async def test_bad_tokens_are_401(server: LiveServer, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    r = await server.http.get("/v1/me", headers=headers)
    assert r.status_code in (401, 403)
    assert "detail" in r.json()


async def test_sign_out_revokes_the_token(server: LiveServer) -> None:
    account = await server.sign_up("frank")
    auth = {"Authorization": f"Bearer {account['token']}"}
    assert (await server.http.delete("/v1/sessions/current", headers=auth)).status_code == 204
    assert (await server.http.get("/v1/me", headers=auth)).status_code == 401


async def test_find_user(server: LiveServer) -> None:
    a = await server.sign_up("grace")
    await server.sign_up("heidi")
    auth = {"Authorization": f"Bearer {a['token']}"}
    r = await server.http.get("/v1/users/heidi", headers=auth)
    assert r.status_code == 200 and r.json()["username"] == "heidi"
    assert (await server.http.get("/v1/users/nobody", headers=auth)).status_code == 404
    assert (await server.http.get("/v1/users/heidi")).status_code == 401


async def test_health_metrics_openapi(server: LiveServer) -> None:
    assert (await server.http.get("/healthz")).json()["status"] == "ok"
    metrics = await server.http.get("/metrics")
    assert metrics.status_code == 200 and "python_info" in metrics.text
    for family in ("facecall_connected_devices", "facecall_sfu_rooms", "facecall_sfu_participants",
                   "facecall_sfu_forwarded_packets_total", "facecall_turn_allocations"):
        assert f"\n{family} " in metrics.text, family
    spec = (await server.http.get("/openapi.json")).json()
    assert "/v1/accounts" in spec["paths"] and "/v1/turn/credentials" in spec["paths"]


async def test_metrics_token(tmp_path: object) -> None:
    from tests.live import live_server

    async with live_server(f"sqlite+aiosqlite:///{tmp_path}/m.db", metrics_token="s3cret") as srv:
        account = await srv.sign_up("metrics-reader")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"},
                        {"Authorization": f"Bearer {account['token']}"},  # a user's token is not it
                        {"Authorization": "Bearer " + "x" * 10_000}):
            r = await srv.http.get("/metrics", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = await srv.http.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and "python_info" in r.text
    async with live_server(f"sqlite+aiosqlite:///{tmp_path}/n.db", metrics_token="pässwort") as srv:
        r = await srv.http.get("/metrics", headers={"Authorization": "Bearer pässwort".encode()})
        assert r.status_code == 200  # a token beyond ASCII works, sent as UTF-8


async def test_api_docs_are_served_by_the_node(server: LiveServer) -> None:
    """/docs loads Swagger UI from this server (tests/web/test_api_docs.py renders it);
    ReDoc is not offered: its bundle fetches a logo from a third party."""
    page = await server.http.get("/docs")
    assert page.status_code == 200 and "https://" not in page.text
    assert (await server.http.get("/api-docs-assets/swagger-ui-bundle.js")).status_code == 200
    assert (await server.http.get("/redoc")).status_code == 404


async def test_expired_account_token_is_refused(tmp_path: object) -> None:
    import asyncio

    from tests.live import live_server

    async with live_server(f"sqlite+aiosqlite:///{tmp_path}/t.db", user_token_ttl=1.0) as srv:
        account = await srv.sign_up("shortlived")
        auth = {"Authorization": f"Bearer {account['token']}"}
        assert (await srv.http.get("/v1/me", headers=auth)).status_code == 200
        await asyncio.sleep(1.5)
        expired = await srv.http.get("/v1/me", headers=auth)
        assert expired.status_code == 401
        assert "expired" in expired.json()["detail"]


async def test_oversized_bodies_are_refused_before_they_are_read(server: LiveServer) -> None:
    big = b'{"username": "' + b"x" * 200_000 + b'", "password": "longenough"}'
    r = await server.http.post("/v1/accounts", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]

    async def chunks():  # no Content-Length: the limit counts what arrives
        for _ in range(20):
            yield b" " * 10_000

    r = await server.http.post("/v1/accounts", content=chunks(),
                               headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert (await server.http.get("/healthz")).status_code == 200
    await server.sign_up("after-the-flood")


@pytest.mark.parametrize("raw", [
    b'{"username": "alice", "password": "x\\ud800xxxxxxx"}',  # a lone surrogate (escaped)
    b'{"username": "alice", "password": "longenough", "display_name": "x\\udfff"}',
    b'{"username": NaN, "password": "longenough"}',
    b'{"username": "alice", "password": Infinity}',
    b'{"username": "alice", "password": "longenough", "x\\udc80": 1}',  # an unknown key
])
async def test_unrenderable_input_gets_a_422_naming_the_field(server: LiveServer, raw: bytes) -> None:
    r = await server.http.post("/v1/accounts", content=raw,
                               headers={"content-type": "application/json"})
    assert r.status_code == 422
    errors = r.json()["detail"]
    assert errors and all({"loc", "msg", "type"} <= set(e) for e in errors)
    assert errors[0]["loc"][0] == "body"
    assert (await server.http.post("/v1/sessions", json={"username": "alice",
                                                         "password": "longenough"})).status_code == 401


@pytest.mark.parametrize("name", [
    "\u202eevil",  # right-to-left override
    "\x1b[2J\x1b[31mADMIN",  # terminal escapes
    "two\nlines",
    "bell\x07",
    "   ",  # nothing to show
    "",
])
async def test_display_names_other_people_see_are_clean(server: LiveServer, name: str) -> None:
    r = await server.http.post("/v1/accounts", json={"username": "shown", "password": "longenough",
                                                     "display_name": name})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "display_name"]


async def test_display_names_are_trimmed_and_keep_emoji(server: LiveServer) -> None:
    r = await server.http.post("/v1/accounts", json={
        "username": "family", "password": "longenough",
        "display_name": "  The \U0001F468\u200D\U0001F469\u200D\U0001F467 family\uFE0F  "})
    assert r.status_code == 201
    assert r.json()["user"]["display_name"] == \
        "The \U0001F468\u200D\U0001F469\u200D\U0001F467 family\uFE0F"


async def test_methods_and_paths_of_the_api(server: LiveServer) -> None:
    head = await server.http.head("/healthz")
    assert head.status_code == 200
    wrong = await server.http.get("/v1/accounts")  # a POST-only route
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert (await server.http.put("/v1/accounts")).status_code == 405
    # every method of the path, though two routes serve it (RFC 9110 §15.5.6)
    both = await server.http.delete("/v1/devices")
    assert both.status_code == 405 and both.headers["allow"] == "GET, POST"
    assert both.json() == {"detail": "Method Not Allowed"}
    for method, path in (("POST", "/index.html"), ("PUT", "/"),
                         ("POST", "/api-docs-assets/swagger-ui.css")):  # static files
        static = await server.http.request(method, path)
        assert static.status_code == 405 and static.headers["allow"] == "GET, HEAD"
    missing = await server.http.get("/v1/no-such-thing")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found"}
    page = await server.http.get("/")  # the web client is still served at /
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
