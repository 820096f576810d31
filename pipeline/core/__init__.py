"""The pure core: config, GitHub events, rendering and rollout planning.

Nothing in this package performs I/O beyond reading the files it is handed, and nothing
imports starlette, redis, rq, docker or git, so all of it is testable on plain data.
"""
