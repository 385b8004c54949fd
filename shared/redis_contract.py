"""The Redis contract: every key, channel, stream field and id format, in one place.

Collab instances, gateways and persistence workers meet in Redis, so these names
are the contract between processes (docs/architecture.md, "Redis contract"); a
name used by two of them must come from here. No name carries a hash tag:
exe-collab runs against one Redis server (or a primary and its replicas), and the
append-and-publish script touches several projects' logs in one call, which a
Redis Cluster would refuse across slots.

- `exe:yjs:project-{uuid}`: a room's fan-out channel (pub/sub) of envelopes
  (`shared/envelope.py`).
- `exe:yjs:log:project-{uuid}`: stream of the project's accepted updates not yet
  in the database (field `u`: the update). The worker trims it after each commit.
- `exe:yjs:dirty`: work-queue stream (field `p`: project uuid) consumed by the
  workers' consumer group `persistence`, capped at about `DIRTY_MAXLEN` entries.
- `exe:yjs:instance:{hex id}`: heartbeat key of a live collab instance (TTL).
- `exe:yjs:instances`: channel carrying the 16-byte id of an instance shutting
  down cleanly.
- `exe:yjs:epoch`: a random token set once per Redis data lifetime; when it
  changes, Redis lost its data and every open room re-asserts its document.
- `exe:yjs:envelope:{n}` (`n` from `INCR exe:yjs:envelope-seq`): an envelope over
  `INLINE_ENVELOPE_BYTES`, kept for `STORED_ENVELOPE_TTL_MS`; the channel carries a
  small `STORED` envelope naming the key instead (Redis disconnects a subscriber
  whose pub/sub output buffer passes its limit, 32 MB by default).

- `exe:throttle:ws:{address}`: the count of WebSocket handshakes from one client
  address in the current window (INCR; PEXPIRE set by the first one),
  services/collab/throttle.py.

- `exe:assets:{uuid}:*`: the asset coordinator's state for one project (who holds
  and who waits for which asset; services/collab/assets/redis_store.py lists the
  keys under the prefix).
- `exe:assets:to:{hex id}`: channel of control frames for the sockets of one
  collab instance.

Log positions: a stream id is `<ms>-<seq>`; ids only ascend within one Redis
server lifetime, so a position stored in the database is prefixed with the
server's run id (`format_log_position`) and trusted only under the same one
(`written_up_to`).
"""

from __future__ import annotations

CHANNEL_PREFIX = "exe:yjs:project-"
LOG_PREFIX = "exe:yjs:log:project-"
INSTANCE_PREFIX = "exe:yjs:instance:"
INSTANCES_CHANNEL = "exe:yjs:instances"  # body: the id of an instance shutting down
DIRTY_STREAM = "exe:yjs:dirty"
CONSUMER_GROUP = "persistence"
UPDATE_FIELD = b"u"  # a log entry's update
PROJECT_FIELD = b"p"  # a work entry's project uuid
DIRTY_MAXLEN = 100_000
EPOCH_KEY = "exe:yjs:epoch"
STORED_ENVELOPE_PREFIX = "exe:yjs:envelope:"
STORED_ENVELOPE_SEQ = "exe:yjs:envelope-seq"
INLINE_ENVELOPE_BYTES = 1024 * 1024
STORED_ENVELOPE_TTL_MS = 60_000

#: Characters of the Redis run id stored with a log position (enough to tell lifetimes apart).
RUN_ID_CHARS = 16


THROTTLE_PREFIX = "exe:throttle:ws:"
ASSETS_PREFIX = "exe:assets:"
ASSETS_INBOX_PREFIX = "exe:assets:to:"


def channel(project_uuid: str) -> str:
    return f"{CHANNEL_PREFIX}{project_uuid}"


def project_of_channel(name: str | bytes) -> str | None:
    """The project uuid of a room channel; None for any other channel."""
    text = name.decode() if isinstance(name, bytes) else name
    return text[len(CHANNEL_PREFIX) :] if text.startswith(CHANNEL_PREFIX) else None


def log_stream(project_uuid: str) -> str:
    return f"{LOG_PREFIX}{project_uuid}"


#: The SCAN pattern matching every project's log stream.
LOG_STREAM_PATTERN = log_stream("*")


def project_of_log_stream(name: str | bytes) -> str | None:
    """The project uuid of a log stream key; None for any other key."""
    text = name.decode() if isinstance(name, bytes) else name
    return text[len(LOG_PREFIX) :] if text.startswith(LOG_PREFIX) else None


def instance_key(instance_id: bytes) -> str:
    return f"{INSTANCE_PREFIX}{instance_id.hex()}"


def throttle_key(address: str) -> str:
    """The handshake counter of one client address."""
    return f"{THROTTLE_PREFIX}{address}"


def assets_prefix(project_uuid: str) -> str:
    """The prefix of one project's asset-coordinator keys."""
    return f"{ASSETS_PREFIX}{project_uuid}:"


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
