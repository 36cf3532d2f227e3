"""Devices: register, list, rename and remove a user's devices."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Request, status

from facecall.api.auth import (
    Principal,
    account_or_device_itself,
    current_account,
    current_principal,
    get_store,
    new_token,
    token_hash,
)
from facecall.api.schemas import (
    AgreementKeyIn,
    AgreementKeyOut,
    DeviceIn,
    DeviceKey,
    DeviceOut,
    DeviceRegistered,
    DeviceRename,
    IdentityKeyIn,
    IdentityKeys,
)
from facecall.e2ee.agreement import MediaKeyError, SmallOrderKey, verify_agreement_key
from facecall.store import Store
from facecall.store.records import DeviceRecord

router = APIRouter(prefix="/v1", tags=["devices"])

#: the clients refuse a list of a user's identity keys longer than this
#: (facecall.e2ee.identity.MAX_DEVICES, the same number: a test checks)
MAX_DEVICES_PER_USER = 32
#: device ids are at most this long (``store.models.ID_LEN``): a longer one is no device
MAX_DEVICE_ID_CHARS = 64


def agreement_key_out(device: DeviceRecord) -> AgreementKeyOut | None:
    """The device's published agreement key certificate (key and signature), or None."""
    if device.agreement_key is None or device.agreement_signature is None:
        return None
    return AgreementKeyOut(key=device.agreement_key, signature=device.agreement_signature)


def device_out(device: DeviceRecord, online: bool = False) -> DeviceOut:
    return DeviceOut(
        id=device.id, kind=device.kind, name=device.name, created_at=device.created_at,
        last_seen_at=device.last_seen_at, online=online, identity_key=device.identity_key,
        agreement_key=agreement_key_out(device),
    )


@router.post("/devices", status_code=status.HTTP_201_CREATED, response_model=DeviceRegistered)
async def register_device(
    body: DeviceIn,
    principal: Principal = Depends(current_account),  # noqa: B008
    store: Store = Depends(get_store),  # noqa: B008
) -> DeviceRegistered:
    """Register a device of the signed-in user (an account token), with its public identity key
    if it gives one; returns its token (shown once)."""
    if len(await store.list_devices(principal.user_id)) >= MAX_DEVICES_PER_USER:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"at most {MAX_DEVICES_PER_USER} devices per user"
        )
    now = time.time()
    device = await store.create_device(principal.user_id, body.kind, body.name, now, body.identity_key)
    token = new_token()
    await store.create_token(token_hash(token), principal.user_id, device.id, now, None)
    return DeviceRegistered(device=device_out(device), token=token)


@router.get("/devices", response_model=list[DeviceOut])
async def list_devices(
    request: Request,
    principal: Principal = Depends(current_principal),  # noqa: B008
    store: Store = Depends(get_store),  # noqa: B008
) -> list[DeviceOut]:
    """The signed-in user's devices, with whether each is connected now."""
    devices = await store.list_devices(principal.user_id)
    online = await request.app.state.bus.online([d.id for d in devices])
    return [device_out(d, d.id in online) for d in devices]


@router.patch("/devices/{device_id}", response_model=DeviceOut)
async def rename_device(
    device_id: str,
    body: DeviceRename,
    request: Request,
    principal: Principal = Depends(account_or_device_itself),  # noqa: B008
    store: Store = Depends(get_store),  # noqa: B008
) -> DeviceOut:
    """Rename one of my devices; returns it as listed. An account token may rename any of
    them; a device token only its own device (another: 403), since a name mints and revokes
    nothing. The name follows the rules of registration: 1 to 64 characters once trimmed, no
    control or bidirectional characters (else 422). 404 "no such device" for an unknown or
    removed device and for another user's (whether it exists is not told)."""
    device = None
    if len(device_id) <= MAX_DEVICE_ID_CHARS:
        device = await store.rename_device(principal.user_id, device_id, body.name)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device")
    online = await request.app.state.bus.online([device.id])
    return device_out(device, device.id in online)


@router.delete("/devices/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_device(
    device_id: str,
    request: Request,
    principal: Principal = Depends(current_account),  # noqa: B008
    store: Store = Depends(get_store),  # noqa: B008
) -> None:
    """Remove a device (an account token): its token stops working and it leaves any call it
    is in. A device removes itself by signing out (``DELETE /v1/sessions/current``)."""
    removed = len(device_id) <= MAX_DEVICE_ID_CHARS and await store.remove_device(
        principal.user_id, device_id, time.time())
    if not removed:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device")
    await request.app.state.signaling.device_removed(principal.user_id, device_id)


