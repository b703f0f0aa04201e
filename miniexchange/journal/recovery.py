"""Rebuild the exchange's state from its journal by replaying facts, never matching.

Orders are replayed through the same immutable transitions the engine uses (`filled`,
`closed`), so a recovered order equals the one that was live field by field. Cash and
holdings move by each trade; reservations are then derived from the orders still
active (a limit bid holds price × remaining, an ask its remaining shares), which is
exactly what they held when the process stopped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from miniexchange.journal import facts as kinds
from miniexchange.journal.facts import decode, stored_answer
from miniexchange.model.commands import ASK, BID, MARKET, SubmitOrder
from miniexchange.model.credentials import Credentials
from miniexchange.model.idempotency import KeptAnswers
from miniexchange.model.ledger import Ledger
from miniexchange.model.orders import CANCELLED, EXPIRED, Order, Trade, new_order
from miniexchange.model.settlement import held_by
from miniexchange.settings import Settings

_DEFAULTS = Settings()


@dataclass
class Recovered:
    ledgers: dict[str, Ledger] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)  # in order of acceptance
    trades: dict[str, list[Trade]] = field(default_factory=dict)  # per symbol, in order
    known_symbols: set[str] = field(default_factory=set)
    webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> subscription
    credentials: dict[str, Credentials] = field(default_factory=dict)  # broker -> its latest
    answers: KeptAnswers = field(  # stored idempotent answers, bounded as the live store
        default_factory=lambda: KeptAnswers(
            _DEFAULTS.idempotency_max_keys, _DEFAULTS.idempotency_ttl_us
        )
    )
    fact_count: int = 0
    last_at: int = 0  # the latest time any fact records


def recover(
    journal_facts: Iterable[tuple[str, bytes]],
    *,
    idempotency_max_keys: int = _DEFAULTS.idempotency_max_keys,
    idempotency_ttl_us: int = _DEFAULTS.idempotency_ttl_us,
    now: int = 0,
) -> Recovered:
    """`now`: the time the answers' TTL runs to, if later than the latest fact's (the
    fold alone only knows the facts' times, so what it keeps depends on them alone)."""
    state = Recovered(answers=KeptAnswers(idempotency_max_keys, idempotency_ttl_us))
    ledgers = state.ledgers
    orders = state.orders
    for kind, body in journal_facts:
        state.fact_count += 1
        fact = decode(body)
        at = fact.get("at")
        if at is not None and at > state.last_at:
            state.last_at = at
        if kind == kinds.ORDER_ACCEPTED:
            command = SubmitOrder(
                fact["type"],
                fact["broker_id"],
                fact["document_number"],
                fact["side"],
                fact["symbol"],
                fact["quantity"],
                fact["price"],
                fact["expires_at"],
            )
            orders[fact["order_id"]] = new_order(command, fact["order_id"], at)
            state.known_symbols.add(command.symbol)
            ledgers[command.broker_id].touch(at)
        elif kind == kinds.TRADE_EXECUTED:
            trade = Trade(
                fact["trade_id"],
                fact["symbol"],
                fact["price"],
                fact["quantity"],
                at,
                fact["bid"],
                fact["ask"],
                fact["bid_broker"],
                fact["ask_broker"],
            )
            orders[trade.bid_order_id] = orders[trade.bid_order_id].filled(trade)
            orders[trade.ask_order_id] = orders[trade.ask_order_id].filled(trade)
            _move(ledgers[trade.bid_broker_id], trade, BID)
            _move(ledgers[trade.ask_broker_id], trade, ASK)
            state.trades.setdefault(trade.symbol, []).append(trade)
        elif kind == kinds.ORDER_CANCELLED:
            order = orders[fact["order_id"]]
            orders[order.order_id] = order.closed(CANCELLED, at, None)
            ledgers[order.broker_id].touch(at)
        elif kind == kinds.ORDER_EXPIRED:
            order = orders[fact["order_id"]]
            orders[order.order_id] = order.closed(EXPIRED, None, order.expires_at)
            ledgers[order.broker_id].touch(at)
        elif kind == kinds.BROKER_REGISTERED:
            holdings = {symbol: quantity for symbol, quantity in fact["holdings"]}
            ledgers[fact["broker_id"]] = Ledger(fact["broker_id"], fact["cash"], holdings, at)
            state.known_symbols.update(holdings)
        elif kind == kinds.WEBHOOK_SAVED:
            state.webhooks[fact["webhook_id"]] = fact
        elif kind == kinds.WEBHOOK_DELETED:
            state.webhooks.pop(fact["webhook_id"], None)
        elif kind == kinds.API_KEY_ISSUED:
            held = state.credentials.get(fact["broker_id"], Credentials())
            state.credentials[fact["broker_id"]] = held._replace(api_key_digest=fact["digest"])
        elif kind == kinds.WEBHOOK_SECRET_ISSUED:
            held = state.credentials.get(fact["broker_id"], Credentials())
            state.credentials[fact["broker_id"]] = held._replace(webhook_secret=fact["secret"])
        elif kind == kinds.IDEMPOTENT_ANSWER:  # the oldest go past the cap, none expired
            key, answer = stored_answer(fact)
            state.answers.put(key, answer, max(state.last_at, now))
        else:
            raise ValueError(f"unknown journal fact {kind!r}")
    state.answers.forget_expired(max(state.last_at, now))
    for order_id, order in orders.items():
        if order.type == MARKET and order.remaining_quantity:  # its IOC remainder
            orders[order_id] = order.closed(CANCELLED, None, None)
        elif order.is_active:  # what it holds now: what it held when the process stopped
            cash, quantity = held_by(order)
            ledgers[order.broker_id].restore_hold(order.symbol, cash, quantity)
    return state


def _move(ledger: Ledger, trade: Trade, side: str) -> None:
    """Cash and shares change hands (reservations are derived at the end)."""
    value = trade.price * trade.quantity
    holdings = ledger.holdings
    if side == BID:
        ledger.cash -= value
        holdings[trade.symbol] = holdings.get(trade.symbol, 0) + trade.quantity
    else:
        ledger.cash += value
        left = holdings[trade.symbol] - trade.quantity
        if left:
            holdings[trade.symbol] = left
        else:
            del holdings[trade.symbol]
    ledger.touch(trade.executed_at)
