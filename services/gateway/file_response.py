"""aiohttp's FileResponse with If-Range as RFC 9110 (13.1.5) has it.

aiohttp reads If-Range only as a date, so an entity tag is ignored and a
Range is served from whatever the file now is (a 206 mixing an old and a new
version after a replace), and it compares the date with the file's sub-second
mtime, so a date equal to the Last-Modified it sent never matches. Here the
Range is honoured only when If-Range matches the file being sent: the same
strong ETag that aiohttp sends, or exactly its Last-Modified second; otherwise
the answer is the whole file with 200.
"""

from __future__ import annotations

import asyncio
import math
import os
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web


def file_etag(st: os.stat_result) -> str:
    """The entity tag aiohttp's FileResponse gives a file (web_fileresponse.py)."""
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


def if_range_holds(value: str, st: os.stat_result) -> bool:
    """Whether `If-Range: value` names the representation `st` describes."""
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == file_etag(st)  # a weak tag never matches: it must be strong
    try:  # aiohttp's Last-Modified is the mtime rounded up to the second
        return parsedate_to_datetime(value).timestamp() == math.ceil(st.st_mtime)
    except (TypeError, ValueError, OverflowError):
        return False


class AssetFileResponse(web.FileResponse):
    def __init__(self, path: Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._file = path

    async def prepare(self, request: web.BaseRequest) -> Any:
        if_range = request.headers.get(hdrs.IF_RANGE)
        if if_range is not None:
            headers = request.headers.copy()
            del headers[hdrs.IF_RANGE]  # decided here, not by aiohttp
            st = await asyncio.to_thread(self._file.stat)
            if not if_range_holds(if_range, st):
                headers.popall(hdrs.RANGE, None)
            request = request.clone(headers=headers)
        return await super().prepare(request)
