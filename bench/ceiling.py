"""The `limit` scenario's ceiling: the served app, with `POST /orders` answering a fixed order.

`python -m bench --http` serves this app (`gunicorn -c config/gunicorn.conf.py
bench.ceiling:app`) for one extra `limit` run. Everything of `make run` is there (uvicorn,
Falcon, the middleware, the access log, the metrics, the write timeout), and the
orders resource reads the body and parses it with orjson, then answers one fixed
order of the size a real one has. Nothing else: no validation, no actor, no matching,
no rendering. So its rate is what `limit` could reach if an order's own work cost
nothing, and the gap between it and `limit` is that work, per request.
"""

from __future__ import annotations

import falcon
import falcon.asgi
import orjson

from miniexchange.http.app import create_served_app
from miniexchange.http.core import Resource, send_json

FIXED_ORDER = orjson.dumps(
    {
        "order_id": "ord-00000000-0000-4000-8000-000000000001",
        "type": "limit",
        "broker_id": "bench-broker-00",
        "document_number": "10000000000",
        "side": "bid",
        "symbol": "AAPL",
        "quantity": 10,
        "filled_quantity": 0,
        "remaining_quantity": 10,
        "cancelled_quantity": 0,
        "status": "pending",
        "created_at": "2026-11-26T00:00:00Z",
        "average_price": None,
        "trades": [],
        "price": orjson.Fragment(b"100.00"),
        "expires_at": "2099-01-01T00:00:00Z",
        "cancelled_at": None,
        "expired_at": None,
    }
)


class FixedOrderResource(Resource):
    methods = ("POST",)

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        orjson.loads(await req.stream.read())
        send_json(resp, 201, FIXED_ORDER)


app = create_served_app()
app.add_route("/orders", FixedOrderResource())
