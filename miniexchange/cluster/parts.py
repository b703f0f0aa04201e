"""The documents that travel to and between the shards: the sequencer's `Batch`, R1's
`MatchPart` (account → symbol shard) and ME's `SettlePart` (symbol → account shard).

Each is one orjson document, not pickled Python values: measured, pickled tuples cost
about twice the CPU per order of the same values in one orjson document
(bench/results/ray_hop.md), and a batch makes `ACCOUNT_SHARDS × (1 + 2 × SYMBOL_SHARDS)`
calls (docs/ray.md, "Batches"). Like the worker's part (`batches.encode_part`) a
document carries a format number and its kind
(`"part"`): the shards are detached actors started apart and may run different code, so
a mismatch is a clear refusal (`BatchFormatError`), never a misread.

Values are flat arrays led by their kind; money is integer cents and times integer
microseconds, never a float. It reuses what exists: a write command is encoded as the
worker's part encodes it (`batches.encode_command`), and an order as a snapshot records
it (`snapshot.order_fields`), with its trades, rebuilt by the engine's own transitions
(`snapshot.rebuilt_order`), so a decoded order equals the one sent field by field. In a
settle part, where one order travels as its state, in its events and as the other side's
counterpart, each trade and order is written once into the part's tables and named by
index (format 2).
Decoding gives values equal to the encoded ones, except that an `ExchangeError` is a new
exception with the same code and message (exceptions compare by identity).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from miniexchange.actors.messages import Issued
from miniexchange.cluster.batches import (
    BatchFormatError,
    _bool,
    _int,
    _list,
    _optional,
    _str,
    decode_command,
    decoded_by_kind,
    encode_command,
)
from miniexchange.cluster.shards import (
    BUDGET,
    NOTHING,
    RESERVED,
    SHORTFALL,
    Answer,
    Effects,
    MatchPart,
    OrderState,
    SettlePart,
    ToMatch,
)
from miniexchange.cluster.stamped import Batch, Command, Stamped, Tick
from miniexchange.journal.snapshot import order_fields, rebuilt_order
from miniexchange.model.errors import ExchangeError
from miniexchange.model.events import Event, OrderClosed, TradeExecuted
from miniexchange.model.ledger import (
    Accepted,
    Balance,
    Held,
    Holding,
    LedgerChange,
    Released,
    Settled,
    SettlementLeg,
)
from miniexchange.model.orders import Order, Trade
from miniexchange.model.subscriptions import Subscription, Upserted

FORMAT = 2  # the format of these documents; a decoder refuses any other

BATCH = "batch"
MATCH = "match"
SETTLE = "settle"
ANSWERS = "answers"


class ShardFailure(RuntimeError):
    """The answer of a command on which a shard's actor failed (a bug, not a refusal):
    it travels as its text, and whoever waits for it fails as on any other error."""


# -- the documents --------------------------------------------------------------------


def encode_batch(batch: Batch) -> bytes:
    """`{"format": 2, "part": "batch", "k", "after", "commands": [stamped, ...]}`."""
    return orjson.dumps(
        {
            "format": FORMAT,
            "part": BATCH,
            "k": batch.k,
            "after": batch.after,
            "commands": [_encode_stamped(stamped) for stamped in batch.commands],
        }
    )


def decode_batch(document: bytes) -> Batch:
    """The batch `encode_batch` made, equal to it; anything else is a `BatchFormatError`."""
    value = read_document(document, BATCH)
    return Batch(
        _int(document_field(value, BATCH, "k")),
        _int(document_field(value, BATCH, "after")),
        tuple(
            _decode_stamped(stamped) for stamped in _list(document_field(value, BATCH, "commands"))
        ),
    )


def encode_match_part(part: MatchPart) -> bytes:
    """`{"format": 2, "part": "match", "k", "sender", "commands": [to_match, ...]}`."""
    return orjson.dumps(
        {
            "format": FORMAT,
            "part": MATCH,
            "k": part.k,
            "sender": part.sender,
            "commands": [
                [funds, symbol, cash, quantity, *_encode_stamped(stamped)]
                for stamped, funds, symbol, cash, quantity in part.commands
            ],
        }
    )


def decode_match_part(document: bytes) -> MatchPart:
    """The part `encode_match_part` made, equal to it; anything else a `BatchFormatError`."""
    value = read_document(document, MATCH)
    return MatchPart(
        _int(document_field(value, MATCH, "k")),
        _int(document_field(value, MATCH, "sender")),
        tuple(
            _decode_to_match(command) for command in _list(document_field(value, MATCH, "commands"))
        ),
    )


def encode_settle_part(part: SettlePart) -> bytes:
    """`{"format": 2, "part": "settle", "k", "sender", "trades": [trade, ...], "orders":
    [[*order fields, [trade index, ...]], ...], "effects": [[seq, changes, [[new, order
    index], ...], events], ...], "answers": [[seq, kind, *fields], ...]}`.

    An order travels several times in a part (its state, each event, as the state of the
    other side) and a trade with every order it filled: each goes once into the part's
    tables and is named by its index, so it is encoded, checked and rebuilt once."""
    tables = _Tables()
    effects = [
        [
            effect.seq,
            [_encode_change(change) for change in effect.changes],
            [[state.new, tables.order(state.order)] for state in effect.orders],
            [tables.event(event) for event in effect.events],
        ]
        for effect in part.effects
    ]
    return orjson.dumps(
        {
            "format": FORMAT,
            "part": SETTLE,
            "k": part.k,
            "sender": part.sender,
            "trades": tables.trades,
            "orders": tables.orders,
            "effects": effects,
            "answers": [[seq, *encode_answer(value)] for seq, value in part.answers],
        }
    )


def decode_settle_part(document: bytes) -> SettlePart:
    """The part `encode_settle_part` made, equal to it (a refusal: an `ExchangeError` of
    the same code and message); anything else is a `BatchFormatError`."""
    value = read_document(document, SETTLE)
    trades = [decode_trade(row) for row in _list(document_field(value, SETTLE, "trades"))]
    orders = [
        _decode_listed_order(row, trades) for row in _list(document_field(value, SETTLE, "orders"))
    ]
    return SettlePart(
        _int(document_field(value, SETTLE, "k")),
        _int(document_field(value, SETTLE, "sender")),
        tuple(
            _decode_effects(effects, orders, trades)
            for effects in _list(document_field(value, SETTLE, "effects"))
        ),
        tuple(decode_answer(answer) for answer in _list(document_field(value, SETTLE, "answers"))),
    )


def encode_answers(k: int, sender: int, answers: Sequence[Answer]) -> bytes:
    """R2 → sequencer: `{"format": 2, "part": "answers", "k", "sender", "answers":
    [[seq, kind, *fields], ...]}`, the answers of the commands an account shard decided
    or was answered for."""
    return orjson.dumps(
        {
            "format": FORMAT,
            "part": ANSWERS,
            "k": k,
            "sender": sender,
            "answers": [[seq, *encode_answer(value)] for seq, value in answers],
        }
    )


def decode_answers(document: bytes) -> tuple[int, int, list[Answer]]:
    """(k, sender, answers) as `encode_answers` took them; else a `BatchFormatError`."""
    value = read_document(document, ANSWERS)
    return (
        _int(document_field(value, ANSWERS, "k")),
        _int(document_field(value, ANSWERS, "sender")),
        [decode_answer(answer) for answer in _list(document_field(value, ANSWERS, "answers"))],
    )


def read_document(document: bytes, kind: str) -> dict[str, Any]:
    """The object of a document of `kind` in this format (the shard snapshots' too:
    `cluster.snapshot_format`); anything else is a `BatchFormatError`."""
    try:
        value = orjson.loads(document)
    except orjson.JSONDecodeError as error:
        raise BatchFormatError(f"a {kind} part is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise BatchFormatError(f"a {kind} part is not an object")
    if value.get("format") != FORMAT:
        raise BatchFormatError(
            f"a {kind} part of format {value.get('format')!r}; this code reads format {FORMAT}"
        )
    if value.get("part") != kind:
        raise BatchFormatError(f"a {value.get('part')!r} part where a {kind} part was expected")
    return value


def document_field(value: dict[str, Any], kind: str, name: str) -> Any:
    """A field a document of `kind` must have."""
    if name not in value:
        raise BatchFormatError(f"a {kind} part without {name!r}")
    return value[name]


def fixed_array(value: Any, length: int, what: str) -> list[Any]:
    """An array of exactly `length` values."""
    if not isinstance(value, list) or len(value) != length:
        raise BatchFormatError(f"{what} is not an array of {length} values: {value!r}")
    return value


# -- stamped commands -------------------------------------------------------------------

_TICK = "tick"
_STAMPS = 7  # seq, at, request_id, order_id, trade_seed, webhook_ids, secrets


def _encode_stamped(stamped: Stamped) -> list[Any]:
    """`[seq, at, request_id, order_id, trade_seed, webhook_ids, secrets, kind, *fields]`."""
    command = stamped.command
    secrets = stamped.secrets
    return [
        stamped.seq,
        stamped.at,
        stamped.request_id,
        stamped.order_id,
        stamped.trade_seed,
        list(stamped.webhook_ids),
        None if secrets is None else list(secrets),
        *([_TICK] if type(command) is Tick else encode_command(command)),
    ]


def _decode_stamped(row: Any) -> Stamped:
    if not isinstance(row, list) or len(row) <= _STAMPS:
        raise BatchFormatError(f"a stamped command is not [seq, at, ..., kind, ...]: {row!r}")
    seq, at, request_id, order_id, trade_seed, webhook_ids, secrets = row[:_STAMPS]
    kind, *fields = row[_STAMPS:]
    command: Command
    if kind == _TICK:
        if fields:
            raise BatchFormatError(f"a tick with fields: {fields!r}")
        command = Tick()
    else:
        command = decode_command(kind, fields)
    return Stamped(
        _int(seq),
        _int(at),
        command,
        _optional(_str, request_id),
        _optional(_str, order_id),
        _optional(_int, trade_seed),
        tuple(_str(webhook_id) for webhook_id in _list(webhook_ids)),
        _optional(_secrets, secrets),
    )


def _secrets(value: Any) -> tuple[str, str]:
    api_key, webhook_secret = fixed_array(value, 2, "stamped secrets")
    return _str(api_key), _str(webhook_secret)


_FUNDS = frozenset((RESERVED, SHORTFALL, BUDGET, NOTHING))


def _decode_to_match(row: Any) -> ToMatch:
    """`[funds, symbol, cash, quantity, *stamped]`."""
    if not isinstance(row, list) or len(row) < 4:
        raise BatchFormatError(f"a command to match is not [funds, symbol, ...]: {row!r}")
    funds, symbol, cash, quantity = row[:4]
    if funds not in _FUNDS:
        raise BatchFormatError(f"unknown funds kind {funds!r}")
    return ToMatch(_decode_stamped(row[4:]), funds, _str(symbol), _int(cash), _int(quantity))


# -- ledger changes ------------------------------------------------------------------------

_ACCEPTED = "accepted"
_SETTLED = "settled"
_RELEASED = "released"
_HELD = "held"


def _encode_change(change: LedgerChange) -> list[Any]:
    if type(change) is Settled:
        legs = [list(leg) for leg in change.legs]
        return [_SETTLED, change.broker_id, change.symbol, legs, change.at]
    if type(change) is Accepted:
        return [_ACCEPTED, *change]
    if type(change) is Released:
        return [_RELEASED, *change]
    if type(change) is Held:
        return [_HELD, *change]
    raise TypeError(f"not a ledger change: {change!r}")


def _decode_settled(broker_id: Any, symbol: Any, legs: Any, at: Any) -> Settled:
    return Settled(_str(broker_id), _str(symbol), tuple(_leg(leg) for leg in _list(legs)), _int(at))


def _leg(value: Any) -> SettlementLeg:
    side, quantity, amount, release = fixed_array(value, 4, "a settlement leg")
    return SettlementLeg(_str(side), _int(quantity), _int(amount), _int(release))


_CHANGES: dict[str, Callable[..., LedgerChange]] = {
    _ACCEPTED: lambda broker_id, at: Accepted(_str(broker_id), _int(at)),
    _SETTLED: _decode_settled,
    _RELEASED: lambda broker_id, symbol, cash, quantity, at: Released(
        _str(broker_id), _str(symbol), _int(cash), _int(quantity), _optional(_int, at)
    ),
    _HELD: lambda broker_id, symbol, cash, quantity: Held(
        _str(broker_id), _str(symbol), _int(cash), _int(quantity)
    ),
}


# -- orders, trades and events -------------------------------------------------------------


def encode_order(order: Order) -> list[Any]:
    """A snapshot's order fields, then its trades (each a snapshot's trade record)."""
    return [*order_fields(order), [list(trade) for trade in order.trades]]


_ORDER_FIELDS = 13  # order_fields' count


def decode_order(value: Any) -> Order:
    """An order as `encode_order` wrote it, its trades inline."""
    fields = fixed_array(value, _ORDER_FIELDS + 1, "an order")
    return _rebuilt(fields, [decode_trade(trade) for trade in _list(fields[-1])])


def _decode_listed_order(value: Any, trades: list[Trade]) -> Order:
    """A settle part's order, its trades named by their index in the part's table."""
    fields = fixed_array(value, _ORDER_FIELDS + 1, "an order")
    return _rebuilt(fields, [_at(trades, index, "trade") for index in _list(fields[-1])])


def _rebuilt(fields: list[Any], trades: list[Trade]) -> Order:
    order_id, type_, broker_id, document_number, side, symbol = map(_str, fields[:6])
    price, quantity, expires_at, created_at, status, cancelled_at, expired_at = fields[6:13]
    checked = [
        order_id,
        type_,
        broker_id,
        document_number,
        side,
        symbol,
        _optional(_int, price),
        _int(quantity),
        _optional(_int, expires_at),
        _int(created_at),
        _str(status),
        _optional(_int, cancelled_at),
        _optional(_int, expired_at),
    ]
    try:
        return rebuilt_order(checked, trades)
    except ValueError as error:  # its status does not follow from its trades
        raise BatchFormatError(f"an order that its fields do not make: {error}") from None


def _at(table: list[Any], index: Any, what: str) -> Any:
    """The entry of a part's table that `index` names."""
    if type(index) is not int or not 0 <= index < len(table):
        raise BatchFormatError(f"no {what} {index!r} in a table of {len(table)}")
    return table[index]


