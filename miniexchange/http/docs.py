"""The API's own reference: `GET /openapi.json` (the document) and `GET /docs` (it, rendered).

`openapi.yaml` beside this module is the one document: it is read and turned into JSON
once, when the app is created, and every request gets those same bytes. `GET /docs` is
Swagger UI rendering `/openapi.json`; its script and stylesheet are served under
`/docs/` from the installed `mkdocs-swagger-ui-tag` package (which ships Swagger UI 5,
the first to render OpenAPI 3.1, as plain files), so the page needs no network access.
"""

from __future__ import annotations

import copy
import functools
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, Final

import falcon
import falcon.asgi
import orjson
import yaml

from miniexchange.http.auth import PUBLIC
from miniexchange.http.core import Resource, send_json

OPENAPI_FILE: Final = "openapi.yaml"

SWAGGER_UI_PACKAGE: Final = "mkdocs_swagger_ui_tag"
SWAGGER_UI_DIR: Final = "swagger-ui"

ASSETS: Final[dict[str, tuple[str, str]]] = {
    # name under /docs/ -> (file in the package's swagger-ui directory, content type)
    "swagger-ui-bundle.js": ("javascripts/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": ("stylesheets/swagger-ui.css", "text/css; charset=utf-8"),
    # Source maps, which a browser's developer tools ask for.
    "swagger-ui-bundle.js.map": ("javascripts/swagger-ui-bundle.js.map", "application/json"),
    "swagger-ui.css.map": ("stylesheets/swagger-ui.css.map", "application/json"),
}

# BaseLayout: the reference alone, without the standalone top bar that explores other URLs.
# validatorUrl null: Swagger UI would otherwise send the document to an online validator.
DOCS_PAGE: Final = b"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>miniexchange API reference</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
      validatorUrl: null,
    });
  </script>
</body>
</html>
"""


def load_openapi() -> dict[str, Any]:
    """The repository's OpenAPI document, parsed."""
    text = files("miniexchange.http").joinpath(OPENAPI_FILE).read_text(encoding="utf-8")
    # libyaml's loader when present: the pure-Python one takes about a second here
    document = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(document, dict):
        raise ValueError(f"{OPENAPI_FILE} is not a mapping")
    return document


def swagger_ui_dir() -> Traversable:
    return files(SWAGGER_UI_PACKAGE).joinpath(SWAGGER_UI_DIR)


class OpenApiResource(Resource):
    methods = ("GET",)
    access = PUBLIC

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        send_json(resp, 200, self.body)


class DocsPageResource(Resource):
    methods = ("GET",)
    access = PUBLIC

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.status = 200
        resp.content_type = "text/html; charset=utf-8"
        resp.data = DOCS_PAGE


class DocsAssetResource(Resource):
    """Swagger UI's files, read from the package on first use and kept."""

    methods = ("GET",)
    access = PUBLIC

    def __init__(self, directory: Traversable) -> None:
        self.directory = directory
        self.cache: dict[str, bytes] = {}

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, asset: str
    ) -> None:
        entry = ASSETS.get(asset)
        if entry is None:
            raise falcon.HTTPRouteNotFound()  # rendered as any unknown path's 404 `not_found`
        path, content_type = entry
        data = self.cache.get(asset)
        if data is None:
            data = self.directory.joinpath(path).read_bytes()
            self.cache[asset] = data
        resp.status = 200
        resp.content_type = content_type
        resp.cache_control = ["public", "max-age=86400"]
        resp.data = data


@functools.cache
def openapi_json() -> bytes:
    """The document as served: read and converted once per process, never per request."""
    return orjson.dumps(load_openapi())


_METHODS: Final = frozenset(("get", "put", "post", "delete", "patch", "head", "options"))


def _error_response(description: str, codes: list[str], example: dict[str, str]) -> dict:
    return {
        "description": description,
        "headers": {"X-Request-Id": {"$ref": "#/components/headers/XRequestId"}},
        "content": {
            "application/json": {
                "schema": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Error"},
                        {"properties": {"error": {"enum": codes}}},
                    ]
                },
                "example": example,
            }
        },
    }


def _token(prefix: str) -> dict[str, str]:
    return {"type": "string", "pattern": f"^{prefix}[A-Za-z0-9_-]{{43}}$"}


