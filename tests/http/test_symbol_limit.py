"""`MAX_SYMBOLS` through the ASGI app with real actors: a registration or an order that
would list one symbol too many is refused 409 `symbol_limit_reached`, at its place in
the evaluation order, and changes nothing; a book whose thread the system refuses is a
503, not a 500."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from miniexchange.actors.symbol import SymbolActor
from miniexchange.http.app import create_app
from miniexchange.settings import load_settings
from miniexchange.testing import ManualClock, SequentialIds
from tests.conftest import AppClient
from tests.http.helpers import balance, limit, market, register

LIMIT = 3
FULL = {"error": "symbol_limit_reached", "message": f"The exchange lists at most {LIMIT} symbols"}


@pytest.fixture
def client(clock: ManualClock) -> Iterator[AppClient]:
    """The app builds its exchange from the settings, as it is served."""
    settings = load_settings(
        {"MAX_SYMBOLS": str(LIMIT), "DATABASE_PATH": ":memory:", "EXPIRATION_INTERVAL": "1h"}
    )
    app_client = AppClient(create_app(settings, clock=clock, ids=SequentialIds()))
    try:
        yield app_client
    finally:
        app_client.close()
        pykka.ActorRegistry.stop_all()


def registration(broker_id: str, cash: Any = 1_000, **holdings: int) -> dict[str, Any]:
    return {
        "broker_id": broker_id,
        "initial_cash": cash,
        "initial_holdings": [{"symbol": s, "quantity": q} for s, q in holdings.items()],
    }


def listed(client: AppClient) -> list[str]:
    return [entry["symbol"] for entry in client.get("/stocks").json["symbols"]]


def refused(result: Any) -> tuple[int, Any]:
    return result.status_code, result.json


@pytest.fixture
def full(client: AppClient) -> AppClient:
    """Three symbols listed, the limit: two by a registration, one by an order."""
    register(client, "lister", 1_000_000, AAPL=100, GOOG=100)
    assert limit(client, "lister", "bid", 1, 1, symbol="MSFT").status_code == 201
    assert listed(client) == ["AAPL", "GOOG", "MSFT"]
    return client


# -- registrations --------------------------------------------------------------------


def test_a_registration_naming_one_symbol_too_many_is_refused_and_changes_nothing(
    full: AppClient,
) -> None:
    client = full
    for holdings in ({"TSLA": 5}, {"AAPL": 5, "TSLA": 5}):  # all or nothing
        result = client.post("/brokers", json=registration("late", **holdings))
        assert refused(result) == (409, FULL)
        assert result.headers["content-type"] == "application/json"
        assert client.get("/brokers/late/balance").status_code == 404
    assert listed(client) == ["AAPL", "GOOG", "MSFT"]
    assert client.get("/stocks/TSLA/book").json["error"] == "symbol_not_found"
    # nothing of the refused broker was kept: the same id registers with listed symbols
    result = client.post("/brokers", json=registration("late", AAPL=5, MSFT=1))
    assert result.status_code == 201, result.text
    assert balance(client, "late")["holdings"][0]["symbol"] == "AAPL"


def test_a_registration_within_the_limit_lists_its_symbols(client: AppClient) -> None:
    register(client, "a", 0, AAPL=1, GOOG=1, MSFT=1)  # exactly the limit, in one go
    assert listed(client) == ["AAPL", "GOOG", "MSFT"]
    register(client, "b", 0, GOOG=2)  # listed symbols need no place
    assert refused(client.post("/brokers", json=registration("c", TSLA=1))) == (409, FULL)


# -- orders ---------------------------------------------------------------------------


def test_an_order_naming_one_symbol_too_many_is_refused_and_changes_nothing(
    full: AppClient,
) -> None:
    client = full
    before = balance(client, "lister")
    assert refused(limit(client, "lister", "bid", 1, 1, symbol="TSLA")) == (409, FULL)
    assert refused(limit(client, "lister", "ask", 1, 1, symbol="TSLA")) == (409, FULL)
    assert refused(market(client, "lister", "bid", 1, symbol="TSLA")) == (409, FULL)
    assert balance(client, "lister") == before  # nothing held
    orders = client.get("/brokers/lister/orders").json
    assert orders["total"] == 1  # the MSFT bid only
    assert listed(client) == ["AAPL", "GOOG", "MSFT"]
    assert client.get("/stocks/TSLA/book").status_code == 404
    # listed symbols still trade
    assert limit(client, "lister", "ask", 10, 1, symbol="AAPL").status_code == 201


# -- evaluation order: after broker_already_exists and 404s, before the endpoint's 409s --


def test_broker_already_exists_comes_before_the_symbol_limit(full: AppClient) -> None:
    result = full.post("/brokers", json=registration("lister", TSLA=1))
    assert refused(result) == (
        409,
        {"error": "broker_already_exists", "message": "Broker lister is already registered"},
    )


def test_validation_and_unknown_brokers_come_before_the_symbol_limit(full: AppClient) -> None:
    assert refused(limit(full, "nobody", "bid", 1, 1, symbol="TSLA")) == (
        404,
        {"error": "broker_not_found", "message": "Broker nobody does not exist"},
    )
    assert limit(full, "lister", "bid", 1, 0, symbol="TSLA").json["error"] == "validation_error"


def test_the_symbol_limit_comes_before_funds_and_liquidity(full: AppClient) -> None:
    client = full
    register(client, "poor", 0)
    assert refused(limit(client, "poor", "bid", 10, 1, symbol="TSLA")) == (409, FULL)
    assert refused(limit(client, "poor", "ask", 10, 1, symbol="TSLA")) == (409, FULL)
    assert refused(market(client, "poor", "ask", 1, symbol="TSLA")) == (409, FULL)
    assert refused(market(client, "poor", "bid", 1, symbol="TSLA")) == (409, FULL)
    # on a listed symbol the endpoint's own 409s answer, as before
    assert limit(client, "poor", "bid", 10, 1, symbol="AAPL").json["error"] == (
        "insufficient_balance"
    )
    assert market(client, "poor", "ask", 1, symbol="GOOG").json["error"] == "no_liquidity"


def test_a_refused_order_gives_its_place_back(client: AppClient) -> None:
    register(client, "a", 1_000, AAPL=1, GOOG=1)  # one place left
    register(client, "poor", 0)
    assert limit(client, "poor", "bid", 10, 1, symbol="TSLA").json["error"] == (
        "insufficient_balance"
    )
    assert limit(client, "poor", "ask", 10, 1, symbol="TSLA").json["error"] == (
        "insufficient_holdings"
    )
    assert market(client, "poor", "bid", 1, symbol="TSLA").json["error"] == "no_liquidity"
    assert listed(client) == ["AAPL", "GOOG"]
    # the last place is still free, once
    assert limit(client, "a", "bid", 1, 1, symbol="TSLA").status_code == 201
    assert refused(limit(client, "a", "bid", 1, 1, symbol="NFLX")) == (409, FULL)


def test_racing_requests_never_list_more_than_the_limit(client: AppClient) -> None:
    """16 requests, each naming a symbol of its own, sent at once: registrations and
    limit orders. Exactly as many succeed as there are places."""
    racers = 16
    for n in range(0, racers, 2):
        register(client, f"cash{n}", 1_000)
    barrier = threading.Barrier(racers)
    answers: list[tuple[int, Any]] = []

    def race(n: int) -> None:
        symbol = "SYM" + chr(ord("A") + n)
        barrier.wait(timeout=60)  # generous: a loaded machine starts threads slowly
        if n % 2:
            result = client.post("/brokers", json=registration(f"r{n}", **{symbol: 1}))
        else:
            result = limit(client, f"cash{n}", "bid", 1, 1, symbol=symbol)
        answers.append((result.status_code, result.json))  # list.append: atomic

    threads = [threading.Thread(target=race, args=(n,)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(status for status, _ in answers) == [201] * LIMIT + [409] * (racers - LIMIT)
    assert all(body == FULL for status, body in answers if status == 409)
    assert len(listed(client)) == LIMIT


def test_a_stored_refusal_replays(full: AppClient) -> None:
    headers = {"Idempotency-Key": "k-1"}
    body = registration("late", TSLA=1)
    first = full.post("/brokers", json=body, headers=headers)
    again = full.post("/brokers", json=body, headers=headers)
    assert refused(first) == refused(again) == (409, FULL)
    assert again.headers["idempotent-replayed"] == "true"


# -- the system refuses a book's thread -------------------------------------------------


@pytest.fixture
def no_symbol_threads(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """While set, starting a symbol actor's thread fails as it does under a pids limit
    (everything else starts as usual)."""
    refusing = threading.Event()
    start = threading.Thread.start

    def refuse_symbol_threads(thread: threading.Thread) -> None:
        if refusing.is_set() and thread.name.startswith(SymbolActor.__name__):
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse_symbol_threads)
    return refusing


def test_a_book_whose_thread_is_refused_is_a_503_and_changes_nothing(
    client: AppClient, no_symbol_threads: threading.Event
) -> None:
    register(client, "a", 1_000, AAPL=1)
    before = balance(client, "a")
    no_symbol_threads.set()
    result = limit(client, "a", "bid", 10, 1, symbol="TSLA")
    assert refused(result) == (
        503,
        {
            "error": "symbol_unavailable",
            "message": "The exchange cannot open the book of TSLA now; retry later",
        },
    )
    assert refused(limit(client, "a", "ask", 10, 1, symbol="AAPL"))[0] == 503
    assert balance(client, "a") == before  # the holds were given back
    assert client.get("/brokers/a/orders").json["total"] == 0
    assert listed(client) == ["AAPL"]
    assert pykka.ActorRegistry.get_by_class(SymbolActor) == []  # no half-started actor

    no_symbol_threads.clear()  # the system has threads again: the same order succeeds
    assert limit(client, "a", "bid", 10, 1, symbol="TSLA").status_code == 201
    assert listed(client) == ["AAPL", "TSLA"]
    assert len(pykka.ActorRegistry.get_by_class(SymbolActor)) == 1
