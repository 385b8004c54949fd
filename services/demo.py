"""The embedded default's demo: a user and a project to edit right away (`make run`)."""

from __future__ import annotations

import secrets
import uuid as uuid_module

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.accounts import create_user, find_user_by_email
from services.gateway.projects import insert_project
from shared.auth import mint_token
from shared.config import Settings
from shared.db.models import Project

DEMO_EMAIL = "demo@example.com"
# A fixed uuid, so the printed room URL stays the same across restarts.
DEMO_PROJECT = uuid_module.UUID("3f2b8c1e-0d4a-4c3b-9a51-2f7e6d8c9b10")


async def ensure_demo(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> tuple[str, str]:
    """Create the demo user and project when missing; return (token, room name)."""
    async with sessionmaker() as session:
        user = await find_user_by_email(session, DEMO_EMAIL)
    if user is None:
        # nobody logs in as the demo user: the printed token is the way in
        user = await create_user(sessionmaker, DEMO_EMAIL, secrets.token_urlsafe(24), "Demo")
    async with sessionmaker() as session, session.begin():
        exists = await session.scalar(select(Project.id).where(Project.uuid == DEMO_PROJECT))
        if exists is None:
            await insert_project(session, user.id, "Demo project", DEMO_PROJECT)
    token, _ = mint_token(settings.jwt_secret, user.id, email=DEMO_EMAIL, ttl_seconds=24 * 3600)
    return token, f"project-{DEMO_PROJECT}"
