"""Invitations over real HTTP: the admin makes one, its link makes one account on a closed
server, and no more; withdrawn and expired ones make none; bad input changes nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from facecall.client.api import ApiClient
from facecall.client.errors import ApiError
from tests.api.test_admin import ADMIN_TOKEN, PASSWORD, admin, closed, run_cli, sign_in
from tests.live import LiveServer, live_server

__all__ = ["closed"]  # the fixture, shared with test_admin

USED = "this invitation was already used. Ask for a new one"


async def invite(server: LiveServer, **body: Any) -> dict[str, Any]:
    made = await server.http.post("/v1/admin/invites", headers=admin(), json=body)
    assert made.status_code == 201, made.text
    result: dict[str, Any] = made.json()
    return result


async def sign_up(server: LiveServer, username: str, code: str | None) -> Any:
    body: dict[str, Any] = {"username": username, "password": PASSWORD}
    if code is not None:
        body["invite"] = code
    return await server.http.post("/v1/accounts", json=body)


async def listed(server: LiveServer) -> list[dict[str, Any]]:
    answer = await server.http.get("/v1/admin/invites", headers=admin())
    result: list[dict[str, Any]] = answer.json()["invites"]
    return result


async def test_an_invitation_makes_one_account_on_a_closed_server(closed: LiveServer) -> None:
    made = await invite(closed, note="for Mum", valid_for_days=2)
    code = made["code"]
    assert made["link"] == f"{closed.base_url}/#invite={code}"
    assert made["invite"]["state"] == "open" and made["invite"]["note"] == "for Mum"
    assert made["invite"]["expires_at"] - made["invite"]["created_at"] == pytest.approx(2 * 86400)

    assert (await sign_up(closed, "mum", None)).status_code == 403  # closed without one
    mum = await sign_up(closed, "mum", code)
    assert mum.status_code == 201 and mum.json()["user"]["username"] == "mum"
    assert (await closed.http.get("/v1/me", headers={"Authorization": f"Bearer {mum.json()['token']}"})
            ).status_code == 200
    again = await sign_up(closed, "dad", code)
    assert again.status_code == 403 and again.json()["detail"] == USED
    assert await sign_in(closed, "dad") == 401
    [entry] = await listed(closed)
    assert (entry["state"], entry["used_by"], entry["note"]) == ("used", "mum", "for Mum")
    assert "code" not in entry  # shown once, never listed


async def test_a_taken_username_leaves_the_invitation_for_another_try(closed: LiveServer) -> None:
    await closed.http.post("/v1/admin/users", headers=admin(), json={"username": "ann", "password": PASSWORD})
    code = (await invite(closed))["code"]
    taken = await sign_up(closed, "ann", code)
    assert taken.status_code == 409
    assert (await sign_up(closed, "ann2", code)).status_code == 201


async def test_withdrawn_expired_and_unknown_invitations_make_no_account(closed: LiveServer) -> None:
    made = await invite(closed)
    withdrawn = await closed.http.delete(f"/v1/admin/invites/{made['invite']['id']}", headers=admin())
    assert withdrawn.status_code == 204
    assert (await closed.http.delete(f"/v1/admin/invites/{made['invite']['id']}",
                                     headers=admin())).status_code == 204  # idempotent
    refused = await sign_up(closed, "eve", made["code"])
    assert refused.status_code == 403
    assert refused.json()["detail"] == "this invitation was withdrawn. Ask for a new one"
    cut = await sign_up(closed, "eve", made["code"][:30])  # a link cut short, or never made
    assert cut.status_code == 403 and "it may have been cut short" in cut.json()["detail"]
    assert (await listed(closed))[0]["state"] == "withdrawn"
    assert (await closed.http.delete("/v1/admin/invites/no-such-invite", headers=admin())).status_code == 404

    brief = await invite(closed, valid_for_days=0.00002)  # ~1.7 s
    await asyncio.sleep(2.0)
    expired = await sign_up(closed, "eve", brief["code"])
    assert expired.status_code == 403
    assert expired.json()["detail"] == "this invitation has expired. Ask for a new one"
    assert [i["state"] for i in await listed(closed)] == ["expired", "withdrawn"]
    assert await sign_in(closed, "eve") == 401


async def test_a_used_invitation_cannot_be_withdrawn(closed: LiveServer) -> None:
    made = await invite(closed)
    assert (await sign_up(closed, "fay", made["code"])).status_code == 201
    r = await closed.http.delete(f"/v1/admin/invites/{made['invite']['id']}", headers=admin())
    assert r.status_code == 409
    assert (await listed(closed))[0]["used_by"] == "fay"
    # once the account is deleted, the list no longer names it
    assert (await closed.http.delete("/v1/admin/users/fay", headers=admin())).status_code == 204
    [entry] = await listed(closed)
    assert entry["state"] == "used" and entry["used_by"] is None


async def test_two_people_opening_one_link_make_one_account(closed: LiveServer) -> None:
    code = (await invite(closed))["code"]
    answers = await asyncio.gather(*(sign_up(closed, f"racer{i}", code) for i in range(4)))
    assert sorted(a.status_code for a in answers) == [201, 403, 403, 403]


async def test_an_invitation_on_an_open_server_is_used_up_too(tmp_path: Any) -> None:
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}", admin_token=ADMIN_TOKEN) as live:
        code = (await invite(live))["code"]
        assert (await sign_up(live, "gil", code)).status_code == 201
        assert (await sign_up(live, "hal", code)).status_code == 403  # a bad code is not ignored
        assert (await sign_up(live, "hal", None)).status_code == 201  # open: none needed


@pytest.mark.parametrize(("path", "body", "status"), [
    ("/v1/admin/invites", {"note": "n" * 65}, 422),
    ("/v1/admin/invites", {"note": "bidi\u202e"}, 422),
    ("/v1/admin/invites", {"valid_for_days": 0}, 422),
    ("/v1/admin/invites", {"valid_for_days": 91}, 422),
    ("/v1/admin/invites", {"valid_for_days": "forever"}, 422),
    ("/v1/admin/invites", {"uses": 5}, 422),
    ("/v1/accounts", {"username": "ivy", "password": PASSWORD, "invite": "short"}, 422),
    ("/v1/accounts", {"username": "ivy", "password": PASSWORD, "invite": "x" * 65}, 422),
    ("/v1/accounts", {"username": "ivy", "password": PASSWORD, "invite": "has spaces in it!!"}, 422),
    ("/v1/accounts", {"username": "ivy", "password": PASSWORD, "invite": 12345678901234567}, 422),
])
async def test_bad_input_is_refused_and_changes_nothing(closed: LiveServer, path: str, body: Any,
                                                        status: int) -> None:
    made = await invite(closed)
    r = await closed.http.post(path, json=body, headers=admin() if "admin" in path else {})
    assert r.status_code == status and "detail" in r.json()
    assert [i["state"] for i in await listed(closed)] == ["open"]
    assert (await sign_up(closed, "ivy", made["code"])).status_code == 201
    long_id = await closed.http.delete("/v1/admin/invites/" + "a" * 300, headers=admin())
    assert long_id.status_code == 404


async def test_the_invites_command_line(closed: LiveServer, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FACECALL_ADMIN_TOKEN", ADMIN_TOKEN)
    invites = ["admin", "--server", closed.base_url, "invites"]
    status, out, err = await run_cli([*invites, "add", "--note", "for Mum", "--days", "3"],
                                     monkeypatch, capsys)
    assert status == 0, err
    link = out.splitlines()[-1]
    assert link.startswith(f"{closed.base_url}/#invite=") and "the link is shown only now" in err
    code = link.partition("#invite=")[2]
    assert (await sign_up(closed, "mum", code)).status_code == 201

    status, out, err = await run_cli([*invites, "add"], monkeypatch, capsys)
    second_code = out.splitlines()[-1].partition("#invite=")[2]
    status, out, err = await run_cli([*invites, "list"], monkeypatch, capsys)
    assert status == 0 and "2 invitations" in err
    rows = [line.split() for line in out.splitlines() if line.split()[1:2] in (["open"], ["used"])]
    assert [(r[1], r[4]) for r in rows] == [("open", "-"), ("used", "mum")]
    status, out, _ = await run_cli([*invites, "withdraw", rows[0][0]], monkeypatch, capsys)
    assert status == 0 and "no longer works" in out
    assert (await sign_up(closed, "dad", second_code)).status_code == 403

    status, _, err = await run_cli([*invites, "withdraw", rows[1][0]], monkeypatch, capsys)
    assert status == 1 and "already used (HTTP 409)" in err
    status, _, err = await run_cli([*invites, "withdraw", "nope"], monkeypatch, capsys)
    assert status == 1 and "no such invitation (HTTP 404)" in err
    status, _, err = await run_cli([*invites, "add", "--days", "365"], monkeypatch, capsys)
    assert status == 1 and "(HTTP 422)" in err
    for days in ("nan", "inf", "-inf", "a week"):
        with pytest.raises(SystemExit) as usage:
            await run_cli([*invites, "add", f"--days={days}"], monkeypatch, capsys)
        assert usage.value.code == 2
        assert "not a number of days" in capsys.readouterr().err
    status, out, _ = await run_cli([*invites, "list", "--json"], monkeypatch, capsys)
    assert status == 0
    assert [i["state"] for i in json.loads(out[out.index("["):])] == ["withdrawn", "used"]


async def test_the_sdk_signs_up_with_an_invitation(closed: LiveServer) -> None:
    code = (await invite(closed))["code"]
    api = ApiClient(closed.base_url)
    try:
        with pytest.raises(ApiError) as refused:
            await api.sign_up("joan", PASSWORD)
        assert refused.value.status == 403 and "sign-up is closed" in refused.value.detail
        session = await api.sign_up("joan", PASSWORD, invite=code)
        assert session["user"]["username"] == "joan"
        with pytest.raises(ApiError) as used:
            await api.sign_up("kim", PASSWORD, invite=code)
        assert used.value.status == 403 and used.value.detail == USED
    finally:
        await api.close()
