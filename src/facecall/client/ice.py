"""ICE helpers: host addresses, ICE servers from the API, the selected candidate pair.

aioice gathers host candidates on every interface but never on loopback;
:func:`~facecall.ice_hosts.host_addresses` (in :mod:`facecall.ice_hosts`, shared with the
SFU) lets the SDK choose the host addresses for the gatherings started inside it — for example
``["127.0.0.1"]`` in a loopback-only test namespace.

The selected candidate pair (W3C webrtc-stats ``candidate-pair`` with ``nominated``, RFC 8445
§8.1.1) is not in aiortc's stats; :func:`selected_candidate_pair` reads it from aioice.

With aggressive nomination (aioice's controlling agent puts USE-CANDIDATE on every check), a
lower-priority pair whose check completes later — typically the relayed one — replaces the pair
already nominated, so a call that could go host-to-host ends up on the TURN relay. RFC 5245
§8.1.1.2: "If more than one candidate pair is nominated by the controlling agent, ... both agents
MUST use the pair with the highest priority". :func:`keep_best_nominated_pair` applies that rule
to one peer connection's ICE agents (a wrapper of ``aioice.ice.Connection.check_complete``).

These hooks use private names of aiortc 1.16 / aioice 0.13 (pinned; each is tested in
``tests/client/test_hooks.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aioice.ice
from aiortc import RTCIceServer, RTCPeerConnection

from facecall.ice_hosts import host_addresses as host_addresses  # (the SDK's name for it)
from facecall.ice_hosts import ip_addresses

HOST_ADDRESSES_ENV = "FACECALL_ICE_HOST_ADDRESSES"
"""Comma-separated host addresses used when a ``Device`` is given none (e.g. ``127.0.0.1``)."""

_KEEP_BEST = "_facecall_keep_best_nominated"
_original_check_complete: Callable[[aioice.ice.Connection, aioice.ice.CandidatePair], None] | None = None


def _check_complete(self: aioice.ice.Connection, pair: aioice.ice.CandidatePair) -> None:
    assert _original_check_complete is not None
    before = self._nominated.get(pair.component)  # private: the nominated pair per component
    _original_check_complete(self, pair)
    after = self._nominated.get(pair.component)
    if getattr(self, _KEEP_BEST, False) and before is not None and after is not before:
        def priority(p: aioice.ice.CandidatePair) -> int:
            return aioice.ice.candidate_pair_priority(p.local_candidate, p.remote_candidate,
                                                      self.ice_controlling)
        if priority(before) > priority(after):
            self._nominated[pair.component] = before


def install_nomination_hook() -> None:
    """Wrap ``aioice.ice.Connection.check_complete`` once (acts only where enabled)."""
    global _original_check_complete
    if _original_check_complete is None:
        _original_check_complete = aioice.ice.Connection.check_complete
        aioice.ice.Connection.check_complete = _check_complete  # type: ignore[method-assign]


def keep_best_nominated_pair(pc: RTCPeerConnection) -> None:
    """Make ``pc``'s ICE agents keep the highest-priority nominated pair (RFC 5245 §8.1.1.2)."""
    install_nomination_hook()
    for transceiver in pc.getTransceivers():
        connection = transceiver.sender.transport.transport._connection  # private: aioice.Connection
        setattr(connection, _KEEP_BEST, True)


def parse_host_addresses(addresses: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """Validate host addresses (IPv4/IPv6 literals); a string is comma-separated.

    ``None`` reads :data:`HOST_ADDRESSES_ENV`; when that is unset too, ``None`` (aioice's choice).
    An empty list gathers no host (nor server-reflexive) candidate: only relayed ones.
    """
    if addresses is None:
        addresses = os.environ.get(HOST_ADDRESSES_ENV) or None
        if addresses is None:
            return None
    if isinstance(addresses, str):
        addresses = [a.strip() for a in addresses.split(",") if a.strip()]
    return ip_addresses(addresses, "ice_host_addresses")  # empty: no host candidates (as behind
    # a firewall that lets only TURN out)


def ice_servers_from_api(body: dict[str, Any]) -> list[RTCIceServer]:
    """``GET /v1/turn/credentials`` → aiortc ``RTCIceServer`` list (STUN first, then TURN)."""
    servers = []
    for server in body.get("ice_servers", []):
        servers.append(RTCIceServer(urls=list(server["urls"]), username=server.get("username"),
                                    credential=server.get("credential")))
    return servers


@dataclass(frozen=True, slots=True)
class CandidatePairInfo:
    """The nominated pair of the (bundled) ICE transport."""

    local_type: str
    """``host``, ``srflx``, ``prflx`` or ``relay`` (RFC 8445 §5.1.1)."""
    remote_type: str
    local_address: tuple[str, int]
    remote_address: tuple[str, int]
    protocol: str

    @property
    def path(self) -> str:
        """``relay`` if either side is relayed, else ``srflx`` if either is reflexive, else ``host``."""
        types = {self.local_type, self.remote_type}
        for kind in ("relay", "srflx", "prflx"):
            if kind in types:
                return "srflx" if kind == "prflx" else kind
        return "host"


def selected_candidate_pair(pc: RTCPeerConnection) -> CandidatePairInfo | None:
    """The nominated candidate pair of ``pc``'s first ICE transport, or ``None`` before ICE completes."""
    for transceiver in pc.getTransceivers():
        ice_transport = transceiver.sender.transport.transport
        connection = ice_transport._connection  # private: aioice.Connection
        pair = connection._nominated.get(1)  # private: component 1 (RTP/RTCP mux)
        if pair is None:
            continue
        local, remote = pair.local_candidate, pair.remote_candidate
        return CandidatePairInfo(local.type, remote.type, (local.host, local.port),
                                 (remote.host, remote.port), local.transport.lower())
    return None
