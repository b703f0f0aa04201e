"""Webhook subscriptions over HTTP: subscribe, list, unsubscribe.

Every 400 is decided before the broker lookup, which needs no hop (the engine's
registered brokers); the subscription table itself is the engine's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import falcon
import falcon.asgi
import orjson

from miniexchange.actors.seam import Engine
from miniexchange.http.auth import act_for, owner_of
from miniexchange.http.core import JsonBodyReader
from miniexchange.http.errors import answer_or_refusal
from miniexchange.http.idempotency import Idempotency
from miniexchange.http.query_params import parse_query, validate_webhook_broker_query
from miniexchange.http.request_bodies import validate_webhook_subscription
from miniexchange.http.resource import Resource, send_json
from miniexchange.journal.facts import KeepAnswer
from miniexchange.model.errors import broker_not_found
from miniexchange.model.formats import timestamp
from miniexchange.model.subscriptions import Subscription, Upserted


def subscription_dict(subscription: Subscription) -> dict[str, Any]:
    return {
        "webhook_id": subscription.webhook_id,
        "broker_id": subscription.broker_id,
        "event": subscription.event,
        "url": subscription.url,
        "created_at": timestamp(subscription.created_at),
        "updated_at": timestamp(subscription.updated_at),
    }


def webhooks_json(subscriptions: Iterable[Subscription]) -> bytes:
    return orjson.dumps({"webhooks": [subscription_dict(s) for s in subscriptions]})


# 201 when any subscription was created, else 200
render_upsert = answer_or_refusal(
    lambda upserted: (201 if upserted.created else 200, webhooks_json(upserted.subscriptions))
)


class WebhooksResource(Resource):
    methods = ("GET", "POST")

    def __init__(self, engine: Engine, body: JsonBodyReader, idempotency: Idempotency) -> None:
        self.engine = engine
        self.body = body
        self.idempotency = idempotency

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await self.body.read(req)
        await self.idempotency.respond(
            req,
            resp,
            "/webhooks",
            body,
            lambda keep: self.subscribe(req, body, keep),
            render_upsert,
        )

    async def subscribe(
        self, req: falcon.asgi.Request, body: dict[str, Any], keep: KeepAnswer | None
    ) -> Upserted:
        broker_id, url, events = validate_webhook_subscription(body)
        act_for(req, broker_id)
        if not self.engine.is_registered(broker_id):
            await self.idempotency.refuse(keep, broker_not_found(broker_id))
        return await self.engine.subscribe(broker_id, url, events, keep)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        broker_id = validate_webhook_broker_query(parse_query(req.query_string))
        act_for(req, broker_id)
        if not self.engine.is_registered(broker_id):
            raise broker_not_found(broker_id)
        subscriptions = await self.engine.webhooks(broker_id)
        send_json(resp, 200, webhooks_json(subscriptions))


class WebhookResource(Resource):
    methods = ("DELETE",)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, webhook_id: str
    ) -> None:
        owner = owner_of(req)  # another broker's subscription: as if it did not exist
        await self.engine.unsubscribe(webhook_id, owner)
        resp.status = 204


def webhook_routes(
    engine: Engine, body: JsonBodyReader, idempotency: Idempotency
) -> tuple[tuple[str, Resource], ...]:
    return (
        ("/webhooks", WebhooksResource(engine, body, idempotency)),
        ("/webhooks/{webhook_id}", WebhookResource(engine)),
    )
