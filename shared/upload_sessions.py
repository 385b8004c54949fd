"""Upload-session tokens: what a collab instance hands a client for the batch upload route.

eXeLearning's client asks for an upload session over the WebSocket
(`upload-session-create`) and then posts its files to the gateway with only
`X-Upload-Session: <token>`. The token is stateless, so any gateway accepts a
token any collab instance minted, and bound to one project and one user (the
gateway still checks that user's current role when it is used). It is signed
with a key derived from API_JWT_SECRET, so it never verifies as an access
token, nor an access token as an upload session.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import jwt

from shared.auth import ALGORITHM, CLOCK_SKEW_SECONDS, TokenError

UPLOAD_SESSION_TTL_SECONDS = 3600
_KEY_LABEL = b"exe-collab upload session"
_CLAIMS = ("sub", "project", "iat", "exp")


@dataclass(frozen=True, slots=True)
class UploadSession:
    """Who may upload to which project, until when (Unix time)."""

    project_uuid: str
    user_id: str
    expires_at: int


def _session_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def mint_upload_session(
    secret: str,
    project_uuid: str,
    user_id: str,
    *,
    ttl_seconds: int = UPLOAD_SESSION_TTL_SECONDS,
    now: float | None = None,
) -> tuple[str, int]:
    """Sign an upload session for `user_id` on `project_uuid`; return (token, expires_at)."""
    issued = int(time.time() if now is None else now)
    expires = issued + ttl_seconds
    claims = {"sub": str(user_id), "project": str(project_uuid), "iat": issued, "exp": expires}
    return jwt.encode(claims, _session_key(secret), algorithm=ALGORITHM), expires


def verify_upload_session(token: str, secret: str) -> UploadSession:
    """The session a token stands for, or TokenError (forged, expired, another kind of token)."""
    if not token:
        raise TokenError("missing upload session")
    try:
        claims = jwt.decode(
            token,
            _session_key(secret),
            algorithms=[ALGORITHM],
            options={"require": list(_CLAIMS)},
            leeway=CLOCK_SKEW_SECONDS,
        )
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid upload session: {exc}") from None
    if claims["exp"] <= time.time():
        raise TokenError("upload session expired")
    return UploadSession(
        project_uuid=str(claims["project"]),
        user_id=str(claims["sub"]),
        expires_at=int(claims["exp"]),
    )
