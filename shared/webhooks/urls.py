"""Which URLs a webhook may call: no loopback, private or otherwise internal target.

Checked at registration and again at every delivery (a name may resolve elsewhere by
then: DNS rebinding); at delivery the connection goes only to the addresses checked
(`CheckedResolver`), never to a second lookup's answer. `allow_private`
(`WEBHOOK_ALLOW_PRIVATE=1`) lifts the address rule, for tests and internal receivers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlRefused(ValueError):
    """A URL a webhook may not call; the message says why (safe to show the caller)."""


def public_address(address: IPAddress) -> bool:
    """Whether `address` is a public unicast address (IPv4-mapped and 6to4-style forms
    are judged by the IPv4 address they carry)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return public_address(embedded)
        if address.teredo is not None:
            return False
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def check_url(url: str) -> tuple[str, int]:
    """The host and port of a webhook URL, or UrlRefused: http(s) only, a host, no
    credentials, at most MAX_URL_LENGTH characters."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlRefused("the URL is not valid") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("the URL must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("the URL must not contain credentials")
    if not parts.hostname:
        raise UrlRefused("the URL has no host")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _checked(address: str, allow_private: bool) -> IPAddress:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if not allow_private and not public_address(ip):
        raise UrlRefused(f"the URL's host resolves to a non-public address ({ip})")
    return ip


async def check_target(url: str, allow_private: bool, *, resolve: bool = True) -> None:
    """`check_url`, then every address the host is or resolves to must be public
    (UrlRefused); `resolve=False` checks a literal address only (at delivery the
    connector's `CheckedResolver` checks names)."""
    host, port = check_url(url)
    literal = _literal(host)
    if literal is not None:
        _checked(str(literal), allow_private)
        return
    if not resolve:
        return
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM),
            RESOLVE_TIMEOUT,
        )
    except (OSError, TimeoutError):
        raise UrlRefused(f"the URL's host {host!r} does not resolve") from None
    if not infos:
        raise UrlRefused(f"the URL's host {host!r} does not resolve")
    for info in infos:
        _checked(str(info[4][0]), allow_private)


class CheckedResolver(AbstractResolver):
    """aiohttp's resolver, refusing a name whose answer holds a non-public address."""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._resolver = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await asyncio.wait_for(
            self._resolver.resolve(host, port, family), RESOLVE_TIMEOUT
        )
        for result in results:
            _checked(result["host"], self._allow_private)
        return results

    async def close(self) -> None:
        await self._resolver.close()