class _Tables:
    """A settle part's trades and orders, each value once (by identity: an order and
    its events share one value), named by index."""

    __slots__ = ("_indices", "orders", "trades")

    def __init__(self) -> None:
        self.trades: list[list[Any]] = []
        self.orders: list[list[Any]] = []
        self._indices: dict[int, int] = {}  # id of a trade or an order -> its index

    def trade(self, trade: Trade) -> int:
        index = self._indices.get(id(trade))
        if index is None:
            index = self._indices[id(trade)] = len(self.trades)
            self.trades.append(list(trade))
        return index

    def order(self, order: Order) -> int:
        index = self._indices.get(id(order))
        if index is None:
            row = [*order_fields(order), [self.trade(trade) for trade in order.trades]]
            index = self._indices[id(order)] = len(self.orders)
            self.orders.append(row)
        return index

    def event(self, event: Event) -> list[Any]:
        if type(event) is TradeExecuted:
            return [_TRADE, self.trade(event.trade), self.order(event.order), event.request_id]
        if type(event) is OrderClosed:
            return [_CLOSED, self.order(event.order), event.request_id]
        raise TypeError(f"not an event: {event!r}")


def decode_trade(value: Any) -> Trade:
    row = fixed_array(value, len(Trade._fields), "a trade")
    trade_id, symbol = _str(row[0]), _str(row[1])
    price, quantity, executed_at = _int(row[2]), _int(row[3]), _int(row[4])
    return Trade(trade_id, symbol, price, quantity, executed_at, *map(_str, row[5:]))


