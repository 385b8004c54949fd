"""`python -m services.collab`: the collab service alone."""

from services.collab.app import create_app
from shared.runner import run_service

if __name__ == "__main__":
    run_service("collab", create_app)
