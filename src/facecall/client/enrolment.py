"""Who a :class:`~facecall.client.device.Device` is to the server: its account, its registered
device and token, its identity key (docs/security.md, "Device identity keys"), and the state file
that keeps them from one run to the next (docs/sdk.md, ``state_file=``)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from facecall.client.api import ApiClient
from facecall.client.errors import ApiError, AuthenticationError, FacecallError
from facecall.client.identity import Identity
from facecall.logs import get_logger

log = get_logger(__name__)


class Enrolment:
    """A device's credentials: ``username``/``password`` (to sign in, or up with ``sign_up``),
    a device ``token``, or a ``state_file`` that keeps the device registered before; and the
    device's :class:`Identity`, from the state file, from ``identity_key``, or made when the
    device registers."""

    def __init__(self, api: ApiClient, username: str | None, password: str | None, *,
                 sign_up: bool, token: str | None, state_file: str | os.PathLike[str] | None,
                 device_name: str | None, kind: str, identity_key: str | None) -> None:
        if token is None and state_file is None and (username is None or password is None):
            raise ValueError("give username and password, a device token, or a state_file")
        self.api = api
        self.username, self.password, self.sign_up = username, password, sign_up
        self.token = token
        self.state_file = Path(state_file).expanduser() if state_file is not None else None
        self.device_name = device_name or f"{kind}-{socket.gethostname()}"[:64]
        self.kind = kind
        self.identity: Identity | None = None if identity_key is None else Identity(identity_key)
        self._published = False
        """The server has this identity's public key for the device (no need to publish it)."""
        self._state: dict[str, Any] = {}
        """The state file's fields besides the identity's (``token``, ``user_id``, ...)."""

    async def device_token(self) -> str:
        """The token to open signaling with: the one given, the saved device's if the server
        still takes it, or a newly registered device's.

        :raises AuthenticationError: a given token, or the password, that the server refuses.
        :raises FacecallError: no saved device and no password to sign in with.
        """
        saved = self._load()
        token = self.token or saved
        if token is not None:
            try:
                await self.api.me(token)
            except AuthenticationError:
                if self.token is not None or self.password is None:
                    raise
                token = None  # the saved device was removed: register again
        if token is None:
            token = await self._register()
        self.token = token
        return token

    async def publish_identity(self, user_id: str, device_id: str) -> Identity:
        """Make sure this device's public identity key is the one the server has for it: a
        device registered before keys existed (or whose state file has none) publishes one,
        once; and publish its agreement key's certificate (:meth:`_publish_agreement_key`).
        Returns the identity. A device whose published key this program does not hold
        cannot sign: :class:`FacecallError`."""
        if self.identity is None:
            self.identity = Identity()
        self.identity.on_change = self.save
        assert self.token is not None
        if self._published:
            await self._publish_agreement_key(user_id, device_id)
            return self.identity
        try:
            await self.api.set_identity_key(self.token, device_id, self.identity.public_key)
        except ApiError as exc:
            if exc.status != 409:
                raise
            raise FacecallError(
                f"device {device_id} has published another identity key than the one this "
                "program holds, so it cannot sign its calls: use the state file it was "
                "registered with (or its identity_key), or register a new device") from exc
        self._published = True
        self._state["identity_published"] = True
        await self.save()
        await self._publish_agreement_key(user_id, device_id)
        return self.identity

    @property
    def agreement_published(self) -> bool:
        """Whether the server has this device's agreement key (others can seal keys to it)."""
        identity = self.identity
        return identity is not None and self._state.get("agreement_published") == identity.agreement_public

    async def _publish_agreement_key(self, user_id: str, device_id: str) -> None:
        """Publish the certificate of this device's agreement key (``PUT
        /v1/devices/{id}/agreement-key``) unless the state file says the server has it. A
        refusal is logged, not raised: 1:1 calls work without it (DTLS-SRTP only: this device
        declares no SFrame, :attr:`agreement_published`); group media cannot be end-to-end
        encrypted to this device until it is published."""
        identity = self.identity
        assert identity is not None and self.token is not None
        if self._state.get("agreement_published") == identity.agreement_public:
            return
        certificate = identity.agreement_certificate(user_id, device_id)
        try:
            await self.api.set_agreement_key(self.token, device_id, certificate["key"],
                                             certificate["signature"])
        except ApiError as exc:
            log.warning("identity.agreement_key_refused", device_id=device_id, status=exc.status,
                        error=str(exc))
            return
        self._state["agreement_published"] = identity.agreement_public
        await self.save()

    async def _register(self) -> str:
        """Sign in (or up) and register a new device with a new identity key; returns its token."""
        if self.username is None or self.password is None:
            needed = "a password is" if self.username is not None else "a username and password are"
            saved = f" in {self.state_file}" if self.state_file is not None else ""
            raise FacecallError(f"{needed} needed to sign in (no saved device{saved})")
        session: dict[str, Any] | None = None
        if self.sign_up:
            try:
                session = await self.api.sign_up(self.username, self.password)
            except ApiError as exc:
                if exc.status != 409:
                    raise
        if session is None:
            session = await self.api.sign_in(self.username, self.password)
        # a new device, a new key; the keys this program trusts for other devices stay
        identity = Identity(pinned=None if self.identity is None else self.identity.state()["pinned_keys"])
        registered = await self.api.register_device(session["token"], self.device_name, self.kind,
                                                    identity.public_key)
        self.identity, self._published = identity, True
        token: str = registered["token"]
        self.token = token
        self._state = {"user_id": session["user"]["id"], "device_id": registered["device"]["id"],
                       "token": token, "identity_published": True}
        await self.save()
        return token

    def _load(self) -> str | None:
        """The saved device's token (None: no state file, or one for another server or user),
        and its identity."""
        if self.state_file is None or not self.state_file.exists():
            return None
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"unreadable state file {self.state_file}: {exc}") from exc
        if not isinstance(state, dict) or state.get("server") != self.api.base_url:
            return None
        if self.username is not None and state.get("username") != self.username:
            return None
        self.username = self.username or state.get("username")
        token = state.get("token")
        if not isinstance(token, str):
            return None
        if self.token is not None and token != self.token:
            return None  # another device's: its identity is not this one's
        self._state = state
        if self.identity is None:
            self.identity = Identity.from_state(state)
            self._published = self.identity is not None and bool(state.get("identity_published"))
        return token

    async def save(self) -> None:
        """Write the state file (0600): the device's token, identity key and pinned keys. Only
        for the device it keeps: a state file of another device (a token given that is not
        its) stays as it is."""
        if self.state_file is None or self._state.get("token") != self.token:
            return
        state = {**self._state, "server": self.api.base_url, "username": self.username}
        if self.identity is not None:
            state.update(self.identity.state())
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
