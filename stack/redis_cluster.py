"""A Redis Cluster on loopback from real `redis-server` processes: M masters, R replicas each.

Each node is a `RedisServer` (AOF on) with `--cluster-enabled yes` and a cluster
bus port of its own; `redis-cli --cluster create` assigns the slots and the
replicas. Used by `make stack redis=cluster`, the bench's cluster target and the
cluster tests (which SIGKILL masters and wait for their replicas to take over).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Self

import redis

from stack.processes import StackError, find_binary, free_port, plain_env, poll_until
from stack.servers import RedisServer

#: How long a master may be unreachable before its replica is promoted (ms). Short, so a
#: test's failover takes seconds; production clusters keep Redis's 15 s default or so.
NODE_TIMEOUT_MS = 1500


def _cluster_args(node_timeout_ms: int) -> list[str]:
    return [
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(node_timeout_ms),
        "--cluster-port", str(free_port()),  # the default (port + 10000) may be taken or > 65535
    ]  # fmt: skip


class LocalRedisCluster:
    """`masters` × (1 + `replicas`) nodes on 127.0.0.1, started by `start()`."""

    def __init__(
        self,
        base_dir: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
        log_dir: Path | None = None,
    ) -> None:
        if masters < 3:
            raise ValueError("a Redis Cluster needs at least 3 masters")
        self.replicas = replicas
        self.nodes = [
            RedisServer(
                base_dir / f"node-{index}",
                log=(log_dir or base_dir) / f"redis-node-{index}.log",
                extra_args=_cluster_args(node_timeout_ms),
                name=f"redis-node-{index}",
            )
            for index in range(masters * (1 + replicas))
        ]

    @property
    def seeds(self) -> str:
        """Every node as `host:port,...` (the value of `REDIS_CLUSTER_NODES`)."""
        return ",".join(f"{node.host}:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 60.0) -> Self:
        """Start the nodes, create the cluster, wait until it serves every slot with synced replicas."""
        for node in self.nodes:
            node.start(timeout)
        cli = find_binary("redis-cli", "/usr/bin/redis-cli", "/usr/local/bin/redis-cli")
        argv = [cli, "--cluster", "create", *(f"{n.host}:{n.port}" for n in self.nodes)]
        argv += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        result = subprocess.run(
            argv, check=False, capture_output=True, text=True, env=plain_env(), timeout=timeout
        )
        if result.returncode != 0:
            raise StackError(f"redis-cli --cluster create failed:\n{result.stdout}\n{result.stderr}")
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Wait until every running node sees the cluster `ok`, every slot is served and
        every replica is in sync with its master (so it can take over)."""
        poll_until(self._healthy, timeout=timeout, what="the Redis Cluster to be healthy")

    def master_of(self, key: str) -> RedisServer:
        """The running node serving `key`'s slot now."""
        with self._client(self._running()[0]) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(master[1])
                    return next(node for node in self.nodes if node.port == port)
        raise StackError(f"no node serves slot {slot}")

    def masters(self) -> list[RedisServer]:
        """The running nodes that are masters now."""
        return [node for node in self._running() if self._role(node) == "master"]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()

    # internals -------------------------------------------------------------

    def _running(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.running]

    @staticmethod
    def _client(node: RedisServer) -> redis.Redis:
        return redis.Redis(node.host, node.port, socket_timeout=1.0, socket_connect_timeout=1.0)

    def _role(self, node: RedisServer) -> str:
        with self._client(node) as client:
            return str(client.info("replication")["role"])

    def _healthy(self) -> bool:
        try:
            for node in self._running():
                with self._client(node) as client:
                    info = client.cluster("info")
                    if info["cluster_state"] != "ok" or int(info["cluster_slots_ok"]) != 16384:
                        return False
                    replication = client.info("replication")
                    if replication["role"] == "slave" and replication["master_link_status"] != "up":
                        return False
        except (redis.RedisError, OSError, KeyError):
            return False
        return True

