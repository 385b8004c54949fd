"""`python -m services`: the embedded default, gateway and collab in one process."""

import logging

from services.embedded import create_app
from shared.auth import mint_token
from shared.config import Settings
from shared.runner import run_service

log = logging.getLogger("exe-collab")


def _build(settings: Settings):  # type: ignore[no-untyped-def]
    token, _ = mint_token(settings.jwt_secret, "demo", email="demo@localhost", ttl_seconds=24 * 3600)
    base = f"{settings.host}:{settings.port}"
    print(
        f"\nexe-collab is serving http://{base}\n"
        f"  demo token (24 h): {token}\n"
        f"  a room:            ws://{base}/yjs/project-3f2b8c1e-0d4a-4c3b-9a51-2f7e6d8c9b10?token={token}\n"
        "  (y-websocket: new WebsocketProvider('ws://" + base + "/yjs', 'project-<uuid>', doc,"
        " { params: { token } }))\n",
        flush=True,
    )
    return create_app(settings)


if __name__ == "__main__":
    run_service("exe-collab", _build)
