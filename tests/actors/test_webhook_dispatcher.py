"""WebhookDispatcherActor alone: a manual clock, sequential ids, a recording journal and
a fake delivery pool that records what it is handed (nothing is sent).

Events are made by a real `OrderBook`, exactly as a symbol actor collects them: for
each fill the bid's side, then the ask's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import orjson
import pykka
import pytest

from miniexchange.actors.messages import ListWebhooks, Notify, Subscribe, Unsubscribe
from miniexchange.actors.webhooks import Listening, WebhookDispatcherActor
from miniexchange.journal import facts
from miniexchange.journal.store import Durable, MemoryJournal
from miniexchange.model.book import OrderBook
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, SubmitOrder
from miniexchange.model.errors import ExchangeError
from miniexchange.model.events import Event, OrderClosed, TradeExecuted
from miniexchange.model.orders import CANCELLED, EXPIRED, Order, new_order
from miniexchange.model.subscriptions import Subscription, Upserted
from miniexchange.testing import FakeDeliveries, ManualClock, Replies, SequentialIds
from miniexchange.webhooks.delivery import Delivery
from tests.actors.conftest import SECOND, T0, WAIT_S

TRADE = "trade.executed"
CANCEL = "order.cancelled"
EXPIRE = "order.expired"
URL_A = "https://a.example/hooks"
URL_B = "https://b.example/hooks"
EXPIRES = T0 + 3600 * SECOND


class RecordingJournal(MemoryJournal):
    """Durable at once; keeps every appended batch (an empty one included)."""

    keeps_facts = True  # records what it is given

    def __init__(self) -> None:
        self.batches: list[list[facts.Fact]] = []

    def append(self, appended: Sequence[facts.Fact], done: Durable) -> None:
        self.batches.append(list(appended))
        done(None)


class Dispatcher:
    """The actor, its collaborators, and blocking helpers for the tests."""

    def __init__(
        self, clock: ManualClock, ids: SequentialIds, restored: Sequence[Subscription] = ()
    ) -> None:
        self.clock = clock
        self.deliveries = FakeDeliveries()
        self.journal = RecordingJournal()
        self.listening = Listening()
        self.secrets: dict[str, str] = {}  # as the account actors publish them
        self.ref = WebhookDispatcherActor.start(
            clock,
            ids,
            self.deliveries.submit,
            self.journal,
            restored,
            self.listening,
            self.secrets,
        )

    def ask(self, message_with: Any) -> Any:
        replies = Replies()
        self.ref.tell(message_with(replies))
        answer = replies.get(WAIT_S)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def subscribe(self, broker_id: str, url: str, *events: str) -> Upserted:
        return self.ask(lambda reply: Subscribe(broker_id, url, events, reply))

    def hook(self, broker_id: str, url: str, event: str) -> str:
        return self.subscribe(broker_id, url, event).subscriptions[0].webhook_id

    def listed(self, broker_id: str) -> list[Subscription]:
        return self.ask(lambda reply: ListWebhooks(broker_id, reply))

    def unsubscribe(self, webhook_id: str) -> None:
        self.ask(lambda reply: Unsubscribe(webhook_id, reply))

    def notify(self, events: Sequence[Event]) -> list[Delivery]:
        """Tell the events, then wait until they are handled; the deliveries so far."""
        self.ref.tell(Notify(tuple(events)))
        self.listed("")  # queued behind the Notify in the mailbox
        return self.deliveries.recorded()


@pytest.fixture
def dispatcher(clock: ManualClock, ids: SequentialIds) -> Dispatcher:
    return Dispatcher(clock, ids)


# -- events, as the engine makes them -------------------------------------------------


class Market:
    """A real book: rest orders, then cross them; collects the events of each step."""

    def __init__(self) -> None:
        self.book = OrderBook("AAPL")
        self.ids = SequentialIds()

    def order(self, broker_id: str, side: str, quantity: int, price: int | None) -> Order:
        kind = LIMIT if price is not None else MARKET
        expires = EXPIRES if price is not None else None
        command = SubmitOrder(kind, broker_id, "1", side, "AAPL", quantity, price, expires)
        return new_order(command, self.ids.order_id(), T0)

    def submit(
        self, broker_id: str, side: str, quantity: int, price: int | None = None
    ) -> tuple[Order, list[Event]]:
        result = self.book.submit(
            self.order(broker_id, side, quantity, price), T0, self.ids.trade_id
        )
        events: list[Event] = []
        for fill in result.fills:
            events += [TradeExecuted(fill.trade, fill.bid), TradeExecuted(fill.trade, fill.ask)]
        return result.order, events


def payload(delivery: Delivery) -> dict[str, Any]:
    return orjson.loads(delivery.body)


def cancelled(order: Order) -> OrderClosed:
    return OrderClosed(order.closed(CANCELLED, T0 + 5 * SECOND, None))


def expired(order: Order) -> OrderClosed:
    return OrderClosed(order.closed(EXPIRED, None, order.expires_at))


# -- who gets what --------------------------------------------------------------------


def test_nothing_is_delivered_without_subscriptions(dispatcher: Dispatcher) -> None:
    market = Market()
    market.submit("seller", ASK, 100, 1000)
    _, events = market.submit("buyer", BID, 100, 1000)
    assert dispatcher.notify(events) == []


def test_both_sides_of_a_trade_get_their_own_delivery(dispatcher: Dispatcher) -> None:
    seller_hook = dispatcher.hook("seller", URL_A, TRADE)
    buyer_hook = dispatcher.hook("buyer", URL_B, TRADE)
    market = Market()
    ask, _ = market.submit("seller", ASK, 100, 1000)
    bid, events = market.submit("buyer", BID, 60, 1200)
    to_buyer, to_seller = dispatcher.notify(events)
    assert (to_buyer.webhook_id, to_buyer.url, to_buyer.event_type) == (buyer_hook, URL_B, TRADE)
    assert (to_seller.webhook_id, to_seller.url) == (seller_hook, URL_A)
    assert to_buyer.delivery_id != to_seller.delivery_id
    trade_id = events[0].trade.trade_id  # type: ignore[union-attr]
    assert payload(to_buyer) == {
        "event": TRADE,
        "timestamp": "2026-02-17T09:00:00Z",
        "data": {
            "trade_id": trade_id, "broker_id": "buyer", "order_id": bid.order_id,
            "symbol": "AAPL", "side": "bid", "trade_price": 10.0, "trade_quantity": 60,
            "order_status": "filled", "order_filled_quantity": 60,
            "order_remaining_quantity": 0,
        },
    }  # fmt: skip
    assert payload(to_seller)["data"] == {
        "trade_id": trade_id, "broker_id": "seller", "order_id": ask.order_id,
        "symbol": "AAPL", "side": "ask", "trade_price": 10.0, "trade_quantity": 60,
        "order_status": "partially_filled", "order_filled_quantity": 60,
        "order_remaining_quantity": 40,
    }  # fmt: skip
    assert b'"trade_price":10.00' in to_buyer.body


def test_only_subscribed_brokers_and_events_get_deliveries(dispatcher: Dispatcher) -> None:
    dispatcher.hook("buyer", URL_B, TRADE)
    dispatcher.hook("seller", URL_A, CANCEL)  # not trades
    dispatcher.hook("bystander", URL_A, TRADE)
    market = Market()
    market.submit("seller", ASK, 100, 1000)
    _, events = market.submit("buyer", BID, 100, 1000)
    assert [d.url for d in dispatcher.notify(events)] == [URL_B]


def test_each_delivery_carries_its_brokers_own_secret(dispatcher: Dispatcher) -> None:
    """Signed with the recipient's webhook secret, read when the event is dispatched
    (a rotation applies to the events after it); None: the pool uses WEBHOOK_SECRET."""
    dispatcher.hook("buyer", URL_B, TRADE)
    dispatcher.hook("seller", URL_A, TRADE)
    dispatcher.secrets["buyer"] = "whsec_buyer"
    market = Market()
    market.submit("seller", ASK, 100, 1000)
    _, events = market.submit("buyer", BID, 50, 1000)
    sent = {d.url: d.secret for d in dispatcher.notify(events)}
    assert sent == {URL_B: "whsec_buyer", URL_A: None}
    assert "whsec_buyer" not in repr(dispatcher.deliveries.recorded())  # never in a repr
    dispatcher.secrets["buyer"] = "whsec_rotated"
    _, events = market.submit("buyer", BID, 50, 1000)
    to_buyer = [d.secret for d in dispatcher.notify(events) if d.url == URL_B]
    assert to_buyer == ["whsec_buyer", "whsec_rotated"]  # every delivery so far, in order


def test_self_trade_gives_the_broker_both_deliveries(dispatcher: Dispatcher) -> None:
    dispatcher.hook("solo", URL_A, TRADE)
    market = Market()
    market.submit("solo", ASK, 10, 1000)
    _, events = market.submit("solo", BID, 10, 1000)
    sides = [payload(d)["data"]["side"] for d in dispatcher.notify(events)]
    assert sides == ["bid", "ask"]


def test_a_sweep_is_delivered_in_match_order(dispatcher: Dispatcher) -> None:
    """The contract's 250-share market buy filling 100, 100 and 50."""
    dispatcher.hook("buyer", URL_B, TRADE)
    dispatcher.hook("seller", URL_A, TRADE)
    market = Market()
    asks = [
        market.submit("seller", ASK, q, p)[0] for q, p in ((100, 1000), (100, 1100), (50, 1200))
    ]
    _, events = market.submit("buyer", BID, 250)
    deliveries = dispatcher.notify(events)
    to_buyer = [payload(d)["data"] for d in deliveries if d.url == URL_B]
    to_seller = [payload(d)["data"] for d in deliveries if d.url == URL_A]
    assert [d["trade_price"] for d in to_buyer] == [10.0, 11.0, 12.0]
    assert [d["order_filled_quantity"] for d in to_buyer] == [100, 200, 250]
    assert [d["order_status"] for d in to_buyer] == [
        "partially_filled",
        "partially_filled",
        "filled",
    ]
    assert [d["order_id"] for d in to_seller] == [ask.order_id for ask in asks]
    assert [d["order_status"] for d in to_seller] == ["filled"] * 3
    assert [d.url for d in deliveries] == [URL_B, URL_A] * 3  # bid side, then ask, per trade


