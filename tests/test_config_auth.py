"""Configuration from the environment (`shared.config`) and JWT handling (`shared.auth`)."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from sqlalchemy.engine import make_url

from shared.auth import TokenError, bearer_token, mint_token, verify_token
from shared.config import DEV_SECRET_FILE, ConfigError, Settings

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s" * 48

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]


def env_for(tmp_path: Path, **values: str) -> dict[str, str]:
    """An environment with DATA_DIR in a temp dir (so nothing lands in ./data)."""
    return {"DATA_DIR": str(tmp_path / "data"), **values}


# --------------------------------------------------------------------------- Settings.from_env


def test_defaults_are_the_embedded_mode(tmp_path: Path) -> None:
    settings = Settings.from_env(env_for(tmp_path))
    data_dir = tmp_path / "data"
    assert settings.app_env == "dev" and not settings.is_production
    assert (
        settings.database_url == f"sqlite+aiosqlite:///{(data_dir / 'exe-collab.sqlite').resolve()}"
    )
    assert settings.database_is_sqlite
    assert not settings.multi_instance and settings.redis_host == ""
    assert settings.data_dir == data_dir and settings.files_dir == data_dir
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.max_message_bytes == 8 * 1024 * 1024
    assert settings.relay_unknown_frames is True
    assert (settings.ping_interval, settings.pong_timeout) == (30.0, 40.0)
    assert settings.room_unload_grace == 30.0
    assert settings.persist_batch_seconds == 0.1
    assert settings.run_migrations is True and settings.auth_create_users is True


def test_explicit_values_are_read(tmp_path: Path) -> None:
    settings = Settings.from_env(
        env_for(
            tmp_path,
            HOST="0.0.0.0",
            PORT="9001",
            FILES_DIR=str(tmp_path / "assets"),
            MAX_MESSAGE_BYTES="1024",
            RELAY_UNKNOWN_FRAMES="0",
            WS_PING_INTERVAL="2.5",
            ROOM_UNLOAD_GRACE="1",
            COMPACT_MAX_UPDATES="7",
            PERSIST_BATCH_SECONDS="0",
            API_JWT_SECRET=SECRET,
            APP_SECRET=SECRET,
        )
    )
    assert (settings.host, settings.port) == ("0.0.0.0", 9001)
    assert settings.files_dir == tmp_path / "assets"
    assert settings.max_message_bytes == 1024
    assert settings.relay_unknown_frames is False
    assert settings.ping_interval == 2.5 and settings.room_unload_grace == 1.0
    assert settings.compact_max_updates == 7
    assert settings.persist_batch_seconds == 0.0
    assert settings.jwt_secret == SECRET


def test_db_variables_build_an_asyncpg_url_with_quoting(tmp_path: Path) -> None:
    user, password = "exe user@corp", "p@ss:w/rd%?#&="
    settings = Settings.from_env(
        env_for(
            tmp_path,
            DB_HOST="db.internal",
            DB_PORT="6543",
            DB_NAME="exelearning_prod",
            DB_USER=user,
            DB_PASSWORD=password,
        )
    )
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert not settings.database_is_sqlite
    assert password not in settings.database_url  # quoted, not raw
    url = make_url(settings.database_url)
    assert url.drivername == "postgresql+asyncpg"
    assert (url.username, url.password) == (user, password)
    assert (url.host, url.port, url.database) == ("db.internal", 6543, "exelearning_prod")


def test_db_variables_defaults(tmp_path: Path) -> None:
    url = make_url(Settings.from_env(env_for(tmp_path, DB_HOST="pg")).database_url)
    assert (url.host, url.port, url.database, url.password) == ("pg", 5432, "exelearning", None)


@pytest.mark.parametrize(
    "given, expected",
    [
        ("postgres://u:p@h:5433/db", "postgresql+asyncpg://u:p@h:5433/db"),
        ("postgresql://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("postgresql+asyncpg://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        (
            "sqlite+aiosqlite:////var/lib/exe/db.sqlite",
            "sqlite+aiosqlite:////var/lib/exe/db.sqlite",
        ),
    ],
)
def test_database_url_is_normalised(tmp_path: Path, given: str, expected: str) -> None:
    # DATABASE_URL wins over DB_*
    settings = Settings.from_env(env_for(tmp_path, DATABASE_URL=given, DB_HOST="ignored"))
    assert settings.database_url == expected


def test_redis_host_selects_multi_instance_mode(tmp_path: Path) -> None:
    settings = Settings.from_env(
        env_for(tmp_path, REDIS_HOST="redis", REDIS_PORT="6380", REDIS_PASSWORD="pa ss/word")
    )
    assert settings.multi_instance
    assert settings.redis_url == "redis://:pa%20ss%2Fword@redis:6380/0"


def test_prod_without_jwt_secret_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env_for(tmp_path, APP_ENV="prod", APP_SECRET=SECRET))
    assert "API_JWT_SECRET" in str(info.value)
    assert "APP_SECRET" not in str(info.value)
    assert not (tmp_path / "data" / DEV_SECRET_FILE).exists()  # nothing generated


@pytest.mark.parametrize("app_env", ["prod", "production", "PROD"])
def test_prod_without_any_secret_names_both(tmp_path: Path, app_env: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env_for(tmp_path, APP_ENV=app_env))
    assert "API_JWT_SECRET" in str(info.value) and "APP_SECRET" in str(info.value)


def test_prod_with_secrets_starts_and_defaults_change(tmp_path: Path) -> None:
    settings = Settings.from_env(
        env_for(tmp_path, APP_ENV="prod", API_JWT_SECRET=SECRET, APP_SECRET="a" * 40)
    )
    assert settings.is_production
    assert settings.jwt_secret == SECRET
    assert settings.run_migrations is False and settings.auth_create_users is False
    assert SECRET not in repr(settings) and "a" * 40 not in repr(settings)
    assert not (tmp_path / "data" / DEV_SECRET_FILE).exists()


def test_dev_without_secret_generates_and_persists_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        first = Settings.from_env(env_for(tmp_path))
    assert len(first.jwt_secret) >= 32 and len(first.app_secret) >= 32
    assert first.jwt_secret != first.app_secret
    stored = tmp_path / "data" / DEV_SECRET_FILE
    assert stored.exists()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert "API_JWT_SECRET" in caplog.text  # a warning names what is missing...
    assert first.jwt_secret not in caplog.text  # ...but never the secret

    second = Settings.from_env(env_for(tmp_path))
    assert (second.jwt_secret, second.app_secret) == (first.jwt_secret, first.app_secret)

    # tokens minted before a restart still verify after it
    token, _ = mint_token(first.jwt_secret, 5)
    assert verify_token(token, second.jwt_secret).user_id == "5"

    # another data dir, another secret
    elsewhere = Settings.from_env({"DATA_DIR": str(tmp_path / "other")})
    assert elsewhere.jwt_secret != first.jwt_secret


def test_dev_with_only_one_secret_keeps_it(tmp_path: Path) -> None:
    settings = Settings.from_env(env_for(tmp_path, API_JWT_SECRET=SECRET))
    assert settings.jwt_secret == SECRET
    assert settings.app_secret and settings.app_secret != SECRET


@pytest.mark.parametrize(
    "name, value",
    [
        ("PORT", "eighty"),
        ("PORT", "80.5"),
        ("DB_PORT", "pg"),
        ("REDIS_PORT", "x"),
        ("MAX_MESSAGE_BYTES", "8MiB"),
        ("COMPACT_MAX_UPDATES", "lots"),
        ("WS_PING_INTERVAL", "soon"),
        ("RELAY_UNKNOWN_FRAMES", "maybe"),
        ("PERSIST_BATCH_SECONDS", "soon"),
        ("PERSIST_BATCH_SECONDS", "-1"),
        ("PERSIST_BATCH_SECONDS", "nan"),
    ],
)
def test_bad_values_are_config_errors_naming_the_variable(
    tmp_path: Path, name: str, value: str
) -> None:
    env = env_for(tmp_path, API_JWT_SECRET=SECRET, APP_SECRET=SECRET, **{name: value})
    if name == "DB_PORT":
        env["DB_HOST"] = "db"
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert name in str(info.value) and value in str(info.value)


def _service_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """The current environment minus every setting, plus `values`."""
    drop = {
        "API_JWT_SECRET", "APP_SECRET", "APP_ENV", "DATABASE_URL", "REDIS_HOST", "REDIS_PASSWORD",
        "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD", "PORT", "HOST",
    }  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(DATA_DIR=str(tmp_path / "data"), PORT="1", **values)
    return env


def _start_service(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a service until it exits (these tests expect it to refuse to start)."""
    return subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("module", ["services.collab", "services.gateway"])
