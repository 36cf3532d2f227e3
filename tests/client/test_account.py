"""The SDK's account calls against a real server: rename me and my devices, change the password."""

from __future__ import annotations

import pytest

from facecall.client.api import ApiClient
from facecall.client.errors import ApiError, AuthenticationError
from tests.live import LiveServer

PASSWORD = "correct horse battery"


async def test_rename_and_change_password(server: LiveServer) -> None:
    api = ApiClient(server.base_url)
    try:
        session = await api.sign_up("alice", PASSWORD)
        device = await api.register_device(session["token"], "phone")
        renamed = await api.rename(device["token"], "Alice Liddell")
        assert renamed["display_name"] == "Alice Liddell"
        with pytest.raises(ApiError) as wrong:
            await api.change_password(session["token"], "not it", "a new secret")
        assert wrong.value.status == 403 and "current password is wrong" in str(wrong.value)
        with pytest.raises(ApiError) as short:
            await api.change_password(session["token"], PASSWORD, "short")
        assert short.value.status == 422 and "new_password" in str(short.value)
        with pytest.raises(ApiError) as device_token:  # an account token is needed
            await api.change_password(device["token"], PASSWORD, "a new secret")
        assert device_token.value.status == 403
        other = await api.register_device(session["token"], "tablet")
        await api.change_password(session["token"], PASSWORD, "a new secret",
                                  sign_out_other_devices=True, this_device_id=device["device"]["id"])
        assert (await api.me(device["token"]))["display_name"] == "Alice Liddell"
        with pytest.raises(AuthenticationError):
            await api.me(other["token"])  # removed
        with pytest.raises(AuthenticationError):
            await api.sign_in("alice", PASSWORD)
        assert (await api.sign_in("alice", "a new secret"))["user"]["display_name"] == "Alice Liddell"
        with pytest.raises(ApiError) as wrong:
            await api.delete_account(session["token"], "not it")
        assert wrong.value.status == 403
        await api.delete_account(session["token"], "a new secret")
        with pytest.raises(AuthenticationError):
            await api.sign_in("alice", "a new secret")
        with pytest.raises(AuthenticationError):
            await api.me(device["token"])
    finally:
        await api.close()


async def test_rename_device(server: LiveServer) -> None:
    api = ApiClient(server.base_url)
    try:
        session = await api.sign_up("alice", PASSWORD)
        phone = await api.register_device(session["token"], "phone")
        laptop = await api.register_device(session["token"], "laptop")
        renamed = await api.rename_device(session["token"], phone["device"]["id"], " Kitchen iPad ")
        assert renamed == {**phone["device"], "name": "Kitchen iPad"}
        itself = await api.rename_device(laptop["token"], laptop["device"]["id"], "my laptop")
        assert itself["name"] == "my laptop"
        with pytest.raises(ApiError) as other:  # a device token renames its own device only
            await api.rename_device(laptop["token"], phone["device"]["id"], "mine")
        assert other.value.status == 403
        with pytest.raises(ApiError) as bad:
            await api.rename_device(session["token"], phone["device"]["id"], "n" * 65)
        assert bad.value.status == 422 and "name" in str(bad.value)
        with pytest.raises(ApiError) as unknown:
            await api.rename_device(session["token"], "no such device #1?", "x")
        assert unknown.value.status == 404 and str(unknown.value).endswith("no such device")
        with pytest.raises(AuthenticationError):
            await api.rename_device("nonsense", phone["device"]["id"], "x")
        listed = await server.http.get("/v1/devices", headers={"Authorization": f"Bearer {session['token']}"})
        assert [d["name"] for d in listed.json()] == ["Kitchen iPad", "my laptop"]
    finally:
        await api.close()
