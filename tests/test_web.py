"""The browser client (web/) in a real browser, through nginx, across two collab instances.

Playwright drives Debian's Chromium (`/usr/bin/chromium`; a browser is never
downloaded) against `Stack(collab=2, gateway=2)`, the page being served by the
gateways at `/` (same origin for `/api` and `/yjs`). Three people, each in their
own browser context: Alice (owner) and Bob (editor), whose connections are on
different collab instances, and Carol (viewer). nginx keeps a room's connections
on one instance (room affinity), so Bob's page WebSocket is relayed by the test
(`relay_websockets_to`) straight to the other instance: his browser still speaks
to `/yjs` on its own origin, and the cross-instance path is the one a room takes
while its clients move between instances. The tests run in order on one
project: live editing with presence and remote cursors (and a screenshot of both
windows), the read-only viewer, offline edits, assets, versions, and finally the
viewer's access revoked (close code 4403). Every wait is bounded.

The screenshot of both windows is written to the test's tmp_path; it replaces
`docs/screenshot.png` (shown in the README) when that file is missing or
`UPDATE_SCREENSHOT=1`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pycrdt import Doc, Text

from services.gateway.errors import error_middleware
from services.gateway.web import setup_web
from shared.config import Settings
from stack import Stack
from tests.support.throttle import UNTHROTTLED

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "web" / "dist"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "docs" / "screenshot.png"
PASSWORD = "correct horse battery staple"
WAIT_MS = 10_000

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# The editor's text as the person sees it: CodeMirror's lines without the remote-cursor
# widgets (whose labels hold the names) and the placeholder.
EDITOR_TEXT_JS = """
window.__editorText = () => Array.from(document.querySelectorAll('#editor .cm-line'))
  .map((line) => {
    const copy = line.cloneNode(true)
    copy.querySelectorAll('.cm-ySelectionCaret, .cm-placeholder').forEach((el) => el.remove())
    return copy.textContent
  })
  .join('\\n')
