"""Raw awareness frames for flooding a collab server (the "awareness without limits" report).

`flood_frame(n)` is the reported attack's shape: one awareness frame of `n`
entries (distinct client ids, `{}` states; 1,000,000 entries make 6.7 MiB).
`flood` sends such frames from one member's socket, reconnecting whenever
the server closes it, until told to stop.
"""

from __future__ import annotations

import asyncio

import aiohttp

from shared.awareness import AwarenessEntry, encode_awareness_update
from shared.protocol import encode_awareness


def flood_frame(entries: int, *, first_id: int = 1, state: bytes = b"{}") -> bytes:
    """One awareness frame announcing `entries` client ids, each with `state`."""
    return encode_awareness(
        encode_awareness_update(AwarenessEntry(first_id + i, 1, state) for i in range(entries))
    )


async def flood(
    url: str, frame: bytes, stop: asyncio.Event, *, per_socket: int = 3, interval: float = 0.0
) -> dict[str, int]:
    """Open a connection every `interval` seconds (or as fast as closes allow) and send
    `frame` `per_socket` times on it, until `stop`; count frames and closes by code."""
    counts: dict[str, int] = {"frames": 0, "connections": 0}
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            next_at = loop.time() + interval
            try:
                async with session.ws_connect(url, max_msg_size=0) as ws:
                    counts["connections"] += 1
                    try:
                        for _ in range(per_socket):
                            await ws.send_bytes(frame)
                            counts["frames"] += 1
                    except (aiohttp.ClientError, ConnectionError):
                        pass  # the server closed meanwhile: its close frame says why
                    while not stop.is_set() and not ws.closed:  # read until the server closes
                        try:
                            message = await ws.receive(timeout=0.5)
                        except TimeoutError:
                            continue
                        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                            break
                    code = f"close_{ws.close_code}"
                    counts[code] = counts.get(code, 0) + 1
            except (aiohttp.ClientError, ConnectionError):
                counts["errors"] = counts.get("errors", 0) + 1
            await asyncio.sleep(max(0.0, next_at - loop.time()))
    return counts


def main() -> None:
    """`python -m tests.support.awareness_flood URL [--entries N] [--seconds S]`: flood, print the counts."""
    import argparse
    import json

    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between connections")
    args = parser.parse_args()
    frame = flood_frame(args.entries)

    async def run() -> dict[str, int]:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(args.seconds, stop.set)
        print("flooding", flush=True)
        return await flood(args.url, frame, stop, interval=args.interval)

    print(json.dumps(asyncio.run(run())), flush=True)


if __name__ == "__main__":
    main()
