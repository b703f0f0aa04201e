"""The seeded random order flow every engine benchmark replays, and the market it trades in.

One flow, generated before the clock starts, so that the timed loops measure the engine
and not the random number generator, and so that two runs (a 1k-order book and a
1M-order book) see exactly the same orders. The HTTP scenarios (`bench/lua/`) draw from
the same distribution, parameterised by the constants below through the environment.

Prices are drawn uniformly within `SPREAD_CENTS` of `MID_CENTS` on both sides: once the
book has depth near the mid, an incoming bid crosses when it is at or above the best
ask (about the mid), so about half of the limit orders trade.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, SubmitOrder

SYMBOLS: Final = ("AAPL", "GOOG", "MSFT", "AMZN")
BROKER_COUNT: Final = 20
BROKERS: Final = tuple(f"bench-{n:02d}" for n in range(BROKER_COUNT))
INITIAL_CASH_DOLLARS: Final = 1_000_000_000  # 10^9: resting bids never run a broker dry
INITIAL_SHARES: Final = 100_000_000  # 10^8 of every symbol, for the same reason
MID_CENTS: Final = 10_000  # 100.00
SPREAD_CENTS: Final = 100  # limit prices within 100.00 +- 1.00
MAX_QUANTITY: Final = 100
MAX_MARKET_QUANTITY: Final = 50
DOCUMENT_NUMBER: Final = "12345678901"

# Far-from-mid prices for resting orders that must never trade (pre-loaded books, the
# memory scenario): every such bid is below every flow ask, every such ask above every bid.
FAR_BID_CENTS: Final = (100, 5_000)  # 1.00 .. 50.00
FAR_ASK_CENTS: Final = (15_000, 20_000)  # 150.00 .. 200.00

# Kinds of flow operations (small ints: the timed loops compare them cheaply).
OP_LIMIT: Final = 0
OP_MARKET: Final = 1
OP_CANCEL: Final = 2


@dataclass(frozen=True, slots=True)
class Op:
    """One step of the flow.

    For a cancel, `command` is None and `pick` (in [0, 1)) chooses which of the orders
    resting at that moment to cancel: the flow cannot know ids in advance.
    """

    kind: int
    symbol: str
    command: SubmitOrder | None
    pick: float


def order_flow(
    count: int,
    seed: int,
    expires_at: int,
    *,
    market_share: float = 0.10,
    cancel_share: float = 0.10,
) -> list[Op]:
    """`count` operations: limit orders around the mid, market orders, cancels."""
    rng = random.Random(seed)
    ops: list[Op] = []
    for _ in range(count):
        symbol = rng.choice(SYMBOLS)
        broker = rng.choice(BROKERS)
        side = BID if rng.random() < 0.5 else ASK
        draw = rng.random()
        if draw < cancel_share:
            ops.append(Op(OP_CANCEL, symbol, None, rng.random()))
        elif draw < cancel_share + market_share:
            command = SubmitOrder(
                MARKET, broker, DOCUMENT_NUMBER, side, symbol, rng.randint(1, MAX_MARKET_QUANTITY)
            )
            ops.append(Op(OP_MARKET, symbol, command, 0.0))
        else:
            price = MID_CENTS + rng.randint(-SPREAD_CENTS, SPREAD_CENTS)
            command = SubmitOrder(
                LIMIT,
                broker,
                DOCUMENT_NUMBER,
                side,
                symbol,
                rng.randint(1, MAX_QUANTITY),
                price,
                expires_at,
            )
            ops.append(Op(OP_LIMIT, symbol, command, 0.0))
    return ops


def resting_flow(count: int, seed: int, expires_at: int) -> list[SubmitOrder]:
    """`count` limit orders far from the mid, spread over the symbols: they never trade."""
    rng = random.Random(seed)
    commands = []
    for n in range(count):
        symbol = SYMBOLS[n % len(SYMBOLS)]
        side = BID if n % 2 else ASK
        low, high = FAR_BID_CENTS if side == BID else FAR_ASK_CENTS
        commands.append(
            SubmitOrder(
                LIMIT,
                rng.choice(BROKERS),
                DOCUMENT_NUMBER,
                side,
                symbol,
                rng.randint(1, MAX_QUANTITY),
                rng.randint(low, high - 1),
                expires_at,
            )
        )
    return commands
