"""Shard snapshots as bytes: what a shard sends the sequencer, which writes it beside the
journal, and what a restarted shard reads back (docs/ray.md, "The command journal and
recovery"). A decoded snapshot starts, through `from_snapshot`, a shard equal in every
read to one started from the original value.

Each is one orjson document like the shards' parts (`cluster.parts`), with the same
format number and a kind (`"part"`: `"account_snapshot"` or `"symbol_snapshot"`): a
snapshot written by other code is a clear refusal (`BatchFormatError`), never a misread.
The format number is the parts' because a snapshot carries what the parts carry, encoded
the same way (orders with their trades, subscriptions, R1's answers in flight), so a
change of those encodings is a change of the snapshots'.

Values are flat arrays in their fields' order; money is integer cents and times integer
microseconds, never a float. It lives apart from `shard_snapshots` (the values) because
the parts' codec imports the shards, which import those values.
"""

from __future__ import annotations

from typing import Any

import orjson

from miniexchange.cluster.batches import BatchFormatError, _int, _list, _optional, _str
from miniexchange.cluster.parts import (
    FORMAT,
    decode_answer,
    decode_order,
    decode_subscription,
    decode_trade,
    document_field,
    encode_answer,
    encode_order,
    encode_subscription,
    fixed_array,
    read_document,
)
from miniexchange.cluster.shard_snapshots import (
    AccountSnapshot,
    FeedState,
    LedgerState,
    SymbolBook,
    SymbolSnapshot,
)
from miniexchange.model.candles import INTERVALS, Candle
from miniexchange.model.credentials import Credentials
from miniexchange.model.vwap import TradeWindow

ACCOUNT_SNAPSHOT = "account_snapshot"
SYMBOL_SNAPSHOT = "symbol_snapshot"


# -- account shards --------------------------------------------------------------------------


def encode_account_snapshot(snapshot: AccountSnapshot) -> bytes:
    """`{"format": 2, "part": "account_snapshot", "index", "account_shards",
    "symbol_shards", "r1_done", "r2_done", "r2_allowed", "decided": [[k, [[seq, kind,
    *fields], ...]], ...], "ledgers": [ledger, ...], "credentials": [[broker_id,
    api_key_digest, webhook_secret], ...], "subscriptions", "orders", "listed"}`."""
    return orjson.dumps(
        {
            "format": FORMAT,
            "part": ACCOUNT_SNAPSHOT,
            "index": snapshot.index,
            "account_shards": snapshot.account_shards,
            "symbol_shards": snapshot.symbol_shards,
            "r1_done": snapshot.r1_done,
            "r2_done": snapshot.r2_done,
            "r2_allowed": snapshot.r2_allowed,
            "decided": [
                [k, [[seq, *encode_answer(value)] for seq, value in answers]]
                for k, answers in snapshot.decided
            ],
            "ledgers": [_encode_ledger(ledger) for ledger in snapshot.ledgers],
            "credentials": [
                [broker_id, held.api_key_digest, held.webhook_secret]
                for broker_id, held in snapshot.credentials
            ],
            "subscriptions": [encode_subscription(s) for s in snapshot.subscriptions],
            "orders": [encode_order(order) for order in snapshot.orders],
            "listed": list(snapshot.listed),
        }
    )


def decode_account_snapshot(document: bytes) -> AccountSnapshot:
    """The snapshot `encode_account_snapshot` made (a refusal among R1's answers: an
    `ExchangeError` of the same code and message); anything else a `BatchFormatError`."""
    value = read_document(document, ACCOUNT_SNAPSHOT)

    def field(name: str) -> Any:
        return document_field(value, ACCOUNT_SNAPSHOT, name)

    return AccountSnapshot(
        *(_int(field(name)) for name in AccountSnapshot._fields[:6]),  # index ... r2_allowed
        tuple(_decode_decided(decided) for decided in _list(field("decided"))),
        tuple(_decode_ledger(ledger) for ledger in _list(field("ledgers"))),
        tuple(_decode_credentials(held) for held in _list(field("credentials"))),
        tuple(decode_subscription(s) for s in _list(field("subscriptions"))),
        tuple(decode_order(order) for order in _list(field("orders"))),
        tuple(_str(symbol) for symbol in _list(field("listed"))),
    )


def _encode_ledger(ledger: LedgerState) -> list[Any]:
    """`[broker_id, cash, holdings, created_at, updated_at, reserved_cash, cash_held_on,
    reserved_shares]`, each of the three maps as `[[symbol, amount], ...]`."""
    return [
        ledger.broker_id,
        ledger.cash,
        [list(pair) for pair in ledger.holdings],
        ledger.created_at,
        ledger.updated_at,
        ledger.reserved_cash,
        [list(pair) for pair in ledger.cash_held_on],
        [list(pair) for pair in ledger.reserved_shares],
    ]


