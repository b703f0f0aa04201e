"""`GET /`: the market page (contract §6.6), served by the exchange itself.

The page is kept as three files in `static/` (HTML, CSS, vanilla JavaScript) so that
each can be edited and read as what it is. They are read once when the app is built
and served as ONE document, the stylesheet and the script inlined where the HTML links
them: one request, no further routes beside the contract's, no network access.
"""

from __future__ import annotations

from importlib import resources

import falcon
import falcon.asgi

from miniexchange.http.auth import PUBLIC
from miniexchange.http.core import Resource

STYLESHEET_LINK = '<link rel="stylesheet" href="market.css">'
SCRIPT_TAG = '<script src="market.js"></script>'


def market_page() -> bytes:
    """index.html with market.css and market.js inlined in place of their links."""
    static = resources.files("miniexchange.http") / "static"
    html = (static / "index.html").read_text(encoding="utf-8")
    css = (static / "market.css").read_text(encoding="utf-8")
    script = (static / "market.js").read_text(encoding="utf-8")
    if STYLESHEET_LINK not in html or SCRIPT_TAG not in html:
        raise RuntimeError("static/index.html must link market.css and market.js")
    if "</style" in css or "</script" in script:
        raise RuntimeError("market.css and market.js must not close their own tag")
    html = html.replace(STYLESHEET_LINK, f"<style>\n{css}</style>")
    html = html.replace(SCRIPT_TAG, f"<script>\n{script}</script>")
    return html.encode()


class MarketPageResource(Resource):
    methods = ("GET",)
    access = PUBLIC

    def __init__(self) -> None:
        self.page = market_page()

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.status = 200
        resp.content_type = "text/html; charset=utf-8"
        resp.set_header("Cache-Control", "no-cache")
        resp.data = self.page
