"""The SFrame keys of one device's group media (docs/sframe.md, "In the SDK"): its own sender
keys, made anew and sealed to the room's other devices whenever they change, and the keys the
others send it. A 1:1 call's P2P media uses the same keys with a member list this device makes
itself, the remote device alone (:meth:`GroupKeys.set_members`, facecall.client.p2p_sframe).

* **Who gets a key.** The server says who has a place in the call's SFU room: ``members`` in
  the ``ok`` of ``sfu.join``, then a ``sfu.members`` event at every change (docs/protocol.md).
  Each entry carries ``joined``, which changes when a device joins again (a restarted program
  lost its keys): that is a change too. This device follows only the lists of its own current
  join (:class:`MemberLists`: they name it with its reply's ``joined``).
* **On every change** this device makes a new sender key (new KID, fresh ``base_key``:
  :class:`~facecall.e2ee.media_keys.SenderKeys`), seals it to each other member's agreement
  key — read from the server's list and checked with that device's identity key, pinned on
  first use like the key that signs its SDP (:meth:`Identity.agreement_key_of`) — and sends it
  to each of them as ``call.key``. It encrypts with the new key :data:`SWITCH_DELAY` later, so
  that the others hold it before frames under it arrive (its first key at once: nothing was
  sent before). A device that left never gets a key made after it left (forward secrecy); a
  newcomer gets none made before it came.
* **Keys received** (``call.key``) are opened with this device's agreement key after the
  signature is checked against the sender device's identity key; a sender's previous key is
  kept for :data:`~facecall.e2ee.media_keys.GRACE` seconds (frames in flight), a departed
  member's keys are dropped at once (:class:`~facecall.e2ee.media_keys.ReceivedKeys`). Each
  sender's keys are kept apart: a slot's frames decrypt only under the keys of the device the
  SFU names for that slot (:class:`FrameCipher`).
* **Nothing under a key a departed device holds.** When a device that holds the key this
  device encrypts with (or is about to) has left and no new key can be made for those who
  remain (nobody is left, none of their agreement keys can be had, the rotation failed), this
  device stops sending (:meth:`FrameCipher.stop`) until the next change gives it a key: the
  SFU receives every frame, and the one who left must not be able to read what comes after.
* A member whose agreement key cannot be had (none published, a certificate that does not
  check out, the server not answering) is left out of the seal and listed in
  :attr:`GroupKeys.unsealed`: it cannot read this device's media. Its key is looked up again
  after :data:`RETRY_FIRST` seconds, then twice as long each time up to :data:`RETRY_MAX`,
  and once it is had, a new key goes to every member. A key that does not open is logged and counted in
  :attr:`GroupKeys.refused`; nothing else changes.

Membership changes and received keys are each handled in order, by one task each.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from facecall.client.errors import FacecallError
from facecall.client.sframe_media import FrameCipher
from facecall.e2ee.agreement import AgreementKey, MediaKeyError
from facecall.e2ee.identity import IdentityError
from facecall.e2ee.media_keys import KeyChanges, ReceivedKeys
from facecall.logs import get_logger

if TYPE_CHECKING:
    from facecall.client.call import Call
    from facecall.client.identity import Identity

log = get_logger(__name__)

#: seconds between sending a new key and encrypting with it (the others must hold it first)
SWITCH_DELAY = 0.3
#: the most entries a member list may have (the SFU's rooms hold fewer)
MAX_MEMBERS = 64
#: the most member lists kept while the reply to ``sfu.join`` is awaited
MAX_EARLY = 16
#: seconds before the agreement keys of members no key could be sealed to are looked up again,
#: doubling each time up to RETRY_MAX (the wait starts over at every membership change)
RETRY_FIRST, RETRY_MAX = 1.0, 30.0

#: the call events that are group media's E2E keys and membership
GROUP_KEY_EVENTS = frozenset({"call.key", "sfu.members"})

Member = tuple[str, int]
"""A member device's (user id, ``joined``)."""


def parse_members(wire: object) -> dict[str, Member]:
    """A ``members`` list: device id → (user id, joined), this device included. Entries that
    are not well formed are skipped (the server makes the list)."""
    members: dict[str, Member] = {}
    if not isinstance(wire, list):
        return members
    for entry in wire[:MAX_MEMBERS]:
        if not isinstance(entry, Mapping):
            continue
        user, device, joined = entry.get("user_id"), entry.get("device_id"), entry.get("joined")
        if (isinstance(user, str) and isinstance(device, str) and isinstance(joined, int)
                and not isinstance(joined, bool)):
            members[device] = (user, joined)
    return members


