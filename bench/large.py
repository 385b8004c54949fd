"""Scenario (h): one large document (~20 MB from 80k updates).

The document goes up through the socket as one sync update (what a client
that built it offline, or eXeLearning's importer, sends), then fresh clients
join it (median of `h_samples`, on the last instance: on the multi target
that is not the one it was uploaded to; a join counts once the client has all
of it), then the same number of fresh clients each open a room holding it
compacted in the database (cold: the room loads it first). Meanwhile two
clients in another room time round trips of small edits: their p99 shows how
long the large document's work holds the server's event loop. The server's
peak RSS over the phase, less its RSS before, is divided by the document's
size and by the number of large rooms it held open (cold rooms stay loaded for
ROOM_UNLOAD_GRACE after their joiner leaves).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from pycrdt import Doc, Text

from bench.accounting import percentile
from bench.procstat import peak_rss_kb, reset_peak_rss, rss_kb
from bench.targets import JoinDocument, Target
from shared.protocol import encode_sync_step1, encode_sync_update, parse_frame

Log = Callable[[str], None]
PROBE_INTERVAL = 0.01  # seconds between the other room's round trips


class RoundTripProbe:
    """`_round_trips` in a process of its own: the joins of this scenario apply a large
    document client-side, which would stall a probe sharing their event loop."""

    def __init__(self, sender_url: str, receiver_url: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._ready, self._counting, self._stop = context.Event(), context.Event(), context.Event()
        self._results, child = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_probe_main,
            args=(sender_url, receiver_url, self._ready, self._counting, self._stop, child),
            daemon=True,
        )

    async def start(self) -> None:
        self._process.start()
        if not await asyncio.to_thread(self._ready.wait, 60):
            raise TimeoutError("the round-trip probe did not start")

    def count_from_now(self) -> None:
        """Round trips before this (the warm-up) are not reported."""
        self._counting.set()

    async def stop(self) -> list[float]:
        """The round trips (ms) since `count_from_now`."""
        self._stop.set()
        latencies: list[float] = await asyncio.to_thread(self._results.recv)
        await asyncio.to_thread(self._process.join, 10)
        return latencies


def _probe_main(sender_url: str, receiver_url: str, ready: Any, counting: Any, stop: Any, results: Any) -> None:
    latencies: list[float] = []
    first_counted: int | None = None

    async def main() -> None:
        nonlocal first_counted
        stopped = asyncio.Event()

        async def watch() -> None:
            nonlocal first_counted
            while not stop.is_set():
                if first_counted is None and counting.is_set():
                    first_counted = len(latencies)
                await asyncio.sleep(PROBE_INTERVAL)
            stopped.set()

        watcher = asyncio.create_task(watch())
        await _round_trips(sender_url, receiver_url, latencies, stopped, ready)
        await watcher

    asyncio.run(main())
    results.send(latencies[first_counted or 0 :])


async def _round_trips(
    sender_url: str, receiver_url: str, latencies: list[float], stop: asyncio.Event, ready: Any
) -> None:
    """Append round trips (ms) of one-character edits between two clients until `stop` is
    set; `ready` is set once both are in the room."""
    doc: Doc = Doc()
    text = doc.get("t", type=Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    async with aiohttp.ClientSession() as session:
        sender = await session.ws_connect(sender_url, max_msg_size=0, compress=0)
        receiver = await session.ws_connect(receiver_url, max_msg_size=0, compress=0)
        await receiver.send_bytes(encode_sync_step1(Doc().get_state()))
        await _receive(receiver, b"\x00\x01")  # the receiver has joined the room
        ready.set()
        while not stop.is_set():
            text += "x"
            started = time.perf_counter()
            await sender.send_bytes(encode_sync_update(updates.pop()))
            await _receive(receiver, b"\x00\x02")
            latencies.append((time.perf_counter() - started) * 1000.0)
            await asyncio.sleep(PROBE_INTERVAL)
        await sender.close()
        await receiver.close()


async def _receive(ws: aiohttp.ClientWebSocketResponse, prefix: bytes, timeout: float = 300) -> None:
    """Read frames until one starts with `prefix` (sync step 2: b"\\x00\\x01", update: b"\\x00\\x02")."""
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive()
            if message.type is not aiohttp.WSMsgType.BINARY:
                raise ConnectionError(f"closed (code {ws.close_code})")
            if message.data[:2] == prefix:
                return


async def _upload(
    url: str, update: bytes, state_vector: bytes
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    """Send the document as one sync update; return once the server has applied it (it
    answers a SyncStep1 sent after it, with the document's own state vector: nothing to
    send back), keeping the socket open so the room stays loaded."""
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(url, max_msg_size=0, compress=0)
    await ws.send_bytes(encode_sync_update(update))
    await ws.send_bytes(encode_sync_step1(state_vector))
    await _receive(ws, b"\x00\x01")
    return session, ws


async def _join_whole(url: str, text_length: int) -> float:
    """ms from connect until a fresh client has received the whole document (on the multi
    target it may come in pieces: what the instance held, then what its peers send)."""
    started = time.perf_counter()
    doc: Doc = Doc()
    text = doc.get("t", type=Text)
    async with aiohttp.ClientSession() as session, asyncio.timeout(300):
        ws = await session.ws_connect(url, max_msg_size=0, compress=0)
        await ws.send_bytes(encode_sync_step1(Doc().get_state()))
        while True:
            message = await ws.receive()
            received = time.perf_counter()
            if message.type is not aiohttp.WSMsgType.BINARY:
                raise ConnectionError(f"closed before it had the document (code {ws.close_code})")
            if message.data[:2] in (b"\x00\x01", b"\x00\x02"):
                doc.apply_update(parse_frame(message.data).payload)
                if len(text) == text_length:
                    await ws.close()
                    return (received - started) * 1000.0


async def scenario_h(target: Target, samples: int, document: JoinDocument, log: Log) -> dict[str, Any]:
    room, other = await target.new_rooms(2, users=2)
    cold = await target.prepare_cold_rooms(document, samples)
    _, _, pid = target.idle_target()
    reader_base = target.ws_bases[-1]
    built: Doc = Doc()
    built.apply_update(document.full)
    state_vector = built.get_state()
    probe = RoundTripProbe(target.url(other, user=1), target.url(other, user=2, base=reader_base))
    await probe.start()
    await asyncio.sleep(1.0)  # round trips before the document arrives: not counted
    probe.count_from_now()
    if pid is not None:
        reset_peak_rss(pid)
    rss_before = rss_kb(pid) if pid else 0
    started = time.perf_counter()
    cold_ms: list[float] = []
    try:
        session, holder = await _upload(target.url(room), document.full, state_vector)
        upload_ms = (time.perf_counter() - started) * 1000.0
        try:
            warm_ms = [await _join_whole(target.url(room, base=reader_base), document.text_length) for _ in range(samples)]
        finally:
            await holder.close()
            await session.close()
        for cold_room in (cold or {}).get("compacted", []):  # each one loaded from the database
            cold_ms.append(await _join_whole(target.url(cold_room, base=reader_base), document.text_length))
    finally:
        during = sorted(await probe.stop())
    peak = peak_rss_kb(pid) if pid else 0
    size_mb = len(document.full) / 2**20
    # the measured process is the first instance: it holds the warm room, and the cold ones
    # too when the joins go to it (one instance)
    rooms_open = 1 + (len(cold_ms) if reader_base == target.ws_bases[0] else 0)
    result = {
        "document_bytes": len(document.full),
        "document_updates": len(document.updates),
        "upload_ms": upload_ms,
        "join_ms": statistics.median(warm_ms),
        "join_samples_ms": [round(ms, 1) for ms in warm_ms],
        "cold_join_ms": statistics.median(cold_ms) if cold_ms else None,
        "cold_join_samples_ms": [round(ms, 1) for ms in cold_ms],
        "other_room_p50_ms": percentile(during, 50),
        "other_room_p99_ms": percentile(during, 99),
        "other_room_max_ms": during[-1] if during else float("nan"),
        "other_room_round_trips": len(during),
        "rss_before_kb": rss_before,
        "peak_rss_kb": peak,
        "large_rooms_open": rooms_open,
        "peak_rss_per_document_mb": (peak - rss_before) / 1024 / size_mb / rooms_open if pid else None,
    }
    cold_text = f", cold join {result['cold_join_ms']:.0f} ms" if cold_ms else ""
    log(
        f"  (h) {size_mb:.1f} MiB: upload {upload_ms:.0f} ms, join median {result['join_ms']:.0f} ms{cold_text}, "
        f"other room p99 {result['other_room_p99_ms']:.1f} ms (max {result['other_room_max_ms']:.0f}, "
        f"{len(during)} round trips), peak RSS +{(peak - rss_before) / 1024:.0f} MB"
    )
    return result