def test_service_refuses_to_start_in_prod_without_secret(tmp_path: Path, module: str) -> None:
    env = _service_env(tmp_path, APP_ENV="prod", APP_SECRET="top-secret-app-value-123456")
    result = _start_service(module, env)
    assert result.returncode != 0
    assert "API_JWT_SECRET" in result.stderr
    assert "Traceback" not in result.stderr  # a clear message, not a crash
    assert "top-secret-app-value-123456" not in result.stdout + result.stderr
    assert not (tmp_path / "data" / DEV_SECRET_FILE).exists()


def test_service_refuses_to_start_on_a_bad_integer(tmp_path: Path) -> None:
    result = _start_service("services.collab", _service_env(tmp_path, MAX_MESSAGE_BYTES="big"))
    assert result.returncode != 0
    assert "MAX_MESSAGE_BYTES" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- shared.auth


def _b64(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _claims(**changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "42",
        "email": "a@b.c",
        "roles": [],
        "iat": now,
        "exp": now + 600,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def test_minted_token_verifies() -> None:
    token, expires = mint_token(
        SECRET, 42, email="ann@example.com", roles=["admin"], ttl_seconds=120
    )
    assert abs(expires - (time.time() + 120)) < 5
    identity = verify_token(token, SECRET)
    assert identity.user_id == "42"
    assert identity.email == "ann@example.com"
    assert identity.roles == ("admin",) and identity.is_admin
    assert identity.claims["exp"] == expires
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "alg_none",
        "alg_none_signed",
        "hs512",
        "hs384",
        "forged",
        "missing_exp",
        "missing_sub",
        "missing_iat",
        "roles_not_a_list",
        "garbage",
        "empty",
        "tampered_payload",
    ],
)
def test_verify_token_rejects(case: str) -> None:
    good = jwt.encode(_claims(), SECRET, algorithm="HS256")
    tokens = {
        "expired": mint_token(SECRET, 1, ttl_seconds=-120)[0],
        "alg_none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}.",
        "alg_none_signed": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}.{good.split('.')[2]}",
        "hs512": jwt.encode(_claims(), SECRET, algorithm="HS512"),
        "hs384": jwt.encode(_claims(), SECRET, algorithm="HS384"),
        "forged": jwt.encode(_claims(), "another-secret-" + "z" * 40, algorithm="HS256"),
        "missing_exp": jwt.encode(_claims(exp=None), SECRET, algorithm="HS256"),
        "missing_sub": jwt.encode(_claims(sub=None), SECRET, algorithm="HS256"),
        "missing_iat": jwt.encode(_claims(iat=None), SECRET, algorithm="HS256"),
        "roles_not_a_list": jwt.encode(_claims(roles="admin"), SECRET, algorithm="HS256"),
        "garbage": "this-is.not-a.token",
        "empty": "",
        # someone else's payload (admin!) under a genuine signature
        "tampered_payload": ".".join(
            [good.split(".")[0], _b64(_claims(sub="1", roles=["admin"])), good.split(".")[2]]
        ),
    }
    assert verify_token(good, SECRET).user_id == "42"  # the control case verifies
    with pytest.raises(TokenError) as info:
        verify_token(tokens[case], SECRET)
    if case == "expired":
        assert "expired" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "header, expected",
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("  Bearer abc", "abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Token abc", None),
        ("Bearer", None),
        ("Bearer    ", None),
        ("Bearerabc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token_parsing(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


def test_every_setting_is_declared_once_and_documented() -> None:
    """The parser is derived from the declarations: each variable set to a distinct value
    reaches its field, and the README's configuration table names every variable."""
    from dataclasses import fields

    from shared.config import environment_variables

    names = environment_variables()
    assert len(names) == len(set(names))
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert [name for name in names if f"`{name}`" not in readme] == []
    by_env = {f.metadata["env"]: f for f in fields(Settings) if "env" in f.metadata}
    env = {"API_JWT_SECRET": "s" * 40, "APP_SECRET": "t" * 40}
    for name, spec in by_env.items():
        if isinstance(spec.default, bool):
            env.setdefault(name, "0" if spec.default else "1")
        elif isinstance(spec.default, (int, float)):
            env.setdefault(name, "7")
        else:
            env.setdefault(name, " value-of-" + name.lower())
    # at least MAX_MESSAGE_BYTES; over WEBHOOK_TIMEOUT_SECONDS + 5
    numbers = {"MAX_SYNC_MESSAGE_BYTES": 8, "WEBHOOK_LEASE_SECONDS": 13}
    env.update({name: str(value) for name, value in numbers.items()})
    # values the start-up check of the global webhooks accepts
    checked = {
        "WEBHOOK_URLS": "https://hooks.example/a",
        "WEBHOOK_EVENTS": "member.added",
        "REDIS_CLUSTER_NODES": "",  # not with REDIS_HOST
    }
    env.update(checked)
    settings = Settings.from_env(env)
    for name, spec in by_env.items():
        value = getattr(settings, spec.name)
        if isinstance(spec.default, bool):
            assert value is (not spec.default), name
        elif isinstance(spec.default, (int, float)):
            assert value == numbers.get(name, 7), name
        elif name in checked:
            assert value == checked[name], name
        elif not spec.metadata["secret"] and spec.metadata["parse"] is None:
            assert value == "value-of-" + name.lower(), name


def test_redis_cluster_nodes_choose_cluster_mode_and_are_checked() -> None:
    base = {"API_JWT_SECRET": "s" * 40, "APP_SECRET": "t" * 40}
    settings = Settings.from_env({**base, "REDIS_CLUSTER_NODES": "10.0.0.1:7000, 10.0.0.2:7001"})
    assert settings.multi_instance and settings.redis_layout.sharded
    assert settings.redis_layout.partitions == 16
    assert settings.cluster_nodes is not None
    assert settings.cluster_nodes.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    url = Settings.from_env(
        {**base, "REDIS_CLUSTER_NODES": "redis+cluster://app:p%40ss@[::1]:7000,h:7001", "PERSIST_PARTITIONS": "64"}
    )
    assert url.cluster_nodes is not None
    assert (url.cluster_nodes.username, url.cluster_nodes.password) == ("app", "p@ss")
    assert url.cluster_nodes.nodes == (("::1", 7000), ("h", 7001))
    assert url.redis_layout.partitions == 64
    assert "p@ss" not in repr(url)
    single = Settings.from_env({**base, "REDIS_HOST": "redis"})
    assert not single.redis_layout.sharded and single.redis_layout.partitions == 1
    for bad, says in [
        ({"REDIS_CLUSTER_NODES": "h:7000", "REDIS_HOST": "redis"}, "not both"),
        ({"REDIS_CLUSTER_NODES": "h"}, "not host:port"),
        ({"REDIS_CLUSTER_NODES": "redis://h:7000"}, r"redis\+cluster://"),
        ({"REDIS_CLUSTER_NODES": "h:7000", "PERSIST_PARTITIONS": "0"}, "PERSIST_PARTITIONS"),
    ]:
        with pytest.raises(ConfigError, match=says):
            Settings.from_env({**base, **bad})


def test_webhook_lease_defaults_to_the_timeout_and_must_outlast_an_attempt(tmp_path: Path) -> None:
    assert Settings.from_env(env_for(tmp_path, WEBHOOK_TIMEOUT_SECONDS="2")).webhook_lease == 16
    assert Settings.from_env(env_for(tmp_path, WEBHOOK_LEASE_SECONDS="20")).webhook_lease == 20
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env_for(tmp_path, WEBHOOK_LEASE_SECONDS="12"))
    assert "WEBHOOK_LEASE_SECONDS" in str(info.value)
