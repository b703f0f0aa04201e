"""The facts the journal records, and their encoding.

Facts, not requests: recovery replays decisions and never re-runs matching. Balances
and reservations are derived from registrations, trades and the open orders, so they
are not recorded apart. Each fact is `(kind, JSON bytes)`; integers stay integers
(cents, shares, microseconds).
"""

from __future__ import annotations

import base64
from typing import Any, Protocol

import orjson

from miniexchange.model.commands import RegisterBroker
from miniexchange.model.engine import Outcome
from miniexchange.model.idempotency import Key, StoredAnswer, fingerprint_digest
from miniexchange.model.orders import Order, Trade

Fact = tuple[str, bytes]

BROKER_REGISTERED = "broker_registered"
ORDER_ACCEPTED = "order_accepted"
TRADE_EXECUTED = "trade_executed"
ORDER_CANCELLED = "order_cancelled"
ORDER_EXPIRED = "order_expired"
WEBHOOK_SAVED = "webhook_saved"
WEBHOOK_DELETED = "webhook_deleted"
IDEMPOTENT_ANSWER = "idempotent_answer"
API_KEY_ISSUED = "api_key_issued"
WEBHOOK_SECRET_ISSUED = "webhook_secret_issued"


def broker_registered(command: RegisterBroker, created_at: int) -> Fact:
    return BROKER_REGISTERED, orjson.dumps(
        {
            "broker_id": command.broker_id,
            "cash": command.initial_cash,
            "holdings": command.holdings,
            "at": created_at,
        }
    )


def order_accepted(order: Order) -> Fact:
    return ORDER_ACCEPTED, orjson.dumps(
        {
            "order_id": order.order_id,
            "type": order.type,
            "broker_id": order.broker_id,
            "document_number": order.document_number,
            "side": order.side,
            "symbol": order.symbol,
            "price": order.price,
            "quantity": order.quantity,
            "expires_at": order.expires_at,
            "at": order.created_at,
        }
    )


def trade_executed(trade: Trade) -> Fact:
    return TRADE_EXECUTED, orjson.dumps(
        {
            "trade_id": trade.trade_id,
            "symbol": trade.symbol,
            "price": trade.price,
            "quantity": trade.quantity,
            "at": trade.executed_at,
            "bid": trade.bid_order_id,
            "ask": trade.ask_order_id,
            "bid_broker": trade.bid_broker_id,
            "ask_broker": trade.ask_broker_id,
        }
    )


def order_closed(order: Order, at: int) -> Fact:
    """A cancellation (DELETE) or an expiry; `at` is when the exchange processed it."""
    if order.expired_at is not None:
        return ORDER_EXPIRED, orjson.dumps({"order_id": order.order_id, "at": at})
    return ORDER_CANCELLED, orjson.dumps({"order_id": order.order_id, "at": order.cancelled_at})


def step_facts(outcome: Outcome) -> list[Fact]:
    """What a matching step decided, in the order recovery must replay it: the orders
    it closed (due ones expire before a submission), the accepted order, its trades.
    A market order's IOC remainder is no fact: recovery derives it."""
    recorded = [order_closed(order, outcome.at) for order in outcome.closed]
    if outcome.accepted is not None:
        recorded.append(order_accepted(outcome.accepted))
        recorded.extend(trade_executed(trade) for trade in outcome.trades)
    return recorded


def api_key_issued(broker_id: str, digest: str, at: int) -> Fact:
    """A broker's new API key, by its digest only (the key itself is never kept)."""
    return API_KEY_ISSUED, orjson.dumps({"broker_id": broker_id, "digest": digest, "at": at})


def webhook_secret_issued(broker_id: str, secret: str, at: int) -> Fact:
    """A broker's new webhook secret (kept as it is: deliveries are signed with it)."""
    return WEBHOOK_SECRET_ISSUED, orjson.dumps({"broker_id": broker_id, "secret": secret, "at": at})


def webhook_saved(subscription: dict[str, Any]) -> Fact:
    return WEBHOOK_SAVED, orjson.dumps(subscription)


def webhook_deleted(webhook_id: str) -> Fact:
    return WEBHOOK_DELETED, orjson.dumps({"webhook_id": webhook_id})


def idempotent_answer(answer: dict[str, Any]) -> Fact:
    """A stored `Idempotency-Key` answer, journaled with the facts it describes.

    The request is recorded as `digest`, the base64 SHA-256 of its fingerprint (a fixed
    44 characters); journals written before kept the whole fingerprint instead, under
    `fingerprint`, and `stored_answer` reads both."""
    return IDEMPOTENT_ANSWER, orjson.dumps(answer)


def answer_fact(key: Key, answer: StoredAnswer) -> Fact:
    """A kept answer as `idempotent_answer` records it; `stored_answer` reads it back."""
    endpoint, idempotency_key = key
    return idempotent_answer(
        {
            "endpoint": endpoint,
            "key": idempotency_key,
            "digest": base64.b64encode(answer.digest).decode(),
            "status": answer.status,
            "body": base64.b64encode(answer.body).decode(),
            "at": answer.first_used_at,
        }
    )


def stored_answer(fact: dict[str, Any]) -> tuple[Key, StoredAnswer]:
    """An answer fact, decoded: its key and what the store keeps of it."""
    if "digest" in fact:
        digest = base64.b64decode(fact["digest"])
    else:  # the earlier encoding: the whole fingerprint
        digest = fingerprint_digest(base64.b64decode(fact["fingerprint"]))
    answer = StoredAnswer(digest, fact["status"], base64.b64decode(fact["body"]), fact["at"])
    return (fact["endpoint"], fact["key"]), answer


class KeepAnswer(Protocol):
    """Travels with a command when its request's answer is to be kept (an
    `Idempotency-Key`): the actor that decides the command journals `fact(outcome)`
    with the outcome's own facts, in one commit."""

    def fact(self, outcome: Any) -> Fact | None:
        """The answer to `outcome` as a fact (`answer_fact`), or None if it is not kept."""

    @property
    def idempotency_key(self) -> Key:
        """(endpoint, key): whose answer this is."""


def decode(body: bytes) -> dict[str, Any]:
    return orjson.loads(body)
