"""Validated requests, in internal units, as the HTTP layer hands them to the actors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

LIMIT = "limit"
MARKET = "market"
BID = "bid"
ASK = "ask"


@dataclass(frozen=True, slots=True)
class RegisterBroker:
    broker_id: str
    initial_cash: int  # cents
    holdings: tuple[tuple[str, int], ...]  # (symbol, quantity), sorted by symbol


class SubmitOrder(NamedTuple):
    type: str  # LIMIT or MARKET
    broker_id: str
    document_number: str
    side: str  # BID or ASK
    symbol: str
    quantity: int
    price: int | None = None  # cents; None for market orders
    expires_at: int | None = None  # microseconds since epoch; None for market orders
