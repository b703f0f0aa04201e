"""The money side of the engine: what an order must reserve, what a pass settles, and
what a closed order releases: each gives back exactly what its hold took.

Pure functions shared by the symbol actor and the model's own tests, so the arithmetic
exists once.
"""

from __future__ import annotations

from miniexchange.model.book import MatchResult, OrderBook
from miniexchange.model.commands import ASK, BID, LIMIT, SubmitOrder
from miniexchange.model.ledger import Ledger, SettlementLeg
from miniexchange.model.orders import Order


def reservation(side: str, price: int, quantity: int) -> tuple[int, int]:
    """(cash, shares) a limit order reserves for `quantity` of itself: their value at its
    own price for a bid, the shares for an ask."""
    if side == BID:
        return price * quantity, 0
    return 0, quantity


def limit_hold(command: SubmitOrder) -> tuple[int, int]:
    """What a limit order holds from R1 on: the reservation of its whole quantity."""
    return reservation(command.side, command.price, command.quantity)  # type: ignore[arg-type]


HELD = "held"
EXPIRE_FIRST = "expire_first"
LACKING = "lacking"


def reserve_limit(ledger: Ledger, command: SubmitOrder, final: bool) -> str:
    """R1's decision on a limit order: HELD (its funds now held), LACKING (refuse), or
    EXPIRE_FIRST: the hold failed but the broker holds something on that symbol, some of
    which may be due, so the symbol's due orders must expire before the check is final
    (`final`: that was done)."""
    if ledger.hold(command.symbol, *limit_hold(command)):
        return HELD
    if not final and ledger.holds_on(command.symbol):
        return EXPIRE_FIRST
    return LACKING


def cash_to_reserve(book: OrderBook, command: SubmitOrder) -> int:
    """Cash a bid must hold while it matches or rests: its limit value, or for a market
    bid the exact cost of sweeping the current book (the book cannot move meanwhile)."""
    if command.type == LIMIT:
        return limit_hold(command)[0]
    return sum(level.price * level.quantity for level in book.sweep(BID, command.quantity))


def settlement_legs(result: MatchResult) -> dict[str, list[SettlementLeg]]:
    """Each broker's legs of one matching pass, in match order, at each trade's price."""
    legs: dict[str, list[SettlementLeg]] = {}
    for fill in result.fills:
        trade = fill.trade
        value = trade.price * trade.quantity
        bid = fill.bid
        # A limit bid frees what it reserved at its own price; a market bid its cost.
        release = bid.price * trade.quantity if bid.type == LIMIT else value  # type: ignore[operator]
        legs.setdefault(trade.bid_broker_id, []).append(
            SettlementLeg(BID, trade.quantity, value, release)
        )
        legs.setdefault(trade.ask_broker_id, []).append(
            SettlementLeg(ASK, trade.quantity, value, 0)
        )
    return legs


def held_by(order: Order) -> tuple[int, int]:
    """What an active limit order holds: the reservation of its unfilled part."""
    return reservation(order.side, order.price, order.remaining_quantity)  # type: ignore[arg-type]


def released_by(order: Order) -> tuple[int, int]:
    """(cash, shares) an ended order gives back: its cancelled part's reservation.

    A market bid reserved exactly its sweep cost, all spent by its fills, so it
    releases nothing; a market ask releases the shares of its IOC-cancelled part.
    """
    if order.type == LIMIT or order.side == ASK:
        return reservation(order.side, order.price, order.cancelled_quantity)  # type: ignore[arg-type]
    return 0, 0
