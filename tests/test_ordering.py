"""Newest wins, stale dropped: `pipeline.core.ordering.choose` on small commit graphs."""

from __future__ import annotations

from pipeline.core.ordering import Candidate, choose

# A linear history a <- b <- c <- d, and x on a branch of its own (a force push).
PARENTS = {"b": "a", "c": "b", "d": "c", "x": "a"}


def is_ancestor(older: str, newer: str) -> bool:
    node: str | None = newer
    while node is not None:
        if node == older:
            return True
        node = PARENTS.get(node)
    return False


def pushes(*commits: str) -> list[Candidate]:
    return [Candidate(f"id-{commit}-{n}", commit) for n, commit in enumerate(commits)]


def test_a_burst_in_order_builds_only_the_last() -> None:
    verdict = choose(pushes("b", "c", "d"), "a", is_ancestor)
    assert verdict.winner == "id-d-2"
    assert verdict.superseded == {"id-b-0": "id-d-2", "id-c-1": "id-d-2"}
    assert verdict.stale == {}


def test_an_old_delivery_arriving_late_is_stale_not_a_rollback() -> None:
    verdict = choose(pushes("d", "b"), "a", is_ancestor)
    assert verdict.winner == "id-d-0"
    assert "id-b-1" in verdict.stale
    assert verdict.superseded == {}


def test_live_commit_and_its_ancestors_are_stale() -> None:
    verdict = choose(pushes("c", "b"), "c", is_ancestor)
    assert verdict.winner is None
    assert verdict.stale["id-c-0"] == "commit is already live"
    assert "ancestor of the live commit" in verdict.stale["id-b-1"]


def test_the_same_commit_twice_is_built_once() -> None:
    verdict = choose(pushes("c", "c"), "a", is_ancestor)
    assert verdict.winner == "id-c-0"
    assert "already queued" in verdict.stale["id-c-1"]


def test_unrelated_commits_latest_arrival_wins() -> None:
    verdict = choose(pushes("x", "d"), "a", is_ancestor)
    assert verdict.winner == "id-d-1"
    assert verdict.superseded == {"id-x-0": "id-d-1"}
    verdict = choose(pushes("d", "x"), "a", is_ancestor)
    assert verdict.winner == "id-x-1"


def test_first_deploy_has_no_live_commit() -> None:
    verdict = choose(pushes("a"), None, is_ancestor)
    assert verdict.winner == "id-a-0"


def test_an_explicit_request_redeploys_the_live_commit_or_goes_back() -> None:
    again = Candidate("secret-rotation", "c", forced=True)
    assert choose([again], "c", is_ancestor).winner == "secret-rotation"
    back = Candidate("admin-deploy", "b", forced=True)
    verdict = choose([*pushes("d"), back], "c", is_ancestor)
    assert verdict.winner == "admin-deploy"
    assert verdict.superseded == {"id-d-0": "admin-deploy"}
    # A push that comes later and descends from it still wins.
    verdict = choose([back, *pushes("d")], "c", is_ancestor)
    assert verdict.winner == "id-d-0"
