"""Tokens as eXeLearning's own app signs them for its editor page, for tests."""

from __future__ import annotations

import time

import jwt

WEEK = 7 * 24 * 3600


def exe_token(secret: str, user_id: int, *, email: str = "x@example.org") -> str:
    """HS256 with API_JWT_SECRET: integer `sub`, `email`, `isGuest`, no `roles`, no `iat`,
    valid 7 days."""
    claims = {"sub": user_id, "email": email, "isGuest": False, "exp": int(time.time()) + WEEK}
    return jwt.encode(claims, secret, algorithm="HS256")
