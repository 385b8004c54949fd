"""Which requests the JWT middleware lets in without a token: exactly the declared public ones."""

from __future__ import annotations

import pytest
from aiohttp import web

from services.gateway.app import create_app
from services.gateway.schema import OPERATIONS
from services.gateway.security import ANONYMOUS_ROUTES, needs_token
from shared.config import Settings

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def app() -> web.Application:
    return create_app(Settings(jwt_secret="x" * 40, app_secret="x" * 40))


def anonymous_paths(app: web.Application) -> set[tuple[str, str]]:
    return {route for route, anonymous in app[ANONYMOUS_ROUTES].items() if anonymous}


def test_the_public_routes_are_the_declared_ones(app: web.Application) -> None:
    assert anonymous_paths(app) == {
        ("GET", "/"),
        ("GET", "/{file}"),
        ("GET", "/healthcheck"),
        ("GET", "/health/ready"),
        ("GET", "/metrics"),
        ("GET", "/api/openapi.json"),
        ("GET", "/api/version"),
        ("POST", "/api/auth/login"),
        ("POST", "/api/auth/logout"),
        ("POST", "/api/auth/register"),  # optional auth: an admin's token is read if sent
        ("OPTIONS", "/api/projects/{uuid}/uploads"),
        ("POST", "/api/upload-session/{token}/batch"),  # its upload session is its credential
    }
    assert len(app[ANONYMOUS_ROUTES]) == len(app[OPERATIONS])


@pytest.mark.parametrize(
    ("method", "path", "route", "expected"),
    [
        ("GET", "/api/projects", ("GET", "/api/projects"), True),
        ("HEAD", "/api/projects/x", ("HEAD", "/api/projects/{uuid}"), True),
        ("GET", "/api/version", ("GET", "/api/version"), False),
        ("HEAD", "/app.js", ("HEAD", "/{file}"), False),  # the HEAD aiohttp adds to a GET
        ("POST", "/api/auth/register", ("POST", "/api/auth/register"), False),
        ("GET", "/api/nothing", None, True),  # unknown API path: 401 before 404
        ("DELETE", "/api/version", None, False),  # 405 on a public path: a 405
        ("PUT", "/api/projects", None, True),  # 405 under /api/: 401
        ("GET", "/nothing", None, False),  # unknown page: 404
        ("GET", "/yjs/project-1", ("GET", "/yjs/{room}"), False),  # collab's, authenticates itself
        ("OPTIONS", "/api/projects", None, False),
    ],
)
def test_needs_token(
    app: web.Application,
    method: str,
    path: str,
    route: tuple[str, str] | None,
    expected: bool,
) -> None:
    assert needs_token(method, path, route, app[ANONYMOUS_ROUTES]) is expected