_TRADE = "trade"
_CLOSED = "closed"


def _decode_effects(value: Any, orders: list[Order], trades: list[Trade]) -> Effects:
    seq, changes, states, events = fixed_array(value, 4, "a command's effects")
    return Effects(
        _int(seq),
        tuple(
            decoded_by_kind("change", "a ledger change", _CHANGES, row) for row in _list(changes)
        ),
        tuple(_decode_state(state, orders) for state in _list(states)),
        tuple(_decode_event(event, orders, trades) for event in _list(events)),
    )


def _decode_state(value: Any, orders: list[Order]) -> OrderState:
    new, order = fixed_array(value, 2, "an order state")
    return OrderState(_at(orders, order, "order"), _bool(new))


def _decode_event(value: Any, orders: list[Order], trades: list[Trade]) -> Event:
    """`[kind, *fields]`, its trade and order named by index."""
    if not isinstance(value, list) or not value:
        raise BatchFormatError(f"an event is not [kind, ...]: {value!r}")
    kind, *fields = value
    if kind == _TRADE and len(fields) == 3:
        trade, order, request_id = fields
        return TradeExecuted(
            _at(trades, trade, "trade"), _at(orders, order, "order"), _optional(_str, request_id)
        )
    if kind == _CLOSED and len(fields) == 2:
        order, request_id = fields
        return OrderClosed(_at(orders, order, "order"), _optional(_str, request_id))
    if kind in (_TRADE, _CLOSED):
        raise BatchFormatError(f"an event of kind {kind!r} with wrong fields: {fields!r}")
    raise BatchFormatError(f"unknown event kind {kind!r}")


