"""Request ids, the access log and the HTTP metrics.

`RequestObserver` is the first Falcon middleware of the app, so its `process_request`
runs before any other (a refusal raised there, such as `StrictPaths`' 404, is still
answered with the id) and its `process_response` runs last, after the error handlers
have rendered the answer: every response, errors, 404, 405 and 204 included, carries
`X-Request-Id`.

The id is kept on `req.context.request_id` and in `logs.request_id_var`, which the
logging filter reads, so every line written while the request is handled carries it.
That variable is the event loop task's: it does not reach the actor threads, so the
HTTP layer passes `req.context.request_id` along in the messages it sends them.

An event stream (a response with `resp.sse`) is neither logged nor counted when its
headers leave: Falcon calls `process_response` before sending a stream's body. The
stream logs its one line when it ends (`http.stream`), and it is counted then too, from
its request task's completion.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, Final

import falcon
import falcon.asgi

from miniexchange.http.auth import ADMIN, owner_of
from miniexchange.http.resource import Resource, header_values
from miniexchange.ids import random_uuid4
from miniexchange.logs import (
    NOT_LOGGED,
    LogSetup,
    configure_logging,
    log_access,
    request_id_var,
)
from miniexchange.metrics import CONTENT_TYPE, Metrics
from miniexchange.settings import Settings

__all__ = [
    "HEADER",
    "NOT_FOUND_ROUTE",
    "LogLifespan",
    "MetricsResource",
    "RequestObserver",
    "request_id_of",
]

log = logging.getLogger("miniexchange.http")

HEADER: Final = "X-Request-Id"
NOT_FOUND_ROUTE: Final = "not_found"
"""The `route` of a request that matched no route, in its access line and its metrics."""

_USABLE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")

NOT_COUNTED: Final = frozenset({("GET", "/metrics"), ("GET", "/healthz")})
"""Requests the HTTP metric families leave out: scrapes and health checks would
otherwise dominate them. They are still logged: one access line per request."""

KNOWN_METHODS: Final = frozenset(falcon.COMBINED_METHODS)
"""Any other method is counted as `other`: a label value must not come unbounded
from clients."""


class LogLifespan:
    """Falcon middleware, first in the list: at lifespan startup it sets up the worker's
    logging (when `configure`, i.e. in the served app; tests keep pytest's) before the
    exchange starts, and logs `startup` with every setting (secrets as `"<set>"`); at
    shutdown, which Falcon runs in reverse order, it logs `shutdown` after the exchange
    has stopped and flushes the queue."""

    def __init__(self, settings: Settings, configure: bool = False) -> None:
        self.settings = settings
        self.configure = configure
        self._setup: LogSetup | None = None

    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        if self.configure and self._setup is None:
            self._setup = configure_logging(self.settings)
        log.info("startup", extra={"event": "startup", "settings": self.settings.public_items()})

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        log.info("shutdown", extra={"event": "shutdown"})
        if self._setup is not None:
            self._setup.stop()
            self._setup = None


_RAW_HEADER: Final = HEADER.lower().encode()


def request_id_of(header: str | None) -> str:
    """The client's id if usable (1-128 of `[A-Za-z0-9._:-]`), else a new lowercase UUID4.

    An unusable value is replaced silently, never refused; several header fields
    arrive joined by `", "`, which is never usable."""
    if header is not None and _USABLE.fullmatch(header):
        return header
    return random_uuid4()


class RequestObserver:
    """Falcon middleware: the request id, one access line and the HTTP metrics per request.

    `metrics=None` or `access_log=False` turn those off (the benchmark's comparison);
    the request id is part of the contract and always set.
    """

    def __init__(
        self, metrics: Metrics | None, access_log: bool = True, api_keys: bool = False
    ) -> None:
        """`api_keys`: the access line names the broker whose key was used."""
        self.metrics = metrics
        self.access_log = access_log
        self.api_keys = api_keys

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        # several fields are joined as Falcon joins them, and so unusable
        sent = header_values(req, _RAW_HEADER)
        request_id = request_id_of(", ".join(sent) if sent else None)
        context = req.context
        context.request_id = request_id
        context.started = time.perf_counter()
        request_id_var.set(request_id)  # this request's task only: each has its own context

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        context = req.context
        request_id = context.get("request_id")
        if request_id is None:  # defensive: process_request always runs first
            request_id = context.request_id = request_id_of(None)
            context.started = time.perf_counter()
        resp.set_header(HEADER, request_id)  # here, after any error handler rendered
        method = req.method
        route = req.uri_template or NOT_FOUND_ROUTE
        if resp.sse is not None:
            self._count_at_end(method, route, resp, context.started)
            return
        seconds = time.perf_counter() - context.started
        status = resp.status_code
        metrics = self.metrics
        if metrics is not None and (method, route) not in NOT_COUNTED:
            metrics.observe_request(_method_label(method), route, status, seconds)
        if self.access_log:
            broker_id = owner_of(req) if self.api_keys else NOT_LOGGED
            log_access(request_id, method, route, req.path, status, seconds, broker_id)

    def _count_at_end(
        self, method: str, route: str, resp: falcon.asgi.Response, started: float
    ) -> None:
        """An event stream: counted once, when its request task ends (the stream logs
        its own line then, with the request id, from the same task's context)."""
        metrics = self.metrics
        task = asyncio.current_task()
        if metrics is None or task is None:
            return
        label = _method_label(method)

        def ended(_: asyncio.Task[Any]) -> None:
            metrics.observe_request(label, route, resp.status_code, time.perf_counter() - started)

        task.add_done_callback(ended)


def _method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


class MetricsResource(Resource):
    """`GET /metrics`: the Prometheus text exposition format, version 0.0.4, of the
    exchange's families (`Metrics.page`: in Ray mode, summed over every process)."""

    methods = ("GET",)
    access = ADMIN

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.status = 200
        resp.content_type = CONTENT_TYPE
        resp.data = await self.metrics.page()  # with ENGINE=ray: every process's figures
