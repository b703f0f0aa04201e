"""`GET /metrics`: every Prometheus family with its labels from the start, and
counters that move by exactly what a scripted sequence of requests implies."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest
from falcon import testing
from prometheus_client.parser import text_string_to_metric_families

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.messages import Submit
from miniexchange.http.app import create_app
from miniexchange.http.request_bodies import validate_order
from miniexchange.metrics import Metrics
from miniexchange.settings import load_settings
from miniexchange.testing import ManualClock, Replies, run_expiration
from tests.conftest import START, AppClient
from tests.http.helpers import limit, market, register

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# family (as the parser names it: counters without `_total`) -> (type, labels)
FAMILIES: dict[str, tuple[str, set[str]]] = {
    "miniexchange_http_requests": ("counter", {"method", "route", "status"}),
    "miniexchange_http_request_duration_seconds": ("histogram", {"method", "route"}),
    "miniexchange_orders": ("counter", {"type", "side", "outcome"}),
    "miniexchange_trades": ("counter", {"symbol"}),
    "miniexchange_traded_quantity": ("counter", {"symbol"}),
    "miniexchange_resting_orders": ("gauge", {"symbol", "side"}),
    "miniexchange_webhook_deliveries": ("counter", {"event", "outcome"}),
    "miniexchange_webhook_delivery_duration_seconds": ("histogram", {"event"}),
}
JOURNAL_FAMILY = "miniexchange_journal_commit_duration_seconds"

Labels = tuple[tuple[str, str], ...]


class Scrape:
    """One `/metrics` answer, parsed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {family.name: family for family in text_string_to_metric_families(text)}

    def samples(self, family: str, suffix: str = "") -> dict[Labels, float]:
        """`{sorted labels: value}` of the family's samples named `<family><suffix>`
        (counters' values are the `_total` samples)."""
        name = family + (suffix or ("_total" if self.families[family].type == "counter" else ""))
        return {
            tuple(sorted(sample.labels.items())): sample.value
            for sample in self.families[family].samples
            if sample.name == name
        }


def scrape(client: AppClient) -> Scrape:
    result = client.get("/metrics")
    assert result.status_code == 200
    assert result.headers["content-type"] == CONTENT_TYPE
    return Scrape(result.text)


def labels(**values: str) -> Labels:
    return tuple(sorted(values.items()))


def order_outcome(order_type: str, side: str, outcome: str) -> Labels:
    return labels(type=order_type, side=side, outcome=outcome)


# -- the families --------------------------------------------------------------------------


def test_every_family_is_exposed_from_the_start_with_help_and_type(client: AppClient) -> None:
    first = scrape(client)
    for family, (kind, _) in FAMILIES.items():
        exposed = family + ("_total" if kind == "counter" else "")
        assert f"# HELP {exposed} " in first.text
        assert f"# TYPE {exposed} {kind}\n" in first.text
        assert first.families[family].type == kind
        assert first.families[family].samples == []  # nothing happened yet
    assert JOURNAL_FAMILY not in first.families  # DATABASE_PATH=:memory: (no journal)


def test_every_family_has_exactly_its_labels(client: AppClient) -> None:
    register(client, "S", 0, AAPL=10)
    register(client, "B", 1_000_000)
    limit(client, "S", "ask", 10, 5)
    limit(client, "B", "bid", 10, 2)
    assert client.get("/nowhere").status_code == 404  # a not_found route, counted
    result = scrape(client)
    for family in (
        "miniexchange_webhook_deliveries",
        "miniexchange_webhook_delivery_duration_seconds",
    ):
        assert result.families[family].samples == []  # no subscription: no delivery
    for family, (_, names) in FAMILIES.items():
        for sample in result.families[family].samples:
            assert set(sample.labels) - {"le"} == names, (family, sample)


