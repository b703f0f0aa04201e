"""Rebuild the exchange's state from its journal by replaying facts, never matching.

Orders are replayed through the same immutable transitions the engine uses (`filled`,
`closed`), so a recovered order equals the one that was live field by field. Cash and
holdings move by each trade; reservations are then derived from the orders still
active (a limit bid holds price × remaining, an ask its remaining shares), which is
exactly what they held when the process stopped.

Two steps, so that a snapshot is this same code's work: `fold` applies facts to a
`Recovered` (and can go on later from where it stopped, or from a snapshot of it);
`finish` derives what the facts imply once the last one is in (the holds, the closed
remainders of market orders). A snapshot holds a folded state, never a finished one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from miniexchange.journal import facts as kinds
from miniexchange.journal.facts import decode, stored_answer
from miniexchange.model.candles import SymbolCandles
from miniexchange.model.commands import ASK, BID, MARKET, SubmitOrder
from miniexchange.model.credentials import Credentials
from miniexchange.model.idempotency import KeptAnswers
from miniexchange.model.ledger import Ledger
from miniexchange.model.orders import CANCELLED, EXPIRED, Order, Trade, new_order
from miniexchange.model.settlement import held_by
from miniexchange.settings import Settings

_DEFAULTS = Settings()


class UnreadableFact(Exception):
    """A fact whose body is not what its kind records (a flipped bit inside a row, which
    SQLite's page checks do not see): recovery stops rather than build a wrong state."""


@dataclass(frozen=True, slots=True)
class Retention:
    """What the fold keeps beyond the state itself, so that neither a snapshot nor a
    restart grows with the exchange's age: of a symbol's trades, the latest
    `tape_length` (the tape) and those still inside the VWAP window of the latest one
    (every trade stays reachable through its orders); of the stored idempotent
    answers, what the live store keeps (`IDEMPOTENCY_MAX_KEYS`, `IDEMPOTENCY_TTL`)."""

    tape_length: int = 500
    vwap_window_us: int = 300_000_000
    idempotency_max_keys: int = _DEFAULTS.idempotency_max_keys
    idempotency_ttl_us: int = _DEFAULTS.idempotency_ttl_us

    def kept_answers(self) -> KeptAnswers:
        """An empty store of idempotent answers with these bounds."""
        return KeptAnswers(self.idempotency_max_keys, self.idempotency_ttl_us)


DEFAULT_RETENTION: Final = Retention()


@dataclass
class Recovered:
    ledgers: dict[str, Ledger] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)  # in order of acceptance
    trades: dict[str, deque[Trade]] = field(default_factory=dict)  # per symbol: see Retention
    volumes: dict[str, int] = field(default_factory=dict)  # shares traded per symbol, all time
    candles: dict[str, SymbolCandles] = field(default_factory=dict)  # per symbol, every trade's
    known_symbols: set[str] = field(default_factory=set)
    webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> subscription
    credentials: dict[str, Credentials] = field(default_factory=dict)  # broker -> its latest
    answers: KeptAnswers = field(  # stored idempotent answers, bounded as the live store
        default_factory=DEFAULT_RETENTION.kept_answers
    )
    fact_count: int = 0
    last_at: int = 0  # the latest time any fact records


def recover(
    journal_facts: Iterable[tuple[str, bytes]],
    state: Recovered | None = None,
    retention: Retention = DEFAULT_RETENTION,
    *,
    now: int = 0,
) -> Recovered:
    """The state after `journal_facts`, continuing from `state` (a snapshot's) if given.
    `now`: the time the answers' TTL runs to, if later than the latest fact's."""
    return finish(fold(journal_facts, state, retention), now)


def fold(
    journal_facts: Iterable[tuple[str, bytes]],
    state: Recovered | None = None,
    retention: Retention = DEFAULT_RETENTION,
) -> Recovered:
    """Apply `journal_facts` in order to `state` (a new one if None) and return it.

    What it keeps depends on the facts alone (their times, not the clock), so a fold
    stopped at a snapshot and resumed keeps what one fold over every fact keeps."""
    if state is None:
        state = Recovered(answers=retention.kept_answers())
    for kind, body in journal_facts:
        state.fact_count += 1
        try:
            _apply(state, kind, decode(body), retention)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise UnreadableFact(
                f"fact {state.fact_count} ({kind}) cannot be replayed: {error!r}"
            ) from None
    state.answers.forget_expired(state.last_at)  # so a snapshot never carries them
    return state


def _apply(state: Recovered, kind: str, fact: dict[str, Any], retention: Retention) -> None:
    """One fact's effect on `state`."""
    ledgers = state.ledgers
    orders = state.orders
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
        keep_trade(state, trade, retention)
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
        state.answers.put(key, answer, state.last_at)
    else:
        raise ValueError(f"unknown journal fact {kind!r}")


def keep_trade(state: Recovered, trade: Trade, retention: Retention) -> None:
    """Count the trade in its symbol's volume and candles and keep it while the tape or
    the VWAP window of the symbol's latest trade may still show it."""
    symbol = trade.symbol
    state.volumes[symbol] = state.volumes.get(symbol, 0) + trade.quantity
    candles = state.candles.get(symbol)
    if candles is None:
        candles = state.candles[symbol] = SymbolCandles()
    candles.add(trade.price, trade.quantity, trade.executed_at)
    kept = state.trades.get(symbol)
    if kept is None:
        kept = state.trades[symbol] = deque()
    kept.append(trade)
    oldest_shown = trade.executed_at - retention.vwap_window_us
    while len(kept) > retention.tape_length and kept[0].executed_at < oldest_shown:
        kept.popleft()


def finish(state: Recovered, now: int = 0) -> Recovered:
    """Derive what the folded facts imply: the holds of the orders still active, the
    cancelled remainder of a market order (immediate-or-cancel), the answers expired
    by `now`. Once per state."""
    state.answers.forget_expired(max(state.last_at, now))
    orders, ledgers = state.orders, state.ledgers
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
