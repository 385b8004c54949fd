"""`python -m services.persistence`: the persistence worker."""

from services.persistence.app import run

if __name__ == "__main__":
    run()
