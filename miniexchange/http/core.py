"""Resources of the core API: brokers, orders, balance, health."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi
import orjson

from miniexchange.actors.seam import Engine
from miniexchange.clock import Clock
from miniexchange.http.auth import ADMIN, PUBLIC, act_for, may_see
from miniexchange.http.errors import answer_or_refusal
from miniexchange.http.json_body import parse_json_object
from miniexchange.http.render import balance_json, order_json, registration_json
from miniexchange.http.request_bodies import validate_order, validate_registration
from miniexchange.http.resource import Resource, send_json
from miniexchange.http.timeouts import Deadline
from miniexchange.journal.facts import KeepAnswer
from miniexchange.model.commands import MARKET
from miniexchange.model.errors import (
    ExchangeError,
    broker_not_found,
    no_liquidity,
    not_cancellable,
    order_not_found,
    symbol_limit_reached,
)

if TYPE_CHECKING:
    from miniexchange.http.idempotency import Idempotency

MAX_BODY_BYTES = 1_048_576


class JsonBodyReader:
    """Reads a request body within the size limit (1 MiB) and `READ_TIMEOUT`.

    The served app is called at the end of the headers, body or not (`http.protocol`):
    a declared length over the limit is refused before any of the body comes, and the
    deadline runs from about the end of the headers."""

    def __init__(self, read_timeout_s: float, read_timeout_text: str) -> None:
        self.read_timeout_s = read_timeout_s
        self.timeout_message = f"Request body not received within {read_timeout_text}"

    async def read(self, req: falcon.asgi.Request) -> dict:
        length = req.content_length
        if length is not None and length > MAX_BODY_BYTES:
            raise _too_large()
        try:
            # not wait_for: it starts a task per request, a measurable share of a POST
            async with Deadline(self.read_timeout_s):
                body = await req.stream.read(MAX_BODY_BYTES + 1)
        except TimeoutError:
            raise ExchangeError("request_timeout", self.timeout_message) from None
        if len(body) > MAX_BODY_BYTES:
            raise _too_large()
        return parse_json_object(req.content_type, body)


def _too_large() -> ExchangeError:
    return ExchangeError(
        "payload_too_large", f"Request body must not exceed {MAX_BODY_BYTES} bytes"
    )


class HealthResource(Resource):
    methods = ("GET",)
    access = PUBLIC

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        send_json(resp, 200, b'{"status":"ok"}')


class BrokersResource(Resource):
    methods = ("POST",)
    access = ADMIN

    def __init__(
        self,
        engine: Engine,
        body: JsonBodyReader,
        idempotency: Idempotency,
        with_credentials: bool = False,
    ) -> None:
        """`with_credentials` (`AUTH=api_key`): the answer holds the broker's new API key
        and webhook secret, so `Idempotency-Key` is ignored (nothing secret is kept)."""
        self.engine = engine
        self.body = body
        self.idempotency = idempotency
        self.with_credentials = with_credentials

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await self.body.read(req)

        async def register(keep: KeepAnswer | None) -> Any:
            command = validate_registration(body)
            return await self.engine.register(command, keep)

        if not self.with_credentials:
            await self.idempotency.respond(
                req, resp, "/brokers", body, register, render_registration
            )
            return
        balance = await register(None)
        issued = await self.engine.issue(balance.broker_id, True, True)
        send_json(resp, 201, registration_json(balance, issued))


render_registration = answer_or_refusal(lambda balance: (201, registration_json(balance)))


class BalanceResource(Resource):
    methods = ("GET",)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, broker_id: str
    ) -> None:
        act_for(req, broker_id)
        # The engine answers after every settlement of the orders answered before (the
        # embedded one: a message to the broker's account actor, told them first).
        balance = await self.engine.balance(broker_id)
        send_json(resp, 200, balance_json(balance))


class OrdersResource(Resource):
    methods = ("POST",)

    def __init__(
        self, engine: Engine, body: JsonBodyReader, clock: Clock, idempotency: Idempotency
    ) -> None:
        self.engine = engine
        self.body = body
        self.clock = clock
        self.idempotency = idempotency

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await self.body.read(req)
        await self.idempotency.respond(
            req,
            resp,
            "/orders",
            body,
            lambda keep: self.submit(req, body, keep),
            render_order,
        )

    async def submit(
        self, req: falcon.asgi.Request, body: dict[str, Any], keep: KeepAnswer | None
    ) -> Any:
        command = validate_order(body, self.clock.now())
        act_for(req, command.broker_id)
        request_id = req.context.request_id
        engine = self.engine
        if not engine.is_registered(command.broker_id):
            engine.metrics.count_order(command.type, command.side, "broker_not_found")
            await self.idempotency.refuse(keep, broker_not_found(command.broker_id))
        if command.type == MARKET:
            # A market order never lists its symbol, but the limit is checked before
            # its own 409s (a limit order claims its place in its account actor).
            if not engine.has_place_for(command.symbol):
                engine.metrics.count_order(command.type, command.side, "symbol_limit_reached")
                await self.idempotency.refuse(keep, symbol_limit_reached(engine.max_symbols))
            if not engine.has_book(command.symbol):
                # no book yet: nothing to trade against
                engine.metrics.count_order(command.type, command.side, "no_liquidity")
                await self.idempotency.refuse(keep, no_liquidity(command.symbol))
        return await engine.submit(command, keep, request_id)


render_order = answer_or_refusal(lambda order: (201, order_json(order)))


class OrderResource(Resource):
    methods = ("GET", "DELETE")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, order_id: str
    ) -> None:
        order = await self.engine.order(order_id)
        if order is None or not may_see(req, order.broker_id):
            raise order_not_found(order_id)
        send_json(resp, 200, order_json(order))

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, order_id: str
    ) -> None:
        order = await self.engine.order(order_id)
        if order is None or not may_see(req, order.broker_id):
            raise order_not_found(order_id)
        if not order.is_active:  # a terminal state never changes: answer without a hop
            raise not_cancellable(order.order_id, order.status)
        cancelled = await self.engine.cancel(order.symbol, order_id, req.context.request_id)
        send_json(resp, 200, order_json(cancelled))


class CredentialResource(Resource):
    """`POST /brokers/{broker_id}/api_key` or `/webhook_secret` (`AUTH=api_key` only):
    a new one, the old one revoked at once. No body is read (one sent is ignored)."""

    methods = ("POST",)
    access = ADMIN

    def __init__(self, engine: Engine, kind: str) -> None:
        self.engine = engine
        self.kind = kind  # "api_key" or "webhook_secret"

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, broker_id: str
    ) -> None:
        api_key = self.kind == "api_key"
        issued = await self.engine.issue(broker_id, api_key, not api_key)
        value = issued.api_key if api_key else issued.webhook_secret
        send_json(resp, 201, orjson.dumps({"broker_id": broker_id, self.kind: value}))


def core_routes(
    engine: Engine,
    body: JsonBodyReader,
    clock: Clock,
    idempotency: Idempotency,
    api_keys: bool = False,
) -> Iterable[tuple[str, Resource]]:
    """`api_keys` (`AUTH=api_key`): registration answers credentials, and the routes
    that issue new ones exist."""
    routes: list[tuple[str, Resource]] = [
        ("/healthz", HealthResource()),
        ("/brokers", BrokersResource(engine, body, idempotency, api_keys)),
        ("/brokers/{broker_id}/balance", BalanceResource(engine)),
        ("/orders", OrdersResource(engine, body, clock, idempotency)),
        ("/orders/{order_id}", OrderResource(engine)),
    ]
    if api_keys:
        for kind in ("api_key", "webhook_secret"):
            routes.append((f"/brokers/{{broker_id}}/{kind}", CredentialResource(engine, kind)))
    return routes
