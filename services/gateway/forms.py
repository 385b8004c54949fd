"""Reading multipart/form-data bodies as streams: the checks and helpers every upload shares."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

from aiohttp import BodyPartReader, web

from services.gateway.errors import ApiError, bad_request, too_large

READ_CHUNK = 256 * 1024
MULTIPART_OVERHEAD = 64 * 1024


def require_multipart(
    request: web.Request, max_body: int, refusal: str = "send multipart/form-data"
) -> None:
    """415 (saying `refusal`) unless the body is multipart/form-data; 413 when its declared
    length passes `max_body` (plus the multipart framing)."""
    if not request.content_type.startswith("multipart/form-data"):
        raise ApiError(415, refusal)
    if (
        request.content_length is not None
        and request.content_length > max_body + MULTIPART_OVERHEAD
    ):
        raise too_large(f"the body is larger than the limit of {max_body} bytes")


async def form_parts(request: web.Request) -> AsyncIterator[BodyPartReader]:
    """The body's parts in order (a nested multipart is skipped). Iterate inside
    `multipart_errors()`; a part the caller does not read must be released."""
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if isinstance(part, BodyPartReader):
            yield part
        else:
            await part.release()


async def part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(READ_CHUNK):
        yield chunk


async def read_text(part: BodyPartReader, max_bytes: int) -> str:
    """A text field's value (UTF-8), or a 400 when it is longer than `max_bytes` or not UTF-8."""
    data = bytearray()
    async for chunk in part_chunks(part):
        data += chunk
        if len(data) > max_bytes:
            raise bad_request(f"the form field '{part.name}' is longer than {max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request(f"the form field '{part.name}' is not UTF-8") from None


@contextmanager
def multipart_errors() -> Iterator[None]:
    """aiohttp's multipart reader fails with these on a malformed body: a 400."""
    try:
        yield
    except (ValueError, AssertionError, RuntimeError, LookupError) as exc:
        raise bad_request(f"malformed multipart body: {type(exc).__name__}") from None
