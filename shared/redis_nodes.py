"""`REDIS_CLUSTER_NODES`: the seed nodes of a Redis Cluster, as `host:port,...` or a
`redis+cluster://[user:password@]host:port,host:port` URL (pure parsing)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

SCHEME = "redis+cluster://"


@dataclass(frozen=True)
class ClusterNodes:
    """Where to find a cluster (any reachable node tells the client the rest) and how to log in."""

    nodes: tuple[tuple[str, int], ...]
    username: str = ""
    password: str = ""


def parse_cluster_nodes(raw: str) -> ClusterNodes:
    """The nodes of `raw`; ValueError saying what is wrong."""
    text = raw.strip()
    username = password = ""
    if text.startswith(SCHEME):
        text = text[len(SCHEME) :].rstrip("/")
        credentials, at, rest = text.rpartition("@")
        if at:
            user, _, secret = credentials.partition(":")
            username, password = unquote(user), unquote(secret)
            text = rest
    elif "://" in text:
        raise ValueError(f"use host:port,... or a {SCHEME} URL")
    nodes = tuple(_node(part.strip()) for part in text.split(",") if part.strip())
    if not nodes:
        raise ValueError("no node given")
    return ClusterNodes(nodes, username, password)


def _node(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    host = host.strip("[]")  # [::1]:7000
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    return host, int(port)
