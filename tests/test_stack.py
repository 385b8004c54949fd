"""The HA topology on loopback (`make stack`), exercised through nginx.

One stack for the module: nginx (the project's config) in front of 2
gateways and 2 collabs, Redis, PostgreSQL, the persistence worker. The tests
go in order: health and routing first, then real clients (stock y-websocket
under Node, and the pycrdt test client), then failures (SIGKILL of a collab
instance, a rolling restart, a scale-up), and finally `stop()`, which must
leave no process behind.

nginx keeps all clients of a room on one collab instance (room affinity, a
consistent hash of the room name), so the tests of cross-instance behaviour
connect their first client through nginx and the others straight to the other
instance's port (`Instance.ws_url`); HTTP still goes through nginx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Text

from shared.compaction import build_doc
from shared.db.engine import create_engine, create_sessionmaker
from shared.store import DocumentStore
from stack import Stack, persistence_available
from stack.processes import descendants, pid_alive
from tests.support.editors import Editors
from tests.support.node_client import NodeYClient
from tests.support.stack_metrics import (
    collab_by_id,
    connections_per_instance,
    idle,
    other_collab,
)
from tests.support.throttle import UNTHROTTLED
from tests.support.wait import eventually
from tests.support.yclient import YClient

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"
CLOSE_BAD_ROOM, CLOSE_UNAUTHORIZED, CLOSE_FORBIDDEN = 4400, 4401, 4403


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    running = Stack.start(collab=2, gateway=2, env={"LOG_LEVEL": "WARNING", **UNTHROTTLED})
    try:
        yield running
    finally:
        running.stop()


# -- helpers -------------------------------------------------------------------------


class Api:
    """The gateway's HTTP API, through nginx."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, self.base + path, headers=headers, **kwargs
        ) as resp:
            body = await resp.read()
            if resp.content_type == "application/json":
                return resp.status, json.loads(body)
            return resp.status, body

    async def user(self, name: str) -> str:
        """Register a new user and log in: its token."""
        email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
        status, body = await self.call(
            "POST", "/api/auth/register", json={"email": email, "password": PASSWORD, "name": name}
        )
        assert status == 201, body
        status, body = await self.call(
            "POST", "/api/auth/login", json={"email": email, "password": PASSWORD}
        )
        assert status == 200, body
        return str(body["token"])

    async def project(self, token: str, title: str = "doc") -> str:
        """A new project owned by the token's user: its room name."""
        status, body = await self.call("POST", "/api/projects", token, json={"title": title})
        assert status == 201, body
        return f"project-{body['uuid']}"


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield Api(session, stack.url)


async def wait_until(check: Any, what: str, timeout: float = 15.0) -> Any:
    """Poll an async `check` until it returns something truthy (processes/DB have no events)."""
    return await eventually(check, timeout, what=what, interval=0.1)


async def stored_text(stack: Stack, room: str) -> str:
    engine = create_engine(stack.database_url)
    try:
        store = DocumentStore(create_sessionmaker(engine))
        updates = await store.load_updates(room.removeprefix("project-"))
        return str(build_doc(updates).get("t", type=Text))
    finally:
        await engine.dispose()


async def exported_text(api: Api, token: str, room: str) -> str:
    status, body = await api.call(
        "GET", f"/api/projects/{room.removeprefix('project-')}/yjs-document", token
    )
    assert status == 200, body
    doc: Doc = Doc()
    doc.apply_update(body)
    return str(doc.get("t", type=Text))


@contextlib.asynccontextmanager
async def node_clients(
    stack: Stack, room: str, token: str, count: int, ws_url: str | None = None
) -> AsyncIterator[list[NodeYClient]]:
    """`count` synced stock clients of `room`, through nginx unless `ws_url` is given."""
    async with contextlib.AsyncExitStack() as exits:
        clients = []
        for i in range(count):
            client = await exits.enter_async_context(
                NodeYClient.start(
                    ws_url or stack.ws_url, room, token, name=f"c{i}", max_backoff_ms=250
                )
            )
            await client.wait_synced()
            clients.append(client)
        yield clients