class MemberLists:
    """Which member lists belong to this device's current join of the room: those that name
    it with the ``joined`` of its ``sfu.join`` reply. Events and replies reach the SDK apart,
    so ``sfu.members`` events that come before the reply wait for it; lists of an earlier join
    of this device (a join again replaces it) are ignored."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.joined: int | None = None
        """This device's join number (from the reply; None before it)."""
        self._early: list[dict[str, Member]] = []

    def replied(self, wire: object) -> dict[str, Member] | None:
        """The list to apply on the reply's ``members``: the newest event of this join that came
        before it, else the reply's own; None if the reply does not name this device."""
        members = parse_members(wire)
        own = members.get(self.device_id)
        if own is None:
            return None
        self.joined = own[1]
        current = [m for m in self._early if self._current(m)]
        self._early.clear()
        return current[-1] if current else members

    def rejoining(self) -> None:
        """This device joins again: lists wait for the new reply's ``joined``."""
        self.joined = None
        self._early.clear()

    def event(self, wire: object) -> dict[str, Member] | None:
        """The list to apply on a ``sfu.members`` event, if any now."""
        members = parse_members(wire)
        if self.joined is None:
            self._early = [*self._early, members][-MAX_EARLY:]
            return None
        return members if self._current(members) else None

    def _current(self, members: Mapping[str, Member]) -> bool:
        own = members.get(self.device_id)
        return own is not None and own[1] == self.joined


