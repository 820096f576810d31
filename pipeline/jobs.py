"""The RQ deploy job: fetch, build, deploy, confirm the rollout, prune.

`deploy(deployment_id)` runs in an RQ work horse. It reads the deployment record and the
config, moves the record through building, deploying and succeeded or failed, and streams
the build log into Redis. An expected failure (fetch, build, rollout) ends the job normally
with the deployment failed and its reason; anything unexpected also fails the deployment and
is then re-raised once, so that RQ files it in its failed-job registry with the traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import docker
import git
from rq import get_current_job

from pipeline import appdata, engine, metrics, notify
from pipeline import git as gitops
from pipeline.apps import load_full_config
from pipeline.core import deployment as states
from pipeline.core.config import App, Config, Platform
from pipeline.core.deployment import Deployment
from pipeline.core.render import STACK_SERVICE, render_dockerfile, render_stack
from pipeline.core.rollout import CONFIG_REPLICAS_LABEL, desired_replicas, update_started_at
from pipeline.errors import BuildError, DeployError, RolloutError
from pipeline.settings import Settings
from pipeline.store import Store

log = logging.getLogger(__name__)

GENERATED_DOCKERFILE = ".nephelios.Dockerfile"
ROLLOUT_TIMEOUT_S = 300


def image_tag(app: App, platform: Platform, commit: str) -> str:
    repository = f"{platform.registry.rstrip('/')}/{app.name}" if platform.registry else app.name
    return f"{repository}:{commit[:12]}"


@dataclass
class Context:
    """What one deploy job works with."""

    settings: Settings
    config: Config
    store: Store
    deployment: Deployment
    app: App
    engine: docker.DockerClient

    def log(self, line: str) -> None:
        self.store.append_log(self.deployment.id, line)

    def move(self, status: str, error: str = "") -> None:
        self.deployment.move(status, error)
        self.store.save(self.deployment)
        log.info(
            "%s %s: %s %s", self.app.name, self.deployment.id, status, error, extra=self.fields
        )

    # --- operations: structured log fields, phase timings, the end-of-deployment report ---

    @property
    def fields(self) -> dict[str, str]:
        """Who a log line is about: app, deployment and, for a push, the delivery id."""
        return states.log_fields(self.app.name, self.deployment.id, self.deployment.trigger)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        with metrics.phase(self.store.redis, name, self.fields):
            yield

    def report(self) -> None:
        """Count the final status and send the configured notifications."""
        if not self.deployment.finished:
            return
        metrics.count_deployment(self.store.redis, self.app.name, self.deployment.status)
        notify.deployment_finished(
            self.config.platform.notify, self.deployment, self.app.domains, self.fields
        )


def deploy(deployment_id: str) -> str:
    """RQ entry point; returns the deployment's final status."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("pipeline.jobs.deploy must run inside an RQ job")
    settings = Settings.from_env()
    store = Store(job.connection)
    deployment = store.get(deployment_id)
    if deployment is None:
        log.error("deployment %s: no record; nothing to do", deployment_id)
        return "missing"
    config = load_full_config(settings)  # nephelios.yml plus apps made by the admin API
    app = config.apps.get(deployment.app)
    if app is None:
        deployment.move(states.FAILED, f"app {deployment.app!r} is no longer configured")
        store.save(deployment)
        return deployment.status
    ctx = Context(settings, config, store, deployment, app, engine.client())
    try:
        run(ctx)
    except DeployError as exc:
        ctx.move(states.FAILED, str(exc))
    except BaseException:
        ctx.move(states.FAILED, "internal error; see the worker log")
        raise
    finally:
        ctx.report()
    return deployment.status


def run(ctx: Context) -> None:
    app, platform, deployment = ctx.app, ctx.config.platform, ctx.deployment
    ctx.move(states.BUILDING)

    repo = gitops.cache_repo(ctx.settings.git_cache_dir, app.name)
    ctx.log(f"fetching {deployment.commit} of {app.repo}")
    with ctx.phase("fetch"):
        gitops.fetch_commit(repo, app.clone_url(platform), deployment.commit)

    with ctx.phase("build"):
        tag = build(ctx, repo)
    deployment.image = tag
    ctx.move(states.DEPLOYING)

    service_name = f"{app.name}_{STACK_SERVICE}"
    before = engine.inspect_service(ctx.engine, service_name)
    replicas = desired_replicas(app.replicas, before)
    labels = {
        engine.APP_LABEL: app.name,
        engine.COMMIT_LABEL: deployment.commit,
        engine.DEPLOYMENT_LABEL: deployment.id,
        CONFIG_REPLICAS_LABEL: str(app.replicas),
    }
    secret_names = appdata.latest_secrets(ctx.engine, app.name) if app.secrets else {}
    stack_file = render_stack(
        app, platform, tag, replicas, labels, secret_names, *stack_image_argv(ctx, tag)
    )
    ctx.log(f"docker stack deploy {app.name} ({replicas} replicas of {tag})")
    with ctx.phase("deploy"):
        engine.stack_deploy(app.name, stack_file, registry_auth=bool(platform.registry))

    with ctx.phase("rollout"):
        progress = engine.watch_rollout(
            ctx.engine,
            service_name,
            tag,
            update_started_at(before),
            before is not None,
            ROLLOUT_TIMEOUT_S,
        )
    ctx.log(f"rollout: {progress.reason}")
    if not progress.ok:
        raise RolloutError(progress.reason)
    ctx.move(states.SUCCEEDED)

    removed = engine.prune_images(ctx.engine, app.name, platform.keep_images, live={tag})
    removed += appdata.prune_secrets(ctx.engine, app.name, keep=set(secret_names.values()))
    if removed:
        ctx.log(f"pruned {', '.join(removed)}")


def stack_image_argv(ctx: Context, tag: str) -> tuple[list[str], list[str]]:
    # Only a stack that exports secrets as variables replaces the image's entrypoint, and
    # then has to pass the image's own entrypoint and cmd on as arguments.
    if not any(use.env for use in ctx.app.secrets.values()):
        return [], []
    return engine.image_argv(ctx.engine, tag)


def build(ctx: Context, repo: git.Repo) -> str:
    app, platform, deployment = ctx.app, ctx.config.platform, ctx.deployment
    options = app.build
    if options.context != "." and not gitops.has_file(repo, deployment.commit, options.context):
        raise BuildError(f"build context {options.context!r} is not in the commit")
    extra = {}
    dockerfile = options.dockerfile
    in_repo = dockerfile if options.context == "." else f"{options.context}/{dockerfile}"
    if not gitops.has_file(repo, deployment.commit, in_repo):
        dockerfile = GENERATED_DOCKERFILE
        extra[GENERATED_DOCKERFILE] = render_dockerfile(app, platform)
        ctx.log(f"no {in_repo} in the repository; using the {app.type} template")
    context = gitops.build_context(repo, deployment.commit, extra, options.context)
    tag = image_tag(app, platform, deployment.commit)
    labels = {engine.APP_LABEL: app.name, engine.COMMIT_LABEL: deployment.commit}
    engine.build_image(
        ctx.engine,
        context,
        tag,
        labels,
        dockerfile,
        ctx.log,
        app.build_timeout_s,
        target=options.target,
        buildargs=options.args,
    )
    if platform.registry:
        engine.push_image(ctx.engine, tag, ctx.log)
    return tag