def test_a_market_remainder_reports_the_state_right_after_each_trade(
    dispatcher: Dispatcher,
) -> None:
    """400 asked, 350 on the book: the last delivery says partially_filled."""
    dispatcher.hook("buyer", URL_B, TRADE)
    market = Market()
    for quantity, price in ((100, 1000), (200, 1100), (50, 1200)):
        market.submit("seller", ASK, quantity, price)
    final, events = market.submit("buyer", BID, 400)
    data = [payload(d)["data"] for d in dispatcher.notify(events)]
    assert [d["order_status"] for d in data] == ["partially_filled"] * 3
    assert data[-1]["order_remaining_quantity"] == 50
    assert (final.status, final.cancelled_quantity) == ("cancelled", 50)  # no event for that


def test_cancel_and_expiry_go_to_their_own_subscriptions(dispatcher: Dispatcher) -> None:
    on_cancel = dispatcher.hook("broker", URL_A, CANCEL)
    on_expire = dispatcher.hook("broker", URL_B, EXPIRE)
    market = Market()
    bid, _ = market.submit("broker", BID, 1000, 15000)
    ask, _ = market.submit("broker", ASK, 1000, 20000)
    first, second = dispatcher.notify([cancelled(bid), expired(ask)])
    assert (first.webhook_id, first.event_type) == (on_cancel, CANCEL)
    assert (second.webhook_id, second.event_type) == (on_expire, EXPIRE)
    assert payload(first) == {
        "event": CANCEL,
        "timestamp": "2026-02-17T09:00:05Z",
        "data": {
            "broker_id": "broker", "order_id": bid.order_id, "symbol": "AAPL", "side": "bid",
            "price": 150.0, "quantity": 1000, "filled_quantity": 0, "cancelled_quantity": 1000,
            "remaining_quantity": 0, "status": "cancelled",
        },
    }  # fmt: skip
    assert payload(second)["timestamp"] == "2026-02-17T10:00:00Z"  # its expires_at
    assert payload(second)["data"]["status"] == "expired"
    assert b'"price":200.00' in second.body


