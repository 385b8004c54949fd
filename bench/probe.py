"""Single fresh clients: timing a join, and checking what a server's document holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from pycrdt import Doc, Text

from bench.accounting import parse_tokens
from shared.protocol import encode_sync_step1, encode_sync_step2, parse_frame

EMPTY_STATE_VECTOR = Doc().get_state()


@dataclass(frozen=True)
class Join:
    """One fresh client's join, in milliseconds from the start of the connect."""

    open_ms: float  # WebSocket handshake done (TCP + HTTP upgrade + the server's checks)
    synced_ms: float  # the server's SyncStep2 fully received
    applied_ms: float  # ... and applied to a pycrdt Doc (client-side cost)
    update_bytes: int
    text_length: int


async def join(url: str, *, apply: bool = True, timeout: float = 60.0) -> tuple[Join, Doc]:
    """Connect a fresh client, send SyncStep1, wait for SyncStep2 (like the stock provider)."""
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session, asyncio.timeout(timeout):
        ws = await session.ws_connect(url, max_msg_size=0, compress=0)
        opened = time.perf_counter()
        await ws.send_bytes(encode_sync_step1(EMPTY_STATE_VECTOR))
        doc: Doc = Doc()
        while True:
            message = await ws.receive()
            if message.type is not aiohttp.WSMsgType.BINARY:
                if message.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    raise ConnectionError(f"closed before synced (code {ws.close_code})")
                continue
            data = message.data
            if len(data) >= 2 and data[0] == 0 and data[1] == 0:  # the server's SyncStep1
                await ws.send_bytes(encode_sync_step2(b"\x00\x00"))
                continue
            if len(data) >= 2 and data[0] == 0 and data[1] == 1:
                synced = time.perf_counter()
                update = parse_frame(data).payload
                break
        if apply:
            doc.apply_update(update)
        applied = time.perf_counter()
        await ws.close()
    length = len(str(doc.get("t", type=Text))) if apply else 0

    def ms(moment: float) -> float:
        return (moment - started) * 1000.0

    return Join(ms(opened), ms(synced), ms(applied), len(update), length), doc


async def document_tokens(url: str, timeout: float = 60.0) -> tuple[set[tuple[int, int, int]], int]:
    """The (phase, client, seq) of every edit in the server's document of a
    room, and the size of the whole document encoded as one update."""
    joined, doc = await join(url, timeout=timeout)
    text = str(doc.get("t", type=Text)).encode()
    return {(phase, client, seq) for phase, client, seq, _ in parse_tokens(text)}, joined.update_bytes


async def check_documents(
    urls: Mapping[int, Iterable[str]], sent_by_room: Mapping[int, int], *, concurrency: int = 4
) -> dict:
    """Does every server view of every room hold every edit sent to it?

    `urls`: room index -> the URLs to read it from (one per instance).
    Returns counts: views checked, views complete, edits missing, unexpected
    edits, and the rooms' documents encoded as one update each (bytes, one view
    per room: what a compaction would write).
    """
    gate = asyncio.Semaphore(concurrency)
    report: dict[str, Any] = {"views": 0, "complete": 0, "missing": 0, "unexpected": 0, "errors": []}
    document_bytes: dict[int, int] = {}

    async def check(room: int, url: str) -> None:
        async with gate:
            try:
                tokens, size = await document_tokens(url)
            except Exception as exc:  # every failure is recorded in the report  # noqa: BLE001
                report["errors"].append(f"{type(exc).__name__}: {exc}")
                return
        report["views"] += 1
        document_bytes[room] = size
        expected = sent_by_room.get(room, 0)
        if len(tokens) == expected:
            report["complete"] += 1
        elif len(tokens) < expected:
            report["missing"] += expected - len(tokens)
        else:
            report["unexpected"] += len(tokens) - expected

    await asyncio.gather(*(check(room, url) for room, views in urls.items() for url in views))
    report["errors"] = sorted(set(report["errors"]))[:5]
    report["document_bytes"] = sum(document_bytes.values())
    return report