# -- answers -------------------------------------------------------------------------------

_ORDER = "order"  # a submission's or a cancel's
_REFUSED = "refused"
_BALANCE = "balance"  # a registration's
_ISSUED = "issued"
_UPSERTED = "upserted"  # a subscription's
_NONE = "none"  # an unsubscription's
_FAILED = "failed"


def encode_answer(value: Any) -> list[Any]:
    """An answer as `[kind, *fields]`: every kind a shard's R1 or ME gives."""
    if type(value) is Order:
        return [_ORDER, encode_order(value)]
    if isinstance(value, ExchangeError):
        return [_REFUSED, value.code, value.message]
    if value is None:
        return [_NONE]
    if type(value) is Balance:
        holdings = [[h.symbol, h.quantity, h.reserved_quantity] for h in value.holdings]
        return [
            _BALANCE,
            value.broker_id,
            value.cash_balance,
            value.reserved_cash,
            holdings,
            value.created_at,
            value.updated_at,
        ]
    if type(value) is Issued:
        return [_ISSUED, *value]
    if type(value) is Upserted:
        subscriptions = [encode_subscription(s) for s in value.subscriptions]
        changed = [encode_subscription(s) for s in value.changed]
        return [_UPSERTED, value.created, subscriptions, changed]
    if isinstance(value, Exception):  # an actor's bug: its text, for the error log
        return [_FAILED, f"{type(value).__name__}: {value}"]
    raise TypeError(f"not an answer of a shard: {value!r}")


