"""WebhookDispatcherActor: owns the subscriptions and decides who gets what.

It answers `POST/GET/DELETE /webhooks` (a change is answered once its fact is
durable), and on `Notify` looks each event's subscription up *at that moment*: an
unsubscribed broker gets nothing for later events, and what was already handed to the
delivery pool still leaves. It renders each payload and hands the delivery over; the
POSTs happen on the pool's threads, never here. It never asks anyone, so no ask can
deadlock on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict

import pykka

from miniexchange.actors.base import DEFERRED, ExchangeActor, Reply
from miniexchange.actors.listeners import Step, StepListener
from miniexchange.actors.messages import ListWebhooks, Notify, Subscribe, Unsubscribe
from miniexchange.clock import Clock
from miniexchange.ids import IdFactory, random_uuid4
from miniexchange.journal import facts
from miniexchange.journal.store import Journal, MemoryJournal
from miniexchange.model.errors import journal_unavailable, webhook_not_found
from miniexchange.model.events import Event
from miniexchange.model.subscriptions import Subscription, Subscriptions
from miniexchange.webhooks.delivery import Delivery
from miniexchange.webhooks.payloads import render

Deliver = Callable[[Delivery], None]
"""Takes a delivery to send (the pool's `submit`); must not block."""


class Listening:
    """The brokers with at least one subscription, as the dispatcher last published them.

    The symbol actors read it to hand over only the events someone may be told of: a
    `Notify` wakes the dispatcher's thread, which most steps need not do. The dispatcher
    publishes a change before it answers the request that made it, so a step that
    starts after that answer sees it; a step that read the set just before misses at
    most what a lookup at `Notify` time would also have found unsubscribed a moment
    earlier (one frozenset is swapped whole, never changed in place).
    """

    __slots__ = ("brokers",)

    def __init__(self) -> None:
        self.brokers: frozenset[str] = frozenset()

    def any_of(self, events: Iterable[Event]) -> bool:
        """Whether any of `events` concerns a broker with a subscription."""
        brokers = self.brokers
        return bool(brokers) and any(event.order.broker_id in brokers for event in events)


class WebhookEvents(StepListener):
    """A step's events, in order, to the dispatcher, unless none of them concerns a
    broker with a subscription (then the dispatcher's thread is not woken at all)."""

    def __init__(
        self, dispatcher: Callable[[], pykka.ActorRef | None], listening: Listening
    ) -> None:
        self.dispatcher = dispatcher
        self.listening = listening

    def on_step(self, step: Step) -> None:
        events = step.outcome.events
        dispatcher = self.dispatcher()
        if dispatcher is not None and events and self.listening.any_of(events):
            # Once stopping, deliveries not yet made are abandoned (a shutdown sends no more).
            with contextlib.suppress(pykka.ActorDeadError):
                dispatcher.tell(Notify(tuple(events)))


class WebhookDispatcherActor(ExchangeActor):
    def __init__(
        self,
        clock: Clock,
        ids: IdFactory,
        deliver: Deliver,
        journal: Journal | None = None,
        subscriptions: Iterable[Subscription] = (),
        listening: Listening | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> None:
        """`subscriptions`: those recovered from the journal, in creation order.
        `listening`: where to publish which brokers have subscriptions. `secrets`: each
        broker's own webhook secret as its account actor publishes it (a delivery is
        signed with it; a broker without one gets `WEBHOOK_SECRET`'s signature)."""
        super().__init__()
        self.clock = clock
        self.ids = ids
        self.deliver = deliver
        self.journal: Journal = journal if journal is not None else MemoryJournal()
        self.subscriptions = Subscriptions(subscriptions)
        self.listening = listening if listening is not None else Listening()
        self.listening.brokers = self.subscriptions.brokers()
        self.secrets: Mapping[str, str] = secrets if secrets is not None else {}

    def _subscribe(self, message: Subscribe) -> object:
        at, stamped = message.at, message.webhook_ids
        upserted = self.subscriptions.upsert(
            message.broker_id,
            message.url,
            message.events,
            self.clock.now() if at is None else at,
            self.ids.webhook_id if stamped is None else iter(stamped).__next__,
        )
        self.listening.brokers = self.subscriptions.brokers()
        saved = [facts.webhook_saved(asdict(subscription)) for subscription in upserted.changed]
        answer = message.keep.fact(upserted) if message.keep is not None else None
        if answer is not None:  # an Idempotency-Key answer, journaled with what it says
            saved.append(answer)
        self._when_durable(saved, message.reply, upserted)
        return DEFERRED

    def _list(self, message: ListWebhooks) -> list[Subscription]:
        return self.subscriptions.of_broker(message.broker_id)

    def _unsubscribe(self, message: Unsubscribe) -> object:
        found = self.subscriptions.get(message.webhook_id)
        if found is None or message.owner not in (None, found.broker_id):
            raise webhook_not_found(message.webhook_id)  # another broker's: as if missing
        self.subscriptions.delete(message.webhook_id)
        self.listening.brokers = self.subscriptions.brokers()
        self._when_durable([facts.webhook_deleted(message.webhook_id)], message.reply, None)
        return DEFERRED

    def _notify(self, message: Notify) -> None:
        lookup, secrets = self.subscriptions.lookup, self.secrets
        for event in message.events:
            broker_id = event.order.broker_id
            subscription = lookup(broker_id, event.event)
            if subscription is not None:
                self.deliver(
                    Delivery(
                        random_uuid4(),
                        subscription.webhook_id,
                        subscription.url,
                        event.event,
                        render(event),
                        event.request_id,
                        secrets.get(broker_id),
                    )
                )

    handlers = {  # noqa: RUF012
        Subscribe: _subscribe,
        ListWebhooks: _list,
        Unsubscribe: _unsubscribe,
        Notify: _notify,
    }

    def _when_durable(self, saved: list[facts.Fact], reply: Reply, answer: object) -> None:
        """Answer once the facts are committed. A no-op upsert appends nothing but still
        waits its turn, so it is never answered ahead of an earlier change's commit."""

        def durable(error: BaseException | None) -> None:
            reply(answer if error is None else journal_unavailable())

        self.journal.append(saved, durable)
