"""The delivery pool: a few threads POST deliveries, one at a time per subscription.

Each subscription (`webhook_id`) has a FIFO queue. A queue is served by at most one
thread at a time, so its deliveries leave in event order, the next one starting when
the previous one has completed, failed or timed out; the threads take ready queues
in turn, so a slow or dead receiver holds only its own queue (and one thread, for at
most `WEBHOOK_TIMEOUT` per delivery), never anyone else's and never a symbol actor:
`submit` only appends under a lock.

All queues together hold at most `WEBHOOK_QUEUE_LIMIT` deliveries; past it a new one
is dropped, logged and counted rather than memory growing without limit. One attempt
per delivery, no retries, the answer ignored but for its status (§4.5). `stop()`
abandons what is queued (counted as dropped, §5.3) and waits for the deliveries in
flight at most `WEBHOOK_TIMEOUT`; the threads are daemons.

`stats()` is a snapshot of the counters a metrics module exposes (§6.4): outcomes per
(event, outcome) and a duration histogram per event.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import requests
from urllib3.util import Timeout

from miniexchange.settings import Settings, to_seconds
from miniexchange.webhooks.transport import (
    Refused,
    Resolver,
    delivery_session,
    resolve_host,
    trust_context,
)

log = logging.getLogger("miniexchange.webhooks")

DELIVERED = "delivered"
FAILED = "failed"
REFUSED = "refused"
DROPPED = "dropped"
OUTCOMES = (DELIVERED, FAILED, REFUSED, DROPPED)

DURATION_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Upper bounds of the duration histogram (Prometheus' defaults); +Inf is implied."""

RESPONSE_BYTES_READ = 65_536
"""A receiver's answer is read up to this size, so its connection can be reused;
past it the connection is closed instead."""

DELIVERY_THREADS = 8


@dataclass(frozen=True, slots=True)
class Delivery:
    """One POST to make: the body is rendered (and signed) bytes, final."""

    delivery_id: str  # a bare UUID, the X-Delivery-Id
    webhook_id: str
    url: str
    event_type: str
    body: bytes
    request_id: str | None = None  # of the request that caused the event; None: a sweep
    # the broker's own webhook secret; None: WEBHOOK_SECRET (never shown in a repr or log)
    secret: str | None = field(default=None, repr=False)


class Deliveries(Protocol):
    """What the exchange needs of a delivery pool (tests pass a recording fake)."""

    def start(self) -> None: ...

    def submit(self, delivery: Delivery) -> None: ...

    def stop(self) -> None: ...


def signature(secret: str, body: bytes) -> str:
    """The `X-Signature` value: `sha256=` + hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(slots=True)
class Durations:
    """A histogram of delivery durations: counts per bucket (not cumulative), sum, count."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS_S) + 1))
    sum_s: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        index = next(
            (i for i, bound in enumerate(DURATION_BUCKETS_S) if seconds <= bound),
            len(DURATION_BUCKETS_S),
        )
        self.buckets[index] += 1
        self.sum_s += seconds
        self.count += 1

    def copy(self) -> Durations:
        return Durations(list(self.buckets), self.sum_s, self.count)


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    outcomes: dict[tuple[str, str], int]  # (event type, outcome) -> count
    durations: dict[str, Durations]  # event type -> attempts made (delivered or failed)
    queued: int  # waiting, all subscriptions together
    in_flight: int