def api_key_document(document: dict[str, Any], access: dict[str, str]) -> dict[str, Any]:
    """The document as `AUTH=api_key` serves it: the bearer scheme, each operation's
    token (`access`: route template -> who may call it) with its 401 and 403, the
    credentials in the registration's answer, and the routes that issue new ones."""
    doc = copy.deepcopy(document)
    components = doc["components"]
    components["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "The admin token, or a broker's API key (`mx_…`).",
        }
    }
    components["schemas"]["ErrorCode"]["enum"] += ["unauthorized", "forbidden"]
    unauthorized = _error_response(
        "No `Authorization: Bearer` header, another scheme, or a token that is neither the "
        "admin token nor a current API key.",
        ["unauthorized"],
        {"error": "unauthorized", "message": "A valid API key is required"},
    )
    unauthorized["headers"]["WWW-Authenticate"] = {
        "description": "`Bearer`",
        "schema": {"type": "string", "enum": ["Bearer"]},
    }
    components["responses"]["Unauthorized"] = unauthorized
    components["responses"]["Forbidden"] = _error_response(
        "A broker's key on an admin endpoint (`This endpoint requires the admin token`), or "
        "naming another broker (`This API key cannot act for broker <broker_id>`), checked "
        "after the fields.",
        ["forbidden"],
        {"error": "forbidden", "message": "This API key cannot act for broker broker-999"},
    )
    registered = components["schemas"]["RegisteredBroker"]
    registered["required"] = [*registered["required"], "api_key", "webhook_secret"]
    registered["properties"]["api_key"] = {
        **_token("mx_"),
        "description": "Shown once: only its digest is kept.",
    }
    registered["properties"]["webhook_secret"] = {
        **_token("whsec_"),
        "description": "Signs this broker's deliveries (`X-Signature`).",
    }
    paths = doc["paths"]
    register = paths["/brokers"]["post"]  # its answer holds secrets: no Idempotency-Key
    register["parameters"] = [
        p for p in register["parameters"] if p != {"$ref": "#/components/parameters/IdempotencyKey"}
    ]
    register["responses"].pop("422", None)
    for kind, prefix in (("api_key", "mx_"), ("webhook_secret", "whsec_")):
        paths[f"/brokers/{{broker_id}}/{kind}"] = {
            "post": {
                "tags": ["brokers"],
                "operationId": "issue" + "".join(part.title() for part in kind.split("_")),
                "summary": f"Issue a broker a new {kind.replace('_', ' ')}",
                "description": "The previous one stops working at once. No body is read.",
                "parameters": [
                    {"$ref": "#/components/parameters/BrokerIdPath"},
                    {"$ref": "#/components/parameters/XRequestId"},
                ],
                "responses": {
                    "201": {
                        "description": "Issued; shown only in this answer.",
                        "headers": {"X-Request-Id": {"$ref": "#/components/headers/XRequestId"}},
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["broker_id", kind],
                                    "additionalProperties": False,
                                    "properties": {
                                        "broker_id": {"$ref": "#/components/schemas/BrokerId"},
                                        kind: _token(prefix),
                                    },
                                }
                            }
                        },
                    },
                    "404": {"$ref": "#/components/responses/BrokerNotFoundInPath"},
                    "503": {"$ref": "#/components/responses/JournalUnavailable"},
                },
            }
        }
    for template, item in paths.items():
        if access.get(template, PUBLIC) == PUBLIC:
            continue
        for method, operation in item.items():
            if method in _METHODS:
                operation["security"] = [{"bearer": []}]
                operation["responses"]["401"] = {"$ref": "#/components/responses/Unauthorized"}
                operation["responses"]["403"] = {"$ref": "#/components/responses/Forbidden"}
    return doc


def docs_routes(access: dict[str, str] | None = None) -> tuple[tuple[str, Resource], ...]:
    """`access` (`AUTH=api_key`): each route's access, for the document of that mode."""
    body = (
        openapi_json() if access is None else orjson.dumps(api_key_document(load_openapi(), access))
    )
    directory = swagger_ui_dir()
    missing = [path for path, _ in ASSETS.values() if not directory.joinpath(path).is_file()]
    if missing:
        raise RuntimeError(f"Swagger UI files missing from {SWAGGER_UI_PACKAGE}: {missing}")
    return (
        ("/openapi.json", OpenApiResource(body)),
        ("/docs", DocsPageResource()),
        ("/docs/{asset}", DocsAssetResource(directory)),
    )
