"""`python -m stack up|down|status|render-nginx` (what `make stack` / `make stack-down` run)."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import urllib.request
import uuid
from pathlib import Path

from stack import nginx as nginx_conf
from stack.processes import StackError
from stack.redis_part import MODES
from stack.stack import DEFAULT_RUN_DIR, Stack


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _up(args: argparse.Namespace) -> int:
    redis = "a Redis Cluster (3 masters, 3 replicas)" if args.redis == "cluster" else "redis"
    print(
        f"stack: starting nginx, {redis}, postgres, {args.gateway} gateway(s), "
        f"{args.collab} collab(s){'' if args.no_persistence else ', the persistence worker'} ...",
        flush=True,
    )
    stack = Stack.start(
        collab=args.collab,
        gateway=args.gateway,
        persistence=not args.no_persistence,
        redis=args.redis,
        run_dir=args.run_dir,
        nginx_port=args.port,
        timeout=args.timeout,
        detach=True,
    )
    demo = _demo_project(stack.url)
    rel = _relative(stack.run_dir)
    print(f"\nexe-collab stack is up: {stack.url}\n")
    for service in ("gateway", "collab", "persistence"):
        for instance in stack.instances[service]:
            print(f"  {instance.name:<14} {instance.url}  pid {instance.pid}")
    for name, url, process, role in stack.redis.nodes():
        print(f"  {name:<14} {url}  pid {process.pid if process else '-'}  {role}".rstrip())
    print(
        f"  {'postgres':<14} {stack.database_dsn}  pid {stack.postgres.pid if stack.postgres else '-'}"
    )
    print(f"  {'nginx':<14} {stack.url}  pid {stack.nginx.pid if stack.nginx else '-'}")
    for warning in stack.warnings:
        print(f"  WARNING: {warning}")
    print(f"\n  health:     {stack.url}/health")
    if demo is not None:
        email, password, token, room = demo
        print(
            f"  demo user:  {email} / {password} (POST {stack.url}/api/auth/login)\n"
            f"  its room:   {stack.ws_url}/{room}?token={token}"
        )
    print(
        f"  run dir:    {rel} (stack.json, logs/, pids/; secrets in {rel}/stack.env)\n"
        f"  stop with:  make stack-down\n",
        flush=True,
    )
    return 0


def _demo_project(base: str) -> tuple[str, str, str, str] | None:
    """Register a demo user and create a project through nginx: (email, password, token, room)."""
    email, password = f"demo-{uuid.uuid4().hex[:6]}@example.com", secrets.token_urlsafe(12)

    def call(path: str, body: dict[str, str], token: str | None = None) -> dict[str, object]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            base + path, json.dumps(body).encode(), headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read()))

    try:
        call("/api/auth/register", {"email": email, "password": password, "name": "Demo"})
        token = str(call("/api/auth/login", {"email": email, "password": password})["token"])
        project = call("/api/projects", {"title": "Demo"}, token)
    except (OSError, ValueError, KeyError) as exc:
        print(f"  (no demo project: {exc})", file=sys.stderr)
        return None
    return email, password, token, f"project-{project['uuid']}"


def _down(args: argparse.Namespace) -> int:
    try:
        stack = Stack.attach(args.run_dir)
    except StackError as exc:
        print(f"stack: {exc}: nothing to stop")
        return 0
    names = [p.name for p in stack.processes() if p.alive]
    stack.stop()
    print(f"stack: stopped {', '.join(names) if names else 'nothing (no process was alive)'}")
    return 0


def _status(args: argparse.Namespace) -> int:
    try:
        stack = Stack.attach(args.run_dir)
    except StackError as exc:
        print(f"stack: {exc}")
        return 1
    state = stack.state()
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    print(f"{stack.url}  ({state['run_dir']})")
    for process in stack.processes():
        print(f"  {process.name:<14} pid {process.pid:<8} {'up' if process.alive else 'DOWN'}")
    return 0 if all(p.alive for p in stack.processes()) else 1


def _render(args: argparse.Namespace) -> int:
    text = nginx_conf.render_upstreams(nginx_conf.COMPOSE_UPSTREAMS)
    if args.check:
        current = nginx_conf.COMPOSE_UPSTREAMS_FILE.read_text()
        if current != text:
            print(
                f"{nginx_conf.COMPOSE_UPSTREAMS_FILE} is out of date: run python -m stack render-nginx"
            )
            return 1
        return 0
    nginx_conf.COMPOSE_UPSTREAMS_FILE.write_text(text)
    print(f"wrote {nginx_conf.COMPOSE_UPSTREAMS_FILE}")
    return 0


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stack and leave it running")
    up.add_argument("--collab", type=_positive, default=2)
    up.add_argument("--gateway", type=_positive, default=2)
    up.add_argument("--no-persistence", action="store_true", help="no persistence worker")
    up.add_argument(
        "--redis", choices=MODES, default="single",
        help="one redis-server, or a Redis Cluster of 3 masters and 3 replicas",
    )  # fmt: skip
    up.add_argument("--port", type=int, default=None, help="nginx port (default: a free one)")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each step")
    down = sub.add_parser("down", help="stop the processes recorded in stack.json")
    status = sub.add_parser("status", help="which processes of the stack are alive")
    status.add_argument("--json", action="store_true")
    for command in (up, down, status):
        command.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    render = sub.add_parser("render-nginx", help="regenerate deploy/nginx/upstreams/compose.conf")
    render.add_argument("--check", action="store_true", help="only check it is up to date")
    args = parser.parse_args(argv)
    handler = {"up": _up, "down": _down, "status": _status, "render-nginx": _render}[args.command]
    try:
        return handler(args)
    except StackError as exc:
        print(f"stack: ERROR: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