def _decode_ledger(value: Any) -> LedgerState:
    row = fixed_array(value, len(LedgerState._fields), "a ledger")
    broker_id, cash, holdings, created_at, updated_at, reserved_cash, held_on, shares = row
    return LedgerState(
        _str(broker_id),
        _int(cash),
        _amounts(holdings),
        _int(created_at),
        _int(updated_at),
        _int(reserved_cash),
        _amounts(held_on),
        _amounts(shares),
    )


def _amounts(value: Any) -> tuple[tuple[str, int], ...]:
    """`[[symbol, amount], ...]`: holdings, or cash or shares held per symbol."""
    pairs = (fixed_array(pair, 2, "a symbol's amount") for pair in _list(value))
    return tuple((_str(symbol), _int(amount)) for symbol, amount in pairs)


def _decode_credentials(value: Any) -> tuple[str, Credentials]:
    broker_id, digest, secret = fixed_array(value, 3, "a broker's credentials")
    return _str(broker_id), Credentials(_optional(_str, digest), _optional(_str, secret))


def _decode_decided(value: Any) -> tuple[int, tuple[tuple[int, Any], ...]]:
    """`[k, [[seq, kind, *fields], ...]]`: R1's answers of batch `k`, still in flight."""
    k, answers = fixed_array(value, 2, "a batch's decided answers")
    return _int(k), tuple(decode_answer(answer) for answer in _list(answers))


# -- symbol shards ---------------------------------------------------------------------------


def encode_symbol_snapshot(snapshot: SymbolSnapshot) -> bytes:
    """`{"format": 2, "part": "symbol_snapshot", "index", "account_shards",
    "symbol_shards", "me_done", "books": [[symbol, [order, ...], window, feed], ...],
    "listed"}`; a window is `[window_us, last_price, last_at, [[executed_at, value,
    quantity], ...]]`, a feed (null: the symbol never published) `[[trade, ...] oldest
    first, volume, [[interval, [candle, ...]], ...], book_version]`."""
    return orjson.dumps(
        {
            "format": FORMAT,
            "part": SYMBOL_SNAPSHOT,
            "index": snapshot.index,
            "account_shards": snapshot.account_shards,
            "symbol_shards": snapshot.symbol_shards,
            "me_done": snapshot.me_done,
            "books": [_encode_book(book) for book in snapshot.books],
            "listed": list(snapshot.listed),
        }
    )


def decode_symbol_snapshot(document: bytes) -> SymbolSnapshot:
    """The snapshot `encode_symbol_snapshot` made; anything else a `BatchFormatError`."""
    value = read_document(document, SYMBOL_SNAPSHOT)

    def field(name: str) -> Any:
        return document_field(value, SYMBOL_SNAPSHOT, name)

    return SymbolSnapshot(
        *(_int(field(name)) for name in SymbolSnapshot._fields[:4]),  # index ... me_done
        tuple(_decode_book(book) for book in _list(field("books"))),
        tuple(_str(symbol) for symbol in _list(field("listed"))),
    )


def _encode_book(book: SymbolBook) -> list[Any]:
    window = book.window
    feed = book.feed
    return [
        book.symbol,
        [encode_order(order) for order in book.orders],
        [window.window_us, window.last_price, window.last_at, [list(t) for t in window.held()]],
        None
        if feed is None
        else [
            [list(trade) for trade in feed.tape],
            feed.volume,
            [[interval, [list(candle) for candle in kept]] for interval, kept in feed.candles],
            feed.book_version,
        ],
    ]


def _decode_book(value: Any) -> SymbolBook:
    symbol, orders, window, feed = fixed_array(value, 4, "a symbol's book")
    return SymbolBook(
        _str(symbol),
        tuple(decode_order(order) for order in _list(orders)),
        _decode_window(window),
        _optional(_decode_feed, feed),
    )


def _decode_window(value: Any) -> TradeWindow:
    window_us, last_price, last_at, held = fixed_array(value, 4, "a VWAP window")
    trades = (fixed_array(trade, 3, "a trade in a VWAP window") for trade in _list(held))
    return TradeWindow.restored(
        _int(window_us),
        [(_int(at), _int(amount), _int(quantity)) for at, amount, quantity in trades],
        _optional(_int, last_price),
        _optional(_int, last_at),
    )


def _decode_feed(value: Any) -> FeedState:
    tape, volume, candles, book_version = fixed_array(value, 4, "a symbol's feed")
    return FeedState(
        tuple(decode_trade(trade) for trade in _list(tape)),
        _int(volume),
        tuple(_decode_candles(kept) for kept in _list(candles)),
        _int(book_version),
    )


def _decode_candles(value: Any) -> tuple[str, tuple[Candle, ...]]:
    interval, kept = fixed_array(value, 2, "an interval's candles")
    if _str(interval) not in INTERVALS:
        raise BatchFormatError(f"unknown candle interval {interval!r}")
    return interval, tuple(
        Candle(*map(_int, fixed_array(candle, len(Candle._fields), "a candle")))
        for candle in _list(kept)
    )
