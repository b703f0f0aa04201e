"""Request helpers shared by the HTTP tests: register brokers, submit orders, read balances."""

from __future__ import annotations

from typing import Any

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.seam import EmbeddedEngine
from miniexchange.http.app import create_app
from miniexchange.journal.store import SqliteJournal
from miniexchange.settings import load_settings
from miniexchange.testing import FakeDeliveries, ManualClock, SequentialIds
from tests.conftest import AppClient

FAR = "2026-02-20T18:00:00Z"


def register(client: AppClient, broker_id: str, cash: Any = 1_000_000, **holdings: int) -> None:
    body = {
        "broker_id": broker_id,
        "initial_cash": cash,
        "initial_holdings": [{"symbol": s, "quantity": q} for s, q in holdings.items()],
    }
    result = client.post("/brokers", json=body)
    assert result.status_code == 201, result.text


def limit(
    client: AppClient,
    broker_id: str,
    side: str,
    price: Any,
    quantity: int,
    symbol: str = "AAPL",
    expires_at: str = FAR,
) -> Any:
    return client.post(
        "/orders",
        json={
            "type": "limit", "broker_id": broker_id, "document_number": "12345678900",
            "side": side, "symbol": symbol, "price": price, "quantity": quantity,
            "expires_at": expires_at,
        },
    )  # fmt: skip


def market(
    client: AppClient, broker_id: str, side: str, quantity: int, symbol: str = "AAPL"
) -> Any:
    return client.post(
        "/orders",
        json={
            "type": "market", "broker_id": broker_id, "document_number": "1",
            "side": side, "symbol": symbol, "quantity": quantity,
        },
    )  # fmt: skip


def balance(client: AppClient, broker_id: str) -> dict[str, Any]:
    result = client.get(f"/brokers/{broker_id}/balance")
    assert result.status_code == 200
    return result.json


def journaled_app(clock: ManualClock, path: str) -> AppClient:
    """The app over a journal file at `path`: call it again on the same path to restart."""
    exchange = Exchange(
        clock,
        SequentialIds(),
        FakeDeliveries(),
        expiration_interval_s=None,
        journal=SqliteJournal(path),
    )
    return AppClient(create_app(load_settings({}), clock=clock, engine=EmbeddedEngine(exchange)))