def test_the_journal_histogram_is_there_when_the_journal_is_on(tmp_path: Path) -> None:
    settings = load_settings({"DATABASE_PATH": str(tmp_path / "journal.db")})
    client = AppClient(create_app(settings))
    try:
        before = scrape(client)
        assert before.families[JOURNAL_FAMILY].type == "histogram"
        commits = before.samples(JOURNAL_FAMILY, "_count")[()]
        register(client, "B", 100)  # one write, answered once committed: one commit
        after = scrape(client)
        assert after.samples(JOURNAL_FAMILY, "_count")[()] == commits + 1
        assert (
            after.samples(JOURNAL_FAMILY, "_sum")[()] > before.samples(JOURNAL_FAMILY, "_sum")[()]
        )
    finally:
        client.close()
        pykka.ActorRegistry.stop_all()


# -- a scripted sequence, counted exactly -------------------------------------------------


def test_orders_trades_and_resting_counts_follow_a_scripted_sequence(client: AppClient) -> None:
    register(client, "B", 1_000_000)
    register(client, "S", 0, AAPL=100)
    register(client, "POOR", 0)
    assert limit(client, "B", "bid", 100, 10).status_code == 201
    assert limit(client, "B", "bid", 101, 5).status_code == 201
    assert market(client, "B", "bid", 3).status_code == 409  # no ask: no_liquidity
    assert limit(client, "POOR", "ask", 100, 1).status_code == 409  # insufficient_holdings
    assert limit(client, "B", "bid", 100, 0).status_code == 400  # validation: not counted
    middle = scrape(client)
    assert middle.samples("miniexchange_orders") == {
        order_outcome("limit", "bid", "accepted"): 2,
        order_outcome("market", "bid", "no_liquidity"): 1,
        order_outcome("limit", "ask", "insufficient_holdings"): 1,
    }
    assert middle.samples("miniexchange_resting_orders") == {
        labels(symbol="AAPL", side="bid"): 2,
        labels(symbol="AAPL", side="ask"): 0,
    }
    assert middle.samples("miniexchange_trades") == {labels(symbol="AAPL"): 0}

    sold = limit(client, "S", "ask", 100, 12)  # fills 5 @ 101, then 7 @ 100
    assert sold.status_code == 201 and len(sold.json["trades"]) == 2
    assert market(client, "S", "ask", 3).status_code == 201  # the last 3 @ 100
    resting = limit(client, "S", "ask", 200, 10).json["order_id"]
    assert limit(client, "B", "bid", 99, 1, symbol="MSFT").status_code == 201
    middle = scrape(client)
    assert middle.samples("miniexchange_resting_orders") == {
        labels(symbol="AAPL", side="bid"): 0,
        labels(symbol="AAPL", side="ask"): 1,
        labels(symbol="MSFT", side="bid"): 1,
        labels(symbol="MSFT", side="ask"): 0,
    }
    assert client.delete(f"/orders/{resting}").status_code == 200

    result = scrape(client)
    assert result.samples("miniexchange_orders") == {
        order_outcome("limit", "bid", "accepted"): 3,
        order_outcome("market", "bid", "no_liquidity"): 1,
        order_outcome("limit", "ask", "insufficient_holdings"): 1,
        order_outcome("limit", "ask", "accepted"): 2,
        order_outcome("market", "ask", "accepted"): 1,
    }
    assert result.samples("miniexchange_trades") == {
        labels(symbol="AAPL"): 3,
        labels(symbol="MSFT"): 0,
    }
    assert result.samples("miniexchange_traded_quantity") == {
        labels(symbol="AAPL"): 15,
        labels(symbol="MSFT"): 0,
    }
    assert result.samples("miniexchange_resting_orders") == {
        labels(symbol="AAPL", side="bid"): 0,
        labels(symbol="AAPL", side="ask"): 0,
        labels(symbol="MSFT", side="bid"): 1,
        labels(symbol="MSFT", side="ask"): 0,
    }


