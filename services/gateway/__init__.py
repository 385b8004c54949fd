"""Gateway service: HTTP API (auth, projects, members, assets, documents), health."""
