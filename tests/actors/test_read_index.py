"""ReadIndex alone: published order states and each broker's listing order."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from miniexchange.actors.read_index import ReadIndex
from miniexchange.model.commands import BID, LIMIT, SubmitOrder
from miniexchange.model.orders import (
    CANCELLED,
    EXPIRED,
    PARTIALLY_FILLED,
    PENDING,
    STATUSES,
    Order,
    Trade,
    new_order,
)
from miniexchange.testing import CountingDict
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


# -- a page costs its own entries, whatever the broker's history ----------------------


def test_pages_and_totals_match_the_orders_published_whatever_the_order_of_publication() -> None:
    """Random acceptances (some published after a later clock reading, some with equal
    `created_at`) and random status changes; every page of every filter is what sorting
    and filtering all published orders gives."""
    rng = random.Random(14)
    index = ReadIndex()
    accepted: list[Order] = []  # in order of acceptance (publish_new calls)
    clock = T0
    for n in range(600):
        clock += rng.choice((0, 0, 1, 5))
        created_at = clock - rng.choice((0, 0, 0, 0, 1, 3))  # a late publication now and then
        placed = order(f"o{n}", rng.choice(("b1", "b1", "b2")), created_at)
        index.publish_new(placed)
        accepted.append(placed)
        for _ in range(rng.randrange(3)):
            target = index.get(rng.choice(accepted).order_id)
            assert target is not None
            if target.status in (PENDING, PARTIALLY_FILLED):
                index.publish(next_state(target, rng))
    for broker_id in ("b1", "b2", "nobody"):
        listed = [o.order_id for o in accepted if o.broker_id == broker_id]
        by_created = sorted(listed, key=lambda i: index.orders[i].created_at)  # stable
        assert index.broker_order_ids(broker_id) == by_created
        newest_first = by_created[::-1]
        for status in (None, *STATUSES):
            matching = [i for i in newest_first if status in (None, index.orders[i].status)]
            for limit in (1, 7, 20, 100):
                for start in range(0, len(matching) + limit, limit):
                    page, total = index.page(broker_id, status, start, limit)
                    assert total == len(matching)
                    assert [o.order_id for o in page] == matching[start : start + limit]
                    assert all(index.orders[o.order_id] is o for o in page)
            assert index.page(broker_id, status, 10**30, 20) == ([], len(matching))


def next_state(current: Order, rng: random.Random) -> Order:
    """A later state of an active order: one more fill, a cancel or an expiry, or now
    and then back to pending (no engine does it, but the index follows any state)."""
    choice = rng.randrange(6)
    if choice < 3 and current.remaining_quantity:
        quantity = rng.choice((1, current.remaining_quantity))  # partly, or the rest
        trade = Trade(
            "t", "AAPL", 100_00, quantity, current.created_at, current.order_id, "a", "b", "c"
        )
        return current.filled(trade)
    if choice == 3:
        return current.closed(CANCELLED, current.created_at + 1, None)
    if choice == 4:
        return current.closed(EXPIRED, None, current.expires_at)
    return current._replace(status=PENDING)


class CountingList(list[str]):
    """A broker's listed ids, counting the entries read (one per id a slice holds)."""

    reads = 0

    def __getitem__(self, index: Any) -> Any:
        got = super().__getitem__(index)
        self.reads += len(got) if isinstance(index, slice) else 1
        return got

    def __iter__(self) -> Iterator[str]:
        for item in super().__iter__():
            self.reads += 1
            yield item


class CountingTree(list[int]):
    """One status's tree of counts, counting the nodes read."""

    reads = 0

    def __getitem__(self, index: Any) -> Any:
        self.reads += 1
        return super().__getitem__(index)


def test_a_page_reads_its_own_entries_only_among_5000_orders() -> None:
    """Without a filter a page is a slice; with one, each entry is one descent of the
    status's tree (13 levels for 5,000 orders, at most two reads per level), or for
    pending, which has no tree of its own, one read of each of the four others."""
    index = ReadIndex()
    for n in range(5000):
        placed = order(f"o{n}", "b1", T0 + n)
        index.publish_new(placed)
        if n % 10 == 3:  # one in ten ends cancelled, the rest stay pending
            index.publish(placed.closed(CANCELLED, T0 + n, None))
    listing = index._by_broker["b1"]
    orders, ids = CountingDict(index.orders), CountingList(listing.ids)
    index.orders, listing.ids = orders, ids
    trees = listing.trees = [CountingTree(tree) for tree in listing.trees]
    for status, start, expected in (
        (None, 0, ["o4999", "o4998"]),
        (None, 2480, ["o2519", "o2518"]),
        (CANCELLED, 0, ["o4993", "o4983"]),
        (CANCELLED, 240, ["o2593", "o2583"]),
        (PENDING, 4000, ["o555", "o554"]),
    ):
        orders.reads = ids.reads = 0
        for tree in trees:
            tree.reads = 0
        page, total = index.page("b1", status, start, 20)
        assert [o.order_id for o in page[:2]] == expected and len(page) == 20
        assert total == {None: 5000, CANCELLED: 500, PENDING: 4500}[status]
        assert (orders.reads, ids.reads) == (20, 20)
        assert (
            sum(tree.reads for tree in trees)
            <= {None: 0, CANCELLED: 20 * 2 * 13, PENDING: 20 * 4 * 13}[status]
        )