@contextlib.asynccontextmanager
async def converged_pair(
    stack: Stack, room: str, token: str, word: str
) -> AsyncIterator[tuple[NodeYClient, NodeYClient]]:
    """Alice through nginx and Bob straight to the other collab instance, once each has
    the other's edit: the room's text is `hello <word>`."""
    async with (
        node_clients(stack, room, token, 1) as (alice,),
        node_clients(stack, room, token, 1, await _other_ws_url(stack, alice)) as (bob,),
    ):
        assert await connections_per_instance(stack) == {"collab-1": 1, "collab-2": 1}
        await alice.append("hello ")
        await bob.wait_text("hello ")
        await bob.append(word)
        await alice.wait_text(f"hello {word}")
        yield alice, bob


def closes(client: NodeYClient) -> int:
    return sum(1 for e in client.events if e["event"] == "close")


# -- make stack / make stack-down (first: before the module stack starts) ------------------


def stack_cli(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m stack ARGS --run-dir RUN_DIR` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "stack", *args, "--run-dir", str(run_dir)], check=False,
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_cli_up_status_down_stop_exactly_the_recorded_processes(tmp_path: Path) -> None:
    """`make stack` / `make stack-down`: separate processes, linked only by stack.json."""
    run_dir = tmp_path / "run"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return stack_cli(run_dir, *args)

    up = cli("up", "--collab", "1", "--gateway", "1", "--no-persistence")
    assert up.returncode == 0, up.stderr + up.stdout
    state = json.loads((run_dir / "stack.json").read_text())
    assert state["url"] in up.stdout and "its room:" in up.stdout
    assert (run_dir / "stack.env").stat().st_mode & 0o077 == 0
    pids = [i["pid"] for i in state["instances"]] + [
        state[k]["pid"] for k in ("nginx", "redis", "postgres")
    ]
    assert sorted(p.name for p in (run_dir / "pids").iterdir()) == sorted(
        ["nginx.pid", "redis.pid", "postgres.pid", "gateway-1.pid", "collab-1.pid"]
    )
    assert cli("status").returncode == 0
    again = cli("up", "--collab", "1", "--gateway", "1", "--no-persistence")
    assert again.returncode == 1 and "already running" in again.stderr
    family = set(pids)
    for pid in pids:
        family |= set(descendants(pid))
    down = cli("down")
    assert down.returncode == 0 and "stopped nginx" in down.stdout
    assert [pid for pid in family if pid_alive(pid)] == []
    assert not (run_dir / "stack.json").exists() and (run_dir / "logs" / "collab-1.log").exists()
    assert "nothing to stop" in cli("down").stdout


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().partition("=")[::2] for item in raw.split(b"\0") if item)


def _redis_servers_under(run_dir: Path) -> list[int]:
    """Live redis-server processes working in `run_dir` (redis-server rewrites its argv,
    so its working directory, its `--dir`, tells whose it is)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if (
                entry.name.isdigit()
                and (entry / "comm").read_text().strip() == "redis-server"
                and (entry / "cwd").resolve().is_relative_to(run_dir)
            ):
                found.append(int(entry.name))
    return [pid for pid in found if pid_alive(pid)]


async def test_cluster_mode_stack_converges_persists_and_stops_every_node(tmp_path: Path) -> None:
    """`make stack redis=cluster`: the services on a 3+3 Redis Cluster; stock clients on both
    collab instances converge, the worker persists, `stack down` stops every node."""
    run_dir = tmp_path / "run"
    running = await asyncio.to_thread(
        Stack.start, collab=2, gateway=1, redis="cluster", run_dir=run_dir,
        env={"LOG_LEVEL": "WARNING", **UNTHROTTLED},
    )  # fmt: skip
    try:
        nodes = json.loads((run_dir / "stack.json").read_text())["redis"]["nodes"]
        assert len(nodes) == 6 and len(running.redis.master_urls()) == 3
        assert len(_redis_servers_under(running.run_dir)) == 6
        seeds = ",".join(f"127.0.0.1:{node['port']}" for node in nodes)
        for instance in running.gateway_instances + running.collab_instances:
            assert instance.pid is not None
            env = _environ(instance.pid)
            assert env.get("REDIS_CLUSTER_NODES") == seeds and "REDIS_HOST" not in env
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            api = Api(session, running.url)
            token = await api.user("cluster")
            room = await api.project(token)
            async with converged_pair(running, room, token, "cluster"):
                pass
            assert await exported_text(api, token, room) == "hello cluster"
        assert await wait_until(
            lambda: _stored_is(running, room, "hello cluster"), "PostgreSQL to hold both edits"
        )
        down = await asyncio.to_thread(stack_cli, run_dir, "down")
        assert down.returncode == 0 and "redis-node-5" in down.stdout, down.stdout + down.stderr
        assert [node["pid"] for node in nodes if pid_alive(node["pid"])] == []
        assert _redis_servers_under(running.run_dir) == []
    finally:
        await asyncio.to_thread(running.stop)


# -- health and routing ------------------------------------------------------------------


async def test_health_through_nginx_and_on_every_instance(stack: Stack) -> None:
    assert persistence_available() and stack.persistence_instances, stack.warnings
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stack.url}/health") as resp:
            assert resp.status == 200 and (await resp.json()) == {"status": "ok"}
        for path in ("/healthcheck", "/health/ready"):
            async with session.get(stack.url + path) as resp:
                assert resp.status == 200, path
        async with session.get(f"{stack.url}/metrics") as resp:
            assert resp.status == 404  # scraped per instance, not published
        for instance in (
            stack.gateway_instances + stack.collab_instances + stack.persistence_instances
        ):
            async with session.get(f"{instance.url}/healthcheck") as resp:
                assert resp.status == 200, instance.name
            async with session.get(f"{instance.url}/health/ready") as resp:
                body = await resp.json()
                assert resp.status == 200 and body["status"] == "ok", (instance.name, body)
                assert body["checks"].get("redis") == "ok", (instance.name, body)
    state = json.loads((stack.run_dir / "stack.json").read_text())
    assert state["url"] == stack.url and state["counts"]["collab"] == 2
    assert {i["port"] for i in state["instances"]} == {
        i.port
        for i in stack.instances["gateway"] + stack.collab_instances + stack.persistence_instances
    }
    assert stack.jwt_secret not in (stack.run_dir / "stack.json").read_text()


async def test_gateway_api_round_trip_through_nginx_on_every_gateway(
    stack: Stack, api: Api
) -> None:
    for round_ in range(3):
        token = await api.user(f"user{round_}")
        room = await api.project(token, f"project {round_}")
        project = room.removeprefix("project-")
        data = f"asset {round_} ".encode() * 1000
        form = aiohttp.FormData()
        form.add_field("file", data, filename="notes.txt", content_type="text/plain")
        status, body = await api.call("POST", f"/api/projects/{project}/assets", token, data=form)
        assert status == 201, body
        status, body = await api.call("GET", f"/api/projects/{project}/assets/notes.txt", token)
        assert status == 200 and body == data
        status, body = await api.call("GET", "/api/projects", token)
        assert status == 200 and [p["uuid"] for p in body["projects"]] == [project]
    used = {
        entry["upstream"]
        for entry in map(json.loads, stack.nginx_access_log.read_text().splitlines())
        if entry["path"].startswith("/api/")
    }
    assert used == {f"127.0.0.1:{g.port}" for g in stack.gateway_instances}


async def test_websocket_through_nginx_upgrades_and_refuses(stack: Stack, api: Api) -> None:
    owner = await api.user("owner")
    stranger = await api.user("stranger")
    room = await api.project(owner)
    ids = {c.instance_id for c in stack.collab_instances}
    async with await YClient.connect(stack.ws_url, room, owner) as client:
        assert client.synced.is_set() and client.close_code is None
        assert client.instance in ids
    for token, target, code in (
        (stranger, room, CLOSE_FORBIDDEN),
        ("not-a-jwt", room, CLOSE_UNAUTHORIZED),
        (stack.mint_token("someone"), room, CLOSE_FORBIDDEN),
        (owner, "no-such-room", CLOSE_BAD_ROOM),
    ):
        async with await YClient.connect(stack.ws_url, target, token, wait_synced=False) as refused:
            assert await refused.wait_closed() == code, (target, code)


async def test_clients_of_a_room_on_two_instances_sync_through_redis(
    stack: Stack, api: Api
) -> None:
    """A through nginx, B straight to the other instance (nginx would put it with A)."""
    token = await api.user("spread")
    room = await api.project(token)
    await idle(stack)
    async with await YClient.connect(stack.ws_url, room, token) as a:
        other = other_collab(stack, a.instance)
        async with await YClient.connect(other.ws_url, room, token) as b:
            assert b.instance == other.instance_id != a.instance
            await _sync_both_ways(a, b)


async def _sync_both_ways(a: YClient, b: YClient) -> None:
    a.append("from a;")
    await b.wait_text("from a;")
    b.append("from b;")
    await a.wait_text("from a;from b;")


async def test_stock_clients_on_different_instances_converge_with_presence(
    stack: Stack, api: Api
) -> None:
    """Alice through nginx, Bob straight to the other instance."""
    token = await api.user("stock")
    room = await api.project(token)
    await idle(stack)
    async with converged_pair(stack, room, token, "world") as (alice, bob):
        await alice.set_awareness({"user": {"name": "alice"}})
        await bob.wait_peers(
            lambda states: any(
                s and s.get("user", {}).get("name") == "alice" for s in states.values()
            )
        )


async def test_a_30_mb_document_crosses_nginx_and_redis_to_the_other_instance(
    stack: Stack, api: Api
) -> None:
    """A stock client's 30 MB sync answer (straight to its instance) reaches a reader
    on the other instance (through nginx; the document crosses Redis by reference),
    and the gateway exports all of it through nginx."""
    token = await api.user("big")
    room = await api.project(token)
    await idle(stack)
    async with NodeYClient.start(stack.ws_url, room, token, name="reader") as reader:
        await reader.wait_synced()
        author_client = NodeYClient.start(
            await _other_ws_url(stack, reader), room, token, name="author", preload=(120_000, 250)
        )
        async with author_client as author:
            await author.wait_synced(90)
            assert await connections_per_instance(stack) == {"collab-1": 1, "collab-2": 1}
            length, digest = await author.digest(90)
            await reader.wait_for(lambda e: e["event"] == "update" and e.get("length") == length, 90)
            assert await reader.digest(90) == (length, digest)
    assert len(await exported_text(api, token, room)) == length == 120_000 * 250


async def test_access_log_never_holds_a_token(stack: Stack, api: Api) -> None:
    # an upload session's token travels in the path: the log has it redacted
    status, _ = await api.call("POST", "/api/upload-session/eyJsession.token.sig/batch")
    assert status == 401
    await eventually(
        lambda: "/api/upload-session/<redacted>/batch" in stack.nginx_access_log.read_text()
    )
    lines = stack.nginx_access_log.read_text().splitlines()
    yjs = [json.loads(line) for line in lines if '"/yjs/' in line]
    assert yjs and any(entry["status"] == 101 for entry in yjs)
    text = "\n".join(lines)
    assert "token" not in text and "eyJ" not in text  # no JWT, no ?token=
    error_log = (stack.logs_dir / "nginx-error.log").read_text()
    assert "eyJ" not in error_log


# -- failures ------------------------------------------------------------------------------


async def test_sigkill_of_a_collab_instance_loses_no_edit(stack: Stack, api: Api) -> None:
    token = await api.user("failover")
    room = await api.project(token)
    """Two clients through nginx (on the room's instance, the victim), two straight to
    the other instance, all editing; the victim's clients come back through nginx."""
    await idle(stack)
    async with node_clients(stack, room, token, 2) as via_nginx:
        victim = collab_by_id(stack, await via_nginx[0].instance())
        assert await via_nginx[1].instance() == victim.instance_id  # room affinity
        survivor = other_collab(stack, victim.instance_id)
        async with node_clients(stack, room, token, 2, survivor.ws_url) as direct:
            clients = via_nginx + direct
            assert await connections_per_instance(stack) == {"collab-1": 2, "collab-2": 2}
            editors = Editors(clients)
            editors.start()
            await editors.wait_made(20)  # editing is under way on both instances
            await asyncio.to_thread(stack.kill_collab, victim.index - 1)
            # the killed instance's clients are back on the survivor, and edits go on there
            await wait_until(
                lambda: _all_on(stack, {survivor.name: 4}),
                f"the clients to reconnect to {survivor.name}",
                20,
            )
            await editors.wait_made(len(editors.made) + 20)
            await editors.stop()
            text = await editors.converged()
            # The two clients of the killed instance came back, through nginx, on the survivor.
            assert await connections_per_instance(stack) == {survivor.name: 4}
            assert [min(closes(c), 1) for c in clients] == [1, 1, 0, 0]
            assert [await c.instance() for c in via_nginx] == [survivor.instance_id] * 2
    assert len(editors.made) > 30
    assert await exported_text(api, token, room) == text
    assert await wait_until(lambda: _stored_is(stack, room, text), "PostgreSQL to hold every edit")
    await asyncio.to_thread(stack.restart_collab, victim.index - 1)  # back to two instances


async def _other_ws_url(stack: Stack, client: NodeYClient) -> str:
    """The rooms URL of the collab instance `client` is not on."""
    return other_collab(stack, await client.instance()).ws_url


async def _all_on(stack: Stack, expected: dict[str, int]) -> bool:
    return await connections_per_instance(stack) == expected


async def _stored_is(stack: Stack, room: str, text: str) -> bool:
    return await stored_text(stack, room) == text


async def test_rolling_restart_under_load_loses_no_edit(stack: Stack, api: Api) -> None:
    token = await api.user("rolling")
    room = await api.project(token)
    async with node_clients(stack, room, token, 4) as clients:
        editors = Editors(clients)
        editors.start()
        for index in range(len(stack.collab_instances)):
            old_id = stack.collab_instances[index].instance_id
            await editors.wait_made(len(editors.made) + 10)  # edits flow before each restart
            instance = await asyncio.to_thread(stack.restart_collab, index)
            assert instance.alive and instance.instance_id != old_id
        await editors.wait_made(len(editors.made) + 10)  # and after the last one
        await editors.stop()
        text = await editors.converged()
    assert await exported_text(api, token, room) == text
    assert await wait_until(lambda: _stored_is(stack, room, text), "PostgreSQL to hold every edit")


async def test_scale_up_reaches_the_new_instance_without_disturbing_others(
    stack: Stack, api: Api
) -> None:
    token = await api.user("scale")
    room = await api.project(token)
    """After the reload nginx sends the rooms that hash to the new instance there (new
    rooms are made until one does: each lands there with odds of about 1 in 3), while
    the connections made before stay where they are."""
    async with node_clients(stack, room, token, 2) as old:
        new_instance = await asyncio.to_thread(stack.start_collab)
        assert new_instance.name == "collab-3" and len(stack.collab_instances) == 3
        opened = []
        try:
            for _ in range(40):
                opened.append(await YClient.connect(stack.ws_url, await api.project(token), token))
                if opened[-1].instance == new_instance.instance_id:
                    break
            assert opened[-1].instance == new_instance.instance_id, "no room moved to it"
            # The connections made before the reload are untouched and still live.
            assert [closes(c) for c in old] == [0, 0]
            await old[0].append("still here")
            await old[1].wait_text("still here")
            late = await YClient.connect(stack.ws_url, room, token)
            opened.append(late)
            await late.wait_text("still here")
        finally:
            for client in opened:
                await client.close()
    state = json.loads((stack.run_dir / "stack.json").read_text())
    assert state["counts"]["collab"] == 3
    upstreams = (stack.nginx_dir / "exe-collab" / "upstreams.conf").read_text()
    assert f"server 127.0.0.1:{new_instance.port} " in upstreams


# -- the end ---------------------------------------------------------------------------------


def test_stop_leaves_no_process_behind(stack: Stack) -> None:
    processes = stack.processes()
    assert all(p.alive for p in processes), [p.name for p in processes if not p.alive]
    everything = {p.pid for p in processes}
    for process in processes:
        everything |= set(descendants(process.pid))  # nginx workers, PostgreSQL backends
    assert len(everything) > len(processes)
    scratch = stack.scratch_dir
    stack.stop()
    assert [pid for pid in everything if pid_alive(pid)] == []
    assert not scratch.exists()
    assert not stack.run_dir.exists()  # a temporary run directory goes too
