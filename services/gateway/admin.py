"""Administration from the command line, against the configured database.

    python -m services.gateway.admin create-user EMAIL [--name NAME] [--admin] [--password-stdin]
    python -m services.gateway.admin reset-password EMAIL [--password-stdin]
    python -m services.gateway.admin mint-token EMAIL [--ttl SECONDS]
    python -m services.gateway.admin add-member PROJECT_UUID EMAIL --role owner|editor|viewer
    python -m services.gateway.admin quarantine [PROJECT_UUID]

Configured by the same environment variables as the services (DATABASE_URL
or DB_*, API_JWT_SECRET...). Passwords are read from stdin with
`--password-stdin`, otherwise prompted for without echo; never from the
command line, where they would end up in shell history and `ps`.
Exit codes: 0 ok, 1 refused (exists, not found, bad input), 2 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import uuid as uuid_module

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.accounts import (
    EmailTaken,
    create_user,
    find_user_by_email,
    normalize_email,
    set_password,
)
from services.gateway.passwords import password_problem
from shared.access import Role
from shared.auth import mint_token
from shared.config import ConfigError, Settings
from shared.db.engine import create_engine, create_sessionmaker, upgrade
from shared.db.models import Project, ProjectMember, YjsQuarantine


class CommandError(Exception):
    pass


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise CommandError("the passwords differ")
    problem = password_problem(password)
    if problem:
        raise CommandError(problem)
    return password


def _email(raw: str) -> str:
    email = normalize_email(raw)
    if email is None:
        raise CommandError(f"not a valid email address: {raw!r}")
    return email


async def _run(args: argparse.Namespace, settings: Settings) -> str:
    if settings.run_migrations:
        await upgrade(settings.database_url)
    engine = create_engine(settings.database_url)
    sessionmaker = create_sessionmaker(engine)
    try:
        if args.command == "create-user":
            email = _email(args.email)
            password = _read_password(args.password_stdin)
            try:
                created = await create_user(
                    sessionmaker, email, password, args.name or "", ["admin"] if args.admin else []
                )
            except EmailTaken:
                raise CommandError(f"{email} already exists") from None
            return f"created user {created.id} <{created.email}>{' (admin)' if args.admin else ''}"
        if args.command == "reset-password":
            email = _email(args.email)
            password = _read_password(args.password_stdin)
            if not await set_password(sessionmaker, email, password):
                raise CommandError(f"no user {email}")
            return f"password of {email} changed"
        if args.command == "mint-token":
            email = _email(args.email)
            async with sessionmaker() as session:
                user = await find_user_by_email(session, email)
            if user is None:
                raise CommandError(f"no user {email}")
            token, _ = mint_token(
                settings.jwt_secret,
                user.id,
                email=user.email,
                roles=list(user.roles or []),
                ttl_seconds=args.ttl or settings.jwt_ttl_seconds,
            )
            return token
        if args.command == "add-member":
            email = _email(args.email)
            try:
                project_uuid = uuid_module.UUID(args.project)
            except ValueError:
                raise CommandError(f"not a project uuid: {args.project!r}") from None
            async with sessionmaker() as session, session.begin():
                user = await find_user_by_email(session, email)
                project = await session.scalar(
                    select(Project).where(
                        Project.uuid == project_uuid, Project.deleted_at.is_(None)
                    )
                )
                if user is None or project is None:
                    raise CommandError("no such user or project")
                member = await session.get(ProjectMember, (project.id, user.id))
                if member is None:
                    session.add(
                        ProjectMember(project_id=project.id, user_id=user.id, role=args.role)
                    )
                else:
                    member.role = args.role
            return f"{email} is {args.role} of {project_uuid}"
        if args.command == "quarantine":
            return await _list_quarantine(sessionmaker, args.project)
        raise CommandError(f"unknown command {args.command}")
    finally:
        await engine.dispose()


async def _list_quarantine(
    sessionmaker: async_sessionmaker[AsyncSession], project: str | None
) -> str:
    """One line per quarantined update (newest first): id, project, source row, size, when, why."""
    query = (
        select(
            YjsQuarantine.id,
            Project.uuid,
            YjsQuarantine.source_id,
            func.length(YjsQuarantine.update).label("size"),
            YjsQuarantine.created_at,
            YjsQuarantine.reason,
        )
        .join(Project, Project.id == YjsQuarantine.project_id)
        .order_by(YjsQuarantine.id.desc())
    )
    if project is not None:
        try:
            query = query.where(Project.uuid == uuid_module.UUID(project))
        except ValueError:
            raise CommandError(f"not a project uuid: {project!r}") from None
    async with sessionmaker() as session:
        rows = (await session.execute(query)).all()
    lines = [
        f"{row.id}\t{row.uuid}\trow={row.source_id if row.source_id is not None else '-'}"
        f"\t{int(row.size or 0)} bytes\t{row.created_at.isoformat() if row.created_at else '-'}\t{row.reason}"
        for row in rows
    ]
    return "\n".join(lines + [f"{len(rows)} quarantined update(s)"])


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m services.gateway.admin", description=__doc__.split("\n\n")[0]
    )
    commands = root.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-user", help="create an account")
    create.add_argument("email")
    create.add_argument("--name", default="")
    create.add_argument("--admin", action="store_true", help="give the account the admin role")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    reset = commands.add_parser("reset-password", help="set a new password")
    reset.add_argument("email")
    reset.add_argument("--password-stdin", action="store_true")
    mint = commands.add_parser("mint-token", help="print a token for an account")
    mint.add_argument("email")
    mint.add_argument(
        "--ttl", type=int, default=0, help="lifetime in seconds (default JWT_TTL_SECONDS)"
    )
    member = commands.add_parser("add-member", help="make an account a member of a project")
    member.add_argument("project")
    member.add_argument("email")
    member.add_argument("--role", choices=[r.value for r in Role], required=True)
    quarantine = commands.add_parser(
        "quarantine", help="list stored updates set aside because pycrdt could not apply them"
    )
    quarantine.add_argument("project", nargs="?", help="only this project's")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        print(asyncio.run(_run(args, settings)))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
