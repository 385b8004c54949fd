"""The Redis contract: every key, channel, stream field and id format, in one place.

Collab instances, gateways and persistence workers meet in Redis, so these names
are the contract between processes (docs/architecture.md, "Redis contract"); a
name used by two of them must come from here. Where a project's keys live is a
`RedisLayout`: `SINGLE_REDIS` (one server, or a primary and its replicas: the
seed's names, no hash tags) or `RedisLayout.cluster(P)` for a Redis Cluster.

In a cluster, a project belongs to one of P partitions (`crc32(uuid) mod P`) and
every name of the partition carries the hash tag `{p<n>}`: a project's log
stream, its channel (sharded pub/sub), the partition's work-queue stream and its
stored envelopes share one slot, so the append-and-publish script stays one
call per partition, and the worker consumes P streams.

Single-Redis names (the cluster name in brackets):

- `exe:yjs:project-{uuid}` [`exe:yjs:{p<n>}:project-{uuid}`]: a room's fan-out
  channel of envelopes (`shared/envelope.py`); SPUBLISH/SSUBSCRIBE in a cluster.
- `exe:yjs:log:project-{uuid}` [`exe:yjs:{p<n>}:log:project-{uuid}`]: stream of
  the project's accepted updates not yet in the database (field `u`: the
  update). The worker trims it after each commit.
- `exe:yjs:dirty` [`exe:yjs:{p<n>}:dirty`]: work-queue stream (field `p`: project
  uuid) consumed by the workers' consumer group `persistence`, capped at about
  `DIRTY_MAXLEN` entries.
- `exe:yjs:envelope:{n}` [`exe:yjs:{p<n>}:envelope:{n}`] (`n` from `INCR` of the
  `...envelope-seq` key beside it): an envelope over `INLINE_ENVELOPE_BYTES`,
  kept for `STORED_ENVELOPE_TTL_MS`; the channel carries a small `STORED`
  envelope naming the key instead (Redis disconnects a subscriber whose pub/sub
  output buffer passes its limit, 32 MB by default).
- `exe:yjs:instance:{hex id}`: heartbeat key of a live collab instance (TTL).
- `exe:yjs:instances`: channel (classic pub/sub, which a cluster delivers on
  every node) carrying the 16-byte id of an instance shutting down cleanly.
- `exe:yjs:epoch`: a random token set once per Redis data lifetime; when it
  changes, Redis lost its data and every open room re-asserts its document. (In
  a cluster it lives on one shard; a shard that loses its data without it is
  noticed by the subscriber's reconnect, which resyncs the rooms as well.)

- `exe:throttle:ws:{address}`: the count of WebSocket handshakes from one client
  address in the current window (INCR; PEXPIRE set by the first one),
  services/collab/throttle.py.

- `exe:assets:{uuid}:*` (in a cluster the uuid is wrapped in braces, its hash tag): the asset coordinator's state
  for one project (who holds and who waits for which asset;
  services/collab/assets/redis_store.py lists the keys under the prefix).
- `exe:assets:to:{hex id}`: channel of control frames for the sockets of one
  collab instance (classic pub/sub).

Log positions: a stream id is `<ms>-<seq>`; ids only ascend within one Redis
server lifetime, so a position stored in the database is prefixed with the
server's run id (`format_log_position`) and trusted only under the same one
(`written_up_to`). In a cluster that is the run id of the node serving the
partition, read in the same script as the logs.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

INSTANCE_PREFIX = "exe:yjs:instance:"
INSTANCES_CHANNEL = "exe:yjs:instances"  # body: the id of an instance shutting down
CONSUMER_GROUP = "persistence"
UPDATE_FIELD = b"u"  # a log entry's update
PROJECT_FIELD = b"p"  # a work entry's project uuid
DIRTY_MAXLEN = 100_000
EPOCH_KEY = "exe:yjs:epoch"
INLINE_ENVELOPE_BYTES = 1024 * 1024
STORED_ENVELOPE_TTL_MS = 60_000

#: Characters of the Redis run id stored with a log position (enough to tell lifetimes apart).
RUN_ID_CHARS = 16


THROTTLE_PREFIX = "exe:throttle:ws:"
ASSETS_PREFIX = "exe:assets:"
ASSETS_INBOX_PREFIX = "exe:assets:to:"


def instance_key(instance_id: bytes) -> str:
    return f"{INSTANCE_PREFIX}{instance_id.hex()}"


def throttle_key(address: str) -> str:
    """The handshake counter of one client address."""
    return f"{THROTTLE_PREFIX}{address}"


def assets_inbox(instance_hex: str) -> str:
    """The channel of control frames for one instance's sockets."""
    return f"{ASSETS_INBOX_PREFIX}{instance_hex}"


