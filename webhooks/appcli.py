"""`nephelios secret set|ls` and `nephelios volume rm`: the app model's CLI.

`secret set APP NAME` reads the value from stdin (one trailing newline dropped, so `echo`
works; from a terminal it prompts without echo), stores it as a new Docker secret version
and, when the app is deployed, queues a redeploy of the running commit so the services pick
it up. The value is never printed, logged, put in a job argument or in Redis; only its
Docker name is shown.
"""

from __future__ import annotations

import argparse
import getpass
import sys

import docker

from pipeline import appdata, engine, platform
from pipeline.core.config import App, Config
from pipeline.core.render import STACK_SERVICE
from pipeline.errors import NepheliosError
from pipeline.queueing import enqueue_deployment
from pipeline.settings import Settings
from webhooks.app import connect_redis
from webhooks.up import stored_secret

MAX_SECRET_BYTES = 500 * 1024  # Docker's own limit for a secret


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    secret = commands.add_parser("secret", help="set or list an app's secrets")
    actions = secret.add_subparsers(dest="action", required=True)
    set_ = actions.add_parser("set", help="store a secret's value, read from stdin")
    set_.add_argument("app")
    set_.add_argument("name")
    set_.add_argument("--no-deploy", action="store_true", help="do not roll the app out now")
    list_ = actions.add_parser("ls", help="list an app's secrets (names and versions)")
    list_.add_argument("app")
    volume = commands.add_parser("volume", help="remove a removed app's volumes")
    volume_actions = volume.add_subparsers(dest="action", required=True)
    remove = volume_actions.add_parser("rm", help="remove the named volumes of an app")
    remove.add_argument("app")


def cmd_secret(settings: Settings, config: Config, args: argparse.Namespace) -> int:
    app = _app(config, args.app)
    client = platform.connect()
    if args.action == "ls":
        for name, docker_name in sorted(appdata.latest_secrets(client, app.name).items()):
            print(f"{name}\t{docker_name}")
        return 0
    if args.name not in app.secrets:
        raise NepheliosError(f"{config.source}: apps.{app.name}.secrets has no {args.name!r}")
    if sys.stdin.isatty():
        # Typed by hand: do not echo it to the terminal.
        typed = getpass.getpass(f"{app.name} {args.name}: ").encode()
        value = _read_value(typed)
    else:
        value = _read_value(sys.stdin.buffer.read(MAX_SECRET_BYTES + 1))
    key = stored_secret(settings.state_dir / "secret-key").encode()
    docker_name, created = appdata.set_secret(client, app.name, args.name, value, key)
    print(f"{app.name} {args.name}: {'stored as' if created else 'unchanged,'} {docker_name}")
    if created and not args.no_deploy:
        _redeploy(settings, client, app)
    return 0


def _read_value(value: bytes) -> bytes:
    if len(value) > MAX_SECRET_BYTES:
        raise NepheliosError("a secret value may be at most 500 KiB")
    value = value[:-1] if value.endswith(b"\n") else value
    if not value:
        raise NepheliosError("no value on stdin")
    return value


def _redeploy(settings: Settings, client: docker.DockerClient, app: App) -> None:
    service = engine.inspect_service(client, f"{app.name}_{STACK_SERVICE}")
    commit = (service or {}).get("Spec", {}).get("Labels", {}).get(engine.COMMIT_LABEL)
    if not commit:
        print(f"{app.name} is not deployed; the next deploy uses the new value")
        return
    deployment = enqueue_deployment(
        connect_redis(settings.redis_url),
        settings.queue_name,
        app,
        commit,
        f"refs/heads/{app.branch}",
        "cli:secret",
    )
    print(f"{app.name}: redeploying {commit[:12]} (deployment {deployment.id})")


def cmd_volume(settings: Settings, config: Config, args: argparse.Namespace) -> int:
    removed = appdata.remove_volumes(platform.connect(), args.app)
    print(f"{args.app}: removed {', '.join(removed) or 'no volumes'}")
    return 0


def _app(config: Config, name: str) -> App:
    app = config.apps.get(name)
    if app is None:
        raise NepheliosError(f"{config.source}: no app {name!r}")
    return app
