"""Drive a real, stock y-websocket client (Node) from asyncio tests.

`tests/node/client.mjs` runs yjs + y-websocket's ``WebsocketProvider`` (over
the ``ws`` package) and is controlled over stdin/stdout with JSON lines; this
module wraps it::

    async with NodeYClient.start(server_url, room, token, name="alice") as c:
        await c.wait_synced()
        await c.append("hello")
        await other.wait_text("hello")

``server_url`` is the provider's serverUrl (``ws://host:port/yjs``); the
client connects to ``{server_url}/{room}?token=...``.

Every line the client prints is kept, in order, in ``c.events`` (a list of
dicts, each with an ``"event"`` key). ``wait_for`` searches that history from
an index (``since``, default 0), so an event that arrived before the call is
found too; to wait for something that has to happen *after* an action, take
``m = c.mark()`` before the action and pass ``since=m`` (``connect()`` and
``disconnect()`` return such a mark). Nothing here sleeps to synchronise:
every wait is on an event, bounded by a timeout.

Events: ``client_id``, ``ready``, ``status`` (connecting/connected/
disconnected), ``synced`` (value), ``close`` (code, reason, local),
``closed`` (code, reason: permanent 4400-4499 close, the provider stopped
reconnecting), ``connection_error``, ``permission_denied`` (reason),
``update`` (text, after each remote doc update), ``awareness`` (states of
remote clients, added/updated/removed), ``instance`` (the X-Instance-Id a handshake was
answered with), ``error``, plus the command replies
``ok``, ``text``, ``peers``, ``info`` and ``bye``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

Event = dict[str, Any]
Predicate = Callable[[Event], bool]

NODE_DIR: Path = Path(__file__).resolve().parent.parent / "node"
CLIENT_JS: Path = NODE_DIR / "client.mjs"

DEFAULT_TIMEOUT = 10.0
_STDOUT_LIMIT = 64 * 1024 * 1024  # an "update"/"text" line carries the whole text
_STDERR_KEEP = 200  # lines of stderr kept for error messages


T = TypeVar("T")


class NodeClientError(RuntimeError):
    """The Node client is unavailable, failed a command, or exited unexpectedly."""


def _check_environment(node: str) -> str:
    """Return the path of the node binary; raise if node or the npm packages are missing."""
    if not (NODE_DIR / "node_modules" / "y-websocket").is_dir():
        raise NodeClientError(
            f"{NODE_DIR / 'node_modules'} is missing: run `make test` or "
            f"`npm ci` in {NODE_DIR} first"
        )
    path = shutil.which(node)
    if path is None:
        raise NodeClientError(f"`{node}` not found on PATH (Node 20+ is needed)")
    return path


class NodeYClient:
    """One stock y-websocket client process, editing ``doc.getText("t")``.

    Create it with :meth:`start` (an async context manager) or :meth:`open`
    (then call :meth:`close`). All methods must be called from the event
    loop that started it.
    """

    def __init__(
        self,
        server_url: str,
        room: str,
        token: str | None,
        name: str | None = None,
        *,
        client_id: int | None = None,
        max_backoff_ms: int | None = None,
        preload: tuple[int, int] | None = None,
        api_url: str | None = None,
        start_timeout: float = DEFAULT_TIMEOUT,
        node: str = "node",
    ) -> None:
        self.server_url = server_url
        self.room = room
        self.token = token
        self.name = name
        self.start_timeout = start_timeout
        self._requested_client_id = client_id
        self._max_backoff_ms = max_backoff_ms
        self._preload = preload
        self._api_url = api_url
        self._node = node
        #: Every event printed by the client, in arrival order.
        self.events: list[Event] = []
        #: The Yjs clientID of the client's document (known once started).
        self.client_id: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_KEEP)
        self._ids = itertools.count(1)
        self._waiters: list[tuple[Predicate, int, asyncio.Future[Event]]] = []
        self._exited = False
        self._closing = False

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def start(
        cls,
        server_url: str,
        room: str,
        token: str | None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Self:
        """Return an unstarted client; ``async with`` it to run it.

        ``async with NodeYClient.start(url, room, token) as c:`` spawns the
        process, waits (bounded) for its ``ready`` event and kills it on exit.
        Keyword arguments: ``client_id`` (fixed Yjs clientID),
        ``max_backoff_ms`` (provider's maxBackoffTime), ``preload`` ((count, size): fill the
        document before connecting, see client.mjs), ``api_url`` (play eXeLearning's editor
        against that ``apiUrl``: tests/support/exe_client.py), ``start_timeout``,
        ``node`` (binary name).
        """
        return cls(server_url, room, token, name, **kwargs)

    @classmethod
    async def open(
        cls,
        server_url: str,
        room: str,
        token: str | None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Self:
        """Start a client without a context manager; the caller must :meth:`close` it."""
        client = cls(server_url, room, token, name, **kwargs)
        await client._spawn()
        return client

    async def __aenter__(self) -> Self:
        await self._spawn()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _spawn(self) -> None:
        if self._proc is not None:
            raise NodeClientError("client already started")
        node = _check_environment(self._node)
        argv = [node, str(CLIENT_JS), "--server", self.server_url, "--room", self.room]
        if self.token is not None:
            argv += ["--token", self.token]
        if self.name is not None:
            argv += ["--name", self.name]
        if self._requested_client_id is not None:
            argv += ["--client-id", str(self._requested_client_id)]
        if self._max_backoff_ms is not None:
            argv += ["--max-backoff", str(self._max_backoff_ms)]
        if self._preload is not None:
            argv += ["--preload", f"{self._preload[0]}:{self._preload[1]}"]
        if self._api_url is not None:
            argv += ["--api", self._api_url]
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(NODE_DIR),
            env=os.environ.copy(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=_STDOUT_LIMIT,
        )
        self._tasks = [
            asyncio.create_task(self._read_stdout(), name=f"node-client-stdout-{self._proc.pid}"),
            asyncio.create_task(self._read_stderr(), name=f"node-client-stderr-{self._proc.pid}"),
        ]
        try:
            ev = await self.wait_for(lambda e: e["event"] == "client_id", self.start_timeout)
            self.client_id = int(ev["value"])
            await self.wait_for(lambda e: e["event"] == "ready", self.start_timeout)
        except BaseException:
            await self._kill()
            raise

    async def close(self, timeout: float = 5.0) -> None:
        """Destroy the provider (it sends its awareness removal), then end the process.

        The process is asked to quit and given ``timeout`` seconds to exit; it
        is killed otherwise. Safe to call more than once.
        """
        if self._proc is None or self._closing:
            return
        self._closing = True
        try:
            if not self._exited and self._proc.returncode is None:
                with contextlib.suppress(ConnectionError, NodeClientError):
                    self._send({"op": "quit"})
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._proc.wait(), timeout)
        finally:
            await self._kill()

    async def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._exited = True
        self._fail_waiters()

    @property
    def returncode(self) -> int | None:
        """Exit code of the process, or None while it runs (or before start)."""
        return None if self._proc is None else self._proc.returncode

    @property
    def stderr_tail(self) -> str:
        """The last lines the process wrote to stderr (for diagnostics)."""
        return "\n".join(self._stderr)

    # ------------------------------------------------------------------ I/O

    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        try:
            while True:
                line = await stdout.readline()
                if not line:
                    break
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    event = {"event": "raw", "line": line.decode(errors="replace").rstrip()}
                if not isinstance(event, dict) or "event" not in event:
                    event = {"event": "raw", "line": line.decode(errors="replace").rstrip()}
                self._dispatch(event)
        finally:
            self._exited = True
            self._fail_waiters()

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while True:
            line = await self._proc.stderr.readline()
            if not line:
                return
            self._stderr.append(line.decode(errors="replace").rstrip())

    def _dispatch(self, event: Event) -> None:
        index = len(self.events)
        self.events.append(event)
        for waiter in list(self._waiters):
            predicate, since, fut = waiter
            if fut.done() or index < since:
                continue
            try:
                matched = predicate(event)
            except Exception as exc:  # a buggy predicate must not kill the reader  # noqa: BLE001
                fut.set_exception(exc)
                continue
            if matched:
                fut.set_result(event)

    def _exit_error(self) -> NodeClientError:
        rc = self.returncode
        return NodeClientError(
            f"node client exited (returncode={rc}); stderr tail:\n{self.stderr_tail}"
        )

    def _fail_waiters(self) -> None:
        for _predicate, _since, fut in self._waiters:
            if not fut.done():
                fut.set_exception(self._exit_error())

    def _send(self, command: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise NodeClientError("client not started")
        if self._exited or proc.returncode is not None or proc.stdin.is_closing():
            raise self._exit_error()
        proc.stdin.write((json.dumps(command) + "\n").encode())

    async def _request(self, op: str, timeout: float = DEFAULT_TIMEOUT, **fields: Any) -> Event:
        """Send a command and wait for its reply (matched by id); raise on an error reply."""
        request_id = next(self._ids)
        since = len(self.events)
        self._send({"op": op, "id": request_id, **fields})
        assert self._proc is not None and self._proc.stdin is not None
        await self._proc.stdin.drain()
        reply = await self.wait_for(lambda e: e.get("id") == request_id, timeout, since=since)
        if reply["event"] == "error":
            raise NodeClientError(f"{op} failed: {reply.get('message')}\n{reply.get('stack')}")
        return reply

    # ------------------------------------------------------------------ waiting

    def mark(self) -> int:
        """Index of the next event; pass it as ``since`` to only see later events."""
        return len(self.events)

    async def wait_for(
        self,
        predicate: Predicate,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        since: int = 0,
    ) -> Event:
        """Return the first event at index >= ``since`` for which ``predicate`` is true.

        Events already received are searched first, then new ones as they
        arrive. Raises ``TimeoutError`` after ``timeout`` seconds and
        :class:`NodeClientError` if the process exits first.
        """
        for event in self.events[since:]:
            if predicate(event):
                return event
        if self._exited:
            raise self._exit_error()
        fut: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        waiter = (predicate, max(since, len(self.events)), fut)
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            tail = self.events[-10:]
            raise TimeoutError(
                f"no matching event within {timeout}s; last events: {tail}"
            ) from None
        finally:
            self._waiters.remove(waiter)

    async def wait_event(
        self, name: str, timeout: float = DEFAULT_TIMEOUT, *, since: int = 0, **fields: Any
    ) -> Event:
        """Wait for an event called ``name`` whose given fields equal ``fields``."""
        return await self.wait_for(
            lambda e: e["event"] == name and all(e.get(k) == v for k, v in fields.items()),
            timeout,
            since=since,
        )

    async def wait_synced(self, timeout: float = DEFAULT_TIMEOUT, *, since: int = 0) -> Event:
        """Wait for the provider's ``sync`` event with value true."""
        return await self.wait_event("synced", timeout, since=since, value=True)

    async def instance(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """The X-Instance-Id of the latest handshake's answer (waits for the first one)."""
        await self.wait_event("instance", timeout)
        return str([e for e in self.events if e["event"] == "instance"][-1]["value"])

    async def wait_text(self, expected: str, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Wait until the document's text equals ``expected``; return it.

        Checks the current text, then waits for the next remote update event
        and checks again, until ``timeout`` runs out (``TimeoutError`` then,
        with the last text seen).
        """
        text = await self._settle(
            lambda left: self.text(timeout=left), lambda t: t == expected, "update", timeout
        )
        if text != expected:
            raise TimeoutError(f"text is {text!r}, expected {expected!r}")
        return text

    async def wait_peers(
        self, predicate: Callable[[dict[int, Any]], bool], timeout: float = DEFAULT_TIMEOUT
    ) -> dict[int, Any]:
        """Wait until the remote awareness states satisfy ``predicate``; return them."""
        states = await self._settle(
            lambda left: self.peers(timeout=left), predicate, "awareness", timeout
        )
        if not predicate(states):
            raise TimeoutError(f"peers are {states!r}")
        return states

    async def _settle(
        self,
        read: Callable[[float], Awaitable[T]],
        accept: Callable[[T], bool],
        event: str,
        timeout: float,
    ) -> T:
        """Read a value, and again after each `event`, until `accept` takes it or `timeout`
        runs out; the last value read either way."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            since = self.mark()  # before reading, so no event can slip through
            value = await read(max(deadline - loop.time(), 0.1))
            remaining = deadline - loop.time()
            if accept(value) or remaining <= 0:
                return value
            try:
                await self.wait_for(lambda e: e["event"] == event, remaining, since=since)
            except TimeoutError:
                return value

    # ------------------------------------------------------------------ commands

    async def insert(self, index: int, text: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Insert ``text`` at ``index`` into the shared text (sent to the server at once)."""
        await self._request("insert", timeout, index=index, text=text)

    async def append(self, text: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Append ``text`` to the shared text."""
        await self._request("append", timeout, text=text)

    async def delete(self, index: int, length: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Delete ``length`` characters at ``index``."""
        await self._request("delete", timeout, index=index, length=length)

    async def text(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """The client's current text."""
        reply = await self._request("get", timeout)
        return str(reply["value"])

    async def typed_roots(
        self, fill: int = 0, pad: int = 0, timeout: float = DEFAULT_TIMEOUT
    ) -> Event:
        """Build one root of each Yjs type, plus `fill` entries of `pad` characters in the map
        `bulk` (tests/node/typed_roots.mjs); the reply's `roots` is what the client reads back
        from them, `bulk` the entry count, `bytes` the document's encoded size."""
        return await self._request("roots", timeout, fill=fill, pad=pad)

    async def root_json(self, name: str, kind: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Root `name` read as `kind` (map, array or text: `doc.getMap(name)` etc.), as JSON."""
        reply = await self._request("json", timeout, root=name, type=kind)
        return reply["value"]

    async def wait_root(
        self, name: str, kind: str, expected: Any, timeout: float = DEFAULT_TIMEOUT
    ) -> Any:
        """Wait until root `name`, read as `kind`, equals `expected` (checked again after
        each remote update); return it."""
        value = await self._settle(
            lambda left: self.root_json(name, kind, timeout=left),
            lambda v: v == expected,
            "update",
            timeout,
        )
        if value != expected:
            raise TimeoutError(f"{kind} {name!r} is {value!r}, expected {expected!r}")
        return value

    async def digest(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str]:
        """The text's length and SHA-256 (hex): compares big documents without shipping them."""
        reply = await self._request("digest", timeout)
        return int(reply["length"]), str(reply["sha256"])

    async def set_awareness(
        self, state: dict[str, Any] | None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Set the local awareness state (``None`` announces removal)."""
        await self._request("awareness", timeout, state=state)

    async def peers(self, timeout: float = DEFAULT_TIMEOUT) -> dict[int, Any]:
        """Awareness states of the *other* clients this client knows, by client id."""
        reply = await self._request("peers", timeout)
        return {int(k): v for k, v in reply["states"].items()}

    async def info(self, timeout: float = DEFAULT_TIMEOUT) -> Event:
        """Provider state: connected, connecting, synced, should_connect, client_id."""
        return await self._request("info", timeout)

    async def disconnect(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """``provider.disconnect()``; returns the event mark taken before it."""
        since = self.mark()
        await self._request("disconnect", timeout)
        return since

    async def connect(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """``provider.connect()``; returns the event mark taken before it.

        Typical use: ``m = await c.connect(); await c.wait_synced(since=m)``.
        """
        since = self.mark()
        await self._request("connect", timeout)
        return since