class DeliveryPool:
    """Per-subscription FIFO queues served by a few daemon threads (see the module doc)."""

    def __init__(
        self,
        settings: Settings,
        threads: int = DELIVERY_THREADS,
        resolve: Resolver = resolve_host,
    ) -> None:
        """`resolve` is the host lookup (tests map a test name to 127.0.0.1)."""
        self._settings = settings
        self._timeout_s = to_seconds(settings.webhook_timeout_us)
        self._limit = settings.webhook_queue_limit
        self._thread_count = threads
        self._resolve = resolve
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queues: dict[str, deque[Delivery]] = {}  # webhook_id -> waiting, non-empty
        self._ready: deque[str] = deque()  # queues with waiting deliveries, none in flight
        self._busy: set[str] = set()  # queues with a delivery in flight
        self._queued = 0
        self._stopped = False
        self._threads: list[threading.Thread] = []
        self._outcomes: dict[tuple[str, str], int] = {}
        self._durations: dict[str, Durations] = {}
        self._context: ssl.SSLContext | None = None  # built on the first delivery

    # -- the exchange's side ----------------------------------------------------------

    def start(self) -> None:
        for n in range(self._thread_count):
            thread = threading.Thread(target=self._work, name=f"webhook-delivery-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, delivery: Delivery) -> None:
        """Queue `delivery` behind its subscription's earlier ones; never blocks on I/O."""
        with self._lock:
            stopped = self._stopped
            accepted = not stopped and self._queued < self._limit
            if accepted:
                key = delivery.webhook_id
                waiting = self._queues.get(key)
                if waiting is None:
                    self._queues[key] = deque((delivery,))
                    if key not in self._busy:
                        self._ready.append(key)
                        self._wake.notify()
                else:
                    waiting.append(delivery)
                self._queued += 1
        if not accepted:
            self._dropped((delivery,), "shutdown" if stopped else "queue full")

    def stop(self) -> None:
        """Abandon the queued deliveries; wait for those in flight, `WEBHOOK_TIMEOUT` at most."""
        with self._lock:
            self._stopped = True
            abandoned = [delivery for waiting in self._queues.values() for delivery in waiting]
            self._queues.clear()
            self._ready.clear()
            self._queued = 0
            self._wake.notify_all()
        self._dropped(abandoned, "shutdown")
        deadline = time.monotonic() + self._timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def stats(self) -> DeliveryStats:
        with self._lock:
            return DeliveryStats(
                dict(self._outcomes),
                {event: durations.copy() for event, durations in self._durations.items()},
                self._queued,
                len(self._busy),
            )

    # -- delivery threads -------------------------------------------------------------

    def _work(self) -> None:
        session: requests.Session | None = None  # this thread's, made when first needed
        try:
            while (delivery := self._next()) is not None:
                try:
                    if session is None:
                        session = self._new_session()
                    self._send(session, delivery)
                finally:
                    self._done(delivery.webhook_id)
        finally:
            if session is not None:
                session.close()

    def _new_session(self) -> requests.Session:
        """A session for the calling thread; all share one `SSLContext` (a trust store
        costs a tenth of a second to load), made on the first delivery, not at start."""
        with self._lock:
            if self._context is None:
                self._context = trust_context(self._settings.webhook_ca_bundle)
            context = self._context
        return delivery_session(context, self._settings.webhook_allow_private, self._resolve)

    def _next(self) -> Delivery | None:
        """The head of the next ready queue (marked busy); None once stopped."""
        with self._lock:
            while not self._ready and not self._stopped:
                self._wake.wait()
            if self._stopped:
                return None
            key = self._ready.popleft()
            waiting = self._queues[key]
            delivery = waiting.popleft()
            if not waiting:
                del self._queues[key]
            self._busy.add(key)
            self._queued -= 1
            return delivery

    def _done(self, key: str) -> None:
        """The subscription's next delivery may go now."""
        with self._lock:
            self._busy.discard(key)
            if key in self._queues and not self._stopped:
                self._ready.append(key)
                self._wake.notify()

    def _send(self, session: requests.Session, delivery: Delivery) -> None:
        headers = {
            "Content-Type": "application/json",
            "X-Delivery-Id": delivery.delivery_id,
            "X-Webhook-Id": delivery.webhook_id,
            "X-Event-Type": delivery.event_type,
        }
        secret = delivery.secret or self._settings.webhook_secret
        if secret:
            headers["X-Signature"] = signature(secret, delivery.body)
        started = time.perf_counter()
        try:
            response = session.post(
                delivery.url,
                data=delivery.body,
                headers=headers,
                timeout=Timeout(total=self._timeout_s),  # one limit for the whole attempt
                allow_redirects=False,
                stream=True,  # the answer is ignored: read only a bounded part of it
            )
        except Refused as refusal:
            self._log("webhook_delivery_refused", delivery, str(refusal))
            self._record(delivery, REFUSED)
            return
        except requests.Timeout:
            reason = f"no answer within {self._timeout_s:g}s"
        except Exception as error:  # network, TLS, DNS; whatever it is, nothing retries
            reason = f"{type(error).__name__}: {error}"
        else:
            status = response.status_code
            try:
                _read_some(response)
            except Exception:  # the status is what counts; the connection is not reused
                pass
            finally:
                response.close()
            if 200 <= status < 300:
                self._record(delivery, DELIVERED, time.perf_counter() - started)
                return
            reason = f"status {status}"
        seconds = time.perf_counter() - started
        self._log("webhook_delivery_failed", delivery, reason)
        self._record(delivery, FAILED, seconds)

    # -- accounting -------------------------------------------------------------------

    def _record(self, delivery: Delivery, outcome: str, seconds: float | None = None) -> None:
        """Count an outcome (after its log line, so whoever sees the count finds the line)."""
        key = (delivery.event_type, outcome)
        with self._lock:
            self._outcomes[key] = self._outcomes.get(key, 0) + 1
            if seconds is not None:
                durations = self._durations.get(delivery.event_type)
                if durations is None:
                    durations = self._durations[delivery.event_type] = Durations()
                durations.observe(seconds)

    def _dropped(self, deliveries: Iterable[Delivery], reason: str) -> None:
        for delivery in deliveries:
            self._log("webhook_delivery_dropped", delivery, reason)
            self._record(delivery, DROPPED)

    @staticmethod
    def _log(event: str, delivery: Delivery, reason: str) -> None:
        log.warning(
            "%s: delivery %s of %s to %s: %s",
            event,
            delivery.delivery_id,
            delivery.event_type,
            delivery.webhook_id,
            reason,
            extra={
                "event": event,
                "delivery_id": delivery.delivery_id,
                "webhook_id": delivery.webhook_id,
                "event_type": delivery.event_type,
                "reason": reason,
                "request_id": delivery.request_id,
            },
        )


def _read_some(response: requests.Response) -> None:
    """Read the answer up to `RESPONSE_BYTES_READ`; read to its end, the connection
    goes back to the session's pool."""
    read = 0
    for chunk in response.iter_content(8192):
        read += len(chunk)
        if read > RESPONSE_BYTES_READ:
            return
