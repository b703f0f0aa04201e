"""A registration answered 503 `journal_unavailable` takes no effect (contract: nothing
of a request the journal could not record takes effect): not for a balance read right
after it, not for a second registration of the same id, not after a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.seam import EmbeddedEngine
from miniexchange.http.app import create_app
from miniexchange.journal.store import Journal, SqliteJournal
from miniexchange.settings import load_settings
from miniexchange.testing import FakeDeliveries, ManualClock, SequentialIds
from tests.conftest import START, AppClient
from tests.http.helpers import register
from tests.journal.support import FailingJournal

JOURNAL_UNAVAILABLE = {
    "error": "journal_unavailable",
    "message": "The exchange cannot record this request; retry later",
}
LATE = {
    "broker_id": "late",
    "initial_cash": 50.00,
    "initial_holdings": [{"symbol": "GOOG", "quantity": 7}],
}
LATE_NOT_FOUND = {"error": "broker_not_found", "message": "Broker late does not exist"}


@pytest.fixture(autouse=True)
def stop_all_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


def open_app(clock: ManualClock, journal: Journal) -> AppClient:
    exchange = Exchange(
        clock, SequentialIds(), FakeDeliveries(), expiration_interval_s=None, journal=journal
    )
    return AppClient(create_app(load_settings({}), clock=clock, engine=EmbeddedEngine(exchange)))


def answer(result: Any) -> tuple[int, Any]:
    return result.status_code, result.json


def test_a_registration_refused_503_is_not_visible_and_can_be_made_again(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "j.db")
    clock = ManualClock.at(START)
    failures: list[BaseException] = []
    journal = FailingJournal(path, on_failure=failures.append)  # the process lives on
    client = open_app(clock, journal)
    register(client, "early", 100, AAPL=1)

    journal.failing.set()
    assert answer(client.post("/brokers", json=LATE)) == (503, JOURNAL_UNAVAILABLE)
    assert answer(client.get("/brokers/late/balance")) == (404, LATE_NOT_FOUND)
    assert answer(client.get("/brokers/late/orders")) == (404, LATE_NOT_FOUND)
    assert client.get("/stocks/GOOG/book").json["error"] == "symbol_not_found"
    # a second try is refused for the journal, never as a broker that already exists
    assert answer(client.post("/brokers", json=LATE)) == (503, JOURNAL_UNAVAILABLE)
    assert answer(client.get("/brokers/late/balance")) == (404, LATE_NOT_FOUND)
    assert failures == [journal.error]
    client.close()

    # restarted from the journal (as the stopped worker is): late registers anew
    client = open_app(clock, SqliteJournal(path))
    assert answer(client.get("/brokers/late/balance")) == (404, LATE_NOT_FOUND)
    result = client.post("/brokers", json=LATE)
    assert result.status_code == 201, result.text
    assert client.get("/brokers/late/balance").json["holdings"] == [
        {"symbol": "GOOG", "quantity": 7, "reserved_quantity": 0, "available_quantity": 7}
    ]
    client.close()
