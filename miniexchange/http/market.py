"""Market data and the broker order listing: price, book, quote, a broker's orders.

The engine answers book, quote and price between two writes (so a snapshot is never
half a matching pass) with due orders left out, and a symbol that is known but never
had an order with an empty book; the listing is one page of the published orders.
"""

from __future__ import annotations

import falcon
import falcon.asgi

from miniexchange.actors.seam import Engine
from miniexchange.http.auth import PUBLIC, act_for
from miniexchange.http.query_params import (
    parse_query,
    validate_depth,
    validate_listing,
    validate_quote,
)
from miniexchange.http.render import book_json, listing_json, price_json, quote_json
from miniexchange.http.resource import Resource, send_json
from miniexchange.model.errors import broker_not_found, symbol_not_found


class SymbolResource(Resource):
    methods = ("GET",)
    access = PUBLIC

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def check_known(self, symbol: str) -> None:
        """404 unless the symbol is known (listed)."""
        if not self.engine.is_listed(symbol):
            raise symbol_not_found(symbol)


class PriceResource(SymbolResource):
    def __init__(self, engine: Engine, window: str) -> None:
        super().__init__(engine)
        self.window = window

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, symbol: str
    ) -> None:
        self.check_known(symbol)
        price = await self.engine.price(symbol)
        send_json(resp, 200, price_json(symbol, price, self.window))


class BookResource(SymbolResource):
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, symbol: str
    ) -> None:
        depth = validate_depth(parse_query(req.query_string))
        self.check_known(symbol)
        view = await self.engine.book(symbol, depth)
        send_json(resp, 200, book_json(symbol, view.bids, view.asks, view.snapshot_at))


class QuoteResource(SymbolResource):
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, symbol: str
    ) -> None:
        side, quantity = validate_quote(parse_query(req.query_string))
        self.check_known(symbol)
        view = await self.engine.quote(symbol, side, quantity)
        send_json(resp, 200, quote_json(symbol, side, quantity, view.levels, view.quoted_at))


class BrokerOrdersResource(Resource):
    methods = ("GET",)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, broker_id: str
    ) -> None:
        status, page, limit = validate_listing(parse_query(req.query_string))
        act_for(req, broker_id)
        engine = self.engine
        if not engine.is_registered(broker_id):
            raise broker_not_found(broker_id)
        # newest first; equal created_at in reverse order of acceptance; one page read
        orders, total = await engine.broker_orders(broker_id, status, (page - 1) * limit, limit)
        send_json(resp, 200, listing_json(orders, total, page, limit))


def market_routes(engine: Engine, window: str) -> tuple[tuple[str, Resource], ...]:
    return (
        ("/stocks/{symbol}/price", PriceResource(engine, window)),
        ("/stocks/{symbol}/book", BookResource(engine)),
        ("/stocks/{symbol}/quote", QuoteResource(engine)),
        ("/brokers/{broker_id}/orders", BrokerOrdersResource(engine)),
    )