class GroupKeys:
    """This device's SFrame keys in one call's group media (see the module docstring); the
    :class:`FrameCipher` it feeds encrypts and decrypts the frames."""

    def __init__(self, call: Call, cipher: FrameCipher) -> None:
        device = call.device
        identity = device.identity
        if identity is None or device.user_id is None or device.device_id is None or device.token is None:
            raise FacecallError("group media needs a connected device with its identity key")
        self.call, self.cipher = call, cipher
        self._identity: Identity = identity
        self._user, self._device, self._token = device.user_id, device.device_id, device.token
        self._sender = identity.sender_keys(call.id, self._user, self._device)
        self._received = ReceivedKeys(call.id)
        self._members: dict[str, Member] = {}
        self._lists = MemberLists(self._device)
        self._agreement_keys: dict[tuple[str, Member], AgreementKey] = {}
        self._member_lists: asyncio.Queue[dict[str, Member] | None] = asyncio.Queue()
        """Member lists to apply (the newest only), or None: look the unsealed members up again."""
        self._retry: asyncio.TimerHandle | None = None
        self._retry_wait = RETRY_FIRST
        self._keys: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._switches: list[tuple[asyncio.TimerHandle, int, frozenset[str]]] = []
        """The switches to keys sent and not used yet, oldest first: timer, KID, and the
        devices that hold the key."""
        self._holders: frozenset[str] = frozenset()
        """The devices that hold the key this device encrypts with, or will once the pending
        switches run (all of them, while any is pending)."""
        self._expiry: asyncio.TimerHandle | None = None
        self.unsealed: frozenset[str] = frozenset()
        """Member devices this device could not seal its current key to (no usable agreement
        key): they cannot read its media."""
        self.refused: Counter[str] = Counter()
        """Keys received that were refused, by error class name."""
        self.rotations = 0
        """Sender keys made so far."""
        self._tasks = [call._in_background(self._follow_members()), call._in_background(self._open_keys())]

    @property
    def members(self) -> Mapping[str, Member]:
        """The room's other devices as last told: device id → (user id, joined)."""
        return dict(self._members)

    def senders(self) -> set[str]:
        """The devices whose current key this device holds."""
        return self._received.senders()

    # ------------------------------------------------------------------ inputs

    def members_replied(self, wire: object) -> None:
        """The ``members`` of the ``sfu.join`` reply (:class:`MemberLists` picks the list)."""
        members = self._lists.replied(wire)
        if members is None:
            log.warning("group_keys.not_a_member", call_id=self.call.id)
            return
        self._queue_members(members)

    def rejoining(self) -> None:
        """This device joins the room again (a new connection: docs/protocol.md, "Joining
        again"): only the new join's lists are its own, and every member gets a new key from
        it — they drop the keys of a device that joined again."""
        self._lists.rejoining()
        self._members = {}
        # the others drop this device's keys when it joins again: send nothing until the new
        # join's key (used at once, nothing being sent)
        self._cancel_switches()
        self.cipher.stop()
        self._holders = frozenset()

    def set_members(self, members: dict[str, Member]) -> None:
        """The member list, as this device knows it without the SFU (1:1 media: the remote
        device, its ``joined`` an epoch of this device's counting)."""
        self._queue_members(members)

    def _queue_members(self, members: dict[str, Member]) -> None:
        """Queue a list for the follower, which applies only the newest: the older ones go."""
        while not self._member_lists.empty():
            self._member_lists.get_nowait()
        self._member_lists.put_nowait(members)

    def deliver(self, event: dict[str, Any]) -> None:
        """A ``sfu.members`` or ``call.key`` event of this call."""
        if event["type"] == "sfu.members":
            members = self._lists.event(event.get("members"))
            if members is not None:
                self._queue_members(members)
        elif event["type"] == "call.key":
            self._keys.put_nowait(event)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._retry is not None:
            self._retry.cancel()
        self._cancel_switches()
        if self._expiry is not None:
            self._expiry.cancel()

    # ------------------------------------------------------------------ sending keys

    async def _follow_members(self) -> None:
        while True:
            members = await self._member_lists.get()  # the newest: _queue_members keeps one
            try:
                if members is None:
                    await self._seal_to_unsealed()
                else:
                    await self._members_changed(members)
            except Exception as exc:  # a failed rotation must not end the follower
                log.warning("group_keys.rotation_failed", call_id=self.call.id, error=repr(exc))
            self._arm_retry()

    def _arm_retry(self) -> None:
        """Look the unsealed members' agreement keys up again later, if there are any."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if not self.unsealed:
            return
        self._retry = asyncio.get_running_loop().call_later(self._retry_wait, self._queue_retry)
        self._retry_wait = min(RETRY_MAX, self._retry_wait * 2)

    def _queue_retry(self) -> None:
        self._retry = None
        if self._member_lists.empty():  # (a list waiting is applied, with a lookup of its own)
            self._member_lists.put_nowait(None)

    async def _seal_to_unsealed(self) -> None:
        """A new key for every member, if one that had none can have one now (its agreement
        key is looked up again; the others' are known)."""
        waiting = {device: self._members[device] for device in self.unsealed if device in self._members}
        found = await asyncio.gather(*(self._agreement_key(device, member)
                                       for device, member in waiting.items()))
        log.info("group_keys.retry", call_id=self.call.id, unsealed=sorted(waiting),
                 found=sum(key is not None for key in found))
        if any(key is not None for key in found):
            await self._rotate(self._members)

    async def _members_changed(self, listed: dict[str, Member]) -> None:
        members = {device: member for device, member in listed.items() if device != self._device}
        if members == self._members:
            return
        self._retry_wait = RETRY_FIRST
        for device, member in self._members.items():
            if members.get(device) != member:  # left, or joined again (its old keys are gone)
                self._apply(self._received.remove_sender(device))
        self._members = members
        self._agreement_keys = {k: v for k, v in self._agreement_keys.items()
                                if members.get(k[0]) == k[1]}
        rotated = False
        try:
            rotated = await self._rotate(members)
        finally:
            if not rotated and self._holders - members.keys():
                self._stop_sending()

    def _stop_sending(self) -> None:
        """A device that holds the key in use left and no new key could be made: send nothing."""
        self._cancel_switches()
        self.cipher.stop()
        log.warning("group_keys.stopped", call_id=self.call.id, departed=sorted(
            self._holders - self._members.keys()))
        self._holders = frozenset()

    def _cancel_switches(self) -> None:
        for timer, _, _ in self._switches:
            timer.cancel()
        self._switches = []

    def _use_key(self, kid: int, base_key: bytes, holders: frozenset[str]) -> None:
        self._switches = [entry for entry in self._switches if entry[1] != kid]
        self.cipher.use_key(kid, base_key)
        self._holders = holders.union(*(held for _, _, held in self._switches))

    async def _rotate(self, members: dict[str, Member]) -> bool:
        """Make a new key, seal and send it to ``members``, and switch to it: False if there
        is nobody it can be sealed to."""
        if not members:
            return False  # nobody to hear: the next member gets a new key
        known = [key for device, member in members.items()
                 if (key := self._agreement_keys.get((device, member))) is not None]
        sealed_to: set[str] | None = None
        if self._holders - members.keys() and len(known) < len(members):
            # a holder left, and keys must be read (which a server can stall): the key it
            # holds is not used meanwhile — a new one for those whose keys are known, or none
            if known:
                await self._seal_and_switch(known)
                sealed_to = {key.device_id for key in known}
            else:
                self._stop_sending()
        found = await asyncio.gather(*(self._agreement_key(device, member)
                                       for device, member in members.items()))
        keys = [key for key in found if key is not None]
        self.unsealed = frozenset(members) - {key.device_id for key in keys}
        if not keys:
            return False
        if sealed_to != {key.device_id for key in keys}:  # (else: sealed to them just now)
            await self._seal_and_switch(keys)
        return True

    async def _seal_and_switch(self, keys: list[AgreementKey]) -> None:
        """A new key sealed and sent to ``keys``' devices, used after :data:`SWITCH_DELAY`."""
        message = self._sender.rotate(keys)
        kid, base_key = self._sender.kid, self._sender.base_key
        assert kid is not None and base_key is not None
        self.rotations += 1
        await asyncio.gather(*(self._send(key.device_id, message) for key in keys))
        # A pending switch goes on unless a device that left holds its key: cancelling it for
        # this newer one would keep the key in use (which one who left may hold) longer, and
        # changes that keep coming (a server can make them) would keep it in use for good.
        for timer, _, held in self._switches:
            if held - self._members.keys():
                timer.cancel()
        self._switches = [entry for entry in self._switches if not entry[2] - self._members.keys()]
        delay = 0.0 if self.cipher.kid is None else SWITCH_DELAY
        holders = frozenset(key.device_id for key in keys)
        self._holders |= holders  # the key in use goes on until the switch
        timer = asyncio.get_running_loop().call_later(delay, self._use_key, kid, base_key, holders)
        self._switches.append((timer, kid, holders))
        log.info("group_keys.rotated", call_id=self.call.id, kid=kid, members=len(keys),
                 unsealed=sorted(self.unsealed))

    async def _agreement_key(self, device: str, member: Member) -> AgreementKey | None:
        """A member's checked agreement key (kept while it stays the same member)."""
        key = self._agreement_keys.get((device, member))
        if key is not None:
            return key
        try:
            key = await self._identity.agreement_key_of(self.call.device.api, self._token,
                                                        member[0], device)
        except (IdentityError, MediaKeyError) as exc:
            log.warning("group_keys.no_agreement_key", call_id=self.call.id, device_id=device,
                        error=str(exc))
            return None
        self._agreement_keys[(device, member)] = key
        return key

    async def _send(self, device: str, message: dict[str, object]) -> None:
        try:
            await self.call.device.request("call.key", call_id=self.call.id, to_device=device,
                                           key=message)
        except FacecallError as exc:  # it left meanwhile, or signaling is down: the next change re-keys
            log.warning("group_keys.not_sent", call_id=self.call.id, device_id=device, error=str(exc))

    # ------------------------------------------------------------------ receiving keys

    async def _open_keys(self) -> None:
        while True:
            event = await self._keys.get()
            try:
                await self._open(event)
            except (IdentityError, MediaKeyError) as exc:
                self.refused[type(exc).__name__] += 1
                log.warning("group_keys.refused", call_id=self.call.id,
                            from_device=event.get("from_device"), error=f"{type(exc).__name__}: {exc}")
            except Exception as exc:
                self.refused[type(exc).__name__] += 1
                log.warning("group_keys.failed", call_id=self.call.id, error=repr(exc))

    async def _open(self, event: dict[str, Any]) -> None:
        user, device = event["from_user"], event["from_device"]
        sender_key = await self._identity.key_of(self.call.device.api, self._token, user, device)
        opened = self._identity.open_sender_key(event.get("key"), call_id=self.call.id,
                                                sender_key=sender_key, user_id=self._user,
                                                device_id=self._device)
        if (opened.sender_user, opened.sender_device) != (user, device):
            raise MediaKeyError(f"a key of device {opened.sender_device} relayed from {device}")
        self._apply(self._received.add(opened, time.monotonic()))

    def _apply(self, changes: KeyChanges) -> None:
        self.cipher.apply(changes)
        self._arm_expiry()

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        when = self._received.get_timer()
        if when is not None:
            self._expiry = asyncio.get_running_loop().call_later(
                max(0.0, when - time.monotonic()), self._expire)

    def _expire(self) -> None:
        self._expiry = None
        self._apply(self._received.handle_timer(time.monotonic()))