def test_an_expired_order_leaves_the_resting_count(
    client: AppClient, clock: ManualClock, exchange: Exchange
) -> None:
    register(client, "B", 1_000_000)
    limit(client, "B", "bid", 10, 1, expires_at="2026-02-17T09:00:01Z")
    limit(client, "B", "bid", 10, 1)
    bids = labels(symbol="AAPL", side="bid")
    assert scrape(client).samples("miniexchange_resting_orders")[bids] == 2
    clock.advance(seconds=2)
    run_expiration(exchange)
    assert scrape(client).samples("miniexchange_resting_orders")[bids] == 1


def test_the_expires_at_refusal_at_acceptance_counts_as_validation_error(
    client: AppClient, clock: ManualClock, exchange: Exchange
) -> None:
    """`expires_at` passed validation, but had passed when the symbol actor took the order
    (the HTTP layer and the actor read the clock at two instants)."""
    register(client, "B", 1_000_000)
    limit(client, "B", "bid", 10, 1)  # the symbol's actor exists
    body = {
        "type": "limit", "broker_id": "B", "document_number": "1", "side": "bid",
        "symbol": "AAPL", "price": 10, "quantity": 1, "expires_at": "2026-02-17T09:00:01Z",
    }  # fmt: skip
    command = validate_order(body, clock.now())
    clock.advance(seconds=1)
    replies = Replies()
    exchange.submit(Submit(command, replies))
    assert replies.get().code == "validation_error"
    assert scrape(client).samples("miniexchange_orders") == {
        order_outcome("limit", "bid", "accepted"): 1,
        order_outcome("limit", "bid", "validation_error"): 1,
    }


def test_outcomes_the_http_layer_decides_are_counted(client: AppClient) -> None:
    register(client, "B", 1_000_000)
    assert limit(client, "NOBODY", "bid", 10, 1).status_code == 404  # broker_not_found
    assert market(client, "B", "bid", 1, symbol="NEWCO").status_code == 409  # no book yet
    assert scrape(client).samples("miniexchange_orders") == {
        order_outcome("limit", "bid", "broker_not_found"): 1,
        order_outcome("market", "bid", "no_liquidity"): 1,
    }


def test_http_requests_are_counted_by_method_route_and_status(client: AppClient) -> None:
    register(client, "B", 1_000_000)
    placed = limit(client, "B", "bid", 10, 1).json["order_id"]
    client.get(f"/orders/{placed}")
    client.get(f"/orders/{placed}")
    client.get("/orders/nope")
    client.delete(f"/orders/{placed}")
    client.request("PUT", "/orders")
    client.get("/nowhere")
    client.get("/orders/")  # refused before routing: not_found too
    for _ in range(3):
        client.get("/healthz")  # never counted
        scrape(client)  # nor are scrapes
    client.request("HEAD", "/healthz")  # another method: counted (a 405)
    result = scrape(client)
    expected = {
        labels(method="POST", route="/brokers", status="201"): 1,
        labels(method="POST", route="/orders", status="201"): 1,
        labels(method="GET", route="/orders/{order_id}", status="200"): 2,
        labels(method="GET", route="/orders/{order_id}", status="404"): 1,
        labels(method="DELETE", route="/orders/{order_id}", status="200"): 1,
        labels(method="PUT", route="/orders", status="405"): 1,
        labels(method="GET", route="not_found", status="404"): 2,
        labels(method="HEAD", route="/healthz", status="405"): 1,
    }
    assert result.samples("miniexchange_http_requests") == expected
    durations = result.samples("miniexchange_http_request_duration_seconds", "_count")
    by_route: dict[Labels, float] = {}
    for key, count in expected.items():
        route = tuple((name, value) for name, value in key if name != "status")
        by_route[route] = by_route.get(route, 0) + count
    assert durations == by_route


# -- webhooks -------------------------------------------------------------------------------


@pytest.fixture(params=["composed by create_app", "a ready exchange"])
def wired(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AppClient]:
    """An app whose delivery pool counts into its metrics: as `create_app` composes the
    served app (its own exchange, journal and pool, from its settings), or as the
    fixtures do."""
    if request.param == "a ready exchange":
        yield request.getfixturevalue("client")
        return
    settings = load_settings({"DATABASE_PATH": str(tmp_path / "journal.db")})
    client = AppClient(create_app(settings, clock=ManualClock.at(START)))
    try:
        yield client
    finally:
        client.close()
        pykka.ActorRegistry.stop_all()


