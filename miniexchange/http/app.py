"""The Falcon ASGI application: routes, error rendering, and the actors' lifespan.

The actors start in the ASGI lifespan startup (in the gunicorn worker, never at import
or in the master) and stop in its shutdown, after the server has let in-flight
requests finish: first the expiration clock, then the symbol and broker actors.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import falcon
import falcon.asgi

from miniexchange.actors.exchange import Exchange
from miniexchange.clock import Clock, SystemClock
from miniexchange.http.core import JsonBodyReader, core_routes
from miniexchange.http.docs import docs_routes
from miniexchange.http.errors import install_error_handlers
from miniexchange.http.market import market_routes
from miniexchange.http.page import MarketPageResource
from miniexchange.http.stocks import stocks_routes
from miniexchange.http.stream import EventStreamGuard, StreamHub
from miniexchange.http.timeouts import WriteTimeout
from miniexchange.http.webhooks import webhook_routes
from miniexchange.ids import IdFactory, RandomIds
from miniexchange.journal.store import open_journal
from miniexchange.settings import Settings, format_duration, load_settings
from miniexchange.webhooks.delivery import DeliveryPool

JSON_DEPTH_RECURSION_LIMIT = 4000
"""The stdlib JSON decoder recurses once per nesting level; 1024 levels must parse."""


class Lifespan:
    """Falcon middleware running the exchange's start and stop with the ASGI lifespan."""

    def __init__(self, exchange: Exchange, streams: StreamHub | None = None) -> None:
        self.exchange = exchange
        self.streams = streams

    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        self.exchange.start()
        if self.streams is not None:
            self.streams.start()  # open event streams close at once on SIGTERM (§5.3)

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        if self.streams is not None:
            self.streams.stop()
        self.exchange.stop()


def stop_this_worker(failure: BaseException) -> None:
    """Fail-stop (§5.4): the journal cannot be written, so memory must not go on ahead
    of disk. SIGTERM makes this worker shut down; gunicorn starts a fresh one, which
    recovers from the journal."""
    os.kill(os.getpid(), signal.SIGTERM)


class StrictPaths:
    """A path parameter is one non-empty segment (§1.3): Falcon would match `/orders/`
    with an empty `order_id`, so empty segments and trailing slashes match no route."""

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        path = req.path
        if "//" in path or (path.endswith("/") and path != "/"):
            raise falcon.HTTPRouteNotFound()


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    ids: IdFactory | None = None,
    exchange: Exchange | None = None,
) -> falcon.asgi.App:
    """Build the app; tests pass a manual clock, fixed ids or a ready exchange."""
    settings = settings or load_settings()
    clock = clock or SystemClock()
    if exchange is None:
        journal = open_journal(
            settings.database_path, settings.database_sync, on_failure=stop_this_worker
        )
        exchange = Exchange(
            clock,
            ids or RandomIds(),
            expiration_interval_s=settings.expiration_interval_us / 1_000_000,
            vwap_window_us=settings.vwap_window_us,
            journal=journal,
            deliveries=DeliveryPool(settings),
        )
    if sys.getrecursionlimit() < JSON_DEPTH_RECURSION_LIMIT:
        sys.setrecursionlimit(JSON_DEPTH_RECURSION_LIMIT)
    streams = StreamHub(exchange, clock)
    app = falcon.asgi.App(middleware=[Lifespan(exchange, streams), StrictPaths()])
    app.req_options.strip_url_path_trailing_slash = False
    install_error_handlers(app)
    body = JsonBodyReader(
        settings.read_timeout_us / 1_000_000, format_duration(settings.read_timeout_us)
    )
    window = format_duration(settings.vwap_window_us)
    for template, resource in (
        *core_routes(exchange, body, clock),
        *market_routes(exchange, clock, window),
        *stocks_routes(exchange, clock, streams),
        ("/", MarketPageResource()),
        *docs_routes(),
        *webhook_routes(exchange, body),
    ):
        app.add_route(template, resource)
    return app


def create_served_app(settings: Settings | None = None) -> WriteTimeout:
    """What gunicorn serves: the app, with `WRITE_TIMEOUT` on every response body but
    event streams', and the guard that ends streams promptly (`http.stream`)."""
    settings = settings or load_settings()
    return WriteTimeout(
        EventStreamGuard(create_app(settings)), settings.write_timeout_us / 1_000_000
    )


app = create_served_app()
