"""The load generator: y-websocket clients with real Yjs updates, in several processes.

A `LoadClient` is one WebSocket speaking the y-websocket protocol: it sends
SyncStep1 on connect, answers the server's SyncStep1 with SyncStep2, and
counts as synced once it has the server's SyncStep2. Its edits are real Yjs
updates made by pycrdt: each one inserts a token `<phase:client:seq:t_ns>`
at the start of the client's own Y.Text (`insert(0, ...)`: cheap, and every
token stays one contiguous string in any later encoding). Receivers find the
tokens in the frames they are sent (see `bench.accounting`); they do not
apply the updates to a document of their own, which keeps the load
generator's CPU for sending and receiving. That everything arrived in the
server's document is checked separately, after each scenario, by a fresh
client that applies the whole document (`bench.probe.check_documents`).

A `LoadWorker` owns the clients of one process and runs the send schedule:
every sender sends at `rate` edits/s, on a fixed interval with a random
phase, so the load is smooth. `ProcessWorker` runs a `LoadWorker` in a child
process (multiprocessing, spawn) and forwards calls over a pipe;
`InProcessWorker` runs it in the caller's event loop (tests).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import random
import time
import traceback
from dataclasses import dataclass
from typing import Any

import aiohttp
from pycrdt import Doc, Text

from bench.accounting import Ledger, make_token
from bench.procstat import own_cpu_seconds, raise_nofile
from shared.awareness import AwarenessEntry, encode_awareness_update
from shared.protocol import (
    encode_awareness,
    encode_sync_step1,
    encode_sync_step2,
    encode_sync_update,
    parse_frame,
)

MESSAGE_SYNC = 0
SYNC_STEP1 = 0
SYNC_STEP2 = 1


@dataclass(frozen=True)
class ClientSpec:
    id: int  # global client id, unique in the run (< 2**24)
    room: int  # room index, unique in the run
    url: str  # the whole ws:// URL, token included
    sends: bool = True


class LoadClient:
    __slots__ = (
        "_reader",
        "_updates",
        "awareness_clock",
        "close_code",
        "closed",
        "doc",
        "ledger",
        "seq",
        "spec",
        "synced",
        "synced_bytes",
        "synced_ms",
        "text",
        "ws",
    )

    def __init__(self, spec: ClientSpec, ledger: Ledger) -> None:
        self.spec = spec
        self.ledger = ledger
        self.doc: Doc = Doc()
        self.text: Text = self.doc.get("t", type=Text)
        self.seq = 0
        self.awareness_clock = 0
        self.synced_ms = math.nan  # connect to the server's SyncStep2
        self.synced_bytes = 0  # the size of that SyncStep2 frame
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.synced = asyncio.Event()
        self.closed = False
        self.close_code: int | None = None
        self._updates: list[bytes] = []
        self._reader: asyncio.Task[None] | None = None
        self.doc.observe(lambda event: self._updates.append(event.update))

    async def connect(self, session: aiohttp.ClientSession, timeout: float) -> None:
        started = time.monotonic()
        async with asyncio.timeout(timeout):
            self.ws = await session.ws_connect(
                self.spec.url, max_msg_size=0, autoping=True, compress=0
            )
            await self.ws.send_bytes(encode_sync_step1(self.doc.get_state()))
            self._reader = asyncio.create_task(self._read())
            synced = asyncio.ensure_future(self.synced.wait())
            try:
                await asyncio.wait({synced, self._reader}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                synced.cancel()
            if not self.synced.is_set():
                raise ConnectionError(f"closed before synced (close code {self.close_code})")
            self.synced_ms = (time.monotonic() - started) * 1000.0

    def edit(self, phase: int) -> bytes:
        """One edit: insert a fresh token, return the sync-update frame carrying it."""
        self.seq += 1
        self.text.insert(0, make_token(phase, self.spec.id, self.seq, time.monotonic_ns()))
        update = self._updates.pop()
        self._updates.clear()
        return encode_sync_update(update)

    def cursor(self) -> bytes:
        """One awareness frame: this client's state with its cursor moved (clock + 1)."""
        self.awareness_clock += 1
        state = (
            f'{{"user":{{"name":"bench {self.spec.id}"}},'
            f'"cursor":{{"anchor":{self.awareness_clock},"head":{self.seq}}}}}'
        )
        entry = AwarenessEntry(self.spec.id, self.awareness_clock, state.encode())
        return encode_awareness(encode_awareness_update([entry]))

    async def _read(self) -> None:
        ws = self.ws
        assert ws is not None
        record = self.ledger.record
        me = self.spec.id
        try:
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.BINARY:
                    continue
                data = message.data
                now = time.monotonic_ns()
                if len(data) < 2 or data[0] != MESSAGE_SYNC:
                    continue  # awareness and the rest: not measured
                if data[1] == SYNC_STEP1:
                    missing = self.doc.get_update(parse_frame(data).payload)
                    await ws.send_bytes(encode_sync_step2(missing))
                    continue
                record(me, data, now)
                if data[1] == SYNC_STEP2 and not self.synced.is_set():
                    self.synced_bytes = len(data)
                    self.synced.set()
        except Exception:  # any socket failure ends this client's reader; `closed` records it  # noqa: BLE001, S110
            pass
        finally:
            self.closed = True
            self.close_code = ws.close_code

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            try:
                await asyncio.wait_for(self.ws.close(), 5)
            except Exception:  # best-effort close on shutdown  # noqa: BLE001, S110
                pass
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self.closed = True


