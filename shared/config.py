"""Typed settings read from the environment, with the seed's variable names.

One `Settings` object is built at start-up (`Settings.from_env()`) and passed
down explicitly; nothing reads `os.environ` after that.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

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


def _non_negative_float(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not 0 <= value < math.inf:
        raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


@dataclass(frozen=True)
class Settings:
    """Every setting of every service; see the README's configuration table."""

    app_env: str = "dev"
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("data")
    files_dir: Path = Path("data")
    database_url: str = ""
    jwt_secret: str = field(default="", repr=False)
    app_secret: str = field(default="", repr=False)
    jwt_ttl_seconds: int = 24 * 3600
    redis_host: str = ""
    redis_port: int = 6379
    redis_password: str = field(default="", repr=False)
    redis_db: int = 0
    instance_id: str = ""
    max_message_bytes: int = 8 * 1024 * 1024
    # a whole document in one message: a client's sync answer or update, an HTTP import
    max_sync_message_bytes: int = 136 * 1024 * 1024
    max_document_bytes: int = 128 * 1024 * 1024  # growth past it is refused (0: no limit)
    relay_unknown_frames: bool = True
    ping_interval: float = 30.0
    pong_timeout: float = 40.0
    room_unload_grace: float = 30.0
    store_flush_interval: float = 0.2
    persist_batch_seconds: float = 0.1
    compact_max_updates: int = 500
    compact_max_bytes: int = 512 * 1024
    compact_idle_seconds: float = 30.0
    compact_min_log_ratio: float = 8.0
    compact_max_rows: int = 10_000
    presence_interval: float = 1.0
    max_connections: int = 20_000
    max_connections_per_user: int = 50
    max_connections_per_address: int = 1000
    redis_backlog: int = 100_000
    max_frames_per_second: float = 500.0
    awareness_max_entries: int = 100
    awareness_max_state_bytes: int = 64 * 1024
    awareness_max_client_ids: int = 16
    awareness_max_room_bytes: int = 4 * 1024 * 1024
    presence_ttl: float = 3.0
    auth_create_users: bool = True
    log_level: str = "INFO"
    run_migrations: bool = True
    # gateway: limits, login throttling, access cache, resumable uploads
    max_asset_bytes: int = 100 * 1024 * 1024
    max_project_bytes: int = 1024 * 1024 * 1024
    login_rate_per_address: int = 20
    login_rate_per_account: int = 5
    login_rate_window: float = 60.0
    access_cache_ttl: float = 2.0
    upload_expiry_seconds: int = 24 * 3600
    max_open_uploads_per_user: int = 20
    max_open_uploads_per_project: int = 50
    forwarded_allow_ips: str = ""
    metrics_token: str = field(default="", repr=False)

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
    def multi_instance(self) -> bool:
        """Redis fan-out mode; decided by `REDIS_HOST` alone, as in the seed."""
        return bool(self.redis_host)

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
        settings = cls(
            app_env=app_env,
            host=env.get("HOST", "127.0.0.1"),
            port=_int(env, "PORT", 8080),
            data_dir=data_dir,
            files_dir=files_dir,
            database_url=_database_url(env, data_dir),
            jwt_secret=env.get("API_JWT_SECRET", ""),
            app_secret=env.get("APP_SECRET", ""),
            jwt_ttl_seconds=_int(env, "JWT_TTL_SECONDS", 24 * 3600),
            redis_host=env.get("REDIS_HOST", "").strip(),
            redis_port=_int(env, "REDIS_PORT", 6379),
            redis_password=env.get("REDIS_PASSWORD", ""),
            redis_db=_int(env, "REDIS_DB", 0),
            instance_id=env.get("INSTANCE_ID", ""),
            max_message_bytes=_int(env, "MAX_MESSAGE_BYTES", 8 * 1024 * 1024),
            max_sync_message_bytes=_int(env, "MAX_SYNC_MESSAGE_BYTES", 136 * 1024 * 1024),
            max_document_bytes=_int(env, "MAX_DOCUMENT_BYTES", 128 * 1024 * 1024),
            relay_unknown_frames=_bool(env, "RELAY_UNKNOWN_FRAMES", True),
            ping_interval=_float(env, "WS_PING_INTERVAL", 30.0),
            pong_timeout=_float(env, "WS_PONG_TIMEOUT", 40.0),
            room_unload_grace=_float(env, "ROOM_UNLOAD_GRACE", 30.0),
            store_flush_interval=_float(env, "STORE_FLUSH_INTERVAL", 0.2),
            persist_batch_seconds=_non_negative_float(env, "PERSIST_BATCH_SECONDS", 0.1),
            compact_max_updates=_int(env, "COMPACT_MAX_UPDATES", 500),
            compact_max_bytes=_int(env, "COMPACT_MAX_BYTES", 512 * 1024),
            compact_idle_seconds=_float(env, "COMPACT_IDLE_SECONDS", 30.0),
            compact_min_log_ratio=_float(env, "COMPACT_MIN_LOG_RATIO", 8.0),
            compact_max_rows=_int(env, "COMPACT_MAX_ROWS", 10_000),
            presence_interval=_float(env, "PRESENCE_INTERVAL", 1.0),
            max_connections=_int(env, "MAX_CONNECTIONS", 20_000),
            max_connections_per_user=_int(env, "WS_MAX_CONNECTIONS_PER_USER", 50),
            max_connections_per_address=_int(env, "WS_MAX_CONNECTIONS_PER_ADDRESS", 1000),
            redis_backlog=_int(env, "REDIS_BACKLOG", 100_000),
            max_frames_per_second=_float(env, "WS_MAX_FRAMES_PER_SECOND", 500.0),
            awareness_max_entries=_int(env, "AWARENESS_MAX_ENTRIES", 100),
            awareness_max_state_bytes=_int(env, "AWARENESS_MAX_STATE_BYTES", 64 * 1024),
            awareness_max_client_ids=_int(env, "AWARENESS_MAX_CLIENT_IDS", 16),
            awareness_max_room_bytes=_int(env, "AWARENESS_MAX_ROOM_BYTES", 4 * 1024 * 1024),
            presence_ttl=_float(env, "PRESENCE_TTL", 3.0),
            auth_create_users=_bool(env, "AUTH_CREATE_USERS", app_env not in ("prod", "production")),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            run_migrations=_bool(env, "RUN_MIGRATIONS", app_env not in ("prod", "production")),
            max_asset_bytes=_int(env, "MAX_ASSET_BYTES", 100 * 1024 * 1024),
            max_project_bytes=_int(env, "MAX_PROJECT_BYTES", 1024 * 1024 * 1024),
            login_rate_per_address=_int(env, "LOGIN_RATE_PER_ADDRESS", 20),
            login_rate_per_account=_int(env, "LOGIN_RATE_PER_ACCOUNT", 5),
            login_rate_window=_float(env, "LOGIN_RATE_WINDOW", 60.0),
            access_cache_ttl=_float(env, "ACCESS_CACHE_TTL", 2.0),
            upload_expiry_seconds=_int(env, "UPLOAD_EXPIRY_SECONDS", 24 * 3600),
            max_open_uploads_per_user=_int(env, "MAX_OPEN_UPLOADS_PER_USER", 20),
            max_open_uploads_per_project=_int(env, "MAX_OPEN_UPLOADS_PER_PROJECT", 50),
            forwarded_allow_ips=env.get("FORWARDED_ALLOW_IPS", "").strip(),
            metrics_token=env.get("METRICS_TOKEN", "").strip(),
        )
        if settings.max_sync_message_bytes < settings.max_message_bytes:
            raise ConfigError("MAX_SYNC_MESSAGE_BYTES must be at least MAX_MESSAGE_BYTES")
        return settings.with_secrets()

    def with_secrets(self) -> Settings:
        """Fill missing secrets: an error in production, a stored dev secret otherwise."""
        missing = [
            name
            for name, value in (("API_JWT_SECRET", self.jwt_secret), ("APP_SECRET", self.app_secret))
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
