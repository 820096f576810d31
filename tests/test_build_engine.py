"""Image builds on the real engine: quiet steps, the build budget."""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from collections.abc import Iterator

import docker
import pytest

from pipeline import engine
from pipeline.errors import BuildError

pytestmark = pytest.mark.docker


def context(dockerfile: str) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


@pytest.fixture
def app_label(docker_client: docker.DockerClient) -> Iterator[str]:
    app = f"tb{uuid.uuid4().hex[:8]}"
    yield app
    for image in docker_client.images.list(filters={"label": f"{engine.APP_LABEL}={app}"}):
        docker_client.images.remove(image.id, force=True)


def test_a_quiet_step_longer_than_the_client_timeout_is_fine(app_label: str) -> None:
    impatient = engine.client(timeout_s=2)  # every other call would give up after 2 s
    lines: list[str] = []
    image_id = engine.build_image(
        impatient,
        context("FROM nephelios/busybox:local\nRUN sleep 5\n"),
        f"{app_label}:quiet",
        {engine.APP_LABEL: app_label},
        "Dockerfile",
        lines.append,
        timeout_s=60,
    )
    assert image_id.startswith("sha256:")


def test_a_build_over_its_budget_fails(app_label: str) -> None:
    started = time.monotonic()
    with pytest.raises(BuildError) as failed:
        engine.build_image(
            engine.client(),
            context("FROM nephelios/busybox:local\nRUN sleep 30\n"),
            f"{app_label}:slow",
            {engine.APP_LABEL: app_label},
            "Dockerfile",
            lambda line: None,
            timeout_s=3,
        )
    assert time.monotonic() - started < 15
    assert "sleep 30" in failed.value.log_tail
