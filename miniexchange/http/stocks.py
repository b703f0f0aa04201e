"""`GET /stocks`, the public tape `GET /stocks/{symbol}/trades` and the candles
`GET /stocks/{symbol}/candles`.

Both read what the symbol actors publish (`actors.market_data`), so they never queue
behind matching. The one exception keeps expiry exact (a due order never shows): a published summary whose book
holds an order that is due by now (its `next_expiry` has passed and no sweep has run
yet) may show that order's price, so for that symbol the actor is asked for its best
levels, and it expires the due orders before it answers.
"""

from __future__ import annotations

import asyncio
from functools import partial

import falcon
import falcon.asgi

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.market_data import Summary
from miniexchange.actors.messages import ReadBook
from miniexchange.clock import Clock
from miniexchange.http.auth import PUBLIC
from miniexchange.http.bridge import call
from miniexchange.http.market import SymbolResource
from miniexchange.http.query_params import parse_query, validate_candles, validate_trades_limit
from miniexchange.http.render import candles_json, stocks_json, trades_json
from miniexchange.http.resource import Resource, send_json
from miniexchange.http.stream import StreamResource
from miniexchange.http.stream_hub import StreamHub


class StocksResource(Resource):
    methods = ("GET",)
    access = PUBLIC

    def __init__(self, exchange: Exchange, clock: Clock) -> None:
        self.exchange = exchange
        self.clock = clock

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        exchange = self.exchange
        market_data = exchange.market_data
        # Actor threads add to the set as orders are accepted: copy it (atomically)
        # before iterating.
        symbols = sorted(exchange.known_symbols.copy())
        entries = [(symbol, market_data.summary(symbol)) for symbol in symbols]
        now = self.clock.now()
        stale = [
            position
            for position, (_, summary) in enumerate(entries)
            if summary.next_expiry is not None and summary.next_expiry <= now
        ]
        if stale:
            fresh = await asyncio.gather(*(self._best_prices(*entries[i]) for i in stale))
            for position, summary in zip(stale, fresh, strict=True):
                entries[position] = (entries[position][0], summary)
        send_json(resp, 200, stocks_json(entries))

    async def _best_prices(self, symbol: str, summary: Summary) -> Summary:
        """The summary with best prices read from the actor, due orders left out."""
        actor = self.exchange.existing_symbol_actor(symbol)
        if actor is None:  # never happens: a published book has an actor
            return summary
        view = await call(actor, partial(ReadBook, 1))
        return summary._replace(
            best_bid=view.bids[0].price if view.bids else None,
            best_ask=view.asks[0].price if view.asks else None,
        )


class TradesResource(SymbolResource):
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, symbol: str
    ) -> None:
        limit = validate_trades_limit(parse_query(req.query_string))  # before the symbol
        self.actor_of_known(symbol)
        feed = self.exchange.market_data.get(symbol)
        trades = [] if feed is None else feed.latest_trades(limit)
        send_json(resp, 200, trades_json(symbol, trades))


class CandlesResource(SymbolResource):
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, symbol: str
    ) -> None:
        interval, limit = validate_candles(parse_query(req.query_string))  # before the symbol
        self.actor_of_known(symbol)
        feed = self.exchange.market_data.get(symbol)
        candles = [] if feed is None else feed.latest_candles(interval, limit)
        send_json(resp, 200, candles_json(symbol, interval, candles))


def stocks_routes(
    exchange: Exchange, clock: Clock, streams: StreamHub
) -> tuple[tuple[str, Resource], ...]:
    return (
        ("/stocks", StocksResource(exchange, clock)),
        ("/stocks/{symbol}/trades", TradesResource(exchange, clock)),
        ("/stocks/{symbol}/candles", CandlesResource(exchange, clock)),
        ("/stocks/{symbol}/stream", StreamResource(exchange, clock, streams)),
    )
