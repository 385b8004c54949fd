"""JWT tokens: HS256 with API_JWT_SECRET, `exp` required, algorithm pinned."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import jwt

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "exp", "iat")


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


def verify_token(token: str, secret: str) -> Identity:
    """Verify signature, algorithm and expiry; return the identity or raise TokenError."""
    if not token:
        raise TokenError("missing token")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": list(REQUIRED_CLAIMS)},
            leeway=5,
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from None
    roles = claims.get("roles") or ()
    if not isinstance(roles, (list, tuple)):
        raise TokenError("invalid token: roles must be a list")
    return Identity(
        user_id=str(claims["sub"]),
        email=str(claims.get("email", "")),
        roles=tuple(str(r) for r in roles),
        claims=claims,
    )


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
    payload = {"sub": str(user_id), "email": email, "roles": list(roles), "iat": issued, "exp": expires}
    return jwt.encode(payload, secret, algorithm=ALGORITHM), expires


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if that is what it is."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
