"""The `nephelios` command: `up`, `serve`, `worker`, `edge`, and the admin API's client.

Start-up problems (a bad nephelios.yml, an unreachable engine) end the command with one line
on stderr naming what is wrong, and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pipeline.core.config import Config, load_config
from pipeline.errors import NepheliosError
from pipeline.settings import Settings
from webhooks.logs import setup_logging

log = logging.getLogger("nephelios")


def load(settings: Settings) -> Config:
    return load_config(settings.config_path, settings.max_replicas)


def load_checked(settings: Settings) -> Config:
    """nephelios.yml, after checking that the stored apps (`<state>/apps.json`) load with it:
    a broken file refuses start-up in one line, rather than failing each later request that
    reads it. Returns the file's config alone; the stored apps are re-read where used."""
    from pipeline.apps import with_stored

    config = load(settings)
    with_stored(settings, config)
    return config


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from webhooks.app import create_app

    # Without a secret every delivery would be refused (401): better not to start at all.
    if not settings.webhook_secret:
        raise NepheliosError(
            "NEPHELIOS_WEBHOOK_SECRET is not set: set it to the secret of the GitHub webhook, "
            "or NEPHELIOS_WEBHOOK_SECRET_FILE to a file holding it (`nephelios up` generates one)"
        )
    app = create_app(settings, load_checked(settings))
    log.info("receiver on %s:%d (%r)", args.host, settings.port, settings)
    # log_config=None: uvicorn logs through the root handler, so --log-format applies to it.
    uvicorn.run(
        app,
        host=args.host,
        port=settings.port,
        log_level="warning",
        log_config=None,
        access_log=False,
    )
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    import redis
    from rq import Queue

    from webhooks.rqworker import NepheliosWorker

    config = load_checked(settings)  # refuse to start on a bad config, not fail every job
    # No socket timeout here: RQ's blocking dequeue and its pub/sub thread wait on purpose,
    # and with a short timeout the pub/sub thread never notices the stop at shutdown.
    connection = redis.Redis.from_url(settings.redis_url)
    try:
        connection.ping()
    except redis.RedisError as exc:
        raise NepheliosError(f"Redis does not answer at REDIS_URL: {exc}") from exc
    worker = NepheliosWorker(
        [Queue(settings.queue_name, connection=connection)],
        connection=connection,
        settings=settings,
        config=config,
    )
    worker.work(burst=args.burst, logging_level=args.log_level.upper())
    return 0


def cmd_edge(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline import platform

    config = load(settings)
    client = platform.connect()
    platform.ensure_swarm(client, args.advertise_addr)
    platform.ensure_network(client, config.platform.edge_network)
    platform.ensure_edge(config.platform)
    print(f"edge router up on port {config.platform.http_port}")
    return 0


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from webhooks.up import up

    return up(settings, load_checked(settings), args)


# --- app model (issue 8): secrets and volumes ---
def cmd_secret(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.apps import load_full_config
    from webhooks.appcli import cmd_secret

    # Apps made by the admin API may declare secrets too.
    return cmd_secret(settings, load_full_config(settings), args)


def cmd_volume(settings: Settings, args: argparse.Namespace) -> int:
    from webhooks.appcli import cmd_volume

    return cmd_volume(settings, load(settings), args)


# Each worker is a Python process holding a Docker and a Redis connection; past a few dozen
# they only contend for the engine, and 100000 of them would take the host down.
MAX_WORKERS = 64


def worker_count(text: str) -> int:
    if not text.isdigit() or int(text) > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"expected 0 to {MAX_WORKERS} (got {text!r})")
    return int(text)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="nephelios", description=__doc__.splitlines()[0])
    root.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    root.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="one line per record"
    )
    commands = root.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run everything a single host needs")
    up.add_argument(
        "--workers",
        type=worker_count,
        default=2,
        help=f"deploy workers to start, 0 to {MAX_WORKERS} (0: none)",
    )
    up.add_argument("--advertise-addr", default="127.0.0.1", help="for `docker swarm init`")
    up.add_argument("--example", action="store_true", help="deploy the bundled example app")
    up.add_argument("--detach", action="store_true", help="exit once everything is up")
    up.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="seconds workers get to finish their deployment on SIGTERM/SIGINT",
    )
    up.add_argument("--edge-stack", default="nephelios", help="name of the Traefik stack")
    up.set_defaults(func=cmd_up)

    serve = commands.add_parser("serve", help="run the webhook receiver and admin API")
    serve.add_argument("--host", default="0.0.0.0")  # noqa: S104 - GitHub must reach it
    serve.set_defaults(func=cmd_serve)

    worker = commands.add_parser("worker", help="run one deploy worker")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.set_defaults(func=cmd_worker)

    edge = commands.add_parser("edge", help="ensure swarm, the edge network and Traefik")
    edge.add_argument("--advertise-addr", default="127.0.0.1")
    edge.set_defaults(func=cmd_edge)

    # The admin API's client (webhooks/admin_cli.py): apps, create, deploy, scale, remove,
    # rollback, logs.
    from webhooks.admin_cli import add_commands

    add_commands(commands)

    # --- app model (issue 8) ---
    from webhooks.appcli import add_parsers

    add_parsers(commands)
    commands.choices["secret"].set_defaults(func=cmd_secret)
    commands.choices["volume"].set_defaults(func=cmd_volume)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        settings = Settings.from_env()
        return int(args.func(settings, args))
    except NepheliosError as exc:
        print(f"nephelios: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
