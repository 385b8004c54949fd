"""The browser client: the files of `web/dist` served at `/`.

`web/` holds the client's sources; `make web` (Node.js and npm) bundles them
into `web/dist/` (`index.html`, `app.js`, `app.css`), which is not committed.
The gateway serves `index.html` at `/` and the bundle's files at
`/<file>`; the client then talks to `/api/...` and `/yjs/...` on the same
origin. The files are looked up on every request, so a build made while the
server runs is picked up by a reload. Without a build, `/` answers with a
short page saying how to make one; the API works either way.

These routes are declared public (`security=PUBLIC`): the page holds no data, it
signs in through the API.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from pydantic import Field

from services.gateway.errors import not_found
from services.gateway.schema import PUBLIC, Reply, Routes
from services.gateway.schema import Path as PathParams
from services.gateway.schema import add_routes as add_declared_routes
from shared.config import Settings

WEB_DIST = Path(__file__).resolve().parents[2] / "web" / "dist"
WEB_DIST_KEY: web.AppKey[Path] = web.AppKey("web_dist", Path)

# A file of the bundle: one path segment, no dot files, the bundle's kinds of file.
_FILE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*\.(?:html|js|css)"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

# The page may talk to its own origin only (the API and the WebSocket: CSP Level 3
# 'self' covers ws/wss to the same host), and loads nothing from elsewhere.
# Styles: CodeMirror and the remote cursors set inline style attributes.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = {
    # Not content-hashed file names: revalidate every time (ETag / Last-Modified make it cheap).
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_PAGE_HEADERS = {
    **_HEADERS,
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
}

NOT_BUILT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>exe-collab</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto">
<h1>exe-collab</h1>
<p>The API is running (<a href="/api/openapi.json">/api/openapi.json</a>), but the browser
client is not built.</p>
<p>Install Node.js 20+ and npm, then run <code>make web</code> (or
<code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>) and reload this page.</p>
</body></html>
"""


class BundleFile(PathParams):
    file: str = Field(pattern=f"^{_FILE_PATTERN}$", description="app.js, app.css, ...")


routes = Routes(tags=["web client"])


def _dist(request: web.Request) -> Path:
    return request.app[WEB_DIST_KEY]


@routes.get(
    "/",
    "The browser client (index.html), or how to build it",
    replies={200: Reply("HTML page", content="text/html")},
    security=PUBLIC,
)
async def index(request: web.Request) -> web.StreamResponse:
    page = _dist(request) / "index.html"
    if not page.is_file():
        return web.Response(text=NOT_BUILT_PAGE, content_type="text/html", headers=_HEADERS)
    return web.FileResponse(
        page, headers={**_PAGE_HEADERS, "Content-Type": _CONTENT_TYPES[".html"]}
    )


@routes.get(
    "/{file:" + _FILE_PATTERN + "}",
    "A file of the browser client's bundle (app.js, app.css, ...)",
    path_params=BundleFile,
    replies={
        200: Reply("The file", content=[kind.split(";")[0] for kind in _CONTENT_TYPES.values()])
    },
    errors=(404,),
    security=PUBLIC,
)
async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    path = _dist(request) / name  # one segment without '/' or a leading dot: stays in dist
    if not path.is_file():
        raise not_found("no such file")
    suffix = path.suffix
    headers = _PAGE_HEADERS if suffix == ".html" else _HEADERS
    return web.FileResponse(path, headers={**headers, "Content-Type": _CONTENT_TYPES[suffix]})


def setup_web(app: web.Application, settings: Settings, dist: Path | None = None) -> None:
    """Serve the browser client (`dist`, default `web/dist`) at `/`."""
    app[WEB_DIST_KEY] = dist or WEB_DIST
    add_declared_routes(app, routes)
