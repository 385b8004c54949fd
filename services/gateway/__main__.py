"""`python -m services.gateway`: the gateway service alone."""

from services.gateway.app import create_app
from shared.runner import run_service

if __name__ == "__main__":
    run_service("gateway", create_app)
