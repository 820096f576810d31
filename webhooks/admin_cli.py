"""`nephelios apps | create | deploy | scale | remove | rollback | logs`: the admin API's client.

Each command is one or a few HTTP calls to the API at `--url` (default `NEPHELIOS_URL`, else
`http://127.0.0.1:$NEPHELIOS_PORT`) with the token from `NEPHELIOS_ADMIN_TOKEN`; it prints a
table or a short line, or with `--json` the API's JSON. `--follow` polls the deployment
until it is finished, printing status changes and new log lines as they come.

Exit status, for scripts: 0 done (a followed deployment succeeded); 1 the API refused the call
(4xx) or a followed deployment failed; 3 the API could not be reached or failed (5xx); 2 is
left to usage errors, as argparse does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from pipeline.core.deployment import SUCCEEDED
from pipeline.errors import NepheliosError
from pipeline.settings import Settings

REFUSED = 1
UNREACHABLE = 3
FOLLOW_POLL_S = 0.5
HTTP_TIMEOUT_S = 120.0  # `remove` waits for Swarm to let go of the stack


class ApiError(NepheliosError):
    def __init__(self, message: str, exit_status: int) -> None:
        self.exit_status = exit_status
        super().__init__(message)


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        # The scheme was checked to be http(s) in `api_of`.
        request = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            status = REFUSED if exc.code < 500 else UNREACHABLE
            raise ApiError(f"{exc.code}: {_reason(exc)}", status) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"cannot reach {self.url}: {reason}", UNREACHABLE) from exc


def _reason(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"])
    except (ValueError, KeyError, TypeError):
        return str(exc.reason)


def api_of(settings: Settings, args: argparse.Namespace) -> Api:
    url = args.url or os.environ.get("NEPHELIOS_URL") or f"http://127.0.0.1:{settings.port}"
    if not url.startswith(("http://", "https://")):
        raise ApiError(f"--url / NEPHELIOS_URL: expected an http(s) URL (got {url!r})", 2)
    return Api(url, settings.admin_token)


def run(command: Callable[[Api, argparse.Namespace], int]) -> Callable[..., int]:
    def func(settings: Settings, args: argparse.Namespace) -> int:
        try:
            return command(api_of(settings, args), args)
        except ApiError as exc:
            print(f"nephelios: {exc}", file=sys.stderr)
            return exc.exit_status

    return func


def emit(args: argparse.Namespace, body: Any, text: str) -> None:
    print(json.dumps(body, indent=2) if args.json else text)


# --- commands --------------------------------------------------------------------------------


def cmd_apps(api: Api, args: argparse.Namespace) -> int:
    if args.name:
        app = api.call("GET", f"/apps/{urllib.parse.quote(args.name, safe='')}")
        emit(args, app, describe(app))
        return 0
    apps = api.call("GET", "/apps")["apps"]
    rows = [["NAME", "SOURCE", "TYPE", "COMMIT", "REPLICAS", "URL"]]
    for app in apps:
        live = app["live"]
        replicas = live.get("replicas") or {}
        count = f"{replicas.get('running', 0)}/{replicas.get('desired', 0)}" if replicas else "-"
        rows.append(
            [
                app["app_name"],
                app["source"],
                app["app_type"],
                str(live.get("commit", ""))[:12] or "-",
                count,
                (live.get("urls") or ["-"])[0],
            ]
        )
    emit(args, apps, table(rows))
    return 0


def describe(app: dict[str, Any]) -> str:
    live = app["live"]
    replicas = live.get("replicas") or {}
    lines = [
        f"{app['app_name']} ({app['app_type']}, from {app['source']}): "
        f"{app['repo']} branch {app['branch']}",
        f"  urls:     {', '.join(live.get('urls', []))}",
        f"  image:    {live.get('image', '-')}  commit {str(live.get('commit', '-'))[:12]}",
        f"  replicas: {replicas.get('running', 0)} running / {replicas.get('desired', 0)} desired",
        f"  env:      {', '.join(app['env']) or '-'}",
        "  recent deployments:",
    ]
    for d in app.get("deployments", []):
        lines.append(f"    {d['id']}  {d['status']:<10} {d['commit'][:12]}  {d['trigger']}")
    return "\n".join(lines)


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def cmd_create(api: Api, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"app_name": args.name, "github_url": args.github_url}
    for key in ("app_type", "branch", "port", "replicas"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    if args.domain:
        body["domains"] = args.domain
    if args.env:
        body["env"] = dict(item.split("=", 1) for item in args.env)
    return queued(api, args, api.call("POST", "/create", body))


def cmd_deploy(api: Api, args: argparse.Namespace) -> int:
    body = {"commit": args.commit} if args.commit else {"ref": args.ref} if args.ref else {}
    return queued(api, args, api.call("POST", f"/apps/{_quoted(args.name)}/deploy", body))


def cmd_rollback(api: Api, args: argparse.Namespace) -> int:
    return queued(api, args, api.call("POST", f"/apps/{_quoted(args.name)}/rollback"))


def _quoted(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def queued(api: Api, args: argparse.Namespace, body: dict[str, Any]) -> int:
    if args.follow:
        return follow(api, args, body["deployment"])
    emit(args, body, f"queued deployment {body['deployment']} of {body['commit'][:12]}")
    return 0


def cmd_scale(api: Api, args: argparse.Namespace) -> int:
    body = api.call("POST", "/scale", {"app_name": args.name, "replicas": args.replicas})
    emit(args, body, f"{args.name}: {args.replicas} replicas")
    return 0


def cmd_remove(api: Api, args: argparse.Namespace) -> int:
    body = api.call("POST", "/remove", {"app_name": args.name})
    text = f"{args.name}: removed ({len(body['images'])} images)"
    emit(args, body, text + (f"\n{body['note']}" if "note" in body else ""))
    return 0


def cmd_logs(api: Api, args: argparse.Namespace) -> int:
    if args.follow:
        return follow(api, args, args.deployment)
    record = api.call("GET", f"/deployments/{_quoted(args.deployment)}")
    emit(args, record, "\n".join([*record["log"], status_line(record)]))
    return 0 if record["status"] != "failed" else REFUSED


def follow(api: Api, args: argparse.Namespace, deployment_id: str) -> int:
    """Poll the deployment, printing each status change and log line, until it is finished."""
    offset, seen = 0, 0
    while True:
        record = api.call("GET", f"/deployments/{_quoted(deployment_id)}?offset={offset}")
        if not args.json:
            # The history has every transition, even those that came and went between polls.
            for change in record["history"][seen:]:
                elapsed = change["at"] - record["created_at"]
                print(f"[{elapsed:6.1f}s] {deployment_id}: {change['status']}")
            for line in record["log"]:
                print(f"  | {line}")
            sys.stdout.flush()
        offset, seen = record["next_offset"], len(record["history"])
        if record["finished"]:
            emit(args, record, status_line(record))
            return 0 if record["status"] == SUCCEEDED else REFUSED
        time.sleep(FOLLOW_POLL_S)


def status_line(record: dict[str, Any]) -> str:
    error = f": {record['error']}" if record.get("error") else ""
    what = f"deployment {record['id']} of {record['app']} {record['commit'][:12]}"
    return f"{what}: {record['status']}{error}"


def add_commands(commands: Any) -> None:
    """Register the admin client's sub-commands on the `nephelios` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="admin API (default NEPHELIOS_URL or 127.0.0.1:PORT)")
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    follows = argparse.ArgumentParser(add_help=False)
    follows.add_argument("-f", "--follow", action="store_true", help="follow until finished")

    apps = commands.add_parser("apps", parents=[common], help="list apps, or show one")
    apps.add_argument("name", nargs="?")
    apps.set_defaults(func=run(cmd_apps))

    create = commands.add_parser("create", parents=[common, follows], help="create an app")
    create.add_argument("name")
    create.add_argument("github_url", help="https://github.com/o/n, o/n, or a local repo path")
    create.add_argument("--type", dest="app_type", choices=["static", "python", "nodejs"])
    create.add_argument("--branch")
    create.add_argument("--port", type=int)
    create.add_argument("--replicas", type=int)
    create.add_argument("--domain", action="append", help="repeat for several")
    create.add_argument("--env", action="append", metavar="NAME=VALUE", type=_env_item)
    create.set_defaults(func=run(cmd_create))

    deploy = commands.add_parser("deploy", parents=[common, follows], help="redeploy an app")
    deploy.add_argument("name")
    which = deploy.add_mutually_exclusive_group()
    which.add_argument("--ref", help="a branch or tag (default: the app's branch)")
    which.add_argument("--commit", help="a full commit id")
    deploy.set_defaults(func=run(cmd_deploy))

    scale = commands.add_parser("scale", parents=[common], help="run N replicas (0 stops)")
    scale.add_argument("name")
    scale.add_argument("replicas", type=int)
    scale.set_defaults(func=run(cmd_scale))

    remove = commands.add_parser("remove", parents=[common], help="remove an app's stack")
    remove.add_argument("name")
    remove.set_defaults(func=run(cmd_remove))

    rollback = commands.add_parser("rollback", parents=[common, follows], help="previous image")
    rollback.add_argument("name")
    rollback.set_defaults(func=run(cmd_rollback))

    logs = commands.add_parser("logs", parents=[common, follows], help="a deployment's log")
    logs.add_argument("deployment")
    logs.set_defaults(func=run(cmd_logs))


def _env_item(text: str) -> str:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (got {text.split('=')[0]!r})")
    return text
