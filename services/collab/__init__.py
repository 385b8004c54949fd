"""Collab service: WebSocket rooms, Yjs sync, fan-out between instances."""
