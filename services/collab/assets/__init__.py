"""eXeLearning's asset coordinator on the WebSocket (docs/architecture.md, "Asset coordination").

`codec` reads and writes control frames, `decisions` holds the pure choices
(who is asked, what waits, the limits), `store` the coordinator's shared state
in memory (single instance) and `redis_store` in Redis (multi-instance), and
`coordinator` answers each message.
"""
