"""The base of every resource, the one way a JSON answer is sent, and the one way a
header is read as sent."""

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


def header_values(req: falcon.asgi.Request, name: bytes) -> list[str]:
    """Every field of one header as sent, from the raw list (`name` lowercase): Falcon
    joins repeats with commas (an `Idempotency-Key` may itself contain one), and reading
    one header through Falcon decodes every header of the request."""
    return [value.decode("latin-1") for field, value in req.scope["headers"] if field == name]
