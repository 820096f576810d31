"""The RQ deploy job: take the app, choose the newest push, fetch, build, deploy, confirm, prune.

`deploy(deployment_id)` runs in an RQ work horse. It reports the deployment as pending, then
tries to take the app's lock with every deployment waiting for it (`pipeline.queueing`);
when another worker holds the app it returns "waiting" and leaves the work to that worker.
With the lock it fetches every waiting commit, lets `pipeline.core.ordering` pick the one to
build (the others end superseded or stale), and moves that record through building,
deploying and succeeded or failed, streaming the build log into Redis.

An expected failure (fetch, build, rollout) ends the job normally with the deployment
failed and its reason; anything unexpected (an RQ timeout included) also fails the
deployment and is then re-raised once, so that RQ files it with the traceback. Whatever
happens, the lock is released and a job is enqueued for pushes that arrived meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import docker
import git
import redis
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from pipeline import appdata, engine, metrics, notify, queueing
from pipeline import git as gitops
from pipeline.apps import load_full_config
from pipeline.core import deployment as states
from pipeline.core.config import App, Config, Platform
from pipeline.core.deployment import Deployment, new_deployment_id
from pipeline.core.ordering import Candidate, choose
from pipeline.core.redact import hidden_values, redact
from pipeline.core.render import STACK_SERVICE, render_dockerfile, render_stack
from pipeline.core.rollout import CONFIG_REPLICAS_LABEL, desired_replicas, update_started_at
from pipeline.errors import BuildError, ConfigError, DeployError, FetchError, RolloutError
from pipeline.queueing import LOCK_TTL_S, LockKeeper
from pipeline.reporting import Reporter
from pipeline.settings import Settings
from pipeline.store import AppQueue, Store, forget_running

log = logging.getLogger(__name__)

GENERATED_DOCKERFILE = ".nephelios.Dockerfile"
ROLLOUT_TIMEOUT_S = 300
QUIET_S = 2.0
# Swarm's default stop grace period is 10 s; give replaced tasks that and some margin.
OLD_TASKS_STOP_S = 30
MAX_SETTLE_S = 15.0
# Swarm holds a task in "starting" until its health check passes; without one, a started
# container counts as up, and a start-first update stops the old task at once.
NO_HEALTHCHECK = (
    "warning: no health check (neither `health` nor a HEALTHCHECK in the image): Swarm "
    "counts a started container as serving, so a version that crashes just after starting "
    "can stop the old task before Swarm rolls back; set `health` to gate rollouts"
)


def image_tag(app: App, platform: Platform, commit: str) -> str:
    repository = f"{platform.registry.rstrip('/')}/{app.name}" if platform.registry else app.name
    return f"{repository}:{commit[:12]}"


@dataclass
class Recorder:
    """Saves state changes of an app's deployments and reports them to GitHub."""

    store: Store
    reporter: Reporter
    app: App

    def move(self, deployment: Deployment, status: str, error: str = "") -> None:
        error = redact(error, hidden_values(self.app, self.reporter.token))
        deployment.move(status, error)
        self.store.save(deployment)
        fields = states.log_fields(self.app.name, deployment.id, deployment.trigger)
        log.info("%s %s: %s %s", self.app.name, deployment.id, status, error, extra=fields)
        self.reporter.report(deployment, self.app.repo)


