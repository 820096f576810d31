"""Rollout judging and replica planning over service/task dicts shaped like Docker's JSON."""

from __future__ import annotations

from typing import Any

from pipeline.core.rollout import assess, desired_replicas

IMAGE = "site:aaaaaaaaaaaa"
OLD = "site:bbbbbbbbbbbb"


def service(
    image: str = IMAGE,
    replicas: int = 2,
    update: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    svc: dict[str, Any] = {
        "Spec": {
            "Labels": labels or {},
            "Mode": {"Replicated": {"Replicas": replicas}},
            "TaskTemplate": {"ContainerSpec": {"Image": image + "@sha256:" + "0" * 64}},
        }
    }
    if update:
        svc["UpdateStatus"] = update
    return svc


def task(image: str, state: str, desired: str = "running", err: str = "") -> dict[str, Any]:
    return {
        "DesiredState": desired,
        "Spec": {"ContainerSpec": {"Image": image}},
        "Status": {"State": state, "Err": err},
    }


def test_first_deploy_converges_when_all_replicas_run() -> None:
    tasks = [task(IMAGE, "running"), task(IMAGE, "starting")]
    assert not assess(service(), tasks, IMAGE, None, was_update=False).done
    tasks[1] = task(IMAGE, "running")
    progress = assess(service(), tasks, IMAGE, None, was_update=False)
    assert progress.done and progress.ok


def test_first_deploy_fails_when_tasks_keep_dying() -> None:
    tasks = [task(IMAGE, "failed", "shutdown", "task: non-zero exit (1)")] * 3
    progress = assess(service(), tasks, IMAGE, None, was_update=False)
    assert progress.done and not progress.ok
    assert "non-zero exit (1)" in progress.reason


def test_update_waits_for_a_new_completed_update() -> None:
    old_status = {"State": "completed", "StartedAt": "t1"}
    tasks = [task(IMAGE, "running"), task(IMAGE, "running")]
    # Still the previous update's status: not ours, keep waiting.
    assert not assess(service(update=old_status), tasks, IMAGE, "t1", was_update=True).done
    updating = {"State": "updating", "StartedAt": "t2"}
    assert not assess(service(update=updating), tasks, IMAGE, "t1", was_update=True).done
    done = {"State": "completed", "StartedAt": "t2"}
    progress = assess(service(update=done), tasks, IMAGE, "t1", was_update=True)
    assert progress.done and progress.ok


def test_rollback_is_a_failure_with_swarms_message() -> None:
    status = {
        "State": "rollback_completed",
        "StartedAt": "t2",
        "Message": "update rolled back due to failure",
    }
    progress = assess(service(image=OLD, update=status), [], IMAGE, "t1", was_update=True)
    assert progress.done and not progress.ok
    assert "rolled back" in progress.reason


def test_paused_rollout_is_never_a_success() -> None:
    status = {"State": "paused", "StartedAt": "t2", "Message": "update paused due to failure"}
    tasks = [task(IMAGE, "running"), task(IMAGE, "running")]
    progress = assess(service(update=status), tasks, IMAGE, "t1", was_update=True)
    assert progress.done and not progress.ok


def test_replicas_follow_config_until_scaled_by_hand() -> None:
    assert desired_replicas(2, None) == 2
    deployed = service(replicas=5, labels={"nephelios.config-replicas": "2"})
    assert desired_replicas(2, deployed) == 5  # scaled to 5 after the last deploy: kept
    assert desired_replicas(3, deployed) == 3  # nephelios.yml changed: it wins


def test_an_app_scaled_to_zero_is_done_once_the_spec_holds_the_new_image() -> None:
    old_status = {"State": "completed", "StartedAt": "t1"}
    # Swarm starts no update for 0 replicas: the old status is all there will ever be.
    progress = assess(service(replicas=0, update=old_status), [], IMAGE, "t1", was_update=True)
    assert progress.done and progress.ok
    assert not assess(service(OLD, 0, old_status), [], IMAGE, "t1", was_update=True).done
