"""The OpenAPI description, and schemathesis fuzzing a live gateway process against it.

Checks: every schemathesis check (no 5xx, status codes, content types,
headers and bodies conform to the schema, missing required headers and
unsupported methods rejected, valid input accepted, auth not ignored...)
except where it cannot hold for this API by design:

- `negative_data_rejection`, everywhere: tus mandates 412 (not one of the 4xx
  codes the check expects) for an unsupported Tus-Resumable version. It is not
  narrowed to the tus operations because this run fixes `path.uuid` to its
  project, which replaces the invalid uuids the check sends with the real one;
- `positive_data_acceptance` (valid input per the schema is accepted) on the
  operations whose input must also be something no schema can say
  (`NOT_SCHEMA_VALID`):
  - both `POST .../yjs-document`: the bytes must also be a Yjs update that
    applies to the current document;
  - the asset operations naming an asset (`POST .../assets` by its filename
    or `?name=`, `GET`/`DELETE .../assets/{name}`): the name must also be free
    of path tricks, reserved names and control characters (`validate_name`);
  - tus creation and PATCH: their headers and body (Upload-Length within the
    configured limit, base64 Upload-Metadata naming a valid file, a body that
    fits the declared length) are checked by tus's rules, with tus's codes;
  - eXeLearning's bulk uploads (`.../assets/sync`, the upload-session batch):
    the `metadata` part is a JSON list, inside a multipart text field, whose
    entries must match the `files` parts by position;
  - `PATCH .../yjs-document`: the edits must also fit the current document (an index
    within its array or text, a map or text where the edit needs one, integers a Yjs
    number holds exactly);
  - `POST .../webhooks`: the URL's host must also resolve to public addresses only
    (the SSRF rule, `shared/webhooks/urls.py`), which no schema can say;
  - eXeLearning's chunks (`.../upload-chunk`, `.../finalize`): a chunk's number
    must be within its declared total, and finalize needs every chunk uploaded
    before (state, not shape).

Bounded (few examples per operation, fixed seed) so it finishes well within a
minute; set GATEWAY_FUZZ_EXAMPLES / GATEWAY_FUZZ_SEED to explore more.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from services.gateway.openapi import build_spec
from services.gateway.schema import OPERATIONS
from tests.conftest import TEST_SECRET
from tests.support.api import ROOT, Api, GatewayProcess

pytestmark = pytest.mark.integration

ST = str(Path(sys.executable).with_name("st"))

NOT_SCHEMA_VALID = (  # positive_data_acceptance does not apply: see the module docstring
    "POST /api/projects/{uuid}/yjs-document",
    "POST /api/projects/uuid/{uuid}/yjs-document",
    "PATCH /api/projects/{uuid}/yjs-document",
    "POST /api/projects/{uuid}/assets",
    "GET /api/projects/{uuid}/assets/{name}",
    "DELETE /api/projects/{uuid}/assets/{name}",
    "POST /api/projects/{uuid}/uploads",
    "PATCH /api/projects/{uuid}/uploads/{upload_id}",
    "POST /api/projects/{uuid}/assets/sync",
    "POST /api/upload-session/{token}/batch",
    "POST /api/projects/{uuid}/assets/upload-chunk",
    "POST /api/projects/{uuid}/assets/upload-chunk/finalize",
    "POST /api/projects/{uuid}/webhooks",
)


def _positive_exclusions() -> str:
    """schemathesis.toml: positive_data_acceptance off for each of `NOT_SCHEMA_VALID`."""
    return "".join(
        f'[[operations]]\ninclude-name = "{name}"\n'
        "checks.positive_data_acceptance.enabled = false\n"
        for name in NOT_SCHEMA_VALID
    )


def _app() -> web.Application:
    from services.gateway.app import create_app
    from shared.config import Settings

    return create_app(Settings(jwt_secret="x" * 40, app_secret="x" * 40))


def routes_of_app(app: web.Application) -> set[tuple[str | None, str]]:
    found: set[tuple[str | None, str]] = set()
    for route in app.router.routes():
        if route.method == "*":  # exe_assets' 405s for other methods on its paths: no operation
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method == "HEAD" and (path, "GET") in {(p, m) for p, m in found}:
            continue
        found.add((path, route.method))
    return {(p, m) for p, m in found if not (m == "HEAD" and (p, "GET") in found)}


def test_spec_describes_every_route() -> None:
    app = _app()
    spec = build_spec(app[OPERATIONS])
    documented = {
        (path, method.upper())
        for path, item in spec["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert routes_of_app(app) == documented
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert op["responses"], (path, method)
            if path.startswith("/api/") and op.get("security") != []:
                assert "401" in op["responses"], (path, method)


async def test_openapi_is_served(server) -> None:  # type: ignore[no-untyped-def]
    async with Api(server.http_url) as api:
        reply = await api.get("/api/openapi.json", token=None)
        assert reply.status == 200 and reply.json["openapi"].startswith("3.")
        assert "/api/projects/{uuid}/yjs-document" in reply.json["paths"]


async def test_schemathesis_finds_no_errors(tmp_path: Path) -> None:
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "API_JWT_SECRET": TEST_SECRET,
        "APP_SECRET": TEST_SECRET,
        "LOG_LEVEL": "WARNING",
        "LOGIN_RATE_PER_ADDRESS": "1000000",
        "LOGIN_RATE_PER_ACCOUNT": "1000000",
        "MAX_ASSET_BYTES": str(1024 * 1024),
    }
    gw = await asyncio.to_thread(GatewayProcess(env, log_path=tmp_path / "gateway.log").start)
    try:
        async with Api(gw.url) as api:
            assert (
                await api.post(
                    "/api/auth/register",
                    json={"email": "fuzz@example.com", "password": "password1"},
                )
            ).status == 201
            token = (
                await api.post(
                    "/api/auth/login", json={"email": "fuzz@example.com", "password": "password1"}
                )
            ).json["token"]
            api.token = token
            project = (await api.post("/api/projects", json={"title": "fuzzed"})).json["uuid"]
            await api.post(f"/api/projects/{project}/versions", json={"label": "v"})
        config = tmp_path / "schemathesis.toml"
        config.write_text(
            f'headers = {{ Authorization = "Bearer {token}" }}\n'
            "request-timeout = 60\n"  # a loaded CI machine must not turn slowness into failures
            "[generation]\n"
            f"max-examples = {int(os.environ.get('GATEWAY_FUZZ_EXAMPLES', '5'))}\n"
            'database = "none"\n'
            "[parameters]\n"
            f'"path.uuid" = "{project}"\n' + _positive_exclusions()
        )
        command = [
            ST, "--config-file", str(config), "run", f"{gw.url}/api/openapi.json",
            # every check runs by default; `--checks all` would override the per-operation config
            "--exclude-checks", "negative_data_rejection",
            "--exclude-name", "DELETE /api/projects/{uuid}",  # would end the run's project early
            "--workers", "1",  # CPython 3.11 can fail compiling in parallel threads (SystemError)
            "--seed", os.environ.get("GATEWAY_FUZZ_SEED", "20261129"),
            "--no-color",
        ]  # fmt: skip
        result = await asyncio.to_thread(
            subprocess.run,
            command,
            cwd=tmp_path,
            env={
                **os.environ,
                "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks",
                "PYTHONPATH": str(ROOT),
            },
            capture_output=True,
            text=True,
            timeout=240,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-8000:]
        assert "48 selected / 49 total" in output, output[-3000:]
        assert "Traceback" not in gw.log_text(), gw.log_text()[-4000:]
        assert '"level":"error"' not in gw.log_text(), gw.log_text()[-4000:]
    finally:
        await asyncio.to_thread(gw.stop)