@dataclass
class Context:
    """What one deploy (or rollback) works with."""

    settings: Settings
    config: Config
    store: Store
    deployment: Deployment
    app: App
    engine: docker.DockerClient
    reporter: Reporter | None = None
    keeper: LockKeeper | None = None

    def log(self, line: str) -> None:
        self.store.append_log(self.deployment.id, self.redact(line))

    def redact(self, text: str) -> str:
        """`text` without the app's env values and build args (see pipeline.core.redact)."""
        return redact(text, hidden_values(self.app, self.settings.github_token))

    def move(self, status: str, error: str = "") -> None:
        error = self.redact(error)
        self.deployment.move(status, error)
        self.store.save(self.deployment)
        log.info(
            "%s %s: %s %s", self.app.name, self.deployment.id, status, error, extra=self.fields
        )
        reporter = self.reporter or Reporter.from_settings(self.settings)
        reporter.report(self.deployment, self.app.repo)

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
    """RQ entry point; returns what became of this job's deployment (or "waiting")."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("pipeline.jobs.deploy must run inside an RQ job")
    connection: redis.Redis = job.connection
    store = Store(connection)
    deployment = store.get(deployment_id)
    if deployment is None:
        log.error("deployment %s: no record; nothing to do", deployment_id)
        return "missing"
    app_queue = AppQueue(connection, deployment.app)
    try:
        settings = Settings.from_env()  # read per job: secret files and config may change
        config = load_full_config(settings)  # nephelios.yml plus apps made by the admin API
    except ConfigError as exc:
        # A secret file gone or nephelios.yml broken: say so on the deployments rather than
        # crash every job and leave them queued while the reaper re-kicks them.
        fail_waiting(store, app_queue, f"the worker cannot start the deploy: {exc}")
        return "failed"
    app = config.apps.get(deployment.app)
    reporter = Reporter.from_settings(settings)
    if app is not None:
        report_pending(store, reporter, app, deployment)

    if not hold_app(settings, config, store, reporter, app_queue, app):
        log.info("%s %s: the app is busy or its work was taken", deployment.app, deployment_id)
        return "waiting"
    final = store.get(deployment_id)
    return final.status if final is not None else "missing"


def fail_waiting(store: Store, app_queue: AppQueue, reason: str) -> None:
    """Fail everything waiting for the app (unless another worker holds it)."""
    token = new_deployment_id()
    claimed = app_queue.claim(token, LOCK_TTL_S)
    try:
        for deployment_id in store.fail_unfinished(claimed, reason):
            log.error("%s %s: %s", app_queue.app, deployment_id, reason)
    finally:
        forget_running(store.redis, *claimed)
        if claimed:
            app_queue.release(token)


def hold_app(
    settings: Settings,
    config: Config,
    store: Store,
    reporter: Reporter,
    app_queue: AppQueue,
    app: App | None,
) -> bool:
    """Take the app with everything waiting and work through it; False when it was busy."""
    token = new_deployment_id()
    claimed = app_queue.claim(token, LOCK_TTL_S)
    if not claimed:
        return False
    try:
        with LockKeeper(app_queue, token) as keeper:
            if app is None:
                store.fail_unfinished(claimed, f"app {app_queue.app!r} is no longer configured")
            else:
                take_turn(settings, config, Recorder(store, reporter, app), app, claimed, keeper)
                settle(store, app_queue)
    finally:
        # Fail what this turn took but never decided (it ended early): nothing stays queued.
        store.fail_unfinished(claimed, "the deploy job ended before deciding this push")
        forget_running(store.redis, *claimed)
        if app_queue.release(token):
            hand_over(settings, store.redis, app_queue, app)
    return True


def hand_over(
    settings: Settings, connection: redis.Redis, app_queue: AppQueue, app: App | None
) -> None:
    """Enqueue a job for the pushes that arrived while this worker held the app."""
    waiting = app_queue.waiting()
    if waiting:
        timeout_s = app.build_timeout_s if app is not None else 60
        queueing.enqueue_job(connection, settings.queue_name, waiting[-1], timeout_s, app_queue.app)


def settle(store: Store, app_queue: AppQueue) -> None:
    """Before handing the app over, let a burst of pushes finish arriving (bounded wait).

    Without this, a burst longer than one build becomes a build per build time; with it,
    the next turn starts once pushes have been quiet for QUIET_S (or after MAX_SETTLE_S),
    so a burst costs at most two builds: its first push and its last.
    """
    deadline = time.monotonic() + MAX_SETTLE_S
    while time.monotonic() < deadline:
        waiting = app_queue.waiting()
        newest = store.get(waiting[-1]) if waiting else None
        if newest is None:
            return
        quiet_s = time.time() - newest.created_at
        if quiet_s >= QUIET_S:
            return
        time.sleep(min(QUIET_S - quiet_s, deadline - time.monotonic()) + 0.05)


def report_pending(store: Store, reporter: Reporter, app: App, deployment: Deployment) -> None:
    if deployment.status != states.QUEUED:
        return
    reporter.report(deployment, app.repo)
    # Another worker may have decided this deployment while the status was on its way;
    # make sure GitHub ends with the final word, not "pending".
    again = store.get(deployment.id)
    if again is not None and again.finished:
        reporter.report(again, app.repo)


def take_turn(
    settings: Settings,
    config: Config,
    recorder: Recorder,
    app: App,
    claimed: list[str],
    keeper: LockKeeper,
) -> None:
    """Decide among the claimed deployments and run the winner, if any."""
    store = recorder.store
    found = (store.get(deployment_id) for deployment_id in claimed)
    pending = [d for d in found if d is not None and not d.finished]
    client = engine.client()
    repo = gitops.cache_repo(settings.git_cache_dir, app.name)
    url = app.clone_url(config.platform)

    if not pending:
        return
    newest = pending[-1]
    fields = states.log_fields(app.name, newest.id, newest.trigger)
    with metrics.phase(store.redis, "fetch", fields):
        pending = resolve_tags(settings, recorder, url, pending)
        fetched = fetch_all(settings, recorder, repo, url, pending)
        live = live_commit(client, app, repo, url, settings.github_token)

    verdict = choose(
        [Candidate(d.id, d.commit, forced=not is_push(d)) for d in fetched],
        live,
        lambda older, newer: _is_ancestor(repo, older, newer),
    )
    by_id = {d.id: d for d in fetched}
    for deployment_id, winner_id in verdict.superseded.items():
        newer = by_id[winner_id]
        reason = f"superseded by {newer.id} ({newer.short_commit})"
        recorder.move(by_id[deployment_id], states.SUPERSEDED, reason)
    for deployment_id, reason in verdict.stale.items():
        recorder.move(by_id[deployment_id], states.STALE, reason)
    if verdict.winner is not None:
        winner = by_id[verdict.winner]
        ctx = Context(settings, config, store, winner, app, client, recorder.reporter, keeper)
        run_guarded(ctx, repo)


def resolve_tags(
    settings: Settings, recorder: Recorder, url: str, pending: list[Deployment]
) -> list[Deployment]:
    """Give each release's deployment the commit its tag names, claimed like a push's commit.

    A release is queued with its tag only (pipeline.intake). A tag that cannot be resolved
    fails its deployment; a commit already queued or deployed for the app under another
    deployment makes it stale, so a commit is never built twice whatever brought it.
    """
    app = recorder.app.name
    store = recorder.store
    kept: list[Deployment] = []
    for deployment in pending:
        if deployment.commit:
            kept.append(deployment)
            continue
        try:
            commit = gitops.tagged_commit(url, deployment.ref, settings.github_token)
        except FetchError as exc:
            recorder.move(deployment, states.FAILED, str(exc))
            continue
        deployment.commit = commit
        store.append_log(deployment.id, f"{deployment.ref} points at {commit}")
        if not store.claim_work(app, commit, deployment.id):
            earlier = store.claimed_by(app, commit)
            if earlier != deployment.id:
                reason = f"commit {commit[:12]} was already queued as {earlier or 'another'}"
                recorder.move(deployment, states.STALE, reason)
                continue
        store.save(deployment)
        kept.append(deployment)
    return kept


def fetch_all(
    settings: Settings, recorder: Recorder, repo: git.Repo, url: str, pending: list[Deployment]
) -> list[Deployment]:
    """Fetch every pending commit; fail those that cannot be fetched; keep arrival order."""
    fetched: list[Deployment] = []
    # Newest first: its fetch usually brings the older commits of a burst along.
    for deployment in reversed(pending):
        if deployment.image:
            # A rollback needs no source; a remote that is down must not stop it.
            fetched.insert(0, deployment)
            continue
        recorder.store.append_log(deployment.id, f"fetching {deployment.commit}")
        try:
            gitops.fetch_commit(repo, url, deployment.commit, settings.github_token)
        except FetchError as exc:
            recorder.move(deployment, states.FAILED, str(exc))
            continue
        fetched.insert(0, deployment)
    return fetched


def is_push(deployment: Deployment) -> bool:
    # Pushes carry their delivery id (pipeline.intake); API and CLI calls name themselves.
    return deployment.trigger.startswith("delivery:")


def live_commit(
    client: docker.DockerClient, app: App, repo: git.Repo, url: str, token: str
) -> str | None:
    """The commit the app's service runs now, fetched so that ancestry can be checked."""
    service = engine.inspect_service(client, f"{app.name}_{STACK_SERVICE}")
    if service is None:
        return None
    commit = service.get("Spec", {}).get("Labels", {}).get(engine.COMMIT_LABEL)
    if not isinstance(commit, str):
        return None
    try:
        gitops.fetch_commit(repo, url, commit, token)
    except FetchError as exc:
        # Equality with the live commit is still detected; ancestry is not.
        log.warning("%s: live commit %s not fetchable: %s", app.name, commit[:12], exc)
    return commit


