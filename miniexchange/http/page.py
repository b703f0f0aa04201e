"""`GET /`: the market page served by the exchange itself.

The page is kept as files in `static/` (HTML, CSS, vanilla JavaScript, the vendored chart
library) so that each can be edited and read as what it is. `index.html` links its script,
stylesheet and library under `/static/` (`http.static_files`); each link gets the file's
digest as `?v=` when the app is built, so that browsers may cache them for a day and still
never run an old script against a new page. No network access beyond the exchange.
"""

from __future__ import annotations

from importlib import resources

import falcon
import falcon.asgi

from miniexchange.http.auth import PUBLIC
from miniexchange.http.resource import Resource
from miniexchange.http.static_files import StaticFile


def market_page(files: dict[str, StaticFile]) -> bytes:
    """index.html with each `/static/` link naming its file's version."""
    html = (resources.files("miniexchange.http") / "static" / "index.html").read_text(
        encoding="utf-8"
    )
    for path, entry in files.items():
        link = f'"/static/{path}"'
        if path.endswith((".js", ".css")) and link not in html:
            raise RuntimeError(f"static/index.html must link /static/{path}")
        html = html.replace(link, f'"/static/{path}?v={entry.version}"')
    return html.encode()


class MarketPageResource(Resource):
    methods = ("GET",)
    access = PUBLIC

    def __init__(self, files: dict[str, StaticFile]) -> None:
        self.page = market_page(files)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.status = 200
        resp.content_type = "text/html; charset=utf-8"
        resp.set_header("Cache-Control", "no-cache")
        resp.data = self.page
