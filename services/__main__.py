"""`python -m services`: the embedded default, gateway and collab in one process."""

from aiohttp import web

from services.demo import ensure_demo
from services.embedded import create_app
from shared.config import Settings
from shared.db.resources import DATABASE
from shared.runner import run_service


def _build(settings: Settings) -> web.Application:
    app = create_app(settings)

    async def print_how_to_connect(app: web.Application) -> None:
        base = f"http://{settings.host}:{settings.port}"
        ws = f"ws://{settings.host}:{settings.port}/yjs"
        lines = [f"\nexe-collab is serving {base} (API: {base}/api/openapi.json; UI: {base}/)"]
        if not settings.is_production:
            token, room = await ensure_demo(app[DATABASE].sessionmaker, settings)
            lines += [
                f"  demo token (24 h): {token}",
                f"  demo room:         {ws}/{room}?token={token}",
                f"  y-websocket:       new WebsocketProvider('{ws}', '{room}', doc, {{ params: {{ token }} }})",
            ]
        lines.append(
            f"  your own account:  POST {base}/api/auth/register {{email, password, name}}, "
            f"then POST {base}/api/auth/login"
        )
        print("\n".join(lines) + "\n", flush=True)

    app.on_startup.append(print_how_to_connect)
    return app


if __name__ == "__main__":
    run_service("exe-collab", _build)
