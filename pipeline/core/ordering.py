"""Which of an app's waiting deployments to build: newest wins, stale pushes are dropped.

Pure: the caller passes the waiting candidates in arrival order, the commit now live, and an
`is_ancestor(older, newer)` predicate (git's `merge-base --is-ancestor` in production, a dict
in tests). The verdict does not depend on the order deliveries arrived in, except between
commits that git cannot order (a force push), where the latest arrival wins.

- A candidate whose commit is live, or an ancestor of the live commit, is stale.
- A candidate whose commit another candidate already carries is stale (already queued).
- A candidate that is an ancestor of another candidate's commit is superseded when that
  descendant arrived later (the normal case: a newer push) and stale when it arrived
  earlier (an old delivery that came late).
- Of the candidates left, the latest arrival is built; the others are superseded by it.

A `forced` candidate (an explicit request: an admin deploy, a secret rotation, not a push)
is exempt from the stale rules, so that redeploying the live commit or going back to an
older one on purpose works; a later push that descends from it still supersedes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Candidate:
    id: str
    commit: str
    forced: bool = False


@dataclass
class Verdict:
    winner: str | None = None
    superseded: dict[str, str] = field(default_factory=dict)  # id -> the id that replaced it
    stale: dict[str, str] = field(default_factory=dict)  # id -> why


def choose(
    candidates: Sequence[Candidate],
    live_commit: str | None,
    is_ancestor: Callable[[str, str], bool],
) -> Verdict:
    """Decide the fate of every candidate; `candidates` are in arrival order."""
    verdict = Verdict()
    left: list[Candidate] = []
    seen: dict[str, Candidate] = {}
    for candidate in candidates:
        reason = _stale_against_live(candidate.commit, live_commit, is_ancestor)
        if reason is None and candidate.commit in seen:
            reason = f"commit already queued as {seen[candidate.commit].id}"
        if reason is not None and not candidate.forced:
            verdict.stale[candidate.id] = reason
            continue
        seen[candidate.commit] = candidate
        left.append(candidate)

    heads: list[Candidate] = []
    for index, candidate in enumerate(left):
        later = _descendant(candidate, left[index + 1 :], is_ancestor)
        earlier = _descendant(candidate, left[:index], is_ancestor)
        if later is not None:
            verdict.superseded[candidate.id] = later.id
        elif earlier is not None and not candidate.forced:
            verdict.stale[candidate.id] = f"an ancestor of {earlier.commit[:12]}, queued earlier"
        else:
            heads.append(candidate)

    if heads:
        verdict.winner = heads[-1].id
        for candidate in heads[:-1]:
            verdict.superseded[candidate.id] = heads[-1].id
    return verdict


def _stale_against_live(
    commit: str, live_commit: str | None, is_ancestor: Callable[[str, str], bool]
) -> str | None:
    if live_commit is None:
        return None
    if commit == live_commit:
        return "commit is already live"
    if is_ancestor(commit, live_commit):
        return f"an ancestor of the live commit {live_commit[:12]}"
    return None


def _descendant(
    candidate: Candidate, others: Sequence[Candidate], is_ancestor: Callable[[str, str], bool]
) -> Candidate | None:
    """The last of `others` whose commit descends from `candidate`'s, if any."""
    found = None
    for other in others:
        if is_ancestor(candidate.commit, other.commit):
            found = other
    return found
