"""The project's services as real child processes (for SIGKILL and restart tests)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from stack.servers import Service


class ServiceProcess(Service):
    """`python -m <module>` with the test run's environment plus `env`, its log in `log_dir`;
    started once `/healthcheck` answers. `http_url`, `ws_url` as for an InProcessServer."""

    def __init__(
        self,
        module: str,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        port: int | None = None,
        log: Path | None = None,
    ) -> None:
        super().__init__(module, {**os.environ, **env}, log_dir, port=port, log=log)

    def log_text(self) -> str:
        """The whole log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
