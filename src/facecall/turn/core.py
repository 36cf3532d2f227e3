"""STUN/TURN request processing (RFC 8489 §6.3, RFC 8656 §7-§12), independent of sockets.

Listeners (:mod:`facecall.turn.server`) hand each STUN message from a client to
:meth:`TurnCore.handle_stun` together with a :class:`ClientContext` (its 5-tuple and how to
answer); ChannelData never comes here, listeners give it straight to the allocation.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from facecall.logs import get_logger
from facecall.turn import metrics, stun
from facecall.turn.allocation import (
    NEVER_PAUSED,
    Allocation,
    FiveTuple,
    FlowControl,
    RelayPortPool,
    RelayTransport,
    Ticker,
)
from facecall.turn.auth import Authenticated, Authenticator, RequestError
from facecall.turn.config import TurnConfig
from facecall.turn.peers import PeerPolicy
from facecall.turn.rest import rest_expiry
from facecall.turn.stun import Class, Message, Method, StunError

log = get_logger(__name__)

UDP_TRANSPORT = 17  # REQUESTED-TRANSPORT protocol number (RFC 8656 §18.7)
EVEN_PORT_RESERVE = 0x80  # the R bit of EVEN-PORT (RFC 8656 §18.8)
# At most one traceback per this many seconds when handling a message fails unexpectedly
# (formatting one costs about 13 ms, so one per packet would itself be an amplification).
TRACEBACK_LOG_INTERVAL = 60.0

# Comprehension-required attributes this server understands (RFC 8489 §14, RFC 8656 §18).
# DONT-FRAGMENT, RESERVATION-TOKEN, PASSWORD-ALGORITHM and USERHASH are not supported and
# therefore answered with 420 (RFC 8656 §7.2 allows this for DONT-FRAGMENT).
KNOWN_REQUIRED = frozenset(
    {
        stun.MAPPED_ADDRESS,
        stun.USERNAME,
        stun.MESSAGE_INTEGRITY,
        stun.ERROR_CODE,
        stun.UNKNOWN_ATTRIBUTES,
        stun.CHANNEL_NUMBER,
        stun.LIFETIME,
        stun.XOR_PEER_ADDRESS,
        stun.DATA,
        stun.REALM,
        stun.NONCE,
        stun.XOR_RELAYED_ADDRESS,
        stun.REQUESTED_ADDRESS_FAMILY,
        stun.EVEN_PORT,
        stun.REQUESTED_TRANSPORT,
        stun.MESSAGE_INTEGRITY_SHA256,
        stun.XOR_MAPPED_ADDRESS,
        stun.PRIORITY,
        stun.USE_CANDIDATE,
    }
)


def unknown_required(message: Message) -> list[int]:
    """The comprehension-required attributes of ``message`` this server does not understand
    (RFC 8489 §6.3), sorted, each once."""
    return sorted(
        {
            t
            for t, _ in message.attributes
            if stun.is_comprehension_required(t) and t not in KNOWN_REQUIRED
        }
    )


def quota_user(username: str) -> str:
    """Whom an allocation counts against: the user part of a REST username (every credential
    minted for one user shares the quota), else the username itself."""
    if rest_expiry(username) is not None and ":" in username:
        return username.split(":", 1)[1]
    return username


RelayOpener = Callable[[socket.socket, Allocation], Awaitable[RelayTransport]]


async def asyncio_relay(sock: socket.socket, allocation: Allocation) -> RelayTransport:
    """The default relay transport: an asyncio datagram endpoint whose protocol is the
    allocation."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: allocation, sock=sock)
    return transport


@dataclass
class ClientContext:
    """Where a message came from and how to answer it."""

    five_tuple: FiveTuple
    send: Callable[[bytes], None]
    stream: bool
    index: dict[Any, Allocation]  # the listener's client -> allocation map for ChannelData
    index_key: Any
    alive: Callable[[], bool] = lambda: True  # False once a stream connection has closed
    # Whose ``paused`` flag says the client's transport is over its write high-water mark:
    # relayed data is then dropped, so a client that does not read cannot make us buffer.
    flow: FlowControl = NEVER_PAUSED


