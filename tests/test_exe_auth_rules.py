"""eXeLearning's tokens (integer `sub`, no `roles`) beside ours, and the cookie's cross-site rule."""

from __future__ import annotations

import time

import jwt
import pytest

from services.gateway.csrf import cross_site_refusal
from shared.access_db import user_id_of
from shared.auth import TokenError, mint_token, verify_token

pytestmark = pytest.mark.unit

SECRET = "exe-secret-" + "k" * 40
OWN = "https://exe.example.org"
WEEK = 7 * 24 * 3600


def exe_token(changes: dict[str, object] | None = None, secret: str = SECRET) -> str:
    """A token as eXeLearning's app signs it for its editor page (no roles, no iat, 7 days),
    with `changes` (a None value removes the claim)."""
    claims: dict[str, object] = {"sub": 7, "email": "ana@example.org", "isGuest": False, "exp": int(time.time()) + WEEK}
    claims.update(changes or {})
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, algorithm="HS256")


def test_an_exelearning_token_verifies_as_its_user() -> None:
    identity = verify_token(exe_token(), SECRET)
    assert identity.user_id == "7" and user_id_of(identity) == 7
    assert identity.roles == () and not identity.is_admin
    assert identity.email == "ana@example.org" and identity.claims["isGuest"] is False


def test_an_exelearning_login_token_with_iat_and_its_roles_verifies() -> None:
    now = int(time.time())
    token = exe_token({"iat": now, "roles": ["ROLE_USER", "ROLE_ADMIN"], "authMethod": "local"})
    identity = verify_token(token, SECRET)
    assert user_id_of(identity) == 7
    assert not identity.is_admin  # eXeLearning's ROLE_ADMIN is not our admin role


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"sub": True}, "sub must be"),
        ({"sub": 7.0}, "sub must be"),
        ({"sub": 7.5}, "sub must be"),
        ({"sub": ""}, "sub must be"),
        ({"sub": "   "}, "sub must be"),
        ({"sub": [7]}, "sub must be"),
        ({"sub": {"id": 7}}, "sub must be"),
        ({"sub": None}, "sub"),
        ({"exp": None}, "exp"),
        ({"exp": int(time.time()) - 5}, "expired"),
        ({"iat": int(time.time()) + 600}, "iat"),  # an iat from the future is still checked
    ],
)
def test_bad_subjects_and_times_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(TokenError, match=message):
        verify_token(exe_token(changes), SECRET)


def test_a_forged_exelearning_token_is_refused() -> None:
    with pytest.raises(TokenError):
        verify_token(exe_token(secret="not-the-secret-" + "x" * 40), SECRET)


def test_our_own_tokens_are_unchanged() -> None:
    token, expires = mint_token(SECRET, 42, email="a@b.c", roles=["admin"], ttl_seconds=60)
    identity = verify_token(token, SECRET)
    assert (identity.user_id, identity.roles, identity.claims["exp"]) == ("42", ("admin",), expires)
    assert isinstance(jwt.decode(token, SECRET, algorithms=["HS256"])["sub"], str)
    # a string sub still needs its iat
    no_iat = jwt.encode({"sub": "42", "roles": [], "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    with pytest.raises(TokenError, match="iat"):
        verify_token(no_iat, SECRET)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "get"])
def test_safe_methods_pass_whatever_their_origin(method: str) -> None:
    assert cross_site_refusal(method, "cross-site", "https://evil.example", OWN) is None


@pytest.mark.parametrize(
    "sec_fetch_site, origin, allowed",
    [
        ("same-origin", OWN, True),
        ("same-origin", None, True),
        ("none", None, True),  # typed by the user
        ("Same-Origin", None, True),
        ("same-site", OWN, False),  # a sibling subdomain: SameSite lets its cookie through
        ("cross-site", OWN, False),  # fetch metadata wins over an Origin that looks right
        ("cross-site", None, False),
        ("", OWN, False),
        (None, OWN, True),  # a browser without fetch metadata: Origin decides
        (None, OWN + "/", True),
        (None, "HTTPS://EXE.example.org", True),
        (None, "http://exe.example.org", False),  # another scheme is another origin
        (None, "https://exe.example.org:8443", False),
        (None, "https://exe.example.org.evil.example", False),
        (None, "null", False),  # sandboxed frames, data: URLs
        (None, None, False),  # neither header: refused
    ],
)
def test_cookie_writes_pass_only_from_this_origin(
    sec_fetch_site: str | None, origin: str | None, allowed: bool
) -> None:
    refusal = cross_site_refusal("POST", sec_fetch_site, origin, OWN)
    assert (refusal is None) == allowed
    if not allowed:
        assert refusal and "cookie" in refusal