class LoadWorker:
    """The clients of one load process and their send schedule."""

    def __init__(self) -> None:
        self.clients: list[LoadClient] = []
        self.ledger: Ledger | None = None
        self._session: aiohttp.ClientSession | None = None
        self._cpu_at_phase_start: dict[int, float] = {}
        self._closed_at_phase_start: dict[int, int] = {}

    async def open(
        self,
        specs: list[ClientSpec],
        room_of: dict[int, int],
        *,
        concurrency: int = 100,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Connect every client (at most `concurrency` handshakes at a time) and wait until synced."""
        nofile = raise_nofile()
        self.ledger = Ledger(room_of)
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=False)
            self._session = aiohttp.ClientSession(connector=connector)
        session = self._session
        clients = [LoadClient(spec, self.ledger) for spec in specs]
        gate = asyncio.Semaphore(max(1, concurrency))
        started = time.monotonic()
        cpu_before = own_cpu_seconds()

        async def connect(client: LoadClient) -> str | None:
            async with gate:
                try:
                    await client.connect(session, timeout)
                    return None
                except BaseException as exc:
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    await client.close()
                    code = client.close_code
                    return f"{type(exc).__name__}: {exc}" + (
                        f" (close code {code})" if code else ""
                    )

        errors = await asyncio.gather(*(connect(c) for c in clients))
        self.clients.extend(c for c, e in zip(clients, errors, strict=True) if e is None)
        failures = [e for e in errors if e is not None]
        return {
            "opened": len(clients) - len(failures),
            "failed": len(failures),
            "errors": sorted(set(failures))[:5],
            "seconds": time.monotonic() - started,
            "nofile": nofile,
            "cpu_s": own_cpu_seconds() - cpu_before,
            "synced_ms": [c.synced_ms for c in clients if not math.isnan(c.synced_ms)],
            "synced_bytes": sorted({c.synced_bytes for c in clients if c.synced_bytes}),
        }

    async def phase(
        self,
        phase: int,
        rate: float,
        duration: float,
        start_at: float,
        awareness_period: float = 0.0,
    ) -> dict[str, Any]:
        """Send edits from every sender at `rate`/s from `start_at` (time.monotonic) for `duration` s;
        with `awareness_period`, every sender also moves its cursor (an awareness update) that often."""
        self._cpu_at_phase_start[phase] = own_cpu_seconds()
        self._closed_at_phase_start[phase] = sum(1 for c in self.clients if c.closed)
        assert self.ledger is not None
        self.ledger.tally(phase)
        senders = [c for c in self.clients if c.spec.sends and not c.closed]
        sent = {c.spec.id: 0 for c in senders}
        if not senders or rate <= 0 or duration <= 0:
            return {"sent": sent, "max_lag_ms": 0.0}
        cursors = (
            asyncio.create_task(
                self._cursors(senders, awareness_period, start_at, start_at + duration)
            )
            if awareness_period > 0
            else None
        )
        try:
            max_lag = await self._edits(phase, senders, sent, rate, start_at, start_at + duration)
        finally:
            if cursors is not None:
                cursors.cancel()
                await asyncio.gather(cursors, return_exceptions=True)
        return {"sent": sent, "max_lag_ms": max_lag * 1000.0}

    @staticmethod
    async def _cursors(
        senders: list[LoadClient], period: float, start_at: float, end: float
    ) -> None:
        """Every sender sends an awareness update each `period` s (random phase) until `end`."""
        rng = random.Random(senders[0].spec.id)
        offsets = sorted(((rng.random() * period, c) for c in senders), key=lambda item: item[0])
        base = start_at
        while base < end:
            for offset, client in offsets:
                await asyncio.sleep(max(0.0, base + offset - time.monotonic()))
                if client.ws is not None and not client.closed:
                    try:
                        await client.ws.send_bytes(client.cursor())
                    except Exception:  # a failed socket sends nothing more; the ledger counts it  # noqa: BLE001, S112
                        continue
            base += period

    @staticmethod
    async def _edits(
        phase: int,
        senders: list[LoadClient],
        sent: dict[int, int],
        rate: float,
        start_at: float,
        end: float,
    ) -> float:
        """The edit schedule: each sender at `rate`/s; returns how far (s) it fell behind."""
        interval = 1.0 / rate
        rng = random.Random(phase * 1_000_003 + senders[0].spec.id)
        schedule = sorted(((rng.random() * interval, c) for c in senders), key=lambda item: item[0])
        max_lag = 0.0
        since_yield = 0
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        cycle = 0
        while True:
            base = start_at + cycle * interval
            if base >= end:
                break
            for offset, client in schedule:
                due = base + offset
                if due >= end:
                    break
                now = time.monotonic()
                if due > now + 0.0005:
                    await asyncio.sleep(due - now)
                    since_yield = 0
                else:
                    max_lag = max(max_lag, now - due)
                    since_yield += 1
                    if since_yield >= 32:  # behind schedule: still let the readers run
                        await asyncio.sleep(0)
                        since_yield = 0
                if client.closed or client.ws is None:
                    continue
                frame = client.edit(phase)
                try:
                    await client.ws.send_bytes(frame)
                except Exception:  # a client whose socket failed sends nothing; the ledger counts it  # noqa: BLE001, S112
                    continue
                sent[client.spec.id] += 1
            cycle += 1
        return max_lag

    def progress(self, phase: int) -> int:
        return self.ledger.received(phase) if self.ledger else 0

    def collect(self, phase: int) -> dict[str, Any]:
        assert self.ledger is not None
        tally = self.ledger.tally(phase)
        return {
            "tally": tally.to_wire(),
            "cpu_s": own_cpu_seconds() - self._cpu_at_phase_start.get(phase, own_cpu_seconds()),
            "closed": sum(1 for c in self.clients if c.closed)
            - self._closed_at_phase_start.get(phase, 0),
            "unknown": self.ledger.unknown,
        }

    def status(self) -> dict[str, Any]:
        return {
            "clients": len(self.clients),
            "closed": sum(1 for c in self.clients if c.closed),
            "close_codes": sorted(
                {c.close_code for c in self.clients if c.closed and c.close_code is not None}
            ),
        }

    async def close(self, concurrency: int = 500) -> dict[str, Any]:
        gate = asyncio.Semaphore(concurrency)

        async def close(client: LoadClient) -> None:
            async with gate:
                await client.close()

        await asyncio.gather(*(close(c) for c in self.clients), return_exceptions=True)
        count = len(self.clients)
        self.clients = []
        if self._session is not None:
            await self._session.close()
            self._session = None
        return {"closed": count}


# ---------------------------------------------------------------------------
# where a worker runs
# ---------------------------------------------------------------------------


class WorkerError(RuntimeError):
    """A load process failed; the message carries its traceback."""


class InProcessWorker:
    """A `LoadWorker` in the caller's event loop (tests, tiny runs)."""

    pid = None

    def __init__(self) -> None:
        self._worker = LoadWorker()

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self._worker, method)(*args, **kwargs)
        if asyncio.iscoroutine(result):
            result = await result
        return result

    async def stop(self) -> None:
        await self._worker.close()


