"""Users, devices and tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from facecall.store import validate
from facecall.store.driver import ALL, COUNT, ONE, Body, Database, Dialect, IntegrityViolation, Q
from facecall.store.errors import InvalidInput, NotFound, TokenExists, UsernameTaken
from facecall.store.ids import new_id
from facecall.store.invites import use_invite
from facecall.store.models import (
    AGREEMENT_KEY_LEN,
    DEVICE_NAME_LEN,
    DISPLAY_NAME_LEN,
    IDENTITY_KEY_LEN,
    PASSWORD_HASH_LEN,
    SIGNATURE_LEN,
    USERNAME_LEN,
)
from facecall.store.records import DEVICE_KINDS, DeviceRecord, TokenRecord, UserRecord

#: the most users one page of :meth:`AccountsRepository.list_users` returns
MAX_USERS_PAGE = 1000
USER_COLUMNS = "id, username, display_name, password_hash, created_at, deleted_at"
DEVICE_COLUMNS = (
    "id, user_id, kind, name, created_at, last_seen_at, removed_at, identity_key, agreement_key, "
    "agreement_signature"
)

USER_BY_ID = Q.of(f"SELECT {USER_COLUMNS} FROM users WHERE id = $1")
USER_BY_NAME = Q.of(f"SELECT {USER_COLUMNS} FROM users WHERE username = $1 AND deleted_at IS NULL")
USERS_BY_IDS = Q.of(f"SELECT {USER_COLUMNS} FROM users WHERE id {{ids1}}")
USER_EXISTS = Q.of("SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL")  # takes devices, tokens
USER_WITH_PASSWORD = Q.of(
    "SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL AND password_hash = $2"
)
INSERT_USER = Q.of(f"INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, NULL)")
INSERT_DEVICE = Q.of(
    f"INSERT INTO user_devices ({DEVICE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, NULL, NULL)"
)
DEVICES_OF_USERS = Q.of(
    f"SELECT {DEVICE_COLUMNS} FROM user_devices WHERE user_id {{ids1}} AND removed_at IS NULL "
    "ORDER BY created_at, id"
)
DEVICE_BY_ID = Q.of(f"SELECT {DEVICE_COLUMNS} FROM user_devices WHERE id = $1")
REMOVE_DEVICE = Q.of(
    "UPDATE user_devices SET removed_at = $3 WHERE id = $1 AND user_id = $2 AND removed_at IS NULL"
)
REVOKE_DEVICE_TOKENS = Q.of(
    "UPDATE auth_tokens SET revoked_at = $2 WHERE device_id = $1 AND revoked_at IS NULL"
)
RENAME_DEVICE = Q.of(
    "UPDATE user_devices SET name = $3 WHERE id = $1 AND user_id = $2 AND removed_at IS NULL"
)
#: set once: a key already set stays (the caller reads the device to tell which case it was)
SET_IDENTITY_KEY = Q.of(
    "UPDATE user_devices SET identity_key = $3 WHERE id = $1 AND user_id = $2 AND removed_at IS NULL "
    "AND identity_key IS NULL"
)
#: a device's agreement key and its certificate's signature, set together; only for a device
#: with an identity key (the certificate's signer), and a newer certificate replaces the last
SET_AGREEMENT_KEY = Q.of(
    "UPDATE user_devices SET agreement_key = $3, agreement_signature = $4 WHERE id = $1 "
    "AND user_id = $2 AND removed_at IS NULL AND identity_key IS NOT NULL"
)
TOUCH_DEVICE = Q.of("UPDATE user_devices SET last_seen_at = $2 WHERE id = $1 AND removed_at IS NULL")
OWNED_DEVICE = Q.of("SELECT 1 FROM user_devices WHERE id = $1 AND user_id = $2 AND removed_at IS NULL")
INSERT_TOKEN = Q.of(
    "INSERT INTO auth_tokens (token_hash, user_id, device_id, created_at, expires_at, revoked_at) "
    "VALUES ($1, $2, $3, $4, $5, NULL)"
)
RESOLVE_TOKEN = Q.of(
    "SELECT t.token_hash, t.user_id, t.device_id, t.created_at, t.expires_at, t.revoked_at, d.removed_at "
    "FROM auth_tokens t LEFT OUTER JOIN user_devices d ON d.id = t.device_id WHERE t.token_hash = $1"
)
REVOKE_TOKEN = Q.of("UPDATE auth_tokens SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL")
RENAME_USER = Q.of("UPDATE users SET display_name = $2 WHERE id = $1 AND deleted_at IS NULL")
SET_PASSWORD_HASH = Q.of("UPDATE users SET password_hash = $2 WHERE id = $1 AND deleted_at IS NULL")
#: the prefix of a deleted account's username: no username may contain it (see DELETE_USER)
DELETED_USERNAME_PREFIX = "~"
DELETE_USER = Q.of(
    "UPDATE users SET username = $3 || id, display_name = '', password_hash = '', deleted_at = $2 "
    "WHERE id = $1 AND deleted_at IS NULL"
)
REMOVE_DEVICES_OF_USER = Q.of(
    "UPDATE user_devices SET removed_at = $2 WHERE user_id = $1 AND removed_at IS NULL"
)
REVOKE_TOKENS_OF_USER = Q.of(
    "UPDATE auth_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL"
)
REVOKE_OTHER_ACCOUNT_TOKENS = Q.of(
    "UPDATE auth_tokens SET revoked_at = $2 WHERE user_id = $1 AND device_id IS NULL "
    "AND revoked_at IS NULL AND token_hash != $3"
)
USERS_PAGE = Q.of(
    f"SELECT {USER_COLUMNS} FROM users WHERE deleted_at IS NULL AND username > $2 ORDER BY username LIMIT $1"
)
DEVICE_COUNTS = Q.of(
    "SELECT user_id, count(*) FROM user_devices WHERE user_id {ids1} AND removed_at IS NULL GROUP BY user_id"
)
LIVE_DEVICE_IDS = Q.of(
    "SELECT id FROM user_devices WHERE user_id = $1 AND removed_at IS NULL ORDER BY created_at, id"
)


def _user(d: Dialect, r: Any) -> UserRecord:
    return UserRecord(id=r[0], username=r[1], display_name=r[2], password_hash=r[3], created_at=d.epoch(r[4]),
                      deleted_at=d.epoch(r[5]))


def _device(d: Dialect, r: Any) -> DeviceRecord:
    return DeviceRecord(
        id=r[0],
        user_id=r[1],
        kind=r[2],
        name=r[3],
        created_at=d.epoch(r[4]),
        last_seen_at=d.epoch(r[5]),
        removed_at=d.epoch(r[6]),
        identity_key=r[7],
        agreement_key=r[8],
        agreement_signature=r[9],
    )


# -- transaction bodies (see facecall.store.driver) -----------------------------------------------


def _insert_user(d: Dialect, u: UserRecord, invite_code_hash: str | None) -> Body[None]:
    yield COUNT, INSERT_USER, (u.id, u.username, u.display_name, u.password_hash, d.time(u.created_at))
    if invite_code_hash is not None:
        yield from use_invite(d, invite_code_hash, u.id, u.created_at)


def _one_user(d: Dialect, q: Q, key: str) -> Body[UserRecord | None]:
    row = yield ONE, q, (key,)
    return None if row is None else _user(d, row)


def _users(d: Dialect, wanted: list[str]) -> Body[dict[str, UserRecord]]:
    rows = yield ALL, USERS_BY_IDS, (d.ids(wanted),)
    return {r[0]: _user(d, r) for r in rows}


def _insert_device(d: Dialect, dev: DeviceRecord) -> Body[None]:
    if (yield ONE, USER_EXISTS, (dev.user_id,)) is None:
        raise NotFound("user", dev.user_id)
    created = d.time(dev.created_at)
    yield COUNT, INSERT_DEVICE, (dev.id, dev.user_id, dev.kind, dev.name, created, created, dev.identity_key)


def _devices_of(d: Dialect, wanted: list[str]) -> Body[dict[str, list[DeviceRecord]]]:
    result: dict[str, list[DeviceRecord]] = {uid: [] for uid in wanted}
    for row in (yield ALL, DEVICES_OF_USERS, (d.ids(wanted),)):
        result[row[1]].append(_device(d, row))
    return result


def _one_device(d: Dialect, device_id: str) -> Body[DeviceRecord | None]:
    row = yield ONE, DEVICE_BY_ID, (device_id,)
    return None if row is None else _device(d, row)


def _remove_device(d: Dialect, user_id: str, device_id: str, moment: float) -> Body[bool]:
    at = d.time(moment)
    if (yield COUNT, REMOVE_DEVICE, (device_id, user_id, at)) != 1:
        return False
    yield COUNT, REVOKE_DEVICE_TOKENS, (device_id, at)
    return True


def _rename_device(d: Dialect, user_id: str, device_id: str, name: str) -> Body[DeviceRecord | None]:
    if (yield COUNT, RENAME_DEVICE, (device_id, user_id, name)) != 1:
        return None
    row = yield ONE, DEVICE_BY_ID, (device_id,)
    return _device(d, row)


def _set_identity_key(d: Dialect, user_id: str, device_id: str, key: str) -> Body[DeviceRecord | None]:
    yield COUNT, SET_IDENTITY_KEY, (device_id, user_id, key)
    row = yield ONE, DEVICE_BY_ID, (device_id,)
    if row is None or row[1] != user_id or row[6] is not None:
        return None
    return _device(d, row)


def _set_agreement_key(
    d: Dialect, user_id: str, device_id: str, key: str, signature: str,
) -> Body[DeviceRecord | None]:
    yield COUNT, SET_AGREEMENT_KEY, (device_id, user_id, key, signature)
    row = yield ONE, DEVICE_BY_ID, (device_id,)
    if row is None or row[1] != user_id or row[6] is not None:
        return None
    return _device(d, row)


def _touch_device(d: Dialect, device_id: str, moment: float) -> Body[None]:
    if (yield COUNT, TOUCH_DEVICE, (device_id, d.time(moment))) != 1:
        raise NotFound("device", str(device_id))


def _insert_token(d: Dialect, t: TokenRecord, password_hash: str | None) -> Body[None]:
    if password_hash is None:
        if (yield ONE, USER_EXISTS, (t.user_id,)) is None:
            raise NotFound("user", t.user_id)
    elif (yield ONE, USER_WITH_PASSWORD, (t.user_id, password_hash)) is None:
        raise NotFound("user", t.user_id)  # gone, or its password changed since it was checked
    if t.device_id is not None and (yield ONE, OWNED_DEVICE, (t.device_id, t.user_id)) is None:
        raise NotFound("device", t.device_id)
    args = (t.token_hash, t.user_id, t.device_id, d.time(t.created_at), d.time(t.expires_at))
    yield COUNT, INSERT_TOKEN, args


def _resolve_token(d: Dialect, digest: str, moment: float) -> Body[TokenRecord | None]:
    r = yield ONE, RESOLVE_TOKEN, (digest,)
    if r is None or r[5] is not None or r[6] is not None:
        return None
    expires = d.epoch(r[4])
    if expires is not None and expires <= moment:
        return None
    return TokenRecord(
        token_hash=r[0], user_id=r[1], device_id=r[2], created_at=d.epoch(r[3]), expires_at=expires,
        revoked_at=None,
    )  # fmt: skip


def _revoke_token(d: Dialect, digest: str, moment: float) -> Body[bool]:
    return (yield COUNT, REVOKE_TOKEN, (digest, d.time(moment))) == 1


def _users_page(d: Dialect, limit: int, after: str) -> Body[list[tuple[UserRecord, int]]]:
    users = [_user(d, r) for r in (yield ALL, USERS_PAGE, (limit, after))]
    if not users:
        return []
    counts = dict((yield ALL, DEVICE_COUNTS, (d.ids([u.id for u in users]),)))
    return [(u, int(counts.get(u.id, 0))) for u in users]


def _rename_user(d: Dialect, user_id: str, display_name: str) -> Body[UserRecord]:
    if (yield COUNT, RENAME_USER, (user_id, display_name)) != 1:
        raise NotFound("user", user_id)
    row = yield ONE, USER_BY_ID, (user_id,)
    return _user(d, row)


def _change_password(
    d: Dialect, user_id: str, password_hash: str, moment: float, keep_token: str,
    remove_devices: bool, keep_device: str | None,
) -> Body[list[str]]:
    if (yield COUNT, SET_PASSWORD_HASH, (user_id, password_hash)) != 1:
        raise NotFound("user", user_id)
    at = d.time(moment)
    yield COUNT, REVOKE_OTHER_ACCOUNT_TOKENS, (user_id, at, keep_token)
    if not remove_devices:
        return []
    device_ids: list[str] = [r[0] for r in (yield ALL, LIVE_DEVICE_IDS, (user_id,))]
    if keep_device is not None and keep_device not in device_ids:
        raise NotFound("device", keep_device)
    removed = [device_id for device_id in device_ids if device_id != keep_device]
    for device_id in removed:
        yield COUNT, REMOVE_DEVICE, (device_id, user_id, at)
        yield COUNT, REVOKE_DEVICE_TOKENS, (device_id, at)
    return removed


def _delete_user(d: Dialect, user_id: str, moment: float) -> Body[list[str]]:
    at = d.time(moment)
    device_ids: list[str] = [r[0] for r in (yield ALL, LIVE_DEVICE_IDS, (user_id,))]
    if (yield COUNT, DELETE_USER, (user_id, at, DELETED_USERNAME_PREFIX)) != 1:
        raise NotFound("user", user_id)
    yield COUNT, REMOVE_DEVICES_OF_USER, (user_id, at)
    yield COUNT, REVOKE_TOKENS_OF_USER, (user_id, at)
    return device_ids


def normalise_username(username: object) -> str:
    """The stored form of a username: validated and lowercased."""
    return validate.text(username, "username", USERNAME_LEN).lower()


class AccountsRepository:
    """Repository methods for ``users``, ``user_devices`` and ``auth_tokens``."""

    _db: Database

    # -- users ---------------------------------------------------------------------------------

    async def create_user(
        self, username: str, display_name: str, password_hash: str, now: float,
        *, invite_code_hash: str | None = None,
    ) -> UserRecord:
        """Create a user; ``username`` is stored lowercased. With ``invite_code_hash``, the
        invitation with that code hash is used in the same transaction.

        Raises :class:`UsernameTaken` if the username exists in any letter case (the invitation
        stays open), :class:`InviteNotUsable` if the invitation is unknown, used, withdrawn or
        expired (no user is created), and :class:`InvalidInput` for empty or overlong values.
        """
        record = UserRecord(
            id=new_id(),
            username=normalise_username(username),
            display_name=validate.text(display_name, "display_name", DISPLAY_NAME_LEN),
            password_hash=validate.text(password_hash, "password_hash", PASSWORD_HASH_LEN),
            created_at=validate.instant(now, "now"),
        )
        try:
            await self._db.write(_insert_user, record, invite_code_hash)
        except IntegrityViolation as exc:
            raise UsernameTaken(record.username) from exc
        return record

    async def get_user(self, user_id: str) -> UserRecord | None:
        """The user with this id, or None."""
        return await self._db.read(_one_user, USER_BY_ID, user_id)

    async def get_user_by_username(self, username: str) -> UserRecord | None:
        """The user with this username (any letter case), or None."""
        if not isinstance(username, str) or not username or len(username) > USERNAME_LEN:
            return None
        return await self._db.read(_one_user, USER_BY_NAME, username.lower())

    async def get_users(self, user_ids: Sequence[str]) -> dict[str, UserRecord]:
        """The users among ``user_ids`` that exist, by id (unknown ids are simply absent)."""
        wanted = validate.ids(user_ids, "user_ids")
        if not wanted:
            return {}
        return await self._db.read(_users, wanted)

    async def rename_user(self, user_id: str, display_name: str) -> UserRecord:
        """Change a user's display name; returns the user as stored. Raises :class:`NotFound`
        for an unknown user and :class:`InvalidInput` for an empty or overlong name."""
        name = validate.text(display_name, "display_name", DISPLAY_NAME_LEN)
        return await self._db.write(_rename_user, validate.ident(user_id, "user_id"), name)

    async def list_users(self, *, limit: int = 100, after: str = "") -> list[tuple[UserRecord, int]]:
        """Accounts that are not deleted, by username, with how many devices each has: at most
        ``limit``, usernames after ``after`` (pass the last one to page on)."""
        validate.positive_int(limit, "limit", MAX_USERS_PAGE)
        if not isinstance(after, str) or len(after) > USERNAME_LEN:
            raise InvalidInput("after", f"must be a username of at most {USERNAME_LEN} characters")
        return await self._db.read(_users_page, limit, after.lower(), atomic=True)

    async def change_password(
        self, user_id: str, password_hash: str, now: float, *, keep_token_hash: str | None,
        remove_devices: bool = False, keep_device_id: str | None = None,
    ) -> list[str]:
        """Store a new password hash and revoke every account token of the user but
        ``keep_token_hash`` (the one that asked; None: every one), in one transaction. With
        ``remove_devices``, every device of the user but ``keep_device_id`` is removed too (its
        tokens revoked); returns the ids of the removed devices.

        Raises :class:`NotFound` for an unknown user, or a ``keep_device_id`` that is not one of
        the user's devices (then nothing changes).
        """
        return await self._db.write(
            _change_password, validate.ident(user_id, "user_id"),
            validate.text(password_hash, "password_hash", PASSWORD_HASH_LEN),
            validate.instant(now, "now"),
            "" if keep_token_hash is None else validate.token_hash(keep_token_hash),  # "": no token
            remove_devices,
            validate.optional_ident(keep_device_id, "keep_device_id"),
        )

    async def delete_user(self, user_id: str, now: float) -> list[str]:
        """Delete an account, in one transaction: its username (free to sign up with again),
        display name and password hash are erased, every device removed and every token
        revoked. The row stays, marked ``deleted_at``, for the calls in other people's history
        that reference it. Returns the ids of the devices removed. Raises :class:`NotFound`
        for an unknown or already deleted user."""
        moment = validate.instant(now, "now")
        return await self._db.write(_delete_user, validate.ident(user_id, "user_id"), moment)

    # -- devices -------------------------------------------------------------------------------

    async def create_device(self, user_id: str, kind: str, name: str, now: float,
                            identity_key: str | None = None) -> DeviceRecord:
        """Register a device for a user, with its public identity key if it has one (the API
        checks its form: ``facecall.e2ee.identity``). Raises :class:`NotFound` for an unknown
        user."""
        moment = validate.instant(now, "now")
        record = DeviceRecord(
            id=new_id(),
            user_id=validate.ident(user_id, "user_id"),
            kind=validate.choice(kind, "kind", DEVICE_KINDS),
            name=validate.text(name, "name", DEVICE_NAME_LEN),
            created_at=moment,
            last_seen_at=moment,
            removed_at=None,
            identity_key=None if identity_key is None else validate.text(
                identity_key, "identity_key", IDENTITY_KEY_LEN),
        )
        await self._db.write(_insert_device, record)
        return record

    async def list_devices(self, user_id: str) -> list[DeviceRecord]:
        """The user's devices that were not removed, oldest first."""
        return (await self.list_devices_of_users([user_id]))[user_id]

    async def list_devices_of_users(self, user_ids: Sequence[str]) -> dict[str, list[DeviceRecord]]:
        """Not-removed devices of each user, oldest first; every requested id is a key."""
        wanted = validate.ids(user_ids, "user_ids")
        if not wanted:
            return {}
        return await self._db.read(_devices_of, wanted)

    async def get_device(self, device_id: str) -> DeviceRecord | None:
        """The device with this id (removed ones too), or None."""
        return await self._db.read(_one_device, device_id)

    async def remove_device(self, user_id: str, device_id: str, now: float) -> bool:
        """Remove one of the user's devices and revoke its tokens.

        Returns False (and changes nothing) if the device is unknown, belongs to another user or
        was removed already.
        """
        moment = validate.instant(now, "now")
        return await self._db.write(_remove_device, user_id, device_id, moment)

    async def rename_device(self, user_id: str, device_id: str, name: str) -> DeviceRecord | None:
        """Change the name of one of the user's devices; returns the device as stored.

        Returns None (and changes nothing) if the device is unknown, belongs to another user or
        was removed. Raises :class:`InvalidInput` for an empty or overlong name.
        """
        checked = validate.text(name, "name", DEVICE_NAME_LEN)
        return await self._db.write(_rename_device, validate.ident(user_id, "user_id"), device_id, checked)

    async def set_identity_key(self, user_id: str, device_id: str, key: str) -> DeviceRecord | None:
        """Give one of the user's devices its public identity key, once: a device that has one
        keeps it (compare the returned ``identity_key`` with ``key`` to tell). Returns the
        device as stored, or None if it is unknown, another user's or removed."""
        checked = validate.text(key, "identity_key", IDENTITY_KEY_LEN)
        return await self._db.write(
            _set_identity_key, validate.ident(user_id, "user_id"), device_id, checked)

    async def set_agreement_key(
        self, user_id: str, device_id: str, key: str, signature: str,
    ) -> DeviceRecord | None:
        """Store the certificate of one of the user's devices' agreement key (docs/sframe.md,
        "Key distribution (the core)"): the key and its identity key's signature, replacing any
        earlier one. The caller checks the certificate (``facecall.e2ee.agreement``); the store
        checks only that each is a string no longer than its column (else
        :class:`InvalidInput`). A device without an identity key keeps none (its
        ``identity_key`` is None: compare to tell). Returns the device as stored, or None if it
        is unknown, another user's or removed."""
        checked_key = validate.text(key, "agreement_key", AGREEMENT_KEY_LEN)
        checked_signature = validate.text(signature, "agreement_signature", SIGNATURE_LEN)
        return await self._db.write(
            _set_agreement_key, validate.ident(user_id, "user_id"), device_id, checked_key,
            checked_signature)

    async def touch_device(self, device_id: str, now: float) -> None:
        """Record that the device was seen at ``now``. Raises :class:`NotFound` if it is unknown
        or was removed."""
        moment = validate.instant(now, "now")
        await self._db.write(_touch_device, device_id, moment)

    # -- tokens --------------------------------------------------------------------------------

    async def create_token(
        self,
        token_hash: str,
        user_id: str,
        device_id: str | None,
        now: float,
        expires_at: float | None,
        *,
        password_hash: str | None = None,
    ) -> None:
        """Store a token by its hash (the caller hashes). ``device_id`` None: account token.

        With ``password_hash`` (what a sign-in checked the password against), the token is
        stored only if that is still the user's password: a sign-in that was checking the old
        password while it changed gets no token (the change revoked every other one).

        Raises :class:`NotFound` for an unknown or deleted user (or, with ``password_hash``, one
        whose password changed), or a device that is not the user's (or was removed);
        :class:`TokenExists` if the hash is stored already.
        """
        record = TokenRecord(
            token_hash=validate.token_hash(token_hash),
            user_id=validate.ident(user_id, "user_id"),
            device_id=validate.optional_ident(device_id, "device_id"),
            created_at=validate.instant(now, "now"),
            expires_at=validate.optional_instant(expires_at, "expires_at"),
            revoked_at=None,
        )
        try:
            await self._db.write(_insert_token, record, password_hash)
        except IntegrityViolation as exc:
            raise TokenExists() from exc

    async def resolve_token(self, token_hash: str, now: float) -> TokenRecord | None:
        """The token, or None if unknown, expired (``expires_at <= now``), revoked, or its
        device was removed."""
        try:
            digest = validate.token_hash(token_hash)
        except InvalidInput:
            return None
        moment = validate.instant(now, "now")
        return await self._db.read(_resolve_token, digest, moment)

    async def revoke_token(self, token_hash: str, now: float) -> bool:
        """Revoke a token. Returns whether a live token was revoked (unknown or already revoked
        tokens are left alone, so logging out twice is harmless)."""
        try:
            digest = validate.token_hash(token_hash)
        except InvalidInput:
            return False
        moment = validate.instant(now, "now")
        return await self._db.write(_revoke_token, digest, moment)
