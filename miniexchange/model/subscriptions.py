"""Webhook subscriptions as a plain table: upsert, list and delete.

The key is `(broker_id, event)`: a broker has at most one URL per event. Time and ids
are passed in, so the rules are tested without threads; the dispatcher actor owns one
table and is its only writer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Subscription:
    """One `(broker_id, event)` subscription; `webhook_id` and `created_at` never change."""

    webhook_id: str
    broker_id: str
    event: str
    url: str
    created_at: int  # microseconds since the epoch
    updated_at: int


@dataclass(frozen=True, slots=True)
class Upserted:
    """What one `POST /webhooks` did."""

    created: bool  # at least one subscription is new: 201, else 200
    subscriptions: tuple[Subscription, ...]  # one per requested event, in request order
    changed: tuple[Subscription, ...]  # created or updated: the facts to journal


class Subscriptions:
    def __init__(self, restored: Iterable[Subscription] = ()) -> None:
        """`restored`: the subscriptions recovered from the journal, in creation order."""
        # broker -> event -> subscription; dict order is creation order (an update keeps
        # its place, a delete then a new subscribe goes last), the listing's tie-break.
        self._by_broker: dict[str, dict[str, Subscription]] = {}
        self._by_id: dict[str, Subscription] = {}
        for subscription in restored:
            self._put(subscription)

    def _put(self, subscription: Subscription) -> None:
        self._by_broker.setdefault(subscription.broker_id, {})[subscription.event] = subscription
        self._by_id[subscription.webhook_id] = subscription

    def upsert(
        self,
        broker_id: str,
        url: str,
        events: Iterable[str],
        now: int,
        new_id: Callable[[], str],
    ) -> Upserted:
        """Create or update one subscription per distinct event.

        A new key gets a new id with `created_at = updated_at = now`; another URL
        replaces the URL and sets `updated_at`; the same URL changes nothing.
        """
        mine = self._by_broker.get(broker_id, {})
        entries: dict[str, Subscription] = {}
        changed: list[Subscription] = []
        created = False
        for event in events:
            if event in entries:
                continue  # repeats are merged
            current = mine.get(event)
            if current is None:
                current = Subscription(new_id(), broker_id, event, url, now, now)
                created = True
                changed.append(current)
            elif current.url != url:
                current = replace(current, url=url, updated_at=now)
                changed.append(current)
            entries[event] = current
        for subscription in changed:
            self._put(subscription)
        return Upserted(created, tuple(entries.values()), tuple(changed))

    def lookup(self, broker_id: str, event: str) -> Subscription | None:
        """The subscription an event of `broker_id` goes to right now, if any."""
        mine = self._by_broker.get(broker_id)
        return None if mine is None else mine.get(event)

    def brokers(self) -> frozenset[str]:
        """The brokers with at least one subscription."""
        return frozenset(self._by_broker)

    def of_broker(self, broker_id: str) -> list[Subscription]:
        """Every subscription of the broker, by `created_at`, then creation order."""
        # sorted() is stable: equal created_at keep creation (dict) order. After a
        # restart the wall clock may be behind a recovered created_at, so sort anyway.
        mine = self._by_broker.get(broker_id, {})
        return sorted(mine.values(), key=lambda subscription: subscription.created_at)

    def get(self, webhook_id: str) -> Subscription | None:
        return self._by_id.get(webhook_id)

    def delete(self, webhook_id: str) -> Subscription | None:
        """Remove a subscription; None if no subscription has this id."""
        subscription = self._by_id.pop(webhook_id, None)
        if subscription is not None:
            mine = self._by_broker[subscription.broker_id]
            del mine[subscription.event]
            if not mine:
                del self._by_broker[subscription.broker_id]
        return subscription