def _serve(conn: Any) -> None:
    asyncio.run(_serve_async(conn))


async def _serve_async(conn: Any) -> None:
    worker = LoadWorker()
    while True:
        request = await asyncio.to_thread(conn.recv)
        if request is None:
            await worker.close()
            conn.send(("ok", None))
            return
        method, args, kwargs = request
        try:
            result = getattr(worker, method)(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            conn.send(("ok", result))
        except Exception:  # the error travels back to the parent as text  # noqa: BLE001
            conn.send(("error", traceback.format_exc()))


class ProcessWorker:
    """A `LoadWorker` in a child process; calls go over a pipe, one at a time."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child,), daemon=True, name="bench-load"
        )
        self._process.start()
        child.close()
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            await asyncio.to_thread(self._conn.send, (method, args, kwargs))
            status, result = await asyncio.to_thread(self._conn.recv)
        if status != "ok":
            raise WorkerError(f"load process {self.pid} failed in {method}:\n{result}")
        return result

    async def stop(self) -> None:
        try:
            async with self._lock:
                await asyncio.to_thread(self._conn.send, None)
                await asyncio.wait_for(asyncio.to_thread(self._conn.recv), 30)
        except Exception:  # best-effort worker shutdown; join/kill below  # noqa: BLE001, S110
            pass
        await asyncio.to_thread(self._process.join, 10)
        if self._process.is_alive():
            self._process.kill()
            await asyncio.to_thread(self._process.join, 5)
        self._conn.close()
