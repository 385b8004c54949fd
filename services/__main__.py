"""`python -m services`: the embedded default, gateway and collab in one process."""

import logging

from services.embedded import create_app
from shared.config import Settings
from shared.runner import run_service

log = logging.getLogger("exe-collab")


def _build(settings: Settings):  # type: ignore[no-untyped-def]
    base = f"http://{settings.host}:{settings.port}"
    ws = f"ws://{settings.host}:{settings.port}"
    registration = (
        f"  1. an account:   curl -s {base}/api/auth/register -H 'Content-Type: application/json' "
        "-d '{\"email\":\"me@example.com\",\"password\":\"choose-a-password\"}'\n"
        if settings.auth_create_users
        else "  1. an account:   python -m services.gateway.admin create-user me@example.com\n"
    )
    print(
        f"\nexe-collab is serving {base} (API description: {base}/api/openapi.json)\n"
        f"{registration}"
        f"  2. a token:      curl -s {base}/api/auth/login -H 'Content-Type: application/json' "
        "-d '{\"email\":\"me@example.com\",\"password\":\"choose-a-password\"}'\n"
        f"  3. a project:    curl -s {base}/api/projects -H \"Authorization: Bearer $TOKEN\" "
        "-H 'Content-Type: application/json' -d '{\"title\":\"My project\"}'\n"
        f"  4. edit live:    new WebsocketProvider('{ws}/yjs', 'project-<uuid>', doc, {{ params: {{ token }} }})\n",
        flush=True,
    )
    return create_app(settings)


if __name__ == "__main__":
    run_service("exe-collab", _build)
