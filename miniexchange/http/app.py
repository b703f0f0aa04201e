"""The Falcon ASGI application: routes, error rendering, and the engine's lifespan.

The resources reach the exchange through one `Engine` (`actors.seam`): the embedded
one, or with `ENGINE=ray` the cluster's (`cluster.engine`, imported only then: the
default install has no Ray). The engine starts in the ASGI lifespan startup (in the gunicorn
worker, never at import or in the master) and stops in its shutdown, after the server
has let in-flight requests finish: first the expiration clock, then the symbol actors
and the webhook dispatcher.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from typing import Any, NoReturn

import falcon
import falcon.asgi

from miniexchange.actors.seam import EmbeddedEngine, Engine
from miniexchange.clock import Clock, SystemClock
from miniexchange.http.auth import Authentication
from miniexchange.http.core import JsonBodyReader, core_routes
from miniexchange.http.docs import docs_routes
from miniexchange.http.errors import install_error_handlers
from miniexchange.http.idempotency import Idempotency, IdempotencyStore
from miniexchange.http.market import market_routes
from miniexchange.http.observability import LogLifespan, MetricsResource, RequestObserver
from miniexchange.http.page import MarketPageResource
from miniexchange.http.static_files import StaticFileResource, load_static_files
from miniexchange.http.stocks import stocks_routes
from miniexchange.http.stream_guard import guard_stream
from miniexchange.http.stream_hub import StreamHub
from miniexchange.http.webhooks import webhook_routes
from miniexchange.ids import IdFactory, RandomIds
from miniexchange.journal.store import JournalFormatError
from miniexchange.settings import Settings, format_duration, load_settings

GC_YOUNG_THRESHOLD = 50_000
"""Young collections after this many new container objects (CPython's default: 700).

Orders, trades and their tuples hold no reference cycles (ids, never back-references),
so frequent young collections only re-walk a growing book; fewer of them keep matching
flat as the book grows."""


def settle_garbage_collector() -> None:
    """After recovery: move everything loaded so far out of the collector's sight
    (`gc.freeze`), and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


class Lifespan:
    """Falcon middleware running the engine's start and stop with the ASGI lifespan."""

    def __init__(
        self,
        engine: Engine,
        streams: StreamHub | None = None,
        idempotency: IdempotencyStore | None = None,
    ) -> None:
        self.engine = engine
        self.streams = streams
        self.idempotency = idempotency

    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        try:
            self.engine.start()
        except JournalFormatError as refused:
            refuse_to_boot(str(refused))
        if self.idempotency is not None:  # answers kept before a restart still replay
            self.idempotency.restore(self.engine.recovered_answers)
            self.idempotency.start_sweeping()
        if self.streams is not None:
            self.streams.start()  # open event streams close at once on SIGTERM
        settle_garbage_collector()

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        if self.streams is not None:
            self.streams.stop()
        if self.idempotency is not None:
            self.idempotency.stop_sweeping()
        self.engine.stop()


def refuse_to_boot(message: str) -> NoReturn:
    """A journal or snapshot this version must not read: one line, and gunicorn's
    boot-error exit status (3), on which the master stops instead of retrying. No
    traceback: the line says what is wrong and with which file."""
    print(f"miniexchange: {message}", file=sys.stderr, flush=True)
    os._exit(3)  # nothing has started yet: the journal was the first thing read


def stop_this_worker(failure: BaseException) -> None:
    """Fail-stop: the journal cannot be written, so memory must not go on ahead
    of disk. SIGTERM makes this worker shut down; gunicorn starts a fresh one, which
    recovers from the journal."""
    os.kill(os.getpid(), signal.SIGTERM)


class StrictPaths:
    """A path parameter is one non-empty segment: Falcon would match `/orders/`
    with an empty `order_id`, so empty segments and trailing slashes match no route."""

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        path = req.path
        if "//" in path or (path.endswith("/") and path != "/"):
            raise falcon.HTTPRouteNotFound()


class ExchangeApp(falcon.asgi.App):
    """Falcon's ASGI app, and the one layer the exchange adds around it (every wrapper
    around an ASGI app costs each request a coroutine, so there is this one):

    - the request's raw header list stays readable: ASGI allows `scope["headers"]` to
      be a one-shot iterable (Falcon's test client passes one, of one-shot pairs);
      Falcon consumes it and joins repeated fields with commas, but the idempotency
      check must tell two `Idempotency-Key` fields from one whose value has a comma;
    - an event stream's request (a path ending in `/stream`) is served through
      `guard_stream`.

    `WRITE_TIMEOUT` is the connection's, not a layer here (`http.protocol`).
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            if type(headers) is not list:
                scope["headers"] = [tuple(pair) for pair in headers]
            if scope["path"].endswith("/stream"):
                await guard_stream(super().__call__, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def served_engine(settings: Settings, clock: Clock, ids: IdFactory) -> Engine:
    """The engine `ENGINE` names. With `ray` the cluster stamps times and ids itself."""
    if settings.engine == "ray":
        from miniexchange.cluster.engine import RayEngine

        return RayEngine.from_settings(settings)
    return EmbeddedEngine.from_settings(settings, clock, ids, on_journal_failure=stop_this_worker)


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    ids: IdFactory | None = None,
    engine: Engine | None = None,
    configure_logs: bool = False,
    observe_requests: bool = True,
) -> ExchangeApp:
    """Build the app; tests pass a manual clock, fixed ids or a ready engine (then
    `ids` is the engine's business).

    `configure_logs`: set up the process' logging at lifespan startup (the served app;
    tests keep pytest's). `observe_requests=False` leaves out the access log and the
    HTTP metrics (a benchmark's comparison; request ids stay).
    """
    settings = settings or load_settings()
    clock = clock or SystemClock()
    if engine is None:
        engine = served_engine(settings, clock, ids or RandomIds())
    streams = StreamHub(engine, settings.max_streams)
    answers = IdempotencyStore(clock, settings.idempotency_ttl_us, settings.idempotency_max_keys)
    idempotency = Idempotency(answers, engine)
    metrics = engine.metrics
    api_keys = settings.auth == "api_key"
    observer = RequestObserver(metrics if observe_requests else None, observe_requests, api_keys)
    app = ExchangeApp(
        middleware=[
            LogLifespan(settings, configure_logs),  # first: its shutdown runs last
            observer,  # before StrictPaths: its 404 gets a request id and a log line
            Lifespan(engine, streams, answers),
            StrictPaths(),
            *(
                [Authentication(settings.admin_token or "", engine.broker_with_key)]
                if api_keys
                else []
            ),
        ]
    )
    app.req_options.strip_url_path_trailing_slash = False
    install_error_handlers(app)
    body = JsonBodyReader(
        settings.read_timeout_us / 1_000_000, format_duration(settings.read_timeout_us)
    )
    window = format_duration(settings.vwap_window_us)
    routes = [
        *core_routes(engine, body, clock, idempotency, api_keys),
        *market_routes(engine, window),
        *stocks_routes(engine, streams),
        ("/", MarketPageResource(static_files := load_static_files())),
        ("/static/{path:path}", StaticFileResource(static_files)),
        *webhook_routes(engine, body, idempotency),
        ("/metrics", MetricsResource(metrics)),
    ]
    # the document of the running mode: with API keys, each route's token from its access
    access = {template: resource.access for template, resource in routes} if api_keys else None
    for template, resource in (*routes, *docs_routes(access)):
        app.add_route(template, resource)
    return app


OBSERVABILITY_SWITCH = "MINIEXCHANGE_OBSERVABILITY"
"""`off`: no access log and no HTTP metrics. Not a setting of the contract: only the
benchmark sets it, to measure what they cost (`python -m bench --observability`)."""


def create_served_app(settings: Settings | None = None) -> ExchangeApp:
    """What gunicorn serves: the app with its logging set up in the worker at lifespan
    startup (`LogLifespan`), and the access log and HTTP metrics unless the benchmark
    turned them off."""
    settings = settings or load_settings()
    observe = os.environ.get(OBSERVABILITY_SWITCH, "") != "off"
    return create_app(settings, configure_logs=True, observe_requests=observe)


app = create_served_app()
