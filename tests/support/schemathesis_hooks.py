"""Schemathesis hooks for the gateway fuzz test (loaded with SCHEMATHESIS_HOOKS).

tus PATCH bodies are `application/offset+octet-stream`: raw bytes, which
schemathesis has no serializer for by default.
"""

import schemathesis


@schemathesis.serializer("application/offset+octet-stream")
def offset_octet_stream(ctx, value):  # type: ignore[no-untyped-def]
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return repr(value).encode()
