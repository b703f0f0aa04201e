"""ReadIndex alone: published order states and each broker's listing order."""

from __future__ import annotations

from miniexchange.actors.read_index import ReadIndex
from miniexchange.model.commands import BID, LIMIT, SubmitOrder
from miniexchange.model.orders import CANCELLED, Order, new_order
from tests.actors.conftest import SECOND, T0


def order(order_id: str, broker_id: str, created_at: int) -> Order:
    command = SubmitOrder(LIMIT, broker_id, "1", BID, "AAPL", 10, 100_00, T0 + 3600 * SECOND)
    return new_order(command, order_id, created_at)


def test_a_listing_is_by_created_at_even_when_published_out_of_clock_order() -> None:
    index = ReadIndex()
    index.publish_new(order("a", "b1", T0 + 2))
    index.publish_new(order("other", "b2", T0))
    index.publish_new(order("b", "b1", T0 + 5))
    # another symbol's actor read its clock earlier but published later:
    index.publish_new(order("c", "b1", T0 + 1))
    index.publish_new(order("d", "b1", T0 + 5))  # equal created_at: after the earlier one
    index.publish_new(order("e", "b1", T0 + 2))  # equal to "a": accepted later, listed later
    assert index.broker_order_ids("b1") == ["c", "a", "e", "b", "d"]
    assert index.broker_order_ids("b2") == ["other"]
    assert index.broker_order_ids("nobody") == []


def test_publish_replaces_the_state_and_keeps_the_listing() -> None:
    index = ReadIndex()
    placed = order("a", "b1", T0)
    index.publish_new(placed)
    cancelled = placed.closed(CANCELLED, T0 + SECOND, None)
    index.publish(cancelled)
    assert index.get("a") == cancelled
    assert index.broker_order_ids("b1") == ["a"]
    assert index.get("missing") is None
