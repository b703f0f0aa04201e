"""The bare app (`bench.bare`) served from inside the exchange's process.

The ASGI lifespan is the served app's, so the worker is the exchange's in everything
but the request path: its actors and threads started, its log writer, its garbage
collector settings, its modules and heap. Every HTTP request goes to the bare app:
no middleware, no request id, no access line. `python -m bench --http` serves it for
one `healthz` run, which splits the gap between the bare app and our `/healthz` into
what the process costs a request and what our request path does.
"""

from __future__ import annotations

from typing import Any

from bench.bare import app as bare_app
from miniexchange.http.app import app as served_app


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await served_app(scope, receive, send)
    else:
        await bare_app(scope, receive, send)