# -- subscriptions change, deliveries follow ------------------------------------------


def test_no_delivery_after_unsubscribe(dispatcher: Dispatcher) -> None:
    hook = dispatcher.hook("broker", URL_A, CANCEL)
    market = Market()
    one, _ = market.submit("broker", BID, 10, 100)
    two, _ = market.submit("broker", BID, 10, 100)
    assert len(dispatcher.notify([cancelled(one)])) == 1
    dispatcher.unsubscribe(hook)
    assert len(dispatcher.notify([cancelled(two)])) == 1  # still only the first


def test_a_delivery_handed_over_before_unsubscribe_is_still_sent(
    dispatcher: Dispatcher,
) -> None:
    """The dispatcher never takes back what it gave the pool: the unsubscribe only
    stops later events."""
    hook = dispatcher.hook("broker", URL_A, CANCEL)
    market = Market()
    order, _ = market.submit("broker", BID, 10, 100)
    dispatcher.ref.tell(Notify((cancelled(order),)))
    dispatcher.unsubscribe(hook)
    (delivery,) = dispatcher.deliveries.recorded()
    assert delivery.webhook_id == hook


def test_the_url_is_the_one_subscribed_when_the_event_happens(dispatcher: Dispatcher) -> None:
    dispatcher.hook("broker", URL_A, CANCEL)
    market = Market()
    one, _ = market.submit("broker", BID, 10, 100)
    two, _ = market.submit("broker", BID, 10, 100)
    dispatcher.notify([cancelled(one)])
    dispatcher.subscribe("broker", URL_B, CANCEL)
    first, second = dispatcher.notify([cancelled(two)])
    assert (first.url, second.url) == (URL_A, URL_B)
    assert first.webhook_id == second.webhook_id  # one subscription, one queue


