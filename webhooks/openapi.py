"""The OpenAPI 3.0 description of the admin API, served at `/openapi.json`.

Written by hand, because the bodies are checked by `pipeline.core.admin` rather than by a
schema library; tests/test_admin_openapi.py runs schemathesis against it so the description
and the code cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Any

APP_NAME = {"type": "string", "pattern": "^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$"}
ERROR = {
    "description": "refused, with a one-line reason",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            }
        }
    },
}
ANY_OBJECT = {"content": {"application/json": {"schema": {"type": "object"}}}}
QUEUED = {
    "description": "a deployment was queued",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["app_name", "deployment", "commit"],
                "properties": {
                    "app_name": {"type": "string"},
                    "deployment": {"type": "string"},
                    "commit": {"type": "string"},
                },
            }
        }
    },
}


def _refusals(*codes: int) -> dict[str, Any]:
    return {str(code): ERROR for code in (400, 401, 403, *codes)}


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


# App model (issue 8): the nephelios.yml keys of README's app-model section, checked by
# pipeline.core.appmodel (a bad value is a 400 naming the key).
_STRINGS = {"type": "array", "items": {"type": "string"}}
APP_MODEL: dict[str, Any] = {
    "path_prefixes": _STRINGS,
    "strip_prefix": {"type": "boolean"},
    "tls": {"type": "boolean"},
    "health": {"type": "object"},
    "resources": {"type": "object"},
    "placement": _STRINGS,
    "volumes": {"type": "object", "additionalProperties": {"type": "string"}},
    "secrets": {"type": "object", "description": "NAME: {env: bool}; values via the CLI"},
    "processes": {"type": "object"},
    "build": {"type": "object"},
    "install_command": {"type": "string"},
    "build_command": {"type": "string"},
    "run_command": {"type": "string"},
    "app_workdir": {"type": "string"},
}

NAME_IN_PATH = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}

CREATE = _object(
    {
        "app_name": APP_NAME,
        "app_type": {"type": "string", "enum": ["static", "python", "nodejs"]},
        "github_url": {
            "type": "string",
            "description": "https://github.com/owner/name, owner/name, or a local path",
        },
        "branch": {"type": "string"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "domains": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "replicas": {"type": "integer", "minimum": 0},
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
        **APP_MODEL,
    },
    ["app_name", "github_url"],
)


def openapi() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "Nephelios admin API", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": _paths(),
    }


def _paths() -> dict[str, Any]:
    return {
        "/create": {
            "post": {
                "summary": "create an app and queue the first deploy of its branch head",
                "requestBody": _body(CREATE),
                "responses": {"202": QUEUED, **_refusals(409, 413, 422)},
            }
        },
        "/remove": {
            "post": {
                "summary": "take the app's stack down, remove its images and stored entry",
                "requestBody": _body(
                    _object({"app_name": APP_NAME, "volumes": {"type": "boolean"}}, ["app_name"])
                ),
                "responses": {"200": {"description": "removed", **ANY_OBJECT}, **_refusals(404)},
            }
        },
        "/scale": {
            "post": {
                "summary": "run n replicas (0 stops the app); kept across later deploys",
                "requestBody": _body(
                    _object(
                        {"app_name": APP_NAME, "replicas": {"type": "integer", "minimum": 0}},
                        ["app_name", "replicas"],
                    )
                ),
                "responses": {
                    "200": {"description": "scaled", **ANY_OBJECT},
                    **_refusals(404, 409),
                },
            }
        },
        "/apps": {
            "get": {
                "summary": "every app, its config (env names only) and live state",
                "responses": {"200": {"description": "apps", **ANY_OBJECT}, **_refusals()},
            }
        },
        "/apps/{name}": {
            "get": {
                "summary": "one app: config, live state, recent deployments",
                "parameters": [NAME_IN_PATH],
                "responses": {"200": {"description": "the app", **ANY_OBJECT}, **_refusals(404)},
            }
        },
        "/apps/{name}/deploy": {
            "post": {
                "summary": "redeploy the branch head, a branch or tag (ref), or a commit",
                "parameters": [NAME_IN_PATH],
                "requestBody": _body(
                    _object({"ref": {"type": "string"}, "commit": {"type": "string"}}, []),
                    required=False,
                ),
                "responses": {"202": QUEUED, **_refusals(404, 422)},
            }
        },
        "/apps/{name}/rollback": {
            "post": {
                "summary": "go back to the previous good image, without a build",
                "parameters": [NAME_IN_PATH],
                "responses": {"202": QUEUED, **_refusals(404, 409, 422)},
            }
        },
        "/deployments/{id}": {
            "get": {
                "summary": "status history and log from line `offset` on (follow: ask again)",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "offset",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
                "responses": {
                    "200": {"description": "the deployment", **ANY_OBJECT},
                    **_refusals(404),
                },
            }
        },
    }
