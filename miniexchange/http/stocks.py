"""`GET /stocks`, the public tape `GET /stocks/{symbol}/trades` and the candles
`GET /stocks/{symbol}/candles`.

All three read what the engine publishes of each symbol, so they never queue behind
matching; the engine keeps expiry exact (a due order never shows in a summary's best
prices, `Engine.stocks`).
"""

from __future__ import annotations

import falcon
import falcon.asgi

from miniexchange.actors.seam import Engine
from miniexchange.http.auth import PUBLIC
from miniexchange.http.market import SymbolResource
from miniexchange.http.query_params import parse_query, validate_candles, validate_trades_limit
from miniexchange.http.render import candles_json, stocks_json, trades_json
from miniexchange.http.resource import Resource, send_json
from miniexchange.http.stream import StreamResource
from miniexchange.http.stream_hub import StreamHub


class StocksResource(Resource):
    methods = ("GET",)
    access = PUBLIC

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        send_json(resp, 200, stocks_json(await self.engine.stocks()))


class TradesResource(SymbolResource):
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, symbol: str
    ) -> None:
        limit = validate_trades_limit(parse_query(req.query_string))  # before the symbol
        self.check_known(symbol)
        trades = await self.engine.trades(symbol, limit)
        send_json(resp, 200, trades_json(symbol, trades))


class CandlesResource(SymbolResource):
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, symbol: str
    ) -> None:
        interval, limit = validate_candles(parse_query(req.query_string))  # before the symbol
        self.check_known(symbol)
        candles = await self.engine.candles(symbol, interval, limit)
        send_json(resp, 200, candles_json(symbol, interval, candles))


def stocks_routes(engine: Engine, streams: StreamHub) -> tuple[tuple[str, Resource], ...]:
    return (
        ("/stocks", StocksResource(engine)),
        ("/stocks/{symbol}/trades", TradesResource(engine)),
        ("/stocks/{symbol}/candles", CandlesResource(engine)),
        ("/stocks/{symbol}/stream", StreamResource(engine, streams)),
    )
