"""Users in the database: create, find, change password (shared by the API and the admin CLI)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Annotated, Any, Literal, cast

from pydantic import AfterValidator, Field
from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.passwords import hash_password, needs_rehash
from shared.db.models import User

EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,255}$")
KnownRole = Literal["admin"]
MAX_NAME = 200
MAX_EMAIL = 320


class EmailTaken(Exception):
    pass


def normalize_email(value: object) -> str | None:
    """The canonical (NFC, trimmed, lower-cased) form of an email, or None if it is not one."""
    if not isinstance(value, str):
        return None
    email = unicodedata.normalize("NFC", value.strip()).lower()
    if len(email) > MAX_EMAIL or not EMAIL.match(email) or "." not in email.rsplit("@", 1)[1]:
        return None
    return email


def _address(value: str) -> str:
    email = normalize_email(value)
    if email is None:
        raise ValueError("must be a valid email address")
    return email


# A field holding an email address, validated and normalised by `normalize_email`.
Email = Annotated[
    str,
    Field(max_length=MAX_EMAIL, json_schema_extra={"format": "email"}),
    AfterValidator(_address),
]


async def find_user_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == email))


async def create_user(
    sessionmaker: async_sessionmaker[AsyncSession],
    email: str,
    password: str,
    name: str = "",
    roles: Sequence[str] = (),
) -> User:
    """Insert a user (email already normalised); raise EmailTaken when it exists."""
    password_hash = await hash_password(password)
    async with sessionmaker() as session:
        user = User(email=email, password_hash=password_hash, display_name=name, roles=list(roles))
        session.add(user)
        try:
            await session.commit()
        except IntegrityError:
            raise EmailTaken(email) from None
        await session.refresh(user)
        return user


async def rehash_if_outdated(
    sessionmaker: async_sessionmaker[AsyncSession], user: User, password: str
) -> bool:
    """After a successful login, store a hash with today's parameters if `user`'s is outdated.

    The row changes only while it still holds the hash the password was checked
    against, so a password changed meanwhile is kept. True when it was rehashed.
    """
    if not needs_rehash(user.password_hash):
        return False
    password_hash = await hash_password(password)
    async with sessionmaker() as session, session.begin():
        result = await session.execute(
            update(User)
            .where(User.id == user.id, User.password_hash == user.password_hash)
            .values(password_hash=password_hash)
        )
    return bool(cast(CursorResult[Any], result).rowcount)  # an UPDATE's result is a cursor's


async def set_password(
    sessionmaker: async_sessionmaker[AsyncSession], email: str, password: str
) -> bool:
    """Change a user's password; False when there is no such user."""
    password_hash = await hash_password(password)
    async with sessionmaker() as session, session.begin():
        user = await find_user_by_email(session, email)
        if user is None:
            return False
        user.password_hash = password_hash
        return True
