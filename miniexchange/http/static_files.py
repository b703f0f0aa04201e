"""`GET /static/{path}`: the market page's script, stylesheet and vendored chart library.

Only the files of `FILES` are served, looked up by their exact path: no file system path
is ever built from the request, so `..`, encoded slashes or any other spelling is a 404
`not_found` like an unknown file. The files are read once, when the app is built.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Final

import falcon
import falcon.asgi

from miniexchange.http.auth import PUBLIC
from miniexchange.http.resource import Resource

JS: Final = "text/javascript; charset=utf-8"
CSS: Final = "text/css; charset=utf-8"
TEXT: Final = "text/plain; charset=utf-8"

# path under /static/ (and under the package's static/ directory) -> content type
FILES: Final[dict[str, str]] = {
    "market.css": CSS,
    "market.js": JS,
    "vendor/lightweight-charts.standalone.production.js": JS,
    "vendor/LICENSE": TEXT,
}

# The page names each file with its digest (`?v=`), so a day's caching never serves a
# stale copy after an upgrade.
CACHE_CONTROL: Final = ["public", "max-age=86400"]


class StaticFile:
    __slots__ = ("content_type", "data", "version")

    def __init__(self, data: bytes, content_type: str) -> None:
        self.data = data
        self.content_type = content_type
        self.version = hashlib.sha256(data).hexdigest()[:16]


def load_static_files() -> dict[str, StaticFile]:
    directory = resources.files("miniexchange.http") / "static"
    loaded: dict[str, StaticFile] = {}
    for path, content_type in FILES.items():
        node = directory
        for part in path.split("/"):
            node = node / part
        loaded[path] = StaticFile(node.read_bytes(), content_type)
    return loaded


class StaticFileResource(Resource):
    methods = ("GET",)
    access = PUBLIC

    def __init__(self, files: dict[str, StaticFile]) -> None:
        self.files = files

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, path: str) -> None:
        # The server decodes `%2F` into `/` before routing: a percent sign in the raw path
        # means the request did not spell the file's path as it is (none needs escaping).
        raw = req.scope.get("raw_path")
        entry = self.files.get(path)
        if entry is None or (raw is not None and b"%" in raw):
            raise falcon.HTTPRouteNotFound()  # rendered as the contract's 404 `not_found`
        resp.status = 200
        resp.content_type = entry.content_type
        resp.cache_control = CACHE_CONTROL
        resp.data = entry.data
