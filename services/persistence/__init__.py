"""Persistence worker: moves accepted updates from the Redis log into the database and compacts them."""
