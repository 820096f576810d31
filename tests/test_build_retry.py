"""The build is retried once when another app's prune pulls a cached layer from under it.

Pure retry logic: a stand-in for docker-py's low-level `build` stream (what the engine sends
is not what is under test here; test_worker.py builds on the real engine).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline import engine
from pipeline.errors import BuildError


class Api:
    def __init__(self, *streams: list[dict[str, Any]]) -> None:
        self.streams = list(streams)
        self.contexts: list[bytes] = []

    def build(self, fileobj: io.BytesIO, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.contexts.append(fileobj.read())
        return iter(self.streams.pop(0))


class Engine:
    def __init__(self, api: Api) -> None:
        self.api = api


RACE: list[dict[str, Any]] = [
    {"stream": "Step 1/2 : FROM base\n"},
    {"error": "No such image: sha256:0123"},
]
OK: list[dict[str, Any]] = [{"stream": "Step 1/2 : FROM base\n"}, {"aux": {"ID": "sha256:feed"}}]
BROKEN: list[dict[str, Any]] = [
    {"error": "The command '/bin/sh -c false' returned a non-zero code: 1"}
]


def build(api: Api, lines: list[str]) -> str:
    context = io.BytesIO(b"tar bytes")
    client: Any = Engine(api)
    return engine.build_image(client, context, "app:1", {}, "Dockerfile", lines.append, 60)


def test_a_pruned_cache_layer_is_built_again_from_the_whole_context() -> None:
    api, lines = Api(RACE, OK), list[str]()
    assert build(api, lines) == "sha256:feed"
    assert api.contexts == [b"tar bytes", b"tar bytes"]
    assert any("building again" in line for line in lines)


def test_only_once() -> None:
    with pytest.raises(BuildError, match="No such image"):
        build(Api(RACE, RACE), [])


def test_a_failing_step_is_not_retried() -> None:
    api = Api(BROKEN, OK)
    with pytest.raises(BuildError, match="non-zero code"):
        build(api, [])
    assert len(api.contexts) == 1
