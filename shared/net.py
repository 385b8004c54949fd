"""The client's address, behind trusted proxies."""

from __future__ import annotations

import ipaddress

from aiohttp import web


def client_address(request: web.BaseRequest, forwarded_allow_ips: str) -> str:
    """The caller's address; X-Forwarded-For is believed only from `forwarded_allow_ips`
    (FORWARDED_ALLOW_IPS: comma-separated addresses or networks, or `*`)."""
    remote = request.remote or ""
    if from_trusted_proxy(request, forwarded_allow_ips):
        forwarded = request.headers.get("X-Forwarded-For", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return remote


def request_scheme(request: web.BaseRequest, forwarded_allow_ips: str) -> str:
    """`https` or `http` as the client used it: X-Forwarded-Proto from a trusted proxy
    (nginx terminating TLS), else this connection's own scheme."""
    if from_trusted_proxy(request, forwarded_allow_ips):
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        if forwarded in ("http", "https"):
            return forwarded
    return request.scheme


def from_trusted_proxy(request: web.BaseRequest, forwarded_allow_ips: str) -> bool:
    """Whether the peer is one of `forwarded_allow_ips`, whose forwarded headers are believed."""
    allowed = [item.strip() for item in forwarded_allow_ips.split(",") if item.strip()]
    return bool(allowed) and ("*" in allowed or _address_in(request.remote or "", allowed))


def _address_in(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for network in networks:
        try:
            if ip in ipaddress.ip_network(network, strict=False):
                return True
        except ValueError:
            continue
    return False
