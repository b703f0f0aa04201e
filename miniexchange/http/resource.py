"""The base of every resource, and the one way a JSON answer is sent."""

from __future__ import annotations

import falcon
import falcon.asgi

from miniexchange.http.auth import BROKER


class Resource:
    """Base of every resource: HEAD and OPTIONS are methods like any other (405 unless
    a resource lists them).

    `access` (with `AUTH=api_key`, see `http.auth`): who may call it; a broker's key
    unless a resource says it is public or for the admin."""

    methods: tuple[str, ...] = ()
    access: str = BROKER

    async def on_options(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **_: str
    ) -> None:
        raise falcon.HTTPMethodNotAllowed(self.methods)

    on_head = on_options


def send_json(resp: falcon.asgi.Response, status: int, body: bytes) -> None:
    resp.status = status
    resp.content_type = "application/json"
    resp.data = body
