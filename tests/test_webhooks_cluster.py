"""Webhooks in multi-instance mode: real Redis and PostgreSQL, collab instances and workers
(in the test process, or as processes to SIGKILL), stock Node clients, and a real receiver
on loopback that checks signatures."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from shared.compaction import build_snapshot
from shared.db.engine import create_sessionmaker
from shared.db.models import WebhookDelivery, WebhookDocumentChange
from tests.support.api import Api
from tests.support.app_server import InProcessServer
from tests.support.cluster import Cluster, metric, wait_metric, wait_stored
from tests.support.node_client import NodeYClient
from tests.support.processes import ServiceProcess
from tests.support.wait import eventually
from tests.support.webhook_receiver import Receiver

pytestmark = pytest.mark.integration

DEBOUNCE, MAX_DEBOUNCE = 1.0, 3.0
HOOKS = {
    "webhook_allow_private": "1",  # the receiver is on loopback
    "webhook_poll_seconds": "0.1",
    "webhook_debounce_seconds": str(DEBOUNCE),
    "webhook_max_debounce_seconds": str(MAX_DEBOUNCE),
}


@pytest.fixture
def hooks(cluster: Cluster) -> Cluster:
    """The cluster, every service of it configured for quick webhooks."""
    cluster.overrides.update(HOOKS)
    return cluster


@dataclass(frozen=True)
class Subscribed:
    """A project whose owner (user 1) registered a webhook through a gateway."""

    gateway: InProcessServer
    room: str
    token: str  # the owner's
    secret: str  # the webhook's

    @property
    def uuid(self) -> str:
        return self.room.removeprefix("project-")


async def subscribed_project(cluster: Cluster, url: str, *events: str, members: tuple[int, ...] = ()) -> Subscribed:
    """A gateway, a project owned by user 1 (and `members`), and its webhook to `url` for `events`."""
    gateway = await cluster.gateway()
    room = await cluster.new_project(1, *members, role="owner")
    token = cluster.token(1)
    async with Api(gateway.http_url, token) as api:
        created = await api.post(
            f"/api/projects/{room.removeprefix('project-')}/webhooks",
            json={"url": url, "events": list(events)},
        )
    assert created.status == 201, created.json
    return Subscribed(gateway, room, token, str(created.json["secret"]))


@asynccontextmanager
async def synced_clients(project: Subscribed, *urls: str) -> AsyncIterator[list[NodeYClient]]:
    """A stock client of the owner's on each collab instance (`urls`), synced; closed on exit."""
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(NodeYClient.start(url, project.room, project.token))
            for url in urls
        ]
        for client in clients:
            await client.wait_synced()
        yield clients


async def outbox_settled(cluster: Cluster) -> bool:
    """No document change waiting for its window and no delivery pending: nothing more will
    be sent until something new happens."""
    async with create_sessionmaker(cluster.engine)() as session:
        changes = await session.scalar(select(func.count()).select_from(WebhookDocumentChange))
        pending = await session.scalar(
            select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.status == "pending")
        )
    return changes == 0 and pending == 0


async def settle(cluster: Cluster, room: str, text: str) -> None:
    """Wait until the database holds `text` and the outbox has sent all it will for it."""
    await wait_stored(cluster, room, text, timeout=20)
    await eventually(lambda: outbox_settled(cluster), 20, what="the outbox to settle", interval=0.1)


async def stored_state_vector(cluster: Cluster, room: str) -> str:
    updates = await cluster.store.load_updates(room.removeprefix("project-"))
    return base64.b64encode(build_snapshot(updates).state_vector).decode()


