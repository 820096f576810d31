"""The work behind a push: config, queueing, git, image builds, Swarm stacks and Traefik.

`pipeline.core` decides and never touches Redis, Docker, git or the network; the modules
beside it act, thinly. Nothing here imports `webhooks`.
"""
