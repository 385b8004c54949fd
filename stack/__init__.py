"""The HA topology from real processes on loopback: `make stack`, tests, benchmarks.

    from stack import Stack
    with Stack.start(collab=2, gateway=2) as s:
        ...  # s.url is nginx; s.collab_instances are the collab processes

See stack/stack.py for the API, stack/nginx.py for how the project's nginx
configuration (deploy/nginx/) is rendered, `python -m stack --help` for the CLI.
"""

from stack.processes import StackError
from stack.stack import DEFAULT_RUN_DIR, Instance, Stack, persistence_available

__all__ = ["DEFAULT_RUN_DIR", "Instance", "Stack", "StackError", "persistence_available"]
