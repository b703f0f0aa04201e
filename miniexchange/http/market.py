"""Market data and the broker order listing: price, book, quote, a broker's orders.

Book, quote and price are read from the symbol's actor, which answers between two
writes (so a snapshot is never half a matching pass) after expiring what is due (so
due orders are left out). A symbol that is known but never had an order has no actor
and an empty book: it is answered here without starting one. The listing reads the
published order values (`ReadIndex`) with no actor hop at all.
"""

from __future__ import annotations

import falcon
import falcon.asgi
import pykka

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.messages import ReadBook, ReadPrice, ReadQuote
from miniexchange.clock import Clock
from miniexchange.http.auth import PUBLIC, act_for
from miniexchange.http.bridge import call
from miniexchange.http.query_params import (
    parse_query,
    validate_depth,
    validate_listing,
    validate_quote,
)
from miniexchange.http.render import book_json, listing_json, price_json, quote_json
from miniexchange.http.resource import Resource, send_json
from miniexchange.model.errors import broker_not_found, symbol_not_found
from miniexchange.model.vwap import Price


class SymbolResource(Resource):
    methods = ("GET",)
    access = PUBLIC

    def __init__(self, exchange: Exchange, clock: Clock) -> None:
        self.exchange = exchange
        self.clock = clock

    def actor_of_known(self, symbol: str) -> pykka.ActorRef | None:
        """The symbol's actor (None if it never had an order); 404 if it is not known."""
        if symbol not in self.exchange.known_symbols:
            raise symbol_not_found(symbol)
        return self.exchange.existing_symbol_actor(symbol)


class PriceResource(SymbolResource):
    def __init__(self, exchange: Exchange, clock: Clock, window: str) -> None:
        super().__init__(exchange, clock)
        self.window = window

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, symbol: str
    ) -> None:
        actor = self.actor_of_known(symbol)
        price = Price(None, 0, None) if actor is None else await call(actor, ReadPrice)
        send_json(resp, 200, price_json(symbol, price, self.window))


class BookResource(SymbolResource):
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, symbol: str
    ) -> None:
        depth = validate_depth(parse_query(req.query_string))
        actor = self.actor_of_known(symbol)
        if actor is None:
            send_json(resp, 200, book_json(symbol, [], [], self.clock.now()))
            return
        view = await call(actor, lambda reply: ReadBook(depth, reply))
        send_json(resp, 200, book_json(symbol, view.bids, view.asks, view.snapshot_at))


class QuoteResource(SymbolResource):
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, symbol: str
    ) -> None:
        side, quantity = validate_quote(parse_query(req.query_string))
        actor = self.actor_of_known(symbol)
        if actor is None:
            send_json(resp, 200, quote_json(symbol, side, quantity, [], self.clock.now()))
            return
        view = await call(actor, lambda reply: ReadQuote(side, quantity, reply))
        send_json(resp, 200, quote_json(symbol, side, quantity, view.levels, view.quoted_at))


class BrokerOrdersResource(Resource):
    methods = ("GET",)

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, broker_id: str
    ) -> None:
        status, page, limit = validate_listing(parse_query(req.query_string))
        act_for(req, broker_id)
        exchange = self.exchange
        if not exchange.is_registered(broker_id):
            raise broker_not_found(broker_id)
        # newest first; equal created_at in reverse order of acceptance; one page read
        orders, total = exchange.read_index.page(broker_id, status, (page - 1) * limit, limit)
        send_json(resp, 200, listing_json(orders, total, page, limit))


def market_routes(
    exchange: Exchange, clock: Clock, window: str
) -> tuple[tuple[str, Resource], ...]:
    return (
        ("/stocks/{symbol}/price", PriceResource(exchange, clock, window)),
        ("/stocks/{symbol}/book", BookResource(exchange, clock)),
        ("/stocks/{symbol}/quote", QuoteResource(exchange, clock)),
        ("/brokers/{broker_id}/orders", BrokerOrdersResource(exchange)),
    )
