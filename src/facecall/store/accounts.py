"""Users, devices and tokens."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from facecall.store import validate
from facecall.store.db import Database
from facecall.store.errors import InvalidInput, NotFound, TokenExists, UsernameTaken
from facecall.store.models import (
    DEVICE_NAME_LEN,
    DISPLAY_NAME_LEN,
    PASSWORD_HASH_LEN,
    USERNAME_LEN,
    devices,
    tokens,
    users,
)
from facecall.store.records import DEVICE_KINDS, DeviceRecord, TokenRecord, UserRecord


def new_id() -> str:
    """A fresh row id (uuid4 hex)."""
    return uuid.uuid4().hex


def _user(row: Any) -> UserRecord:
    m = row._mapping
    return UserRecord(
        id=m["id"],
        username=m["username"],
        display_name=m["display_name"],
        password_hash=m["password_hash"],
        created_at=m["created_at"],
    )


def _device(row: Any) -> DeviceRecord:
    m = row._mapping
    return DeviceRecord(
        id=m["id"],
        user_id=m["user_id"],
        kind=m["kind"],
        name=m["name"],
        created_at=m["created_at"],
        last_seen_at=m["last_seen_at"],
        removed_at=m["removed_at"],
    )


def normalise_username(username: object) -> str:
    """The stored form of a username: validated and lowercased."""
    return validate.text(username, "username", USERNAME_LEN).lower()


class AccountsRepository:
    """Repository methods for ``users``, ``user_devices`` and ``auth_tokens``."""

    _db: Database

    # -- users ---------------------------------------------------------------------------------

    async def create_user(
        self, username: str, display_name: str, password_hash: str, now: float
    ) -> UserRecord:
        """Create a user; ``username`` is stored lowercased.

        Raises :class:`UsernameTaken` if the username exists in any letter case, and
        :class:`InvalidInput` for empty or overlong values.
        """
        record = UserRecord(
            id=new_id(),
            username=normalise_username(username),
            display_name=validate.text(display_name, "display_name", DISPLAY_NAME_LEN),
            password_hash=validate.text(password_hash, "password_hash", PASSWORD_HASH_LEN),
            created_at=validate.instant(now, "now"),
        )
        try:
            async with self._db.write() as conn:
                await conn.execute(
                    insert(users).values(
                        id=record.id,
                        username=record.username,
                        display_name=record.display_name,
                        password_hash=record.password_hash,
                        created_at=record.created_at,
                    )
                )
        except IntegrityError as exc:
            raise UsernameTaken(record.username) from exc
        return record

    async def get_user(self, user_id: str) -> UserRecord | None:
        """The user with this id, or None."""
        async with self._db.read() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
        return None if row is None else _user(row)

    async def get_user_by_username(self, username: str) -> UserRecord | None:
        """The user with this username (any letter case), or None."""
        if not isinstance(username, str) or not username or len(username) > USERNAME_LEN:
            return None
        async with self._db.read() as conn:
            query = select(users).where(users.c.username == username.lower())
            row = (await conn.execute(query)).first()
        return None if row is None else _user(row)

    async def get_users(self, user_ids: Sequence[str]) -> dict[str, UserRecord]:
        """The users among ``user_ids`` that exist, by id (unknown ids are simply absent)."""
        wanted = validate.ids(user_ids, "user_ids")
        if not wanted:
            return {}
        async with self._db.read() as conn:
            rows = (await conn.execute(select(users).where(users.c.id.in_(wanted)))).all()
        return {r.id: r for r in map(_user, rows)}

    # -- devices -------------------------------------------------------------------------------

    async def create_device(self, user_id: str, kind: str, name: str, now: float) -> DeviceRecord:
        """Register a device for a user. Raises :class:`NotFound` for an unknown user."""
        moment = validate.instant(now, "now")
        record = DeviceRecord(
            id=new_id(),
            user_id=validate.ident(user_id, "user_id"),
            kind=validate.choice(kind, "kind", DEVICE_KINDS),
            name=validate.text(name, "name", DEVICE_NAME_LEN),
            created_at=moment,
            last_seen_at=moment,
            removed_at=None,
        )
        async with self._db.write() as conn:
            exists = (await conn.execute(select(users.c.id).where(users.c.id == user_id))).first()
            if exists is None:
                raise NotFound("user", user_id)
            await conn.execute(
                insert(devices).values(
                    id=record.id,
                    user_id=record.user_id,
                    kind=record.kind,
                    name=record.name,
                    created_at=record.created_at,
                    last_seen_at=record.last_seen_at,
                    removed_at=None,
                )
            )
        return record

    async def list_devices(self, user_id: str) -> list[DeviceRecord]:
        """The user's devices that were not removed, oldest first."""
        return (await self.list_devices_of_users([user_id]))[user_id]

    async def list_devices_of_users(self, user_ids: Sequence[str]) -> dict[str, list[DeviceRecord]]:
        """Not-removed devices of each user, oldest first; every requested id is a key."""
        wanted = validate.ids(user_ids, "user_ids")
        result: dict[str, list[DeviceRecord]] = {uid: [] for uid in wanted}
        if not wanted:
            return result
        query = (
            select(devices)
            .where(devices.c.user_id.in_(wanted), devices.c.removed_at.is_(None))
            .order_by(devices.c.created_at, devices.c.id)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        for row in rows:
            device = _device(row)
            result[device.user_id].append(device)
        return result

    async def get_device(self, device_id: str) -> DeviceRecord | None:
        """The device with this id (removed ones too), or None."""
        async with self._db.read() as conn:
            row = (await conn.execute(select(devices).where(devices.c.id == device_id))).first()
        return None if row is None else _device(row)

    async def remove_device(self, user_id: str, device_id: str, now: float) -> bool:
        """Remove one of the user's devices and revoke its tokens.

        Returns False (and changes nothing) if the device is unknown, belongs to another user or
        was removed already.
        """
        moment = validate.instant(now, "now")
        async with self._db.write() as conn:
            result = await conn.execute(
                update(devices)
                .where(
                    devices.c.id == device_id,
                    devices.c.user_id == user_id,
                    devices.c.removed_at.is_(None),
                )
                .values(removed_at=moment)
            )
            if result.rowcount != 1:
                return False
            await conn.execute(
                update(tokens)
                .where(tokens.c.device_id == device_id, tokens.c.revoked_at.is_(None))
                .values(revoked_at=moment)
            )
        return True

    async def touch_device(self, device_id: str, now: float) -> None:
        """Record that the device was seen at ``now``. Raises :class:`NotFound` if unknown."""
        moment = validate.instant(now, "now")
        async with self._db.write() as conn:
            result = await conn.execute(
                update(devices).where(devices.c.id == device_id).values(last_seen_at=moment)
            )
            if result.rowcount != 1:
                raise NotFound("device", str(device_id))

    # -- tokens --------------------------------------------------------------------------------

    async def create_token(
        self,
        token_hash: str,
        user_id: str,
        device_id: str | None,
        now: float,
        expires_at: float | None,
    ) -> None:
        """Store a token by its hash (the caller hashes). ``device_id`` None: account token.

        Raises :class:`NotFound` for an unknown user, or a device that is not the user's (or was
        removed); :class:`TokenExists` if the hash is stored already.
        """
        digest = validate.token_hash(token_hash)
        validate.ident(user_id, "user_id")
        validate.optional_ident(device_id, "device_id")
        created = validate.instant(now, "now")
        expires = validate.optional_instant(expires_at, "expires_at")
        try:
            async with self._db.write() as conn:
                if (await conn.execute(select(users.c.id).where(users.c.id == user_id))).first() is None:
                    raise NotFound("user", user_id)
                if device_id is not None:
                    owned = await conn.execute(
                        select(devices.c.id).where(
                            devices.c.id == device_id,
                            devices.c.user_id == user_id,
                            devices.c.removed_at.is_(None),
                        )
                    )
                    if owned.first() is None:
                        raise NotFound("device", device_id)
                await conn.execute(
                    insert(tokens).values(
                        token_hash=digest,
                        user_id=user_id,
                        device_id=device_id,
                        created_at=created,
                        expires_at=expires,
                        revoked_at=None,
                    )
                )
        except IntegrityError as exc:
            raise TokenExists() from exc

    async def resolve_token(self, token_hash: str, now: float) -> TokenRecord | None:
        """The token, or None if unknown, expired (``expires_at <= now``), revoked, or its
        device was removed."""
        try:
            digest = validate.token_hash(token_hash)
        except InvalidInput:
            return None
        moment = validate.instant(now, "now")
        query = (
            select(tokens, devices.c.removed_at.label("device_removed_at"))
            .select_from(tokens.outerjoin(devices, devices.c.id == tokens.c.device_id))
            .where(tokens.c.token_hash == digest)
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        m = row._mapping
        if m["revoked_at"] is not None or m["device_removed_at"] is not None:
            return None
        if m["expires_at"] is not None and m["expires_at"] <= moment:
            return None
        return TokenRecord(
            token_hash=m["token_hash"],
            user_id=m["user_id"],
            device_id=m["device_id"],
            created_at=m["created_at"],
            expires_at=m["expires_at"],
            revoked_at=m["revoked_at"],
        )

    async def revoke_token(self, token_hash: str, now: float) -> bool:
        """Revoke a token. Returns whether a live token was revoked (unknown or already revoked
        tokens are left alone, so logging out twice is harmless)."""
        try:
            digest = validate.token_hash(token_hash)
        except InvalidInput:
            return False
        moment = validate.instant(now, "now")
        async with self._db.write() as conn:
            result = await conn.execute(
                update(tokens)
                .where(and_(tokens.c.token_hash == digest, tokens.c.revoked_at.is_(None)))
                .values(revoked_at=moment)
            )
        return result.rowcount == 1
