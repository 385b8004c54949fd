"""The Redis of a stack, chosen once by `Stack.start(redis=...)`: one redis-server (`single`)
or a `LocalRedisCluster` of 3 masters and 3 replicas (`cluster`, `make stack redis=cluster`).

Either part starts its processes, says what the services are told (`env`), records
itself in stack.json and is read back from there (`from_record`), so `make stack-down`,
`stack status` and `Stack.attach` treat its processes like the others.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis

from stack.processes import LOOPBACK, Process
from stack.redis_cluster import LocalRedisCluster
from stack.servers import RedisServer

MODES = ("single", "cluster")


def process_entry(process: Process | None, port: int, **extra: Any) -> dict[str, Any]:
    """One listening process as stack.json records it."""
    return {
        "port": port,
        "pid": process.pid if process else None,
        "alive": bool(process and process.alive),
        "log": process.log if process else None,
        "process": process.record() if process else None,
        **extra,
    }


def _process(entry: Mapping[str, Any]) -> Process | None:
    record = entry.get("process")
    return Process.from_record(record) if record else None


def _node_url(port: int) -> str:
    return f"redis://{LOOPBACK}:{port}/0"


class SingleRedis:
    """One redis-server (AOF on) keeping its data in `run_dir/redis`."""

    mode = "single"

    def __init__(self, port: int = 0, process: Process | None = None) -> None:
        self.port = port
        self.process = process

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SingleRedis:
        return cls(int(record["port"]), _process(record))

    def start(self, run_dir: Path, logs_dir: Path, timeout: float) -> None:
        server = RedisServer(run_dir / "redis", log=logs_dir / "redis.log")
        self.process = server.start(timeout).process
        self.port = server.port

    @property
    def url(self) -> str:
        return _node_url(self.port)

    def processes(self) -> list[Process]:
        return [self.process] if self.process is not None else []

    def env(self) -> dict[str, str]:
        """What the services are told to find this Redis."""
        return {"REDIS_HOST": LOOPBACK, "REDIS_PORT": str(self.port)}

    def master_urls(self) -> list[str]:
        """The servers that take writes (whose `INFO commandstats` count every command)."""
        return [self.url]

    def nodes(self) -> list[tuple[str, str, Process | None, str]]:
        """(name, url, process, role) of each server, for the `up` summary."""
        return [("redis", self.url, self.process, "")]

    def record(self) -> dict[str, Any]:
        return {"mode": self.mode, **process_entry(self.process, self.port, url=self.url)}


class ClusterRedis:
    """A Redis Cluster (3 masters, 3 replicas) in `run_dir/redis-cluster`, created anew by
    every `start` (the old nodes.conf would name ports that are no longer the cluster's)."""

    mode = "cluster"

    def __init__(self, nodes: list[tuple[int, Process | None]] | None = None) -> None:
        self.cluster: LocalRedisCluster | None = None
        self._recorded = list(nodes or [])

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ClusterRedis:
        return cls([(int(node["port"]), _process(node)) for node in record["nodes"]])

    def start(self, run_dir: Path, logs_dir: Path, timeout: float) -> None:
        base = run_dir / "redis-cluster"
        shutil.rmtree(base, ignore_errors=True)
        # Set before start: nodes already running when a later step fails are stopped too.
        self.cluster = LocalRedisCluster(base, log_dir=logs_dir)
        self.cluster.start(timeout)

    def _nodes(self) -> list[tuple[int, Process | None]]:
        if self.cluster is not None:
            return [(node.port, node.process) for node in self.cluster.nodes]
        return self._recorded

    @property
    def seeds(self) -> str:
        """Every node as `host:port,...` (the services' `REDIS_CLUSTER_NODES`)."""
        return ",".join(f"{LOOPBACK}:{port}" for port, _ in self._nodes())

    @property
    def url(self) -> str:
        return f"redis+cluster://{self.seeds}"

    def processes(self) -> list[Process]:
        return [process for _, process in self._nodes() if process is not None]

    def env(self) -> dict[str, str]:
        """What the services are told to find this cluster."""
        return {"REDIS_CLUSTER_NODES": self.seeds}

    def master_urls(self) -> list[str]:
        """The nodes that are masters now (a replica's commandstats count what it replays)."""
        return [
            _node_url(port)
            for port, process in self._nodes()
            if process is not None and process.alive and _role(port) == "master"
        ]

    def nodes(self) -> list[tuple[str, str, Process | None, str]]:
        """(name, url, process, role) of each node, for the `up` summary."""
        return [
            (process.name if process else "redis-node", _node_url(port), process, _role(port))
            for port, process in self._nodes()
        ]

    def record(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "url": self.url,
            "seeds": self.seeds,
            "nodes": [process_entry(process, port) for port, process in self._nodes()],
        }


RedisPart = SingleRedis | ClusterRedis


def redis_part(mode: str) -> RedisPart:
    """A not yet started part of `mode` (`single` or `cluster`)."""
    if mode == "single":
        return SingleRedis()
    if mode == "cluster":
        return ClusterRedis()
    raise ValueError(f"unknown Redis mode {mode!r} (use {' or '.join(MODES)})")


def redis_part_from_record(record: Mapping[str, Any]) -> RedisPart:
    """The part stack.json describes (a record without `mode` is a single Redis)."""
    if record.get("mode", "single") == "cluster":
        return ClusterRedis.from_record(record)
    return SingleRedis.from_record(record)


def _role(port: int) -> str:
    """`master` or `replica`, as the node says now (`down` when it does not answer)."""
    try:
        with redis.Redis(LOOPBACK, port, socket_timeout=1.0, socket_connect_timeout=1.0) as client:
            role = str(client.info("replication")["role"])
            return "replica" if role == "slave" else role
    except (redis.RedisError, OSError):
        return "down"
