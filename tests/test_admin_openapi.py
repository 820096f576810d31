"""Schemathesis against `/openapi.json`: generated requests, with and without the token, no 5xx.

The API runs in-process on a real Redis and the real engine. Its config holds one declared
app that was never deployed, and `git_base_url` points at a directory that does not exist,
so generated `owner/name` URLs fail fast on this host and nothing leaves the machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from starlette.applications import Starlette
from starlette.routing import Route

from tests.support import admin_app
from webhooks.admin import openapi_json

pytestmark = [pytest.mark.redis, pytest.mark.docker]
TOKEN = "schema-test-token"


@pytest.fixture
def api(tmp_path: Path, redis_conn: redis.Redis, worker_env: dict[str, str]) -> Starlette:
    Path(worker_env["NEPHELIOS_CONFIG"]).write_text(
        yaml.safe_dump(
            {
                "platform": {"git_base_url": f"file://{tmp_path}/nowhere"},
                "apps": {"declared": {"repo": "acme/declared"}},
            }
        )
    )
    app, _ = admin_app(worker_env, redis_conn, TOKEN)
    return app


# The schema is read from an app that serves only /openapi.json; each call goes to the test's
# own `api` (`app=`). schemathesis' `from_fixture` would be the natural way, but 4.32 breaks
# on pytest 9 (it sets `node._nodeid`, which pytest 9 no longer has).
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", Starlette(routes=[Route("/openapi.json", openapi_json)])
)


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_server_errors(api: Starlette, case: schemathesis.Case[Any]) -> None:
    for headers in ({"Authorization": f"Bearer {TOKEN}"}, {}):
        response = case.call(app=api, headers=headers)
        assert response.status_code < 500, (case.method, case.path, response.text)
        if response.status_code >= 400:
            assert "\n" not in response.json()["error"]
    case.call_and_validate(
        app=api, headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error]
    )
