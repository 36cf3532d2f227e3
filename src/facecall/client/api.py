"""The HTTP side of the SDK: accounts, devices, user lookup, TURN credentials (docs in /openapi.json)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from facecall.client.errors import ApiError, AuthenticationError, UnknownUserError

MAX_DETAIL_CHARS = 200


def error_detail(response: httpx.Response) -> str:
    """One readable line for a refusal: the server's ``detail`` (a validation error's messages,
    joined), else the body's first line, else (an HTML page: not a facecall server) the reason."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # FastAPI's validation errors: [{"loc": [...], "msg": ...}]
        detail = "; ".join(_validation_message(item) for item in detail)
    elif detail is None:
        first = response.text.strip().split("\n", 1)[0].strip()
        html = first.startswith("<")
        detail = f"{response.reason_phrase} (not a facecall server?)" if html or not first else first
    return str(detail)[:MAX_DETAIL_CHARS]


def _validation_message(item: object) -> str:
    if not isinstance(item, dict):
        return str(item)
    field = item.get("loc", [])[-1:] if isinstance(item.get("loc"), list) else []
    message = str(item.get("msg", item))
    return f"{field[0]}: {message}" if field and field[0] != "body" else message


class ApiClient:
    """A thin client of the facecall HTTP API; raises :class:`ApiError` subclasses on refusals."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def close(self) -> None:
        await self.http.aclose()

    @property
    def ws_url(self) -> str:
        """The signaling WebSocket URL of this server."""
        scheme, rest = self.base_url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/v1/signaling"

    async def _call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = await self.http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            cls = AuthenticationError if response.status_code == 401 else ApiError
            raise cls(response.status_code, error_detail(response))
        return response.json() if response.content else None

    async def sign_up(self, username: str, password: str, invite: str | None = None) -> dict[str, Any]:
        """Create an account; returns the session (``token``, ``user``). ``invite``: the code of
        an invitation (the ``#invite=`` part of its link), which a server whose sign-up is
        closed asks for; it is used up."""
        body = {"username": username, "password": password}
        if invite is not None:
            body["invite"] = invite
        result: dict[str, Any] = await self._call("POST", "/v1/accounts", json=body)
        return result

    async def sign_in(self, username: str, password: str,
                      device_token: str | None = None) -> dict[str, Any]:
        """Sign in; returns the session (``token``, ``user``). ``device_token``: a device of
        that account this client runs, whose sign-in the failed sign-ins of guessers elsewhere
        then do not hold back."""
        result: dict[str, Any] = await self._call(
            "POST", "/v1/sessions", token=device_token,
            json={"username": username, "password": password})
        return result

    async def register_device(self, account_token: str, name: str, kind: str = "sdk",
                              identity_key: str | None = None) -> dict[str, Any]:
        """Register a device, with its public identity key if given; returns ``{device,
        token}`` (the token is shown once)."""
        body: dict[str, Any] = {"kind": kind, "name": name}
        if identity_key is not None:
            body["identity_key"] = identity_key
        result: dict[str, Any] = await self._call("POST", "/v1/devices", account_token, json=body)
        return result

    async def set_identity_key(self, token: str, device_id: str, identity_key: str) -> dict[str, Any]:
        """Publish the public identity key of a device that has none (once; the same key again
        is a no-op). Returns the device as listed; another key already set is an
        :class:`ApiError` 409."""
        result: dict[str, Any] = await self._call(
            "PUT", f"/v1/devices/{quote(device_id, safe='')}/identity-key", token,
            json={"identity_key": identity_key})
        return result

    async def set_agreement_key(self, token: str, device_id: str, key: str,
                                signature: str) -> dict[str, Any]:
        """Publish the certificate of a device's X25519 agreement key (docs/sframe.md, "Key
        distribution (the core)"): ``key`` and ``signature`` as
        ``facecall.e2ee.agreement.certify_agreement_key`` makes them, for this device's own ids.
        A newer certificate replaces the last. Returns the device as listed. A device without
        an identity key is an :class:`ApiError` 409; a certificate the server cannot verify
        with it (or a key of small order), 422; a device that is not mine, 404."""
        result: dict[str, Any] = await self._call(
            "PUT", f"/v1/devices/{quote(device_id, safe='')}/agreement-key", token,
            json={"key": key, "signature": signature})
        return result

    async def identity_keys(self, token: str, user_id: str) -> dict[str, Any]:
        """``{user_id, devices: [{device_id, identity_key, agreement_key}]}``: the published
        keys of a user's devices (docs/security.md); ``agreement_key`` is ``{key, signature}``
        or None, to check with ``facecall.e2ee.agreement.verify_agreement_key``."""
        result: dict[str, Any] = await self._call(
            "GET", f"/v1/users/{quote(user_id, safe='')}/identity-keys", token)
        return result

    async def rename_device(self, token: str, device_id: str, name: str) -> dict[str, Any]:
        """Rename one of my devices; returns it as ``GET /v1/devices`` lists it (``id``, ``kind``,
        ``name``, ``online``, ...). ``token``: an account token (any of my devices), or a device
        token (that device only; another is an :class:`ApiError` 403). A bad name is an
        :class:`ApiError` 422; a device that is not mine, or no longer exists, 404."""
        result: dict[str, Any] = await self._call(
            "PATCH", f"/v1/devices/{quote(device_id, safe='')}", token, json={"name": name})
        return result

    async def me(self, token: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/v1/me", token)
        return result

    async def rename(self, token: str, display_name: str) -> dict[str, Any]:
        """Change my display name (any of my tokens); returns me, ``{id, username, display_name}``."""
        result: dict[str, Any] = await self._call("PATCH", "/v1/me", token,
                                                  json={"display_name": display_name})
        return result

    async def change_password(self, account_token: str, current_password: str, new_password: str,
                              *, sign_out_other_devices: bool = False,
                              this_device_id: str | None = None) -> None:
        """Change my password (an account token). My other account tokens stop working; with
        ``sign_out_other_devices`` every device but ``this_device_id`` is removed too. A wrong
        current password is an :class:`ApiError` with status 403."""
        body: dict[str, Any] = {"current_password": current_password, "new_password": new_password}
        if sign_out_other_devices:
            body.update(sign_out_other_devices=True, this_device_id=this_device_id)
        await self._call("PUT", "/v1/me/password", account_token, json=body)

    async def delete_account(self, account_token: str, password: str) -> None:
        """Delete my account (an account token and my password): every device removed, every
        token revoked, my username free again. A wrong password is an :class:`ApiError` 403."""
        await self._call("DELETE", "/v1/me", account_token, json={"password": password})

    async def find_user(self, token: str, username: str) -> dict[str, Any]:
        """``{id, username, display_name}``; :class:`UnknownUserError` if there is no such user."""
        try:
            result: dict[str, Any] = await self._call("GET", f"/v1/users/{quote(username, safe='')}", token)
        except ApiError as exc:
            if exc.status in (404, 422):
                raise UnknownUserError(username) from None
            raise
        return result

    async def turn_credentials(self, device_token: str) -> dict[str, Any]:
        """Ephemeral TURN credentials and the ICE servers to use them with."""
        result: dict[str, Any] = await self._call("GET", "/v1/turn/credentials", device_token)
        return result