@router.put("/devices/{device_id}/identity-key", response_model=DeviceOut)
async def set_identity_key(
    device_id: str,
    body: IdentityKeyIn,
    request: Request,
    principal: Principal = Depends(account_or_device_itself),  # noqa: B008
    store: Store = Depends(get_store),  # noqa: B008
) -> DeviceOut:
    """Publish the public identity key of a device registered without one (docs/security.md,
    "Device identity keys"). Once only: the same key again is a no-op (200), another key is
    409, since a key that could change would let whoever holds a token swap it for their own.
    The device itself (its token) or its account may set it; another device: 403. 404 "no such
    device" for an unknown, removed or another user's device."""
    device = None
    if len(device_id) <= MAX_DEVICE_ID_CHARS:
        device = await store.set_identity_key(principal.user_id, device_id, body.identity_key)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device")
    if device.identity_key != body.identity_key:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail="this device has another identity key already; a key is never changed",
        )
    online = await request.app.state.bus.online([device.id])
    return device_out(device, device.id in online)


def certificate_refusal(error: MediaKeyError) -> str:
    """The detail of a 422 for a certificate ``verify_agreement_key`` refused."""
    if isinstance(error, SmallOrderKey):
        return "the agreement key is of small order (anyone knows its shared secrets)"
    return f"the agreement key certificate does not verify: {error}"


@router.put("/devices/{device_id}/agreement-key", response_model=DeviceOut)
async def set_agreement_key(
    device_id: str,
    body: AgreementKeyIn,
    request: Request,
    principal: Principal = Depends(account_or_device_itself),  # noqa: B008
    store: Store = Depends(get_store),  # noqa: B008
) -> DeviceOut:
    """Publish the certificate of a device's X25519 agreement key (docs/sframe.md, "Key
    distribution (the core)"): the key, and its identity key's signature over the key and the
    device's own user and device ids. The server checks it with the device's stored identity
    key (``verify_agreement_key``: RFC 8032 §5.1.7, small-order keys refused) as a sanity check;
    other devices check it again themselves. A newer certificate replaces the last one: the
    identity key signs every one, so the server cannot forge one. The device itself or its
    account may publish; another device: 403. 404 "no such device" for an unknown, removed or
    another user's device; 409 for a device without an identity key; 422 for a certificate
    that does not verify or a key of small order."""
    device = None
    if len(device_id) <= MAX_DEVICE_ID_CHARS:
        device = await store.get_device(device_id)
    if device is None or device.user_id != principal.user_id or device.removed_at is not None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device")
    if device.identity_key is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail="this device has no identity key to check the certificate with; "
            "publish the identity key first",
        )
    certificate = {"user_id": device.user_id, "device_id": device.id, "key": body.key,
                   "signature": body.signature}
    try:
        verify_agreement_key(device.identity_key, certificate, user_id=device.user_id,
                             device_id=device.id)
    except MediaKeyError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            detail=certificate_refusal(exc)) from None
    stored = await store.set_agreement_key(principal.user_id, device_id, body.key, body.signature)
    if stored is None:  # removed in the meantime
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device")
    online = await request.app.state.bus.online([stored.id])
    return device_out(stored, stored.id in online)


@router.get("/users/{user_id}/identity-keys", response_model=IdentityKeys)
async def identity_keys(
    user_id: str,
    principal: Principal = Depends(current_principal),  # noqa: B008
    store: Store = Depends(get_store),  # noqa: B008
) -> IdentityKeys:
    """The public identity keys of a user's devices (those not removed that published one),
    by user id, as the ``from_user`` of a relayed ``call.sdp`` names them: a device checks the
    signature of another's SDP with it (docs/security.md). Any signed-in account or device may
    read them. Each device that published an agreement key lists its certificate too
    (``agreement_key``: key and signature; None if not), for others to check with the identity
    key and seal media keys to (docs/sframe.md). 404 "no such user" for an unknown or deleted
    user."""
    user = await store.get_user(user_id) if len(user_id) <= MAX_DEVICE_ID_CHARS else None
    if user is None or user.deleted_at is not None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such user")
    devices = await store.list_devices(user_id)
    return IdentityKeys(user_id=user_id, devices=[
        DeviceKey(device_id=d.id, identity_key=d.identity_key, agreement_key=agreement_key_out(d))
        for d in devices if d.identity_key is not None
    ])
