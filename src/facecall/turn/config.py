"""Configuration of the STUN/TURN server."""

from __future__ import annotations

from dataclasses import dataclass, field

from facecall.turn.stun import Address

DEFAULT_PORT = 3478  # RFC 8489 §6.2
DEFAULT_TLS_PORT = 5349
# Relay ports stay above the kernel's default ephemeral range (32768-60999) so that they never
# collide with the server's (or a co-located client's) own outgoing sockets.
RELAY_PORT_MIN = 61000
RELAY_PORT_MAX = 65535


@dataclass
class TurnConfig:
    """Everything :class:`facecall.turn.server.TurnServer` needs. Port 0 binds a free port."""

    udp_listen: list[Address] = field(default_factory=lambda: [("127.0.0.1", DEFAULT_PORT)])
    tcp_listen: list[Address] = field(default_factory=lambda: [("127.0.0.1", DEFAULT_PORT)])
    tls_listen: list[Address] = field(default_factory=list)
    tls_cert: str | None = None  # PEM certificate chain for the TLS listeners
    tls_key: str | None = None  # PEM private key for the TLS listeners
    realm: str = "facecall"
    rest_secrets: list[str] = field(default_factory=list)  # TURN REST secrets, all verify
    static_users: dict[str, str] = field(default_factory=dict)  # long-term user -> password
    relay_ipv4: str | None = "127.0.0.1"  # address relay sockets bind to for IPv4 allocations
    relay_ipv6: str | None = "::1"  # same for IPv6 allocations (RFC 6156); None: refuse (440)
    external_ipv4: str | None = None  # advertised instead of relay_ipv4 (server behind 1:1 NAT)
    external_ipv6: str | None = None
    relay_port_min: int = RELAY_PORT_MIN
    relay_port_max: int = RELAY_PORT_MAX
    allowed_peers: list[str] = field(default_factory=list)  # CIDRs relayed despite the denylist
    denied_peers: list[str] = field(default_factory=list)  # CIDRs refused on top of the defaults
    max_allocations_per_user: int = 20  # 486 Allocation Quota Reached beyond
    max_allocations: int = 5000  # 508 Insufficient Capacity beyond
    max_tcp_connections: int = 5000  # further TCP/TLS connections are closed at once
    # Concurrent TCP/TLS connections from one client IP address; further ones closed at once.
    max_tcp_connections_per_address: int = 64
    # Seconds a TLS client has to finish its handshake; its connection counts from accept.
    tls_handshake_timeout: float = 10.0
    # Peer addresses with a permission per allocation (RFC 8656 §9); 508 beyond.
    max_permissions_per_allocation: int = 128
    bandwidth_cap: int = 0  # bytes per second per allocation and direction; 0: no cap
    default_lifetime: int = 600  # RFC 8656 §3.2 default allocation lifetime, seconds
    max_lifetime: int = 3600  # RFC 8656 §7.2 maximum allocation lifetime, seconds
    permission_lifetime: int = 300  # RFC 8656 §9: 5 minutes
    channel_lifetime: int = 600  # RFC 8656 §12: 10 minutes
    nonce_lifetime: int = 3600  # how long a NONCE stays valid before 438
    idle_timeout: float = 60.0  # TCP/TLS connections without an allocation are closed after
    housekeeping_interval: float = 1.0  # seconds between expiry sweeps
    software: str = "facecall"
    # SO_REUSEPORT on the listeners, so that several worker processes share the ports; the
    # kernel keeps each UDP 5-tuple and TCP connection on one worker. Quotas are per worker.
    reuse_port: bool = False
    # The UDP data path: "batched" (recvmmsg/sendmmsg, Linux), "asyncio" (datagram transports)
    # or "auto" (batched where available).
    udp_io: str = "auto"
    socket_buffer: int = 4 * 1024 * 1024  # SO_RCVBUF/SO_SNDBUF of UDP listeners (capped by rmem_max)
    relay_socket_buffer: int = 0  # same for relay sockets; 0 keeps the kernel's default