async def test_edits_through_two_instances_make_one_signed_event_per_window(
    hooks: Cluster, receiver: Receiver
) -> None:
    a, b = await hooks.collab("a"), await hooks.collab("b")
    await hooks.worker("w1")
    await hooks.worker("w2")  # two dispatchers
    project = await subscribed_project(hooks, receiver.url, "document.updated")
    room = project.room
    async with synced_clients(project, a.ws_url, b.ws_url) as (alice, bob):
        # one window: edits through both instances, well within WEBHOOK_DEBOUNCE_SECONDS
        await alice.append("a")
        await bob.wait_text("a")
        await bob.append("b")
        await alice.wait_text("ab")
        await settle(hooks, room, "ab")
        events = receiver.events("document.updated")
        assert len(events) == 1, events
        assert receiver.signed(project.secret)
        assert events[0]["project"] == room.removeprefix("project-")
        assert events[0]["data"]["state_vector"] == await stored_state_vector(hooks, room)
        assert events[0]["data"]["size"] > 0

        # edits that never pause for a whole debounce window: one event per max window at least
        loop = asyncio.get_running_loop()
        started = loop.time()
        typed = 0
        while loop.time() - started < MAX_DEBOUNCE * 1.5:
            await (alice if typed % 2 else bob).append("x")
            typed += 1
            await asyncio.sleep(DEBOUNCE / 4)  # pacing the edits, not synchronising
        await alice.wait_text("ab" + "x" * typed)
        await settle(hooks, room, "ab" + "x" * typed)
    later = receiver.events("document.updated")[1:]
    assert 2 <= len(later) <= 3, later  # one at the max window, one when the edits stopped
    assert later[-1]["data"]["state_vector"] == await stored_state_vector(hooks, room)
    assert len({event["id"] for event in receiver.events("document.updated")}) == 1 + len(later)


async def test_instance_killed_before_the_window_ends_the_event_comes_anyway(
    hooks: Cluster, receiver: Receiver
) -> None:
    victim = hooks.collab_process("victim")
    survivor = await hooks.collab("survivor")
    await hooks.worker()
    project = await subscribed_project(hooks, receiver.url, "document.updated")
    room = project.room
    async with synced_clients(project, victim.ws_url, survivor.ws_url) as (writer, watcher):
        await writer.append("written through the victim")
        await watcher.wait_text("written through the victim")  # accepted: in the Redis log
        victim.kill()
        assert receiver.requests == []  # the debounce window had not ended
    await settle(hooks, room, "written through the victim")
    events = receiver.events("document.updated")
    assert len(events) == 1, events
    assert receiver.signed(project.secret)
    assert events[0]["data"]["state_vector"] == await stored_state_vector(hooks, room)


async def test_dispatcher_killed_mid_delivery_another_delivers_it(
    hooks: Cluster, receiver: Receiver
) -> None:
    # a short lease, so that the surviving worker takes the delivery over quickly
    hooks.overrides.update(webhook_timeout_seconds="2", webhook_lease_seconds="8")
    await hooks.collab("a")
    workers = {name: hooks.worker_process(name) for name in ("w1", "w2")}
    project = await subscribed_project(hooks, receiver.url, "version.created")
    uuid = project.uuid
    receiver.hold = True  # the first attempt stays in flight
    async with Api(project.gateway.http_url, project.token) as api:
        assert (await api.post(f"/api/projects/{uuid}/versions", json={"label": "v1"})).status == 201
        await eventually(lambda: receiver.requests, 15, what="the first attempt")
        async with create_sessionmaker(hooks.engine)() as session:
            holder = await session.scalar(select(WebhookDelivery.lease_owner))
        assert holder in workers
        workers[holder].kill()  # while its request is in flight
        receiver.release()

        async def delivered() -> list[dict[str, object]]:
            reply = await api.get(f"/api/projects/{uuid}/webhooks/deliveries")
            return [d for d in reply.json["deliveries"] if d["status"] == "delivered"]

        done = await eventually(delivered, 30, what="the other worker to deliver it")
    # at least once per attempt: the killed attempt reached the receiver, the retry did too
    assert len(receiver.requests) == 2
    assert len({headers["X-Exe-Delivery"] for headers, _ in receiver.requests}) == 1
    assert len({event["id"] for event in receiver.events("version.created")}) == 1
    assert receiver.signed(project.secret)
    assert len(done) == 1 and done[0]["attempts"] == 1  # the killed attempt recorded nothing
    survivor: ServiceProcess = next(p for name, p in workers.items() if name != holder)
    await wait_metric(survivor.http_url, 'webhook_deliveries_total{outcome="delivered"}', 1)


