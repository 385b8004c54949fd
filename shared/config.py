"""Typed settings read from the environment, with the seed's variable names.

One `Settings` object is built at start-up (`Settings.from_env()`) and passed
down explicitly; nothing reads `os.environ` after that. Each setting is
declared once, as a field with its variable and default (`setting(...)`); the
parser is derived from those declarations, and a test checks that the README's
configuration table names every variable (`environment_variables()`).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.redis_contract import SINGLE_REDIS, RedisLayout
from shared.redis_nodes import ClusterNodes, parse_cluster_nodes
from shared.webhooks.events import DEFAULT_GLOBAL_EVENTS, GlobalWebhooks, parse_events
from shared.webhooks.schedule import RetryPolicy
from shared.webhooks.urls import RESOLVE_TIMEOUT, UrlRefused, check_url

if TYPE_CHECKING:
    from shared.awareness import AwarenessLimits
    from shared.compaction import CompactionPolicy
from urllib.parse import quote

log = logging.getLogger(__name__)

DEV_SECRET_FILE = ".dev-secrets"


class ConfigError(Exception):
    """Raised when the configuration cannot work; the message says what to set."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _non_negative(name: str, value: float) -> None:
    if not 0 <= value < math.inf:
        raise ConfigError(f"{name} must be a non-negative number, got {value!r}")


def _positive(name: str, value: float) -> None:
    if not 0 < value < math.inf:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def setting(
    env: str,
    default: Any,
    *,
    secret: bool = False,
    parse: Callable[[str], Any] | None = None,
    check: Callable[[str, Any], None] | None = None,
) -> Any:
    """A setting read from the environment variable `env`: its one declaration.

    The value is parsed by the default's type (int, float, bool, str; a str is
    stripped unless `secret`), or by `parse`; `check` may refuse it. A secret is
    left out of the repr.
    """
    metadata = {"env": env, "secret": secret, "parse": parse, "check": check}
    return field(default=default, repr=not secret, metadata=metadata)


def _read(env: Mapping[str, str], spec: Field[Any], default: Any) -> Any:
    """One setting's value from `env` (see `setting`)."""
    name, meta = spec.metadata["env"], spec.metadata
    if isinstance(default, bool):
        value: Any = _bool(env, name, default)
    elif isinstance(default, int):
        value = _int(env, name, default)
    elif isinstance(default, float):
        value = _float(env, name, default)
    else:
        raw = env.get(name)
        value = default if raw is None else raw if meta["secret"] else raw.strip()
    if meta["parse"] is not None:
        value = meta["parse"](value)
    if meta["check"] is not None:
        meta["check"](name, value)
    return value


def environment_variables() -> list[str]:
    """Every variable the settings read (the README's configuration table lists them all)."""
    return [f.metadata["env"] for f in fields(Settings) if "env" in f.metadata]


