"""Upload-session tokens: bound to a project and a user, and never mistaken for an access token."""

from __future__ import annotations

import time

import pytest

from shared.auth import TokenError, mint_token, verify_token
from shared.upload_sessions import mint_upload_session, verify_upload_session

pytestmark = pytest.mark.unit

SECRET = "s" * 32


def test_a_session_names_its_project_and_user() -> None:
    token, expires = mint_upload_session(SECRET, "p-uuid", "7", ttl_seconds=60)
    session = verify_upload_session(token, SECRET)
    assert (session.project_uuid, session.user_id, session.expires_at) == ("p-uuid", "7", expires)


def test_an_expired_or_forged_session_is_refused() -> None:
    expired, _ = mint_upload_session(SECRET, "p", "7", ttl_seconds=1, now=time.time() - 60)
    with pytest.raises(TokenError, match="expired"):
        verify_upload_session(expired, SECRET)
    forged, _ = mint_upload_session("x" * 32, "p", "7")
    with pytest.raises(TokenError):
        verify_upload_session(forged, SECRET)


def test_sessions_and_access_tokens_do_not_verify_as_each_other() -> None:
    session, _ = mint_upload_session(SECRET, "p", "7")
    with pytest.raises(TokenError):
        verify_token(session, SECRET)
    access, _ = mint_token(SECRET, 7)
    with pytest.raises(TokenError):
        verify_upload_session(access, SECRET)