# -- the table and its journal --------------------------------------------------------


def test_upsert_journals_created_and_updated_subscriptions_only(
    dispatcher: Dispatcher, clock: ManualClock
) -> None:
    created = dispatcher.subscribe("broker", URL_A, TRADE, CANCEL)
    assert created.created
    clock.advance(seconds=1)
    same = dispatcher.subscribe("broker", URL_A, CANCEL, TRADE)
    assert not same.created
    assert same.subscriptions == created.subscriptions[::-1]
    moved = dispatcher.subscribe("broker", URL_B, TRADE)
    (subscription,) = moved.subscriptions
    assert (subscription.url, subscription.updated_at) == (URL_B, clock.now())
    assert dispatcher.journal.batches == [
        [facts.webhook_saved(asdict(s)) for s in created.subscriptions],
        [],  # a no-op still waits its turn at the journal
        [facts.webhook_saved(asdict(subscription))],
    ]


def test_unsubscribe_unknown_is_webhook_not_found(dispatcher: Dispatcher) -> None:
    with pytest.raises(ExchangeError) as refused:
        dispatcher.unsubscribe("wh-nonexistent")
    assert (refused.value.code, refused.value.message) == (
        "webhook_not_found",
        "Webhook wh-nonexistent does not exist",
    )
    assert dispatcher.journal.batches == []


def test_unsubscribe_journals_the_deletion(dispatcher: Dispatcher) -> None:
    hook = dispatcher.hook("broker", URL_A, TRADE)
    dispatcher.unsubscribe(hook)
    assert dispatcher.journal.batches[-1] == [facts.webhook_deleted(hook)]
    assert dispatcher.listed("broker") == []


def test_recovered_subscriptions_are_listed_and_notified(
    clock: ManualClock, ids: SequentialIds
) -> None:
    restored = [
        Subscription("wh-2", "broker", CANCEL, URL_B, T0 + SECOND, T0 + SECOND),
        Subscription("wh-1", "broker", TRADE, URL_A, T0, T0 + 5 * SECOND),
    ]
    dispatcher = Dispatcher(clock, ids, restored)
    assert dispatcher.listed("broker") == restored[::-1]  # by created_at
    market = Market()
    order, _ = market.submit("broker", BID, 10, 100)
    (delivery,) = dispatcher.notify([cancelled(order)])
    assert (delivery.webhook_id, delivery.url) == ("wh-2", URL_B)


def test_the_brokers_with_subscriptions_are_published_before_the_answer(
    clock: ManualClock, ids: SequentialIds
) -> None:
    restored = [Subscription("wh-1", "old", TRADE, URL_A, T0, T0)]
    dispatcher = Dispatcher(clock, ids, restored)
    assert dispatcher.listening.brokers == {"old"}
    market = Market()
    assert not dispatcher.listening.any_of([cancelled(market.order("new", BID, 1, 100))])

    dispatcher.hook("new", URL_A, CANCEL)
    assert dispatcher.listening.brokers == {"old", "new"}
    assert dispatcher.listening.any_of([cancelled(market.order("new", BID, 1, 100))])
    assert not dispatcher.listening.any_of([cancelled(market.order("other", BID, 1, 100))])
    assert not dispatcher.listening.any_of([])

    dispatcher.unsubscribe("wh-1")
    assert dispatcher.listening.brokers == {"new"}
    dispatcher.hook("new", URL_B, TRADE)  # a second event of a listed broker
    (cancel_hook,) = [hook for hook in dispatcher.listed("new") if hook.event == CANCEL]
    dispatcher.unsubscribe(cancel_hook.webhook_id)
    assert dispatcher.listening.brokers == {"new"}  # still subscribed to trades


def test_a_failing_sender_does_not_stop_the_dispatcher(
    clock: ManualClock, ids: SequentialIds
) -> None:
    def broken(delivery: Delivery) -> None:
        raise RuntimeError("pool is broken")

    ref = WebhookDispatcherActor.start(clock, ids, broken)
    replies = Replies()
    ref.tell(Subscribe("broker", URL_A, (CANCEL,), replies))
    assert replies.get(WAIT_S).created
    market = Market()
    order, _ = market.submit("broker", BID, 10, 100)
    ref.tell(Notify((cancelled(order),)))
    ref.tell(ListWebhooks("broker", replies))
    assert len(replies.get(WAIT_S)) == 1
    assert ref.is_alive()
    pykka.ActorRegistry.stop_all()