def _is_ancestor(repo: git.Repo, older: str, newer: str) -> bool:
    try:
        return gitops.is_ancestor(repo, older, newer)
    except FetchError:
        return False


def run_guarded(ctx: Context, repo: git.Repo) -> None:
    try:
        run(ctx, repo)
    except BuildError as exc:
        ctx.deployment.log_tail = ctx.redact(exc.log_tail)
        ctx.move(states.FAILED, str(exc))
    except DeployError as exc:
        ctx.move(states.FAILED, str(exc))
    except JobTimeoutException:
        ctx.move(states.FAILED, f"timed out (build_timeout_s is {ctx.app.build_timeout_s})")
        raise
    except BaseException as exc:
        ctx.move(states.FAILED, f"internal error ({type(exc).__name__}); see the worker log")
        raise
    finally:
        ctx.report()


def run(ctx: Context, repo: git.Repo) -> None:
    deployment = ctx.deployment
    if deployment.image:
        # A rollback (pipeline.rollback): the image was built before and is on the engine.
        if not engine.has_image(ctx.engine, deployment.image):
            raise DeployError(f"image {deployment.image} is no longer on the engine (pruned)")
        ctx.move(states.DEPLOYING)
        ctx.log(f"rolling back to {deployment.image}; no build")
        go_live(ctx, deployment.image)
        return
    ctx.move(states.BUILDING)

    with ctx.phase("build"):
        tag = build(ctx, repo)
    deployment.image = tag
    if ctx.keeper is not None and ctx.keeper.lost:
        raise DeployError("lost the app's lock during the build; not deploying")
    ctx.move(states.DEPLOYING)
    go_live(ctx, tag)


