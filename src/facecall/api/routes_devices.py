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
from facecall.api.schemas import DeviceIn, DeviceOut, DeviceRegistered, DeviceRename
from facecall.store import Store
from facecall.store.records import DeviceRecord

router = APIRouter(prefix="/v1/devices", tags=["devices"])

MAX_DEVICES_PER_USER = 32
#: device ids are at most this long (``store.models.ID_LEN``): a longer one is no device
MAX_DEVICE_ID_CHARS = 64


def device_out(device: DeviceRecord, online: bool = False) -> DeviceOut:
    return DeviceOut(
        id=device.id, kind=device.kind, name=device.name, created_at=device.created_at,
        last_seen_at=device.last_seen_at, online=online,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DeviceRegistered)
async def register_device(
    body: DeviceIn,
    principal: Principal = Depends(current_account),  # noqa: B008
    store: Store = Depends(get_store),  # noqa: B008
) -> DeviceRegistered:
    """Register a device of the signed-in user (an account token); returns its token (shown
    once)."""
    if len(await store.list_devices(principal.user_id)) >= MAX_DEVICES_PER_USER:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"at most {MAX_DEVICES_PER_USER} devices per user"
        )
    now = time.time()
    device = await store.create_device(principal.user_id, body.kind, body.name, now)
    token = new_token()
    await store.create_token(token_hash(token), principal.user_id, device.id, now, None)
    return DeviceRegistered(device=device_out(device), token=token)


@router.get("", response_model=list[DeviceOut])
async def list_devices(
    request: Request,
    principal: Principal = Depends(current_principal),  # noqa: B008
    store: Store = Depends(get_store),  # noqa: B008
) -> list[DeviceOut]:
    """The signed-in user's devices, with whether each is connected now."""
    devices = await store.list_devices(principal.user_id)
    online = await request.app.state.bus.online([d.id for d in devices])
    return [device_out(d, d.id in online) for d in devices]


@router.patch("/{device_id}", response_model=DeviceOut)
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


@router.delete("/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
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