"""

_can_install = hasattr(os, "geteuid") and os.geteuid() == 0
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not _can_install,
        reason="/usr/bin/chromium is missing (Debian package 'chromium'; "
        "`make test` as root installs it) — browser tests skipped",
    ),
    pytest.mark.timeout(180),
]


# -- the gateway's web module on its own (no browser) -------------------------------------


async def _client(dist: Path) -> TestClient:
    app = web.Application(middlewares=[error_middleware])  # as in the gateway
    setup_web(app, Settings(), dist=dist)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_gateway_serves_the_bundle_or_says_how_to_build_it(tmp_path: Path) -> None:
    client = await _client(tmp_path / "missing")
    try:
        resp = await client.get("/")
        assert resp.status == 200 and "make web" in await resp.text()
        assert (await client.get("/app.js")).status == 404
    finally:
        await client.close()

    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<!doctype html><title>t</title>")
    (dist / "app.js").write_text("console.log(1)")
    (tmp_path / "secret.js").write_text("no")
    client = await _client(dist)
    try:
        resp = await client.get("/")
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        resp = await client.get("/app.js")
        assert resp.status == 200 and resp.content_type == "text/javascript"
        assert resp.headers["Cache-Control"] == "no-cache"
        for path in ("/%2e%2e/secret.js", "/..%2fsecret.js", "/.hidden.js", "/app.py"):
            assert (await client.get(path)).status == 404, path
    finally:
        await client.close()


# -- the scene: a stack, a browser, three people on one project ------------------------------


@dataclass
class Person:
    name: str
    email: str
    context: Any = None
    page: Any = None
    token: str = ""


@dataclass
class Scene:
    stack: Stack
    browser: Any
    alice: Person
    bob: Person
    carol: Person
    project: str = ""
    requests: list[str] = field(default_factory=list)
    relays: list[aiohttp.ClientSession] = field(default_factory=list)  # relay_websockets_to's


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if not (DIST / "index.html").is_file() or not (DIST / "app.js").is_file():
        pytest.fail("web/dist is not built: run `make web` (`make test` does it)")
    running = Stack.start(collab=2, gateway=2, env={"LOG_LEVEL": "WARNING", **UNTHROTTLED})
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    assert CHROMIUM.exists(), "run `make system-deps` (as root it installs chromium)"
    playwright = await async_playwright().start()
    try:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()
    finally:
        await playwright.stop()


async def api_call(stack: Stack, method: str, path: str, token: str = "", **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=20)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(method, stack.url + path, headers=headers, **kwargs) as resp,
    ):
        body = await resp.read()
        assert resp.status < 300, (method, path, resp.status, body[:500])
        return json.loads(body) if resp.content_type == "application/json" else body


async def collab_connections(stack: Stack) -> dict[str, int]:
    """`collab_connections` of each collab instance (its own /metrics, not through nginx)."""
    counts = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for instance in stack.collab_instances:
            url = f"{instance.url}/metrics"
            async with session.get(url, headers=stack.metrics_headers) as resp:
                match = re.search(r"^collab_connections (\S+)$", await resp.text(), re.MULTILINE)
            counts[instance.name] = int(float(match.group(1))) if match else 0
    return counts


async def wait_connections(stack: Stack, check: Any, what: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        counts = await collab_connections(stack)
        if check(counts):
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {counts}")
        await asyncio.sleep(0.1)


async def server_text(scene: Scene) -> str:
    """The document as the gateway exports it (the same Y.Text 't' every client edits)."""
    update = await api_call(
        scene.stack, "GET", f"/api/projects/{scene.project}/yjs-document", scene.alice.token
    )
    doc: Doc = Doc()
    doc.apply_update(update)
    return str(doc.get("t", type=Text))


async def editor_text(page: Any) -> str:
    return await page.evaluate("window.__editorText()")


async def wait_editor_text(page: Any, expected: str) -> None:
    await page.wait_for_function(
        "(expected) => window.__editorText() === expected", arg=expected, timeout=WAIT_MS
    )


async def type_at_end(page: Any, text: str) -> None:
    await page.click("#editor .cm-content")
    await page.keyboard.press("Control+End")
    await page.keyboard.type(text)


async def new_person(scene_browser: Any, stack: Stack, name: str, requests: list[str]) -> Person:
    person = Person(name, f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com")
    person.context = await scene_browser.new_context(viewport={"width": 960, "height": 600})
    person.context.set_default_timeout(WAIT_MS)
    await person.context.add_init_script(EDITOR_TEXT_JS)
    person.context.on("request", lambda request: requests.append(request.url))
    person.page = await person.context.new_page()
    person.page.on("websocket", lambda ws: requests.append(ws.url))
    return person


async def register_in_page(person: Person, stack: Stack) -> None:
    await person.page.goto(stack.url + "/")
    form = person.page.locator("#register-form")
    await form.locator("input[name=name]").fill(person.name)
    await _submit_credentials(person, form)


async def sign_in_page(person: Person, stack: Stack) -> None:
    await person.page.goto(stack.url + "/")
    await _submit_credentials(person, person.page.locator("#login-form"))


async def _submit_credentials(person: Person, form: Any) -> None:
    """Fill e-mail and password, submit, wait for the projects screen, keep the token."""
    await form.locator("input[name=email]").fill(person.email)
    await form.locator("input[name=password]").fill(PASSWORD)
    await form.locator("button").click()
    await person.page.wait_for_selector("#create-project")
    person.token = await person.page.evaluate(
        "JSON.parse(localStorage.getItem('exe-collab.session')).token"
    )


async def share(page: Any, project: str, email: str, role: str) -> None:
    row = page.locator(f'.project[data-uuid="{project}"]')
    details = row.locator("details.share")
    if not await details.evaluate("(el) => el.open"):
        await row.locator("details.share summary").click()
    await row.locator(".share-form input[name=email]").fill(email)
    await row.locator(".share-form select[name=role]").select_option(role)
    await row.locator(".share-form button").click()
    await row.locator(".members", has_text=email).wait_for()


async def relay_websockets_to(
    page: Any, ws_base: str, sessions: list[aiohttp.ClientSession]
) -> None:
    """Relay the page's `/yjs/...` WebSockets to `ws_base` (a collab instance's `/yjs`),
    frame for frame in both directions, instead of the page's own origin; each relay's
    client session is added to `sessions` (closed by the scene at the end)."""
    from playwright.async_api import WebSocketRoute

    async def relay(route: WebSocketRoute) -> None:
        session = aiohttp.ClientSession()
        sessions.append(session)
        upstream = await session.ws_connect(ws_base + route.url.split("/yjs", 1)[1], max_msg_size=0)
        outgoing: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        route.on_message(outgoing.put_nowait)
        route.on_close(lambda code, reason: outgoing.put_nowait(None))

        async def send() -> None:  # the page's frames, in order; then the session ends
            while (message := await outgoing.get()) is not None:
                if isinstance(message, bytes):
                    await upstream.send_bytes(message)
                else:
                    await upstream.send_str(message)
            await upstream.close()
            await session.close()

        async def receive() -> None:
            async for message in upstream:
                if message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    route.send(message.data)
            await route.close(code=upstream.close_code or 1000)
            outgoing.put_nowait(None)

        relays.extend([asyncio.ensure_future(send()), asyncio.ensure_future(receive())])

    relays: list[asyncio.Future[None]] = []  # held: a task nobody references may be collected
    await page.route_web_socket(re.compile(r"/yjs/"), relay)


async def open_project(person: Person, project: str) -> None:
    page = person.page
    await page.locator(f'.project[data-uuid="{project}"] a.title').click()
    await page.wait_for_selector('#connection-status[data-status="connected"]')


@pytest.fixture(scope="module")
async def scene(stack: Stack, browser: Any) -> AsyncIterator[Scene]:
    from playwright.async_api import expect

    expect.set_options(timeout=WAIT_MS)
    requests: list[str] = []
    alice = await new_person(browser, stack, "Alice", requests)
    bob = await new_person(browser, stack, "Bob", requests)
    carol = await new_person(browser, stack, "Carol", requests)
    scene = Scene(stack, browser, alice, bob, carol, requests=requests)
    try:
        # Bob and Carol have accounts (made through the API, they sign in on the page);
        # Alice registers on the page, creates the project and shares it on the page.
        for person in (bob, carol):
            await api_call(
                stack,
                "POST",
                "/api/auth/register",
                json={"email": person.email, "password": PASSWORD, "name": person.name},
            )
        await register_in_page(alice, stack)
        await alice.page.fill("#create-project input[name=title]", "Trip notes")
        await alice.page.click("#create-project button")
        await alice.page.wait_for_selector('#connection-status[data-status="connected"]')
        scene.project = alice.page.url.rsplit("/", 1)[-1]
        assert re.fullmatch(r"[0-9a-f-]{36}", scene.project), alice.page.url
        await alice.page.click("#crumbs a")  # back to "my projects"
        await share(alice.page, scene.project, bob.email, "editor")
        await share(alice.page, scene.project, carol.email, "viewer")
        yield scene
    finally:
        for person in (alice, bob, carol):
            await person.context.close()
        for session in scene.relays:
            await session.close()


# -- the tests, in order --------------------------------------------------------------------


async def test_two_editors_on_two_instances_see_each_other(scene: Scene, tmp_path: Path) -> None:
    from playwright.async_api import expect

    stack, alice, bob = scene.stack, scene.alice, scene.bob
    await wait_connections(stack, lambda c: sum(c.values()) == 0, "no connection yet")
    await open_project(alice, scene.project)
    counts = await wait_connections(stack, lambda c: sum(c.values()) == 1, "Alice's connection")
    instance = {"Alice": next(name for name, n in counts.items() if n == 1)}
    other = next(i for i in stack.collab_instances if i.name != instance["Alice"])
    await relay_websockets_to(bob.page, other.ws_url, scene.relays)
    await sign_in_page(bob, stack)
    await open_project(bob, scene.project)
    counts = await wait_connections(
        stack, lambda c: sorted(c.values()) == [1, 1], "one connection on each instance"
    )
    assert counts == {"collab-1": 1, "collab-2": 1}
    instance["Bob"] = next(name for name in counts if name != instance["Alice"])

    await type_at_end(alice.page, "Packing list\n- passports\n- ")
    await wait_editor_text(bob.page, "Packing list\n- passports\n- ")
    await type_at_end(bob.page, "sun cream\n- a good book")
    expected = "Packing list\n- passports\n- sun cream\n- a good book"
    await wait_editor_text(alice.page, expected)

    # Presence (name and colour from awareness) and the other's cursor in the text.
    await expect(alice.page.locator("#presence li", has_text="Bob")).to_be_visible()
    await expect(bob.page.locator("#presence li", has_text="Alice")).to_be_visible()
    await expect(alice.page.locator("#presence li")).to_have_count(2)
    await expect(bob.page.locator("#editor .cm-ySelectionCaret", has_text="Alice")).to_be_visible()
    bobs_caret = alice.page.locator("#editor .cm-ySelectionCaret", has_text="Bob")
    await expect(bobs_caret).to_be_visible()
    background = "(el) => getComputedStyle(el).backgroundColor"
    bobs_swatch = alice.page.locator("#presence li", has_text="Bob").locator(".swatch")
    assert await bobs_swatch.evaluate(background) == await bobs_caret.evaluate(background)
    assert await server_text(scene) == expected

    # A picture of the two windows side by side: under tmp_path, and for the README.
    shots = {}
    for person in (alice, bob):
        shots[person.name] = await person.page.screenshot()
        (tmp_path / f"{person.name.lower()}.png").write_bytes(shots[person.name])
    both = tmp_path / "both-windows.png"
    await compose_screenshot(scene.browser, shots, instance, both)
    assert both.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOT") == "1" or not SCREENSHOT.exists():
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(both, SCREENSHOT)


async def compose_screenshot(
    browser: Any, shots: dict[str, bytes], instance: dict[str, str], path: Path
) -> None:
    """Both windows side by side, captioned, put together by the browser itself."""
    figures = "".join(
        f"<figure><figcaption>{name}'s browser, connected to {instance[name]}</figcaption>"
        f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}"></figure>'
        for name, png in shots.items()
    )
    html = (
        "<style>body{margin:0;padding:16px;background:#d0d7de;display:flex;gap:16px;"
        "font:600 15px system-ui,sans-serif}figure{margin:0}figcaption{margin:0 0 6px}"
        "img{display:block;width:960px;border-radius:6px;box-shadow:0 2px 10px #0004}</style>"
        + figures
    )
    context = await browser.new_context(viewport={"width": 1968, "height": 660})
    try:
        page = await context.new_page()
        await page.set_content(html)
        await page.screenshot(path=str(path), full_page=True)
    finally:
        await context.close()


async def test_viewer_cannot_change_the_text(scene: Scene) -> None:
    from playwright.async_api import expect

    carol, alice = scene.carol, scene.alice
    before = await server_text(scene)
    await sign_in_page(carol, scene.stack)
    await open_project(carol, scene.project)
    await wait_editor_text(carol.page, before)
    await expect(carol.page.locator(".editor-head .badge")).to_have_text("read-only")
    await expect(carol.page.locator("#editor .cm-content")).to_have_attribute(
        "contenteditable", "false"
    )
    await expect(carol.page.locator("#asset-file")).to_have_count(0)  # no upload either
    await expect(alice.page.locator("#presence li", has_text="Carol")).to_contain_text("viewer")

    await carol.page.click("#editor .cm-content")
    await carol.page.keyboard.type("VANDALISM")
    await carol.page.keyboard.press("Backspace")
    assert await editor_text(carol.page) == before
    await type_at_end(alice.page, "!")  # a later edit travels past whatever Carol sent
    await wait_editor_text(carol.page, before + "!")
    assert await server_text(scene) == before + "!"
    assert await editor_text(alice.page) == before + "!"


async def test_offline_edits_are_kept_and_converge(scene: Scene) -> None:
    from playwright.async_api import expect

    alice, bob = scene.alice, scene.bob
    status = bob.page.locator("#connection-status")
    await bob.context.set_offline(True)
    await expect(status).to_have_attribute("data-status", "offline")
    await type_at_end(bob.page, "\n- (written on the train)")
    await expect(status).to_have_attribute("data-pending", "true")
    await expect(status).to_contain_text("unsent edits kept")
    await type_at_end(alice.page, "\n- tickets")  # meanwhile, online
    assert "train" not in await server_text(scene)

    await bob.context.set_offline(False)
    await expect(status).to_have_attribute("data-status", "connected")
    await expect(status).to_have_attribute("data-pending", "false")
    await alice.page.wait_for_function(
        "() => window.__editorText().includes('train')", timeout=WAIT_MS
    )
    text = await editor_text(alice.page)
    await wait_editor_text(bob.page, text)
    assert "- tickets" in text and "- (written on the train)" in text
    assert await server_text(scene) == text
    await expect(alice.page.locator("#presence li")).to_have_count(3)  # Bob is back


async def test_asset_uploaded_on_one_page_lists_and_downloads_on_another(
    scene: Scene, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    alice, bob = scene.alice, scene.bob
    content = os.urandom(300 * 1024)
    await alice.page.set_input_files(
        "#asset-file",
        files=[{"name": "map.bin", "mimeType": "application/octet-stream", "buffer": content}],
    )
    await expect(alice.page.locator('#asset-list li[data-name="map.bin"]')).to_be_visible()
    # Bob's list reloads on Alice's signal (awareness), without a click.
    row = bob.page.locator('#asset-list li[data-name="map.bin"]')
    await expect(row).to_contain_text("300 KiB")
    async with bob.page.expect_download(timeout=WAIT_MS) as info:
        await row.locator("button.download").click()
    download = await info.value
    assert download.suggested_filename == "map.bin"
    saved = tmp_path / "map.bin"
    await download.save_as(saved)
    assert saved.read_bytes() == content
    listed = await api_call(
        scene.stack, "GET", f"/api/projects/{scene.project}/assets", scene.bob.token
    )
    assert [a["name"] for a in listed["assets"]] == ["map.bin"]

    bob.page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await row.locator("button.delete").click()
    await expect(alice.page.locator('#asset-list li[data-name="map.bin"]')).to_have_count(0)


async def test_versions_save_list_and_restore(scene: Scene) -> None:
    from playwright.async_api import expect

    alice, bob = scene.alice, scene.bob
    saved = await editor_text(alice.page)
    await alice.page.fill("#save-version input[name=label]", "before the trip")
    await alice.page.click("#save-version button")
    version = bob.page.locator("#version-list li", has_text="before the trip")
    await expect(version).to_be_visible()
    await type_at_end(alice.page, "\n- an umbrella we will not need")
    await wait_editor_text(bob.page, saved + "\n- an umbrella we will not need")

    bob.page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await version.locator("button.restore").click()
    await wait_editor_text(alice.page, saved)
    await wait_editor_text(bob.page, saved)
    assert await server_text(scene) == saved


async def test_revoked_viewer_is_told_she_has_no_access(scene: Scene) -> None:
    """Close code 4403 (access revoked) ends the editor with a "no access" message."""
    from playwright.async_api import expect

    await api_call(
        scene.stack,
        "DELETE",
        f"/api/projects/{scene.project}/members/{scene.carol.email}",
        scene.alice.token,
    )
    await expect(scene.carol.page.locator("#no-access")).to_contain_text("no access")
    await expect(scene.alice.page.locator("#presence li")).to_have_count(2)


async def test_the_page_only_talks_to_its_own_origin(scene: Scene) -> None:
    origin = scene.stack.url
    ws_origin = "ws" + origin.removeprefix("http")
    assert any(url.startswith(ws_origin + "/yjs/project-") for url in scene.requests)
    strays = [
        url
        for url in scene.requests
        if not url.startswith((origin + "/", ws_origin + "/", "blob:", "data:"))
    ]
    assert not strays, strays
