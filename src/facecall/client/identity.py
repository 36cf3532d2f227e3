"""This device's identity key, and the keys of other devices it trusts (docs/security.md,
"Device identity keys").

The device signs every SDP it sends with its own Ed25519 key (``facecall.e2ee.identity``) and
checks every SDP it receives against the key of the device that sent it. It learns another
device's key from the server (``GET /v1/users/{id}/identity-keys``) the first time it needs
it and keeps it from then on (trust on first use): a device's key never changes, so a server
that later hands out another key for it, or relays a description that key did not sign, is
refused. A device the server invents is new, and is trusted on first use like any new device;
what catches that is people comparing their safety number (:meth:`Identity.safety_number`) or
the call's security code (docs/security.md).

The device also holds an X25519 *agreement key* (facecall.e2ee.agreement), certified by its
identity key and published next to it: other devices seal the SFrame keys of group media to it
(docs/sframe.md). It may be replaced (a program without a state file makes a new one each run):
what other devices trust is the identity key that signs its certificate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from facecall.client.api import ApiClient
from facecall.client.errors import ApiError
from facecall.e2ee.agreement import (
    AgreementKey,
    MediaKeyError,
    agreement_private_from_text,
    agreement_private_text,
    agreement_public_text,
    certify_agreement_key,
    new_agreement_key,
    verify_agreement_key,
)
from facecall.e2ee.identity import (
    MAX_DEVICES,
    IdentityError,
    new_private_key,
    private_key_from_text,
    private_key_text,
    public_key_from_text,
    public_key_text,
    sign_description,
    verify_description,
)
from facecall.e2ee.media_keys import OpenedKey, SenderKeys, open_sender_key
from facecall.e2ee.safety_number import safety_number

#: how many other devices' keys a device keeps; past it, it forgets the oldest pins (a device
#: forgotten is trusted on first use again)
MAX_PINNED = 4096
#: the pauses (seconds) between tries to read a user's keys while the server does not answer
#: (unreachable, or a 5xx: a node restarting): about 12 s in all before the check is given up
KEY_LOOKUP_PAUSES = (0.25, 0.5, 1.0, 2.0, 4.0, 4.0)


@dataclass(frozen=True, slots=True)
class SafetyNumber:
    """The safety number of this device's user and another (:mod:`facecall.e2ee.safety_number`).

    ``status``: ``verified`` (the number its user marked as compared, still the same, and every
    device of the other user this device met is among those it covers), ``changed`` (one was
    marked, and the keys changed since — a new or removed device, or someone in the middle — or
    a device of theirs this device met is not in the list) or ``unverified``.
    ``devices``: the other user's devices the number covers: a call is with a device the number
    vouches for when its ``remote_device`` is one of them. ``unlisted``: devices this device
    met as theirs that the list leaves out (removed, or hidden by the server).
    """

    user_id: str
    number: str
    status: Literal["verified", "changed", "unverified"]
    devices: frozenset[str] = frozenset()
    unlisted: frozenset[str] = frozenset()


class Identity:
    """This device's key pair, and the pinned ``device id → (user id, public key)`` of the
    other devices it has called or been called by.

    :param private_key: this device's private key as :func:`private_key_text` writes it; a new
        one is made if None.
    :param pinned: pins as :meth:`state` saved them.
    :param on_change: called (and awaited) after a new pin, to save the state.
    :param agreement_key: this device's X25519 agreement private key as
        :func:`~facecall.e2ee.agreement.agreement_private_text` writes it; a new one if None.
    """

    def __init__(self, private_key: str | None = None,
                 pinned: Mapping[str, Any] | None = None,
                 on_change: Callable[[], Awaitable[None] | None] | None = None,
                 agreement_key: str | None = None) -> None:
        self._key = new_private_key() if private_key is None else private_key_from_text(private_key)
        self.public_key = public_key_text(self._key)
        self._agreement = (new_agreement_key() if agreement_key is None
                           else agreement_private_from_text(agreement_key))
        self.agreement_public = agreement_public_text(self._agreement)
        """This device's agreement public key (43 characters of base64url)."""
        self._pinned: dict[str, tuple[str, str]] = {}
        for device_id, entry in (pinned or {}).items():
            if (isinstance(entry, list | tuple) and len(entry) == 2
                    and all(isinstance(part, str) for part in entry)):
                self._pinned[device_id] = (entry[0], entry[1])
        self._verified: dict[str, str] = {}
        """user id → the safety number this device's user compared with that user's"""
        self.on_change = on_change

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Identity | None:
        """The identity a state file holds, or None if it holds none (an older state file)."""
        key = state.get("identity_key")
        if not isinstance(key, str):
            return None
        pinned = state.get("pinned_keys")
        agreement = state.get("agreement_key")
        try:
            identity = cls(key, pinned if isinstance(pinned, dict) else None,
                           agreement_key=agreement if isinstance(agreement, str) else None)
        except (IdentityError, MediaKeyError) as exc:
            raise ValueError(f"the state file's keys are unreadable: {exc}") from None
        verified = state.get("verified_numbers")
        if isinstance(verified, dict):
            identity._verified = {u: n for u, n in verified.items() if isinstance(n, str)}
        return identity

    def state(self) -> dict[str, Any]:
        """What a state file keeps: the private keys, the pins and the compared numbers."""
        return {"identity_key": private_key_text(self._key),
                "agreement_key": agreement_private_text(self._agreement),
                "pinned_keys": {device: list(pin) for device, pin in self._pinned.items()},
                "verified_numbers": dict(self._verified)}

    def sign(self, call_id: str, user_id: str, device_id: str, to_device: str,
             type_: str, sdp: str) -> str:
        """The signature of a description this device sends (``call.sdp``'s ``signature``)."""
        return sign_description(self._key, call_id, user_id, device_id, to_device, type_, sdp)

    def agreement_certificate(self, user_id: str, device_id: str) -> dict[str, str]:
        """The certificate of this device's agreement key, signed by its identity key (what
        ``PUT /v1/devices/{id}/agreement-key`` publishes)."""
        return certify_agreement_key(self._key, user_id, device_id, self._agreement)

    def sender_keys(self, call_id: str, user_id: str, device_id: str) -> SenderKeys:
        """This device's SFrame sender keys for one call (a new random tag: a new sender)."""
        return SenderKeys(self._key, call_id, user_id, device_id)

    def open_sender_key(self, message: object, *, call_id: str, sender_key: str, user_id: str,
                        device_id: str) -> OpenedKey:
        """This device's entry of a sealed sender key (``call.key``), checked with the identity
        key ``sender_key`` of the device that sent it
        (:func:`facecall.e2ee.media_keys.open_sender_key`; a :class:`MediaKeyError` says why not)."""
        return open_sender_key(message, call_id=call_id, sender_key=sender_key, user_id=user_id,
                               device_id=device_id, agreement=self._agreement)

    async def agreement_key_of(self, api: ApiClient, token: str, user_id: str,
                               device_id: str) -> AgreementKey:
        """Another device's agreement key, from the server's list, checked with that device's
        identity key (pinned, or pinned now on first use). :class:`IdentityError` if the server
        lists no identity key or no agreement key for it; :class:`MediaKeyError` if the
        certificate does not check out."""
        listing = await _read_keys(api, token, user_id)
        identity_key = await self._trusted(user_id, device_id, _listed(listing))
        certificate = next((entry.get("agreement_key") for entry in listing.get("devices") or []
                            if isinstance(entry, dict) and entry.get("device_id") == device_id), None)
        if not isinstance(certificate, dict):
            raise IdentityError(f"device {device_id} of user {user_id} has no agreement key")
        return verify_agreement_key(identity_key, {**certificate, "user_id": user_id,
                                                   "device_id": device_id},
                                    user_id=user_id, device_id=device_id)

    def pinned(self, device_id: str) -> tuple[str, str] | None:
        """``(user id, key)`` pinned for a device, or None."""
        return self._pinned.get(device_id)

    async def key_of(self, api: ApiClient, token: str, user_id: str, device_id: str) -> str:
        """The key of another device: the pinned one, or (first use) the one the server lists
        for it, pinned from then on. :class:`IdentityError` if the device is pinned as another
        user's, or the server lists no key for it."""
        if device_id in self._pinned:
            return await self._trusted(user_id, device_id, {})
        return await self._trusted(user_id, device_id, _listed(await _read_keys(api, token, user_id)))

    async def _trusted(self, user_id: str, device_id: str, listed: Mapping[str, str]) -> str:
        """The pinned key of a device, or (first use) the one in ``listed``, pinned now."""
        pin = self._pinned.get(device_id)
        if pin is not None:
            if pin[0] != user_id:
                raise IdentityError(
                    f"device {device_id} is known as a device of user {pin[0]}, not {user_id}")
            return pin[1]
        key = listed.get(device_id)
        if key is None:
            raise IdentityError(f"device {device_id} of user {user_id} has no identity key")
        public_key_from_text(key)  # a key at all
        self._pin(user_id, device_id, key)
        await self._changed()
        return key

    def _pin(self, user_id: str, device_id: str, key: str) -> None:
        """Pin a device's key; past MAX_PINNED the oldest pin goes, never one of a user whose
        number was marked as compared."""
        if len(self._pinned) >= MAX_PINNED:
            oldest = next((d for d, (u, _) in self._pinned.items() if u not in self._verified),
                          next(iter(self._pinned)))
            del self._pinned[oldest]
        self._pinned[device_id] = (user_id, key)

    async def _changed(self) -> None:
        if self.on_change is not None:
            saved = self.on_change()
            if saved is not None:
                await saved

    async def safety_number(self, api: ApiClient, token: str, own_user: str, own_device: str,
                            user_id: str) -> SafetyNumber:
        """The safety number of this device's user and ``user_id``, over the keys the server
        lists for both (``GET /v1/users/{id}/identity-keys``), with whether it was verified.
        The lists are checked against what this device knows: its own key must be among its
        user's, and every device of ``user_id`` it pinned must be listed with the pinned key
        (:class:`IdentityError` if not: the server hands out another key for a device). The
        other user's listed keys are pinned from then on."""
        try:
            own, theirs = await asyncio.gather(api.identity_keys(token, own_user),
                                               api.identity_keys(token, user_id))
        except ApiError as exc:
            raise IdentityError(f"cannot read the identity keys: {exc}") from exc
        own_keys = _listed(own)
        if own_keys.get(own_device) != self.public_key:
            raise IdentityError("the server does not list this device's own identity key")
        their_keys = _listed(theirs)
        for device_id, key in their_keys.items():
            pin = self._pinned.get(device_id)
            if pin is not None and pin != (user_id, key):
                raise IdentityError(
                    f"the server lists another identity key for device {device_id} than the "
                    "one this device met: someone may be in the middle")
        number = safety_number((own_user, own_keys.values()), (user_id, their_keys.values()))
        for device_id, key in their_keys.items():
            if device_id not in self._pinned:
                self._pin(user_id, device_id, key)
        await self._changed()
        unlisted = frozenset(device for device, (user, _) in self._pinned.items()
                             if user == user_id and device not in their_keys)
        verified = self._verified.get(user_id)
        status: Literal["verified", "changed", "unverified"] = (
            "unverified" if verified is None
            else "verified" if verified == number and not unlisted else "changed")
        return SafetyNumber(user_id, number, status, frozenset(their_keys), unlisted)

    async def mark_verified(self, number: SafetyNumber) -> None:
        """Remember ``number`` as the one this device's user compared with the other person
        (a later :meth:`safety_number` says ``changed`` when it is no longer the same). The
        devices of theirs this device met that the number leaves out (``unlisted``) are
        forgotten: the person vouched for the list as it is, and one of those that calls again
        is new to this device."""
        self._verified[number.user_id] = number.number
        for device in number.unlisted:
            self._pinned.pop(device, None)
        await self._changed()

    async def check(self, api: ApiClient, token: str, call_id: str, own_device: str,
                    event: Mapping[str, Any]) -> None:
        """Check a relayed ``call.sdp`` addressed to ``own_device``: signed by the identity key
        of the device it comes from, for this call and this device (RFC 8032 §5.1.7 over
        ``facecall.e2ee.identity.statement``). :class:`IdentityError` says why not."""
        user_id, device_id = event["from_user"], event["from_device"]
        key = await self.key_of(api, token, user_id, device_id)
        description = event["description"]
        verify_description(key, event.get("signature"), call_id, user_id, device_id,
                           own_device, description["type"], description["sdp"])


