"""The address policy of remote fetches: which IP addresses a fetch may not connect to.

`check_address` refuses loopback, private, link-local (cloud metadata included),
carrier-grade NAT, unspecified, multicast, reserved and documentation addresses, and
IPv4-mapped, 6to4 and NAT64 forms of them (`BLOCKED_NETWORKS`), unless allowed. It and
`BLOCKED_NETWORKS` are documented, and imported, from `sqlalchemy_obstore.remote`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TypeAlias

from ._errors import ForbiddenAddressError

__all__ = ("BLOCKED_NETWORKS", "IPAddress", "IPNetwork", "check_address")

IPAddress: TypeAlias = "ipaddress.IPv4Address | ipaddress.IPv6Address"
IPNetwork: TypeAlias = "ipaddress.IPv4Network | ipaddress.IPv6Network"

BLOCKED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/128",  # unspecified
        "::1/128",  # loopback
        "::/96",  # IPv4-compatible (deprecated)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments (Teredo, ORCHID, ...)
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local (private)
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
"""Networks a fetch may not reach unless explicitly allowed.

Addresses outside these that Python's `ipaddress` still reports as private, reserved,
loopback, link-local, multicast, unspecified or not global are refused too, and so are
IPv4-mapped (`::ffff:a.b.c.d`), 6to4 (`2002::/16`) and NAT64 (`64:ff9b::/96`) addresses
whose embedded IPv4 address is refused.
"""

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _forbidden_reason(address: IPAddress) -> str | None:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = _forbidden_reason(embedded)
            return f"it embeds the IPv4 address {embedded}, {reason}" if reason else None
    for network in BLOCKED_NETWORKS:
        if address.version == network.version and address in network:
            return f"it is in the blocked network {network}"
    flags = ("loopback", "private", "link_local", "multicast", "reserved", "unspecified")
    for flag in flags:
        if getattr(address, f"is_{flag}"):
            return f"it is a {flag.replace('_', '-')} address"
    if not address.is_global:
        return "it is not a globally routable address"
    return None


def check_address(
    address: str | IPAddress,
    *,
    allow_private: bool = False,
    allow_networks: Iterable[str | IPNetwork] = (),
) -> None:
    """Refuse an IP address that a fetch must not connect to.

    Args:
        address: An IPv4 or IPv6 address (an IPv6 zone suffix such as `%eth0` is ignored).
        allow_private: Allow every address.
        allow_networks: Networks allowed even though they are blocked by default.

    Raises:
        ForbiddenAddressError: If the address is blocked (see `BLOCKED_NETWORKS`).

    Example:
        >>> check_address("93.184.215.14")
        >>> check_address("169.254.169.254")
        Traceback (most recent call last):
        ...
        sqlalchemy_obstore.errors.ForbiddenAddressError: the address 169.254.169.254 is blocked: it is in the blocked network 169.254.0.0/16. Pass allow_private=True or allow_networks=[...] to allow it.
        >>> check_address("127.0.0.1", allow_networks=["127.0.0.0/8"])
    """  # noqa: E501
    if allow_private:
        return
    ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # the same host as far as a dual-stack socket is concerned
    for network in allow_networks:
        net = ipaddress.ip_network(network, strict=False) if isinstance(network, str) else network
        if ip.version == net.version and ip in net:
            return
    reason = _forbidden_reason(ip)
    if reason is not None:
        raise ForbiddenAddressError(
            f"the address {ip} is blocked: {reason}. Pass allow_private=True or "
            "allow_networks=[...] to allow it.",
            address=str(ip),
        )