async def test_member_and_version_events_through_the_gateway(
    hooks: Cluster, receiver: Receiver
) -> None:
    await hooks.worker()
    events = ("member.added", "member.removed", "version.created")
    project = await subscribed_project(hooks, receiver.url, *events, members=(2,))
    uuid = project.uuid
    async with Api(project.gateway.http_url, project.token) as api:
        assert (await api.delete(f"/api/projects/{uuid}/members/user2@test.example.com")).status == 204
        added = await api.put(f"/api/projects/{uuid}/members/user2@test.example.com", json={"role": "viewer"})
        assert added.status == 201, added.json
        version = await api.post(f"/api/projects/{uuid}/versions", json={"label": "first"})
        assert version.status == 201
    await eventually(lambda: all(receiver.events(e) for e in events), 15, what="the three events")
    await eventually(lambda: outbox_settled(hooks), 10, what="the outbox to settle")
    assert receiver.signed(project.secret)
    assert receiver.events("member.removed")[0]["data"] == {"user_id": 2, "by": 1}
    assert receiver.events("member.added")[0]["data"] == {"user_id": 2, "role": "viewer", "by": 1}
    created = receiver.events("version.created")[0]["data"]
    assert created["label"] == "first" and created["version_id"] == version.json["id"]
    assert len(receiver.requests) == 3


async def test_a_receiver_that_always_fails_ends_failed_listed_and_counted(
    hooks: Cluster, receiver: Receiver
) -> None:
    # a retry window of about two seconds, the first retry after 0.1-0.2 s
    worker = await hooks.worker(webhook_retry_hours="0.0005", webhook_retry_first_seconds="0.2")
    project = await subscribed_project(hooks, receiver.url, "version.created")
    uuid = project.uuid
    receiver.status = 500
    async with Api(project.gateway.http_url, project.token) as api:
        assert (await api.post(f"/api/projects/{uuid}/versions", json={})).status == 201

        async def failed() -> list[dict[str, object]]:
            reply = await api.get(f"/api/projects/{uuid}/webhooks/deliveries")
            return [d for d in reply.json["deliveries"] if d["status"] == "failed"]

        [delivery] = await eventually(failed, 20, what="the delivery to fail for good")
    assert delivery["attempts"] == len(receiver.requests) >= 2
    assert delivery["last_status_code"] == 500 and delivery["last_error"] == "HTTP 500"
    assert delivery["next_attempt_at"] is None and delivery["delivered_at"] is None
    text = await wait_metric(worker.http_url, 'webhook_deliveries_total{outcome="failed"}', 1)
    assert metric(text, 'webhook_deliveries_total{outcome="retried"}') == len(receiver.requests) - 1


async def test_connection_events_name_the_instance_a_client_joined(
    hooks: Cluster, receiver: Receiver
) -> None:
    a, b = await hooks.collab("a"), await hooks.collab("b")
    await hooks.worker()
    project = await subscribed_project(hooks, receiver.url, "connection.opened", "connection.closed")
    for server in (a, b):
        async with NodeYClient.start(server.ws_url, project.room, project.token) as client:
            await client.wait_synced()
    await eventually(lambda: len(receiver.events("connection.closed")) == 2, 15, what="two closes")
    assert receiver.signed(project.secret)
    opened = sorted(event["data"]["instance"] for event in receiver.events("connection.opened"))
    closed = sorted(event["data"]["instance"] for event in receiver.events("connection.closed"))
    assert opened == closed == ["a", "b"]
    assert all(event["data"]["user_id"] == 1 for event in receiver.events("connection.closed"))
