"""The reported awareness flood against a real collab process: another room stays fast, RSS stays bounded.

The report: a viewer sent awareness frames of 1,000,000 entries (6.7 MiB);
another room's round trip went from under 1 ms to 2.1 s, /healthcheck timed
out and RSS grew by about 1 GiB for good. Here the same frames come from a
separate process (so that building and masking them does not slow the
measuring client), as fast as the server takes them, reconnecting each time
it closes the socket (the reported burst of three frames on a socket, once a
second), while this process measures another room's sync round trip and
/healthcheck, and samples the server's RSS.

The frame keeps the reported shape (1,000,000 entries): it is refused on its
entry count, before a single entry is decoded (~50 us, `tests/test_awareness.py`),
and the socket is closed with 1008. The flooder is one user in one room, so its
third refused socket gets the permanent 4429, and from then on its sockets are
refused at the handshake with a frame limit too small for what it sends: none
of its frames is assembled any more (aiohttp joins, copies and unmasks a
6.7 MiB frame when its last byte arrives, 10-20 ms in one callback on the
2-core test machine). Measured (p50 / p99 of the other room): 0.6 / 1-3 ms
idle, 0.6 / 3-5 ms under this flood (about 30 ms before the handshake refusal);
RSS +38 MiB at peak, back to +0 after.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from bench.procstat import status_kb
from shared.protocol import FrameKind, encode_sync_step1, parse_frame
from tests.conftest import TEST_SECRET
from tests.support.api import ROOT, Api, GatewayProcess

pytestmark = pytest.mark.integration

FLOOD_SECONDS = 12.0
FLOOD_INTERVAL = 1.0  # a socket, three 6.7 MiB frames on it, every second
MAX_ROOM_BYTES = 4 * 1024 * 1024
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _member(api: Api, name: str) -> str:
    email = f"{name}@example.com"
    assert (await api.post("/api/auth/register", json={"email": email, "password": "password1"})).status == 201
    return (await api.post("/api/auth/login", json={"email": email, "password": "password1"})).json["token"]


async def _round_trips(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[float]:
    """SyncStep1 -> SyncStep2 round trips of one room, one every 10 ms, for `seconds` (in ms)."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        await ws.send_bytes(encode_sync_step1(b"\x00"))
        while True:
            message = await ws.receive(timeout=10)
            if message.type is aiohttp.WSMsgType.BINARY and parse_frame(message.data).kind is FrameKind.SYNC_STEP2:
                break
        samples.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.01)
    return samples


async def _health_times(url: str, seconds: float) -> list[float]:
    samples = []
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            async with session.get(f"{url}/healthcheck", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                assert resp.status == 200
            samples.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.05)
    return samples


async def _peak_rss_mib(pid: int, stop: asyncio.Event) -> float:
    peak = 0
    while not stop.is_set():
        peak = max(peak, status_kb(pid, "VmRSS"))
        await asyncio.sleep(0.02)
    return peak / 1024


async def test_awareness_flood_moves_no_other_room_and_rss_stays_bounded(tmp_path: Path) -> None:
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "API_JWT_SECRET": TEST_SECRET,
        "APP_SECRET": TEST_SECRET,
        "LOG_LEVEL": os.environ.get("FLOOD_LOG_LEVEL", "ERROR"),
        "LOGIN_RATE_PER_ADDRESS": "1000",
    }
    server = await asyncio.to_thread(GatewayProcess(env, module="services", log_path=tmp_path / "s.log").start)
    assert server.process is not None
    pid = server.process.pid
    try:
        async with Api(server.url) as api:
            owner, viewer = await _member(api, "owner"), await _member(api, "viewer")
            api.token = owner
            flooded, quiet = [(await api.post("/api/projects", json={"title": t})).json["uuid"] for t in "ab"]
            put = await api.put(f"/api/projects/{flooded}/members/viewer@example.com", json={"role": "viewer"})
            assert put.status in (200, 201)
        ws_base = server.url.replace("http", "ws") + "/yjs"
        async with aiohttp.ClientSession() as session, session.ws_connect(
            f"{ws_base}/project-{quiet}", params={"token": owner}, max_msg_size=0
        ) as probe:
            await _round_trips(probe, 1.0)  # warm up
            baseline = await _round_trips(probe, 3.0)
            health_baseline = await _health_times(server.url, 1.0)
            rss_before = status_kb(pid, "VmRSS") / 1024

            flooder = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once; nothing blocks on it here
                [sys.executable, "-m", "tests.support.awareness_flood",
                 f"{ws_base}/project-{flooded}?token={viewer}", "--seconds", str(FLOOD_SECONDS),
                 "--interval", os.environ.get("FLOOD_INTERVAL", str(FLOOD_INTERVAL))],
                cwd=ROOT, stdout=subprocess.PIPE, text=True,
            )
            assert flooder.stdout is not None
            assert await asyncio.to_thread(flooder.stdout.readline) == "flooding\n"  # frame built
            stop = asyncio.Event()
            peak_task = asyncio.create_task(_peak_rss_mib(pid, stop))
            await asyncio.sleep(0.5)
            flood, health = await asyncio.gather(
                _round_trips(probe, FLOOD_SECONDS - 2), _health_times(server.url, FLOOD_SECONDS - 2)
            )
            stop.set()
            peak = await peak_task
            counts = json.loads(await asyncio.to_thread(flooder.stdout.readline))
            flooder.wait(10)
            rss_after = status_kb(pid, "VmRSS") / 1024

        report = {
            "baseline_p50_ms": round(_percentile(baseline, 0.5), 2),
            "baseline_p99_ms": round(_percentile(baseline, 0.99), 2),
            "flood_p50_ms": round(_percentile(flood, 0.5), 2),
            "flood_p99_ms": round(_percentile(flood, 0.99), 2),
            "flood_max_ms": round(max(flood), 2),
            "health_baseline_p99_ms": round(_percentile(health_baseline, 0.99), 2),
            "health_flood_p99_ms": round(_percentile(health, 0.99), 2),
            "rss_before_mib": round(rss_before, 1),
            "rss_peak_mib": round(peak, 1),
            "rss_after_mib": round(rss_after, 1),
            "flood": counts,
            "samples": len(flood),
        }
        print("awareness flood:", json.dumps(report))
        # the flood really ran: the first sockets' 6.7 MiB frames were refused with 1008
        # (twice), then with the permanent 4429; every later socket of that user is refused
        # with 4429 at the handshake, before a byte of its frames is read (the flooder, still
        # writing 6.7 MiB it sent blind, may not read that close frame before the server,
        # having waited LINGER_SECONDS for it to stop, drops the connection: 1006 there)
        assert counts["connections"] >= 10 and counts["frames"] >= 3, report
        assert counts.get("close_1008", 0) == 2, report
        refused = counts.get("close_4429", 0) + counts.get("close_1006", 0)
        assert counts.get("close_4429", 0) >= 1 and refused == counts["connections"] - 2, report
        # Typical round trips do not move, the tail by a few milliseconds (the report: 2.1 s)
        assert _percentile(flood, 0.5) - _percentile(baseline, 0.5) < 1.0, report
        assert _percentile(flood, 0.99) - _percentile(baseline, 0.99) < 10.0, report
        assert _percentile(health, 0.99) < 100, report
        # the server holds at most a frame being read and one being handled, plus a room's states
        bound = 3 * MAX_MESSAGE_BYTES / 2**20 + MAX_ROOM_BYTES / 2**20 + 16
        assert peak - rss_before < bound, report
        assert rss_after - rss_before < bound, report
    finally:
        server.stop()
