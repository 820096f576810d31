"""Commit status bodies for GitHub, from deployment records."""

from __future__ import annotations

from pipeline.core.commit_status import MAX_DESCRIPTION, status_body
from pipeline.core.deployment import Deployment


def record(status: str, error: str = "") -> Deployment:
    deployment = Deployment(id="d1", app="web", commit="a" * 40, ref="refs/heads/main", trigger="t")
    if status != "queued":
        deployment.move(status, error)
    return deployment


def test_states_follow_the_deployment() -> None:
    assert status_body(record("queued"), None)["state"] == "pending"
    assert status_body(record("building"), None)["state"] == "pending"
    assert status_body(record("succeeded"), None)["state"] == "success"
    assert status_body(record("failed", "boom"), None)["state"] == "failure"
    assert status_body(record("superseded", "by x"), None)["state"] == "error"


def test_link_context_and_length() -> None:
    body = status_body(record("failed", "x" * 500 + "\nsecond line"), "https://deploy.example/")
    assert body["target_url"] == "https://deploy.example/deployments/d1"
    assert body["context"] == "nephelios/web"
    assert len(body["description"]) == MAX_DESCRIPTION
    assert "second line" not in body["description"]