def encode_subscription(subscription: Subscription) -> list[Any]:
    return [
        subscription.webhook_id,
        subscription.broker_id,
        subscription.event,
        subscription.url,
        subscription.created_at,
        subscription.updated_at,
    ]


def decode_subscription(value: Any) -> Subscription:
    row = fixed_array(value, 6, "a subscription")
    return Subscription(*map(_str, row[:4]), _int(row[4]), _int(row[5]))


def _decode_balance(
    broker_id: Any,
    cash_balance: Any,
    reserved_cash: Any,
    holdings: Any,
    created_at: Any,
    updated_at: Any,
) -> Balance:
    return Balance(
        _str(broker_id),
        _int(cash_balance),
        _int(reserved_cash),
        tuple(_holding(holding) for holding in _list(holdings)),
        _int(created_at),
        _int(updated_at),
    )


def _holding(value: Any) -> Holding:
    symbol, quantity, reserved = fixed_array(value, 3, "a holding")
    return Holding(_str(symbol), _int(quantity), _int(reserved))


_ANSWERS: dict[str, Callable[..., Any]] = {
    _ORDER: decode_order,
    _REFUSED: lambda code, message: ExchangeError(_str(code), _str(message)),
    _NONE: lambda: None,
    _BALANCE: _decode_balance,
    _ISSUED: lambda broker_id, api_key, webhook_secret: Issued(
        _str(broker_id), _optional(_str, api_key), _optional(_str, webhook_secret)
    ),
    _UPSERTED: lambda created, subscriptions, changed: Upserted(
        _bool(created),
        tuple(decode_subscription(s) for s in _list(subscriptions)),
        tuple(decode_subscription(s) for s in _list(changed)),
    ),
    _FAILED: lambda text: ShardFailure(_str(text)),
}


def decode_answer(value: Any) -> Answer:
    """`[seq, kind, *fields]`."""
    if not isinstance(value, list) or len(value) < 2:
        raise BatchFormatError(f"an answer is not [seq, kind, ...]: {value!r}")
    return _int(value[0]), decoded_by_kind("answer", "an answer", _ANSWERS, value[1:])
