"""Which peers the relay may talk to: TURN must not be an open proxy (RFC 8656 §21.3).

By default every peer address in a loopback, unspecified, private (RFC 1918), shared (CGNAT,
RFC 6598), link-local (which holds the 169.254.169.254 cloud metadata service), multicast,
documentation, benchmarking or reserved range is refused, and the IPv6 equivalents
(RFC 6890 special-purpose registries). IPv6 forms that embed an IPv4 address (IPv4-mapped,
IPv4-compatible, NAT64 64:ff9b::/96, 6to4 2002::/16) are canonicalised to that IPv4 address
first, so that ``::ffff:127.0.0.1`` is judged as ``127.0.0.1`` (coturn CVE-2020-26262 and
CVE-2026-27624 were bypasses of this kind). Operators allow ranges explicitly; an allowed range
wins over the denylist.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DENIED_IPV4 = (
    "0.0.0.0/8",  # "this network", includes 0.0.0.0 (CVE-2020-26262)
    "10.0.0.0/8",
    "100.64.0.0/10",  # shared address space / CGNAT (RFC 6598), holds 100.100.100.200
    "127.0.0.0/8",
    "169.254.0.0/16",  # link-local, holds 169.254.169.254 (cloud metadata)
    "172.16.0.0/12",
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # TEST-NET-1
    "192.88.99.0/24",  # 6to4 relay anycast
    "192.168.0.0/16",
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # TEST-NET-2
    "203.0.113.0/24",  # TEST-NET-3
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, includes 255.255.255.255
)
DENIED_IPV6 = (
    "::/128",  # unspecified
    "::1/128",  # loopback
    "::/96",  # IPv4-compatible (deprecated); any left after canonicalisation
    "::ffff:0:0/96",  # IPv4-mapped; any left after canonicalisation
    "64:ff9b:1::/48",  # local-use NAT64
    "100::/64",  # discard-only
    "2001::/23",  # IETF protocol assignments, includes Teredo 2001::/32
    "2001:db8::/32",  # documentation
    "fc00::/7",  # unique local, includes fd00:ec2::254 (cloud metadata)
    "fe80::/10",  # link-local
    "fec0::/10",  # site-local (deprecated)
    "ff00::/8",  # multicast
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")


def canonical_address(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address embeds, if it embeds one; else ``ip`` itself."""
    if ip.version == 4:
        return ip
    assert isinstance(ip, ipaddress.IPv6Address)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    packed = ip.packed
    if packed[:12] == bytes(12) and int(ip) > 1:  # IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(packed[12:])
    if ip in _NAT64:
        return ipaddress.IPv4Address(packed[12:])
    if ip in _SIX_TO_FOUR:
        return ipaddress.IPv4Address(packed[2:6])
    return ip


def parse_networks(cidrs: Iterable[str]) -> list[IPNetwork]:
    """Parse CIDR strings (a bare address is a /32 or /128); raises ValueError."""
    return [ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs]


class PeerPolicy:
    """Decides whether a peer IP address may be relayed to."""

    def __init__(self, allowed: Iterable[str] = (), denied: Iterable[str] = ()) -> None:
        self.allowed = parse_networks(allowed)
        self.denied = parse_networks((*DENIED_IPV4, *DENIED_IPV6, *denied))
        self._cache: dict[str, bool] = {}

    def is_allowed(self, host: str) -> bool:
        """Whether the peer ``host`` (an IP address literal) may be relayed to."""
        verdict = self._cache.get(host)
        if verdict is None:
            verdict = self._judge(host)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[host] = verdict
        return verdict

    def _judge(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        canonical = canonical_address(ip)
        if _matches(self.allowed, canonical):
            return True
        return not _matches(self.denied, canonical) and not _matches(self.denied, ip)


def _matches(networks: list[IPNetwork], ip: IPAddress) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)