@dataclass(frozen=True)
class Settings:
    """Every setting of every service; see the README's configuration table."""

    app_env: str = "dev"
    host: str = setting("HOST", "127.0.0.1")
    port: int = setting("PORT", 8080)
    data_dir: Path = Path("data")
    files_dir: Path = Path("data")
    database_url: str = ""
    jwt_secret: str = setting("API_JWT_SECRET", "", secret=True)
    app_secret: str = setting("APP_SECRET", "", secret=True)
    jwt_ttl_seconds: int = setting("JWT_TTL_SECONDS", 24 * 3600)
    redis_host: str = setting("REDIS_HOST", "")
    redis_port: int = setting("REDIS_PORT", 6379)
    redis_password: str = setting("REDIS_PASSWORD", "", secret=True)
    redis_db: int = setting("REDIS_DB", 0)
    redis_cluster_nodes: str = setting("REDIS_CLUSTER_NODES", "", secret=True)
    persist_partitions: int = setting("PERSIST_PARTITIONS", 16, check=_positive)
    instance_id: str = setting("INSTANCE_ID", "")
    max_message_bytes: int = setting("MAX_MESSAGE_BYTES", 8 * 1024 * 1024)
    # a whole document in one message: a client's sync answer or update, an HTTP import
    max_sync_message_bytes: int = setting("MAX_SYNC_MESSAGE_BYTES", 136 * 1024 * 1024)
    # growth past it is refused (0: no limit)
    max_document_bytes: int = setting("MAX_DOCUMENT_BYTES", 128 * 1024 * 1024)
    relay_unknown_frames: bool = setting("RELAY_UNKNOWN_FRAMES", True)
    ping_interval: float = setting("WS_PING_INTERVAL", 30.0)
    pong_timeout: float = setting("WS_PONG_TIMEOUT", 40.0)
    room_unload_grace: float = setting("ROOM_UNLOAD_GRACE", 30.0)
    store_flush_interval: float = setting("STORE_FLUSH_INTERVAL", 0.2)
    persist_batch_seconds: float = setting("PERSIST_BATCH_SECONDS", 0.1, check=_non_negative)
    compact_max_updates: int = setting("COMPACT_MAX_UPDATES", 500)
    compact_max_bytes: int = setting("COMPACT_MAX_BYTES", 512 * 1024)
    compact_idle_seconds: float = setting("COMPACT_IDLE_SECONDS", 30.0)
    compact_min_log_ratio: float = setting("COMPACT_MIN_LOG_RATIO", 8.0)
    compact_max_rows: int = setting("COMPACT_MAX_ROWS", 10_000)
    presence_interval: float = setting("PRESENCE_INTERVAL", 1.0)
    max_connections: int = setting("MAX_CONNECTIONS", 20_000)
    max_connections_per_user: int = setting("WS_MAX_CONNECTIONS_PER_USER", 50)
    max_connections_per_address: int = setting("WS_MAX_CONNECTIONS_PER_ADDRESS", 1000)
    ws_connect_rate_per_address: int = setting(
        "WS_CONNECT_RATE_PER_ADDRESS", 600, check=_non_negative
    )
    redis_backlog: int = setting("REDIS_BACKLOG", 100_000)
    max_frames_per_second: float = setting("WS_MAX_FRAMES_PER_SECOND", 500.0)
    awareness_max_entries: int = setting("AWARENESS_MAX_ENTRIES", 100)
    awareness_max_state_bytes: int = setting("AWARENESS_MAX_STATE_BYTES", 64 * 1024)
    awareness_max_client_ids: int = setting("AWARENESS_MAX_CLIENT_IDS", 16)
    awareness_max_room_bytes: int = setting("AWARENESS_MAX_ROOM_BYTES", 4 * 1024 * 1024)
    presence_ttl: float = setting("PRESENCE_TTL", 3.0)
    auth_create_users: bool = setting("AUTH_CREATE_USERS", True)
    log_level: str = setting("LOG_LEVEL", "INFO", parse=str.upper)
    run_migrations: bool = setting("RUN_MIGRATIONS", True)
    # gateway: limits, login throttling, access cache, resumable uploads
    max_asset_bytes: int = setting("MAX_ASSET_BYTES", 100 * 1024 * 1024)
    max_project_bytes: int = setting("MAX_PROJECT_BYTES", 1024 * 1024 * 1024)
    login_rate_per_address: int = setting("LOGIN_RATE_PER_ADDRESS", 20)
    login_rate_per_account: int = setting("LOGIN_RATE_PER_ACCOUNT", 5)
    login_rate_window: float = setting("LOGIN_RATE_WINDOW", 60.0)
    access_cache_ttl: float = setting("ACCESS_CACHE_TTL", 2.0)
    upload_expiry_seconds: int = setting("UPLOAD_EXPIRY_SECONDS", 24 * 3600)
    max_open_uploads_per_user: int = setting("MAX_OPEN_UPLOADS_PER_USER", 20)
    max_open_uploads_per_project: int = setting("MAX_OPEN_UPLOADS_PER_PROJECT", 50)
    forwarded_allow_ips: str = setting("FORWARDED_ALLOW_IPS", "")
    metrics_token: str = setting("METRICS_TOKEN", "", secret=True, parse=str.strip)
    # what GET /api/version answers (eXeLearning's editor stores it in a document's metadata)
    app_version: str = setting("APP_VERSION", "")
    # webhooks (shared/webhooks/)
    webhook_urls: str = setting("WEBHOOK_URLS", "")
    webhook_secret: str = setting("WEBHOOK_SECRET", "", secret=True, parse=str.strip)
    webhook_events: str = setting("WEBHOOK_EVENTS", ",".join(DEFAULT_GLOBAL_EVENTS))
    webhook_debounce_seconds: float = setting(
        "WEBHOOK_DEBOUNCE_SECONDS", 5.0, check=_non_negative
    )
    webhook_max_debounce_seconds: float = setting(
        "WEBHOOK_MAX_DEBOUNCE_SECONDS", 30.0, check=_non_negative
    )
    webhook_retry_hours: float = setting("WEBHOOK_RETRY_HOURS", 24.0, check=_non_negative)
    webhook_retry_first_seconds: float = setting(
        "WEBHOOK_RETRY_FIRST_SECONDS", 5.0, check=_positive
    )
    webhook_retry_max_seconds: float = setting("WEBHOOK_RETRY_MAX_SECONDS", 3600.0, check=_positive)
    webhook_timeout_seconds: float = setting("WEBHOOK_TIMEOUT_SECONDS", 10.0, check=_positive)
    # 0: 3 × WEBHOOK_TIMEOUT_SECONDS + 10 (`webhook_lease`)
    webhook_lease_seconds: float = setting("WEBHOOK_LEASE_SECONDS", 0.0, check=_non_negative)
    webhook_max_response_bytes: int = setting("WEBHOOK_MAX_RESPONSE_BYTES", 64 * 1024)
    webhook_allow_private: bool = setting("WEBHOOK_ALLOW_PRIVATE", False)
    webhook_poll_seconds: float = setting("WEBHOOK_POLL_SECONDS", 1.0, check=_positive)
    webhook_max_per_project: int = setting("WEBHOOK_MAX_PER_PROJECT", 10)

    @property
    def is_production(self) -> bool:
        return self.app_env in ("prod", "production")

    @property
    def compaction_policy(self) -> CompactionPolicy:
        from shared.compaction import CompactionPolicy

        return CompactionPolicy(
            self.compact_max_updates,
            self.compact_max_bytes,
            self.compact_min_log_ratio,
            self.compact_max_rows,
        )

    @property
    def awareness_limits(self) -> AwarenessLimits:
        from shared.awareness import AwarenessLimits

        return AwarenessLimits(
            self.awareness_max_entries,
            self.awareness_max_state_bytes,
            self.awareness_max_client_ids,
            self.awareness_max_room_bytes,
        )

    @property
    def global_webhooks(self) -> GlobalWebhooks:
        """The configuration's webhooks (`WEBHOOK_URLS`), checked by `from_env`."""
        urls = tuple(dict.fromkeys(u.strip() for u in self.webhook_urls.split(",") if u.strip()))
        events = parse_events(self.webhook_events, name="WEBHOOK_EVENTS")
        return GlobalWebhooks(urls, self.webhook_secret, events)

    @property
    def webhook_retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            self.webhook_retry_hours,
            self.webhook_retry_first_seconds,
            self.webhook_retry_max_seconds,
        )

    @property
    def webhook_lease(self) -> float:
        """Seconds a dispatcher holds a delivery: one attempt (resolving, then the request)
        with room to spare; a killed dispatcher's delivery is taken over after that."""
        return self.webhook_lease_seconds or 3 * self.webhook_timeout_seconds + 10

    def _check_webhooks(self) -> None:
        try:
            hooks = self.global_webhooks
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        for url in hooks.urls:
            try:
                check_url(url)
            except UrlRefused as exc:
                raise ConfigError(f"WEBHOOK_URLS: {url!r}: {exc}") from None
        if hooks.urls and not hooks.secret:
            raise ConfigError("WEBHOOK_SECRET must be set when WEBHOOK_URLS is")
        if self.webhook_max_debounce_seconds < self.webhook_debounce_seconds:
            raise ConfigError("WEBHOOK_MAX_DEBOUNCE_SECONDS must be at least WEBHOOK_DEBOUNCE_SECONDS")
        if self.webhook_lease <= self.webhook_timeout_seconds + RESOLVE_TIMEOUT:
            raise ConfigError(
                "WEBHOOK_LEASE_SECONDS must exceed WEBHOOK_TIMEOUT_SECONDS"
                f" + {RESOLVE_TIMEOUT:g} (one attempt must end within the lease)"
            )

    @property
    def multi_instance(self) -> bool:
        """Redis fan-out mode: `REDIS_HOST` (as in the seed) or `REDIS_CLUSTER_NODES`."""
        return bool(self.redis_host or self.redis_cluster_nodes)

    @property
    def cluster_nodes(self) -> ClusterNodes | None:
        """The Redis Cluster of `REDIS_CLUSTER_NODES` (checked by `from_env`), None for one Redis."""
        return parse_cluster_nodes(self.redis_cluster_nodes) if self.redis_cluster_nodes else None

    @property
    def redis_layout(self) -> RedisLayout:
        """Where the projects' keys live: the seed's names, or P partitions of a cluster."""
        if self.redis_cluster_nodes:
            return RedisLayout.cluster(self.persist_partitions)
        return SINGLE_REDIS

    def _check_redis(self) -> None:
        if self.redis_cluster_nodes and self.redis_host:
            raise ConfigError("set REDIS_HOST (one Redis) or REDIS_CLUSTER_NODES (a cluster), not both")
        if self.redis_cluster_nodes:
            try:
                parse_cluster_nodes(self.redis_cluster_nodes)
            except ValueError as exc:
                raise ConfigError(f"REDIS_CLUSTER_NODES: {exc}") from None

    @property
    def redis_url(self) -> str:
        auth = f":{quote(self.redis_password, safe='')}@" if self.redis_password else ""
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @property
    def database_is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests and the embedded runner use this)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from `env` (default `os.environ`); raise ConfigError when unusable."""
        env = os.environ if env is None else env
        app_env = env.get("APP_ENV", "dev").strip().lower() or "dev"
        data_dir = Path(env.get("DATA_DIR", "data")).expanduser()
        files_dir = Path(env.get("FILES_DIR", "") or data_dir).expanduser()
        production = app_env in ("prod", "production")
        defaults = {"auth_create_users": not production, "run_migrations": not production}
        settings = cls(
            app_env=app_env,
            data_dir=data_dir,
            files_dir=files_dir,
            database_url=_database_url(env, data_dir),
            **{
                f.name: _read(env, f, defaults.get(f.name, f.default))
                for f in fields(cls)
                if "env" in f.metadata
            },
        )
        if settings.max_sync_message_bytes < settings.max_message_bytes:
            raise ConfigError("MAX_SYNC_MESSAGE_BYTES must be at least MAX_MESSAGE_BYTES")
        settings._check_webhooks()
        settings._check_redis()
        return settings.with_secrets()

    def with_secrets(self) -> Settings:
        """Fill missing secrets: an error in production, a stored dev secret otherwise."""
        missing = [
            name
            for name, value in (
                ("API_JWT_SECRET", self.jwt_secret),
                ("APP_SECRET", self.app_secret),
            )
            if not value
        ]
        if not missing:
            return self
        if self.is_production:
            raise ConfigError(
                f"{' and '.join(missing)} must be set when APP_ENV={self.app_env}: "
                "use the same long random value on every instance"
            )
        stored = _load_or_create_dev_secrets(self.data_dir)
        log.warning(
            "%s not set: using a development secret stored in %s (never do this in production)",
            " and ".join(missing),
            self.data_dir / DEV_SECRET_FILE,
        )
        return replace(
            self,
            jwt_secret=self.jwt_secret or stored["API_JWT_SECRET"],
            app_secret=self.app_secret or stored["APP_SECRET"],
        )


def _database_url(env: Mapping[str, str], data_dir: Path) -> str:
    url = env.get("DATABASE_URL", "").strip()
    if url:
        if url.startswith(("postgresql://", "postgres://")):
            url = "postgresql+asyncpg://" + url.split("://", 1)[1]
        return url
    if env.get("DB_HOST", "").strip():
        user = quote(env.get("DB_USER", "postgres"), safe="")
        password = env.get("DB_PASSWORD", "")
        auth = f"{user}:{quote(password, safe='')}" if password else user
        return (
            f"postgresql+asyncpg://{auth}@{env['DB_HOST'].strip()}:{_int(env, 'DB_PORT', 5432)}"
            f"/{env.get('DB_NAME', 'exelearning')}"
        )
    return f"sqlite+aiosqlite:///{(data_dir / 'exe-collab.sqlite').resolve()}"


def _load_or_create_dev_secrets(data_dir: Path) -> dict[str, str]:
    path = data_dir / DEV_SECRET_FILE
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key and value:
                values[key] = value
    if {"API_JWT_SECRET", "APP_SECRET"} <= values.keys():
        return values
    values.setdefault("API_JWT_SECRET", secrets.token_urlsafe(48))
    values.setdefault("APP_SECRET", secrets.token_urlsafe(48))
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    tmp.chmod(0o600)
    tmp.replace(path)
    return values