class TurnCore:
    """Allocations and the request handlers of one server. ``open_relay`` turns a bound relay
    socket into the transport of its allocation (the I/O path's choice)."""

    def __init__(
        self,
        config: TurnConfig,
        clock: Callable[[], float],
        open_relay: RelayOpener = asyncio_relay,
    ) -> None:
        self.config = config
        self.clock = clock
        self.open_relay = open_relay
        self.ticker = Ticker(clock)
        self.auth = Authenticator(
            config.realm, config.static_users, config.rest_secrets, config.nonce_lifetime, clock
        )
        self.policy = PeerPolicy(config.allowed_peers, config.denied_peers)
        self.ports = RelayPortPool(
            config.relay_port_min, config.relay_port_max, config.relay_socket_buffer
        )
        self.allocations: dict[FiveTuple, Allocation] = {}
        self.per_user: dict[str, int] = {}
        # Allocations being opened (relay socket not yet ready), per 5-tuple and per quota user:
        # they count against the quotas like live ones (RFC 8656 §7.2, 486 and 508).
        self._pending: set[FiveTuple] = set()
        self.pending_per_user: dict[str, int] = {}
        self._traceback_quiet_until = float("-inf")
        self._tracebacks_suppressed = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._software = config.software.encode()[:763]

    # --- entry points ---

    def handle_stun(self, data: bytes, ctx: ClientContext) -> None:
        """Process one STUN message from a client; malformed ones are dropped (RFC 8489 §6.3).

        Nothing raised while handling one message reaches the listener (where it would lose
        the rest of a UDP batch or close a TCP/TLS connection): an unexpected exception drops
        that message unanswered (a response formed half-way could be wrong, and a second
        answer to the same transaction worse; the client retransmits or gives up as for a
        lost packet), counts it in ``facecall_turn_internal_errors_total`` and logs its
        traceback at most once per :data:`TRACEBACK_LOG_INTERVAL`."""
        self.ticker.tick()
        try:
            self._handle_message(data, ctx)
        except Exception as exc:  # contained on purpose, see above
            self._contain_failure(exc, ctx)

    def _handle_message(self, data: bytes, ctx: ClientContext) -> None:
        try:
            message = stun.parse_message(data)
        except StunError:
            return
        if stun.check_fingerprint(message) is False:
            return
        if message.message_class == Class.REQUEST:
            self._on_request(message, ctx)
        elif message.message_class == Class.INDICATION and message.method == Method.SEND:
            self._on_send_indication(message, ctx)

    def _contain_failure(self, exc: Exception, ctx: ClientContext) -> None:
        """Count a message whose handling raised; log the traceback if none was logged in the
        last :data:`TRACEBACK_LOG_INTERVAL` seconds, with how many were not logged since."""
        metrics.INTERNAL_ERRORS.inc()
        now = self.ticker.now
        if now < self._traceback_quiet_until:
            self._tracebacks_suppressed += 1
            return
        self._traceback_quiet_until = now + TRACEBACK_LOG_INTERVAL
        log.error(
            "turn message handling failed; message dropped",
            client=f"{ctx.five_tuple.protocol}:{ctx.five_tuple.client}",
            suppressed=self._tracebacks_suppressed,
            exc_info=exc,
        )
        self._tracebacks_suppressed = 0

    def expire(self) -> None:
        """Delete expired allocations, permissions and channels; report usage (§7, §9, §12)."""
        now = self.ticker.tick()
        for allocation in list(self.allocations.values()):
            if allocation.expires < now:
                self.delete(allocation, "expired")
            else:
                allocation.expire(now)
        metrics.report_usage(self.allocations.values())

    def delete(self, allocation: Allocation, reason: str) -> None:
        """End an allocation: close its relay socket, log and count its usage."""
        if self.allocations.pop(allocation.five_tuple, None) is None:
            return
        allocation.index.pop(allocation.index_key, None)
        allocation.close()
        user = quota_user(allocation.username)
        count = self.per_user.get(user, 1) - 1
        if count:
            self.per_user[user] = count
        else:
            self.per_user.pop(user, None)
        metrics.report_usage([allocation])
        metrics.ALLOCATIONS.dec()
        usage = allocation.usage
        log.info(
            "turn allocation ended",
            reason=reason,
            username=allocation.username,
            client=f"{allocation.five_tuple.protocol}:{allocation.five_tuple.client}",
            relayed=allocation.relayed_address,
            seconds=round(self.ticker.now - allocation.created, 3),
            packets_to_peer=usage.packets_to_peer,
            bytes_to_peer=usage.bytes_to_peer,
            packets_from_peer=usage.packets_from_peer,
            bytes_from_peer=usage.bytes_from_peer,
            dropped=usage.dropped,
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except asyncio.CancelledError:
                pass
        for allocation in list(self.allocations.values()):
            self.delete(allocation, "server stopped")

    # --- responses ---

    def _respond(
        self,
        request: Message,
        ctx: ClientContext,
        attributes: list[tuple[int, bytes]],
        key: bytes | None,
        error: int | None = None,
    ) -> bytes:
        attrs = list(attributes)
        if error is not None:
            attrs.insert(0, (stun.ERROR_CODE, stun.encode_error_code(error)))
        attrs.append((stun.SOFTWARE, self._software))
        response = Message(
            request.method,
            Class.ERROR if error is not None else Class.SUCCESS,
            request.transaction_id,
            attrs,
        ).encode(integrity_key=key, fingerprint=request.get(stun.FINGERPRINT) is not None)
        ctx.send(response)
        metrics.count_request(request.method, error)
        return response

    # --- requests ---

    def _on_request(self, message: Message, ctx: ClientContext) -> None:
        """A request (RFC 8489 §6.3.1). The unknown comprehension-required attributes are
        looked at "once the authentication checks are done" (§6.3): at once for Binding and
        unknown methods, which take no credentials, after the credential checks for the TURN
        methods, whose 420 is then signed with the request's key (§6.3.1.1, §9.2.4)."""
        unknown = unknown_required(message)
        handler: Callable[..., list[tuple[int, bytes]] | None] | None = {
            Method.ALLOCATE: self._on_allocate,
            Method.REFRESH: self._on_refresh,
            Method.CREATE_PERMISSION: self._on_create_permission,
            Method.CHANNEL_BIND: self._on_channel_bind,
        }.get(message.method)
        if handler is None:
            if unknown:
                self._respond_unknown(message, ctx, unknown, None)
            elif message.method == Method.BINDING:
                self._on_binding(message, ctx)
            else:
                self._respond(message, ctx, [], None, 400)
            return
        try:
            who = self.auth.authenticate(message)
        except RequestError as exc:
            self._respond(message, ctx, exc.attributes, None, exc.code)
            return
        if unknown:
            self._respond_unknown(message, ctx, unknown, who.key)
            return
        try:
            result = handler(message, ctx, who)
        except RequestError as exc:
            self._respond(message, ctx, exc.attributes, who.key, exc.code)
            return
        except StunError:
            self._respond(message, ctx, [], who.key, 400)
            return
        if result is not None:
            self._respond(message, ctx, result, who.key)

    def _respond_unknown(
        self, request: Message, ctx: ClientContext, unknown: list[int], key: bytes | None
    ) -> None:
        """420 Unknown Attribute listing ``unknown`` in UNKNOWN-ATTRIBUTES (RFC 8489 §6.3.1)."""
        attributes = [(stun.UNKNOWN_ATTRIBUTES, stun.encode_unknown_attributes(unknown))]
        self._respond(request, ctx, attributes, key, 420)

    def _on_binding(self, message: Message, ctx: ClientContext) -> None:
        """Binding (RFC 8489 §7.3.1): the reflexive transport address."""
        mapped = stun.encode_xor_address(ctx.five_tuple.client, message.transaction_id)
        self._respond(message, ctx, [(stun.XOR_MAPPED_ADDRESS, mapped)], None)

    def _allocation_for(self, ctx: ClientContext, who: Authenticated) -> Allocation:
        """The allocation of this 5-tuple, same credentials (§7.3, §9.2, §11.2)."""
        allocation = self.allocations.get(ctx.five_tuple)
        if allocation is None:
            raise RequestError(437)
        if allocation.username != who.username:
            raise RequestError(441)
        return allocation

    def _lifetime(self, message: Message) -> int:
        """The desired lifetime (RFC 8656 §7.2 step 9, §7.3)."""
        value = message.get(stun.LIFETIME)
        if value is None:
            return self.config.default_lifetime
        requested = stun.decode_uint32(value)
        if requested == 0:
            return 0
        return max(self.config.default_lifetime, min(requested, self.config.max_lifetime))

    def _on_allocate(
        self, message: Message, ctx: ClientContext, who: Authenticated
    ) -> list[tuple[int, bytes]] | None:
        """Allocate (RFC 8656 §7.2)."""
        existing = self.allocations.get(ctx.five_tuple)
        if existing is not None:
            if existing.allocate_transaction_id == message.transaction_id:
                ctx.send(existing.allocate_response)  # a retransmission (§7.2, step 2)
                return None
            raise RequestError(437)
        if ctx.five_tuple in self._pending:
            return None  # retransmission of an Allocate still being processed
        transport = message.get(stun.REQUESTED_TRANSPORT)
        if transport is None or len(transport) != 4:
            raise RequestError(400)
        if transport[0] != UDP_TRANSPORT:
            raise RequestError(442)
        family = self._requested_family(message)
        even = self._even_port(message)
        lifetime = self._lifetime(message) or self.config.default_lifetime
        user = quota_user(who.username)
        in_use = self.per_user.get(user, 0) + self.pending_per_user.get(user, 0)
        if in_use >= self.config.max_allocations_per_user:
            raise RequestError(486)
        if len(self.allocations) + len(self._pending) >= self.config.max_allocations:
            raise RequestError(508)
        host = self.config.relay_ipv4 if family == stun.FAMILY_IPV4 else self.config.relay_ipv6
        assert host is not None
        try:
            sock = self.ports.bind(host, family, even=even)
        except OSError as exc:
            raise RequestError(508) from exc
        self._add_pending(ctx.five_tuple, user)
        task = asyncio.ensure_future(
            self._finish_allocate(message, ctx, who, sock, family, lifetime)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    def _add_pending(self, five_tuple: FiveTuple, user: str) -> None:
        """Count an allocation being opened against the quotas (RFC 8656 §7.2)."""
        self._pending.add(five_tuple)
        self.pending_per_user[user] = self.pending_per_user.get(user, 0) + 1

    def _release_pending(self, five_tuple: FiveTuple, user: str) -> None:
        """Undo :meth:`_add_pending` once the allocation is live, failed or abandoned."""
        self._pending.discard(five_tuple)
        count = self.pending_per_user.get(user, 1) - 1
        if count > 0:
            self.pending_per_user[user] = count
        else:
            self.pending_per_user.pop(user, None)

    def _even_port(self, message: Message) -> bool:
        """Whether EVEN-PORT asks for an even relayed port (RFC 8656 §7.2 step 4, §18.8).
        With the R bit set it also asks to reserve the next port, which this server does not
        do: "cannot satisfy the request", 508."""
        value = message.get(stun.EVEN_PORT)
        if value is None:
            return False
        if len(value) != 1:
            raise RequestError(400)
        if value[0] & EVEN_PORT_RESERVE:
            raise RequestError(508)
        return True

    def _requested_family(self, message: Message) -> int:
        """REQUESTED-ADDRESS-FAMILY (RFC 8656 §7.2 step 7, RFC 6156)."""
        value = message.get(stun.REQUESTED_ADDRESS_FAMILY)
        if value is not None and message.get(stun.ADDITIONAL_ADDRESS_FAMILY) is not None:
            raise RequestError(400)
        if value is None:
            family = stun.FAMILY_IPV4
        elif len(value) != 4:
            raise RequestError(400)
        else:
            family = value[0]
        relay = {stun.FAMILY_IPV4: self.config.relay_ipv4, stun.FAMILY_IPV6: self.config.relay_ipv6}
        if relay.get(family) is None:
            raise RequestError(440)
        return family

    async def _finish_allocate(
        self,
        message: Message,
        ctx: ClientContext,
        who: Authenticated,
        sock: Any,
        family: int,
        lifetime: int,
    ) -> None:
        allocation = Allocation(
            ctx.five_tuple,
            who.username,
            who.key,
            lifetime,
            ctx.send,
            ctx.stream,
            self.ticker,
            flow=ctx.flow,
            family=family,
            index=ctx.index,
            index_key=ctx.index_key,
            bandwidth_cap=self.config.bandwidth_cap,
        )
        allocation.allocate_transaction_id = message.transaction_id
        user = quota_user(who.username)
        try:
            transport = await self.open_relay(sock, allocation)
        except Exception as exc:  # no relay: the socket is closed and the client told (508)
            sock.close()
            if not isinstance(exc, OSError):  # not the system saying no: a fault of ours
                self._contain_failure(exc, ctx)
            self._respond(message, ctx, [], who.key, 508)
            return
        finally:
            # Every way out (ready, failed, cancelled) frees the pending place; a live
            # allocation is counted in per_user below, with no await in between.
            self._release_pending(ctx.five_tuple, user)
        if not ctx.alive():
            transport.close()
            return
        allocation.transport = transport
        host, port = sock.getsockname()[:2]
        external = self.config.external_ipv4 if family == stun.FAMILY_IPV4 else (
            self.config.external_ipv6
        )
        host = external or host  # behind a 1:1 NAT, advertise the public address (§7.2)
        allocation.relayed_address = (host, port)
        self.allocations[ctx.five_tuple] = allocation
        self.per_user[user] = self.per_user.get(user, 0) + 1
        ctx.index[ctx.index_key] = allocation
        metrics.ALLOCATIONS.inc()
        metrics.ALLOCATIONS_TOTAL.inc()
        tid = message.transaction_id
        allocation.allocate_response = self._respond(
            message,
            ctx,
            [
                (stun.XOR_RELAYED_ADDRESS, stun.encode_xor_address((host, port), tid)),
                (stun.LIFETIME, stun.encode_uint32(lifetime)),
                (stun.XOR_MAPPED_ADDRESS, stun.encode_xor_address(ctx.five_tuple.client, tid)),
            ],
            who.key,
        )

    def _on_refresh(
        self, message: Message, ctx: ClientContext, who: Authenticated
    ) -> list[tuple[int, bytes]]:
        """Refresh (RFC 8656 §7.3); LIFETIME 0 deletes the allocation."""
        allocation = self._allocation_for(ctx, who)
        family = message.get(stun.REQUESTED_ADDRESS_FAMILY)
        if family is not None and (len(family) != 4 or family[0] != allocation.family):
            raise RequestError(443)
        lifetime = self._lifetime(message)
        if lifetime == 0:
            self.delete(allocation, "refreshed to 0")
        else:
            allocation.expires = self.ticker.now + lifetime
        return [(stun.LIFETIME, stun.encode_uint32(lifetime))]

    def _peer_addresses(self, message: Message, allocation: Allocation) -> list[stun.Address]:
        """XOR-PEER-ADDRESS values checked for family (443) and policy (403)."""
        values = message.get_all(stun.XOR_PEER_ADDRESS)
        if not values:
            raise RequestError(400)
        peers = [stun.decode_xor_address(v, message.transaction_id) for v in values]
        for host, _ in peers:
            if (":" in host) != (allocation.family == stun.FAMILY_IPV6):
                raise RequestError(443)
        for host, _ in peers:
            if not self.policy.is_allowed(host):
                log.info("turn peer refused", username=allocation.username, peer=host)
                raise RequestError(403)
        return peers

    def _on_create_permission(
        self, message: Message, ctx: ClientContext, who: Authenticated
    ) -> list[tuple[int, bytes]]:
        """CreatePermission (RFC 8656 §9.2): all peers or none."""
        allocation = self._allocation_for(ctx, who)
        hosts = {host for host, _ in self._peer_addresses(message, allocation)}
        self._check_permission_room(allocation, hosts)
        for host in hosts:
            allocation.install_permission(host, self.config.permission_lifetime)
        return []

    def _check_permission_room(self, allocation: Allocation, hosts: set[str]) -> None:
        """508 Insufficient Capacity (RFC 8656 §9.2, §11.2: a valid request the server cannot
        fulfil for a capacity limit) when installing ``hosts`` would leave the allocation with
        more than ``max_permissions_per_allocation`` live permissions. Checked before anything
        is installed, so a request is refused as a whole; refreshing is always fine."""
        new = allocation.new_permissions(hosts)
        if not new:
            return
        if len(allocation.permissions) + new > self.config.max_permissions_per_allocation:
            allocation.expire(self.ticker.now)  # count live ones only
            if len(allocation.permissions) + new > self.config.max_permissions_per_allocation:
                raise RequestError(508)

    def _on_channel_bind(
        self, message: Message, ctx: ClientContext, who: Authenticated
    ) -> list[tuple[int, bytes]]:
        """ChannelBind (RFC 8656 §11.2)."""
        allocation = self._allocation_for(ctx, who)
        value = message.get(stun.CHANNEL_NUMBER)
        if value is None:
            raise RequestError(400)
        number = stun.decode_channel_number(value)
        if not stun.CHANNEL_NUMBER_MIN <= number <= stun.CHANNEL_NUMBER_MAX:
            raise RequestError(400)
        peers = self._peer_addresses(message, allocation)
        if len(peers) != 1:
            raise RequestError(400)
        peer = peers[0]
        if allocation.channel_conflict(number, peer):
            raise RequestError(400)
        self._check_permission_room(allocation, {peer[0]})
        allocation.bind_channel(number, peer, self.config.channel_lifetime)
        allocation.install_permission(peer[0], self.config.permission_lifetime)
        return []

    # --- indications ---

    def _on_send_indication(self, message: Message, ctx: ClientContext) -> None:
        """Send indication (RFC 8656 §11.2): relayed only with a permission; never answered.
        One carrying an unknown comprehension-required attribute is discarded (RFC 8489
        §6.3.2), DONT-FRAGMENT among them: this server cannot set DF on relayed datagrams, and
        §11.2 leaves such an indication unrelayed."""
        if unknown_required(message):
            return
        allocation = self.allocations.get(ctx.five_tuple)
        peer_value = message.get(stun.XOR_PEER_ADDRESS)
        data = message.get(stun.DATA)
        if allocation is None or peer_value is None or data is None:
            return
        try:
            peer = stun.decode_xor_address(peer_value, message.transaction_id)
        except StunError:
            return
        allocation.send_to_peer(data, peer)

