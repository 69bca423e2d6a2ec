"""Lists of IP addresses and CIDR networks, or `*` for any: who may do something, by address.

APP_FORWARDED_ALLOW_IPS (the proxies whose forwarded headers are believed,
service/forwarded.py) and APP_METRICS_ALLOW_IPS (who may read /metrics)
are both such lists; the settings validate them, this matches peers against them.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

# Distinct hosts whose answer is remembered; one longer than a DNS name is not cached.
_CACHE_SIZE = 4096
_LONGEST_HOST = 253


class IPAllowList:
    def __init__(self, items: Iterable[str]) -> None:
        listed = tuple(items)
        self.allow_all = "*" in listed
        # A listed address matches only itself, an IPv6 scope included (fe80::1%eth0 is not
        # fe80::1), as uvicorn compares them; a network (fe80::/64) matches whatever the scope.
        self._addresses = frozenset(
            ipaddress.ip_address(item) for item in listed if item != "*" and "/" not in item
        )
        self._networks = tuple(ipaddress.ip_network(item) for item in listed if "/" in item)
        self._cached_match = functools.lru_cache(maxsize=_CACHE_SIZE)(self._match)

    def _match(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False  # not an address (a unix socket, a name): never listed
        return address in self._addresses or any(address in network for network in self._networks)

    def __contains__(self, host: str | None) -> bool:
        if self.allow_all:
            return True
        if not host:
            return False
        if len(host) > _LONGEST_HOST:
            return self._match(host)  # not cached: it would pin a huge key
        return self._cached_match(host)
