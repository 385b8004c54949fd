"""JWT tokens: HS256 with API_JWT_SECRET, `exp` required, algorithm pinned.

One rule for HTTP and the WebSocket alike (`request_token`, `verify_token`):
the token is the `Authorization: Bearer` header's, else the `?token=` query
parameter's (browsers cannot set headers on a WebSocket or an `<img src>`); it
is valid until its `exp`, with no grace (an open WebSocket is closed with 4401
then); `iat` and `nbf` may be up to `CLOCK_SKEW_SECONDS` ahead of this
server's clock, since the issuer (another instance, eXeLearning) has its own.

Two kinds of `sub` are accepted. Ours is a string and comes with `iat` (and
`roles`); eXeLearning's own app signs `{sub: <integer user id>, email,
isGuest}` with the same secret, no `roles`, and `iat` only where its signer
adds one, so an integer `sub` does not require `iat` (it is still checked when
present). A boolean, a float, an empty string or anything else is refused.
The HTTP gateway also reads the token from the `auth` cookie (`AUTH_COOKIE`,
see `services/gateway/security.py`); the WebSocket does not.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "exp")
CLOCK_SKEW_SECONDS = 5
AUTH_COOKIE = "auth"  # eXeLearning's name for it


class TokenError(Exception):
    """The token is missing, malformed, forged, of another algorithm, or expired."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token speaks for."""

    user_id: str
    email: str = ""
    roles: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def expires_at(self) -> float | None:
        """The token's `exp` (Unix time), when it has one."""
        exp = self.claims.get("exp")
        return None if exp is None else float(exp)


def verify_token(token: str, secret: str) -> Identity:
    """Verify signature, algorithm and expiry; return the identity or raise TokenError."""
    if not token:
        raise TokenError("missing token")
    try:
        # PyJWT's leeway would apply to exp too: exp is checked below, without one.
        # verify_sub off: PyJWT 2.10+ refuses an integer sub; subject_of decides instead.
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_sub": False},
            leeway=CLOCK_SKEW_SECONDS,
        )
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from None
    user_id = subject_of(claims)
    exp = claims["exp"]
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise TokenError("invalid token: exp must be a number")
    if exp <= time.time():
        raise TokenError("token expired")
    roles = claims.get("roles") or ()
    if not isinstance(roles, (list, tuple)):
        raise TokenError("invalid token: roles must be a list")
    return Identity(
        user_id=user_id,
        email=str(claims.get("email", "")),
        roles=tuple(str(r) for r in roles),
        claims=claims,
    )


def subject_of(claims: Mapping[str, Any]) -> str:
    """The user id of verified `claims`: a non-empty string `sub` with an `iat` (ours), or an
    integer `sub` (eXeLearning's, `iat` optional); TokenError otherwise."""
    sub = claims.get("sub")
    if isinstance(sub, bool):  # a bool is an int to Python, not a user id
        raise TokenError("invalid token: sub must be a string or an integer")
    if isinstance(sub, int):
        return str(sub)
    if not isinstance(sub, str) or not sub.strip():
        raise TokenError("invalid token: sub must be a string or an integer")
    if "iat" not in claims:
        raise TokenError('invalid token: Token is missing the "iat" claim')
    return sub


def mint_token(
    secret: str,
    user_id: str | int,
    *,
    email: str = "",
    roles: tuple[str, ...] | list[str] = (),
    ttl_seconds: int = 3600,
    now: float | None = None,
) -> tuple[str, int]:
    """Sign a token for `user_id`; return (token, expires_at as a Unix time)."""
    issued = int(time.time() if now is None else now)
    expires = issued + ttl_seconds
    payload = {
        "sub": str(user_id),
        "email": email,
        "roles": list(roles),
        "iat": issued,
        "exp": expires,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM), expires


def request_token(authorization: str | None, query_token: str | None) -> str | None:
    """The token a request carries: a Bearer `Authorization` header's, else `?token=`'s.

    An `Authorization` header of another scheme (Basic, from a proxy in front) is not a token.
    """
    return bearer_token(authorization) or query_token or None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if that is what it is."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