def test_webhook_outcomes_come_from_the_delivery_pool(wired: AppClient) -> None:
    """Deliveries to a loopback address are refused (WEBHOOK_ALLOW_PRIVATE is false)."""
    register(wired, "S", 0, AAPL=10)
    register(wired, "B", 1_000_000)
    hook = {"broker_id": "B", "url": "https://127.0.0.1:9/hook", "events": ["trade.executed"]}
    assert wired.post("/webhooks", json=hook).status_code == 201
    limit(wired, "S", "ask", 10, 5)
    limit(wired, "B", "bid", 10, 2)
    limit(wired, "B", "bid", 10, 1)
    refused = labels(event="trade.executed", outcome="refused")
    deadline = time.monotonic() + 60
    while (seen := scrape(wired).samples("miniexchange_webhook_deliveries")) != {refused: 2}:
        assert time.monotonic() < deadline, seen
        time.sleep(0.02)
    # a refusal makes no attempt: no duration
    assert scrape(wired).samples("miniexchange_webhook_delivery_duration_seconds", "_count") == {}


def test_delivery_durations_are_exposed_as_cumulative_buckets() -> None:
    metrics = Metrics()
    for seconds in (0.003, 0.02, 0.02, 7.0):
        metrics.count_delivery("trade.executed", "delivered", seconds)
    metrics.count_delivery("trade.executed", "failed", 60.0)
    metrics.count_delivery("trade.executed", "refused", None)  # no attempt: no duration
    result = Scrape(metrics.render().decode())
    assert result.samples("miniexchange_webhook_deliveries") == {
        labels(event="trade.executed", outcome="delivered"): 4,
        labels(event="trade.executed", outcome="failed"): 1,
        labels(event="trade.executed", outcome="refused"): 1,
    }
    buckets = result.samples("miniexchange_webhook_delivery_duration_seconds", "_bucket")
    cumulative = {
        "0.005": 1, "0.01": 1, "0.025": 3, "0.05": 3, "0.1": 3, "0.25": 3, "0.5": 3,
        "1.0": 3, "2.5": 3, "5.0": 3, "10.0": 4, "+Inf": 5,
    }  # fmt: skip
    assert buckets == {labels(event="trade.executed", le=le): n for le, n in cumulative.items()}
    counts = result.samples("miniexchange_webhook_delivery_duration_seconds", "_count")
    assert counts == {labels(event="trade.executed"): 5}
    sums = result.samples("miniexchange_webhook_delivery_duration_seconds", "_sum")
    assert sums[labels(event="trade.executed")] == pytest.approx(67.043)


# -- event streams --------------------------------------------------------------------------


@pytest.fixture
def streaming(client: AppClient) -> AppClient:
    register(client, "S", 0, AAPL=100)
    return client


def test_an_event_stream_is_counted_once_when_it_ends(streaming: AppClient) -> None:
    stream = labels(method="GET", route="/stocks/{symbol}/stream", status="200")

    async def watch(conductor: testing.ASGIConductor) -> dict[Labels, float]:
        async with conductor.simulate_get_stream("/stocks/AAPL/stream") as result:
            while not await result.stream.read():  # the first event: the stream is open
                pass
            during = await conductor.simulate_get("/metrics")
            return Scrape(during.text).samples("miniexchange_http_requests")

    during = streaming.run(watch)
    assert stream not in during
    deadline = time.monotonic() + 60
    while stream not in (after := scrape(streaming).samples("miniexchange_http_requests")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert after[stream] == 1
    durations = scrape(streaming).samples("miniexchange_http_request_duration_seconds", "_count")
    assert durations[labels(method="GET", route="/stocks/{symbol}/stream")] == 1