def go_live(ctx: Context, tag: str) -> None:
    """Deploy `tag` as the app's stack, confirm the rollout, then prune (deploy and rollback)."""
    app, platform, deployment = ctx.app, ctx.config.platform, ctx.deployment
    service_name = f"{app.name}_{STACK_SERVICE}"
    # Every service of the stack as it was, web first: each rollout is judged against it.
    befores = {
        name: engine.inspect_service(ctx.engine, f"{app.name}_{name}")
        for name in (STACK_SERVICE, *app.processes)
    }
    before = befores[STACK_SERVICE]
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
    if app.health is None and not engine.has_healthcheck(ctx.engine, tag):
        ctx.log(NO_HEALTHCHECK)
    ctx.log(f"docker stack deploy {app.name} ({replicas} replicas of {tag})")
    with ctx.phase("deploy"):
        deploy_stack(ctx, stack_file, first=before is None)

    with ctx.phase("rollout"):
        confirm_rollout(ctx, tag, befores)
    ctx.move(states.SUCCEEDED)

    removed = prune(ctx, service_name, tag)
    removed += appdata.prune_secrets(ctx.engine, app.name, keep=set(secret_names.values()))
    if removed:
        ctx.log(f"pruned {', '.join(removed)}")


def confirm_rollout(ctx: Context, tag: str, befores: dict[str, dict[str, Any] | None]) -> None:
    """Watch each service of the stack (web, then the processes) until it runs `tag`.

    They roll out side by side, so one deadline covers them all. A process that Swarm rolls
    back fails the deployment too, naming the process: the web service may already serve
    the new version, and the record must not say that all of it went live.
    """
    deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
    for name, before in befores.items():
        progress = engine.watch_rollout(
            ctx.engine,
            f"{ctx.app.name}_{name}",
            tag,
            update_started_at(before),
            before is not None,
            max(deadline - time.monotonic(), 1.0),
        )
        what = "" if name == STACK_SERVICE else f"process {name}: "
        ctx.log(f"rollout: {what}{progress.reason}")
        if not progress.ok:
            raise RolloutError(f"{what}{progress.reason}")


def prune(ctx: Context, service_name: str, tag: str) -> list[str]:
    """Remove the app's images beyond `keep_images`; the removed tags.

    An image still used by a replaced task (in Swarm's stop grace period, 10 s by default)
    cannot go yet. Only then is that task waited for, so that the app's lock, and the next
    push, do not wait on the grace period when nothing needs it.
    """
    keep = ctx.config.platform.keep_images
    # Rollbacks waiting for the app go back to images chosen when they were asked for.
    waiting = (ctx.store.get(i) for i in AppQueue(ctx.store.redis, ctx.app.name).waiting())
    live = {tag} | {d.image for d in waiting if d is not None and d.image}
    removed, in_use = engine.prune_images(ctx.engine, ctx.app.name, keep, live)
    if not in_use:
        return removed
    if not engine.wait_old_tasks_stopped(ctx.engine, service_name, OLD_TASKS_STOP_S):
        ctx.log("old tasks still stopping; their images are pruned on a later deploy")
        return removed
    return removed + engine.prune_images(ctx.engine, ctx.app.name, keep, live)[0]


def deploy_stack(ctx: Context, stack_file: str, first: bool) -> None:
    """`docker stack deploy`; when a first deploy fails, take down what it made of the stack."""
    try:
        engine.stack_deploy(ctx.app.name, stack_file, bool(ctx.config.platform.registry))
    except DeployError:
        # The CLI creates services one by one and stops at the first refusal; with no
        # earlier version to keep, the services it did create would run half an app.
        if first:
            engine.stack_rm(ctx.app.name)
            ctx.log(f"removed the half-made stack {ctx.app.name}")
        raise


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
