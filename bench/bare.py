"""A bare `falcon.asgi.App` that answers every request with a constant: the ceiling.

`python -m bench --http` serves it with the exchange's own gunicorn configuration
(`gunicorn -c config/gunicorn.conf.py bench.bare:app`: the same uvicorn worker, event
loop and HTTP protocol) and runs the `healthz` and `limit` scenarios against it. No
middleware, no request id, no access line, no actor: what is left is the cost of
gunicorn + uvicorn + Falcon for one request, and every figure of the exchange is read
as a share of it.
"""

from __future__ import annotations

import falcon
import falcon.asgi

HEALTHY = b'{"status":"ok"}'
CREATED = b'{"created":true}'


async def constant(req: falcon.asgi.Request, resp: falcon.asgi.Response, **_: str) -> None:
    """200 for a read, 201 for a write (the scenarios count 2xx); a body is read whole,
    as any real handler must."""
    if req.method == "POST":
        await req.stream.read()
        resp.status = 201
        resp.data = CREATED
    else:
        resp.data = HEALTHY
    resp.content_type = falcon.MEDIA_JSON


app = falcon.asgi.App()
app.add_sink(constant, prefix="/")