async def _read_keys(api: ApiClient, token: str, user_id: str) -> dict[str, Any]:
    """``GET /v1/users/{id}/identity-keys``, tried again after each of :data:`KEY_LOOKUP_PAUSES`
    while no answer comes (unreachable, a 5xx — a node restarting — or 429), so that a restart
    during a call's set-up does not end the call. Any other refusal (4xx) is an answer and is
    not tried again. :class:`IdentityError` when no answer came in time, or a refusal did."""
    pauses = iter(KEY_LOOKUP_PAUSES)
    while True:
        try:
            return await api.identity_keys(token, user_id)
        except ApiError as exc:
            pause = next(pauses, None)
            if pause is None or not _no_answer(exc.status):
                raise IdentityError(f"cannot read the identity keys of user {user_id}: {exc}") from exc
        await asyncio.sleep(pause)


def _no_answer(status: int) -> bool:
    """Whether an HTTP status (0: unreachable) means the server did not answer the question."""
    return status == 0 or status == 429 or status >= 500


def _listed(keys: Mapping[str, Any]) -> dict[str, str]:
    """``device id → key`` of a ``GET /v1/users/{id}/identity-keys`` answer."""
    devices = keys.get("devices")
    if not isinstance(devices, list):
        raise IdentityError("the server's list of identity keys is malformed")
    if len(devices) > MAX_DEVICES:  # the server allows no more: a list made to evict pins
        raise IdentityError(f"the server lists {len(devices)} devices for one user, more than "
                            f"the {MAX_DEVICES} a user can have")
    return {entry["device_id"]: entry["identity_key"] for entry in devices
            if isinstance(entry, dict) and isinstance(entry.get("device_id"), str)
            and isinstance(entry.get("identity_key"), str)}