def parse_stream_id(stream_id: bytes | str) -> tuple[int, int]:
    """`<ms>-<seq>` (or a bare `<ms>`) as a comparable pair."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_stream_id(position: tuple[int, int]) -> str:
    return f"{position[0]}-{position[1]}"


def format_log_position(run_id: str, position: tuple[int, int]) -> str:
    """A log position as stored in the database: `<run id prefix>/<ms>-<seq>`."""
    return f"{run_id[:RUN_ID_CHARS]}/{format_stream_id(position)}"


def written_up_to(stored: str, run_id: str) -> tuple[int, int]:
    """The last log position written, if it was written under the same Redis lifetime.

    A position from another lifetime (or one stored before lifetimes were
    recorded) proves nothing about the ids the current server hands out:
    every entry is then taken (duplicates are harmless, Yjs updates are
    idempotent; a skipped entry would be lost).
    """
    stored_run, _, position = stored.rpartition("/")
    if not position or stored_run != run_id[:RUN_ID_CHARS]:
        return (-1, -1)
    return parse_stream_id(position)


@dataclass(frozen=True)
class RedisLayout:
    """Where a project's keys and channel live: one Redis, or P hash-tagged partitions of a cluster."""

    partitions: int = 1
    sharded: bool = False  # a Redis Cluster: hash tags, sharded pub/sub

    @classmethod
    def cluster(cls, partitions: int) -> RedisLayout:
        if partitions < 1:
            raise ValueError("a cluster layout needs at least one partition")
        return cls(partitions=partitions, sharded=True)

    @property
    def publish_command(self) -> str:
        return "SPUBLISH" if self.sharded else "PUBLISH"

    def partition(self, project_uuid: str) -> int:
        """The partition of a project (always 0 on one Redis)."""
        if self.partitions == 1:
            return 0
        return zlib.crc32(project_uuid.encode()) % self.partitions

    def _space(self, partition: int) -> str:
        """`exe:yjs:` with the partition's hash tag in a cluster."""
        return f"exe:yjs:{{p{partition}}}:" if self.sharded else "exe:yjs:"

    def _project_space(self, project_uuid: str) -> str:
        return self._space(self.partition(project_uuid))

    def channel(self, project_uuid: str) -> str:
        return f"{self._project_space(project_uuid)}project-{project_uuid}"

    def project_of_channel(self, name: str | bytes) -> str | None:
        """The project uuid of a room channel; None for any other channel."""
        return self._project_of(name, "project-", self.channel)

    def log_stream(self, project_uuid: str) -> str:
        return f"{self._project_space(project_uuid)}log:project-{project_uuid}"

    def project_of_log_stream(self, name: str | bytes) -> str | None:
        """The project uuid of a log stream key; None for any other key."""
        return self._project_of(name, "log:project-", self.log_stream)

    @property
    def log_stream_pattern(self) -> str:
        """The SCAN pattern matching every project's log stream."""
        space = "exe:yjs:{p*}:" if self.sharded else "exe:yjs:"
        return f"{space}log:project-*"

    def dirty_stream(self, partition: int) -> str:
        """The work-queue stream of one partition."""
        return f"{self._space(partition)}dirty"

    def stored_envelope_prefix(self, partition: int) -> str:
        return f"{self._space(partition)}envelope:"

    def stored_envelope_seq(self, partition: int) -> str:
        return f"{self._space(partition)}envelope-seq"

    def assets_prefix(self, project_uuid: str) -> str:
        """The prefix of one project's asset-coordinator keys (one slot in a cluster)."""
        tagged = f"{{{project_uuid}}}" if self.sharded else project_uuid
        return f"{ASSETS_PREFIX}{tagged}:"

    @staticmethod
    def _project_of(name: str | bytes, marker: str, build: Callable[[str], str]) -> str | None:
        text = name.decode() if isinstance(name, bytes) else name
        _, found, project_uuid = text.rpartition(marker)
        if not found or not project_uuid or build(project_uuid) != text:
            return None
        return project_uuid


SINGLE_REDIS = RedisLayout()
