"""`GET /brokers/{id}/orders` reads one page, never the broker's other orders: the
published order values it reads are counted, through the real app and read index."""

from __future__ import annotations

import pytest

from miniexchange.actors.exchange import Exchange
from miniexchange.model.commands import BID, LIMIT, SubmitOrder
from miniexchange.model.orders import CANCELLED, new_order
from miniexchange.testing import CountingDict, ManualClock
from tests.conftest import START, AppClient
from tests.http.helpers import register

T0 = ManualClock.at(START).now()
ORDERS = 5000


@pytest.fixture
def counted(client: AppClient, exchange: Exchange) -> CountingDict:
    """Broker B with 5,000 orders published as its symbol actors would (one in ten
    cancelled), and the index's orders counting reads from here on."""
    register(client, "B", 1_000_000)
    index = exchange.read_index
    command = SubmitOrder(LIMIT, "B", "1", BID, "AAPL", 1, 100_00, T0 + 86_400_000_000)
    for n in range(ORDERS):
        order = new_order(command, f"ord-{n:05}", T0 + n)
        index.publish_new(order)
        if n % 10 == 3:
            index.publish(order.closed(CANCELLED, T0 + n, None))
    index.orders = orders = CountingDict(index.orders)
    return orders


@pytest.mark.parametrize(
    "query,first,total",
    [
        ("", "ord-04999", ORDERS),
        ("page=124&limit=20", "ord-02539", ORDERS),
        ("status=cancelled", "ord-04993", ORDERS // 10),
        ("status=cancelled&page=20&limit=20", "ord-01193", ORDERS // 10),
        ("status=pending&limit=100&page=2", "ord-04888", ORDERS * 9 // 10),
    ],
)
def test_a_page_reads_only_its_own_orders(
    client: AppClient, counted: CountingDict, query: str, first: str, total: int
) -> None:
    result = client.get("/brokers/B/orders", query=query)
    assert result.status_code == 200, result.text
    body = result.json
    assert (body["orders"][0]["order_id"], body["total"]) == (first, total)
    assert counted.reads == len(body["orders"]) == body["limit"]
