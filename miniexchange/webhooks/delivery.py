"""The delivery pool: threads POST deliveries, one at a time per subscription.

Each subscription (`webhook_id`) has a FIFO queue, served by at most one thread at a
time, so its deliveries leave in event order, the next one starting when the previous
one has completed, failed or timed out. `submit` only appends under a lock: a symbol
actor never waits for a receiver.

A slow or dead receiver holds only its own subscription. Queues wait in two lanes:
a subscription whose last delivery succeeded (to the same URL) is in good standing;
one whose last delivery failed, or that has had none yet, is on probation. At most
`PROBATION_LIMIT` probation deliveries are in flight at once, out of `MAX_THREADS`
threads in all, so however many probation receivers hang for the whole
`WEBHOOK_TIMEOUT`, good-standing deliveries keep the other threads: one leaves at
once. Threads are made when work finds none idle and end after `IDLE_EXIT_S` idle,
down to the `threads` kept; the good lane is served first. Name resolution is part of
the attempt and bounded by the same timeout (`transport.Resolutions`, in the same
two lanes).

All queues together hold at most `WEBHOOK_QUEUE_LIMIT` waiting deliveries (one in
flight is not waiting). Past it a new delivery takes the place of the oldest waiting
delivery of the subscription with the most waiting (ties: the one whose oldest waiting
delivery is oldest), or is itself dropped when that subscription is its own: a flood
to one receiver costs that receiver, not the others. A lazy heap finds that
subscription in O(log n). Each drop is logged and counted. One attempt per delivery,
no retries, the answer ignored but for its status. `stop()` abandons what is
queued (counted as dropped: a shutdown sends no more) and waits for the deliveries in flight at most
`WEBHOOK_TIMEOUT`; the threads are daemons.

Every outcome, with the attempt's duration when one was made, goes to the `on_outcome`
hook the composition root gives (`Metrics.count_delivery`); `stats()` is a snapshot of
the backlog and the threads.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import logging
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import requests
from urllib3.util import Timeout

from miniexchange.settings import Settings, to_seconds
from miniexchange.webhooks.transport import (
    Refused,
    ResolutionBusy,
    Resolutions,
    ResolutionTimeout,
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

OnOutcome = Callable[[str, str, float | None], None]
"""Hears each delivery's (event type, outcome, seconds of the attempt or None if none
was made); called on a delivery thread, under the pool's lock."""

RESPONSE_BYTES_READ = 65_536
"""A receiver's answer is read up to this size, so its connection can be reused;
past it the connection is closed instead."""

DELIVERY_THREADS = 8
"""Threads kept even when idle (each keeps its connections to receivers open)."""

PROBATION_LIMIT = 128
"""Most deliveries in flight at once for subscriptions not in good standing: that many
receivers can hang for the whole `WEBHOOK_TIMEOUT` without taking a thread from a
subscription in good standing."""

MAX_THREADS = 160
"""Delivery threads at most; the 32 beyond `PROBATION_LIMIT` only ever serve
subscriptions in good standing."""

IDLE_EXIT_S = 60.0
"""A thread beyond the kept ones ends after this long without work."""

STANDING_KEPT = 65_536
"""Subscriptions whose good standing is remembered (least recently delivered forgotten
first: forgotten, a subscription is on probation until its next success)."""

GOOD = "good"
PROBATION = "probation"


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


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    queued: int  # waiting, all subscriptions together
    in_flight: int
    threads: int = 0  # delivery threads alive, busy or idle


Job = tuple[Delivery, str]
"""A delivery to make now, and the lane it was taken from."""


class _Worker:
    """One delivery thread's mailbox: the pool hands it a job and sets `wake`."""

    __slots__ = ("idle", "job", "lane", "wake")

    def __init__(self, job: Job | None) -> None:
        self.job = job
        self.lane = GOOD  # of the delivery in hand: its name lookups run in that lane
        self.idle = False
        self.wake = threading.Event()


class DeliveryPool:
    """Per-subscription FIFO queues served by daemon threads in two lanes (module doc)."""

    def __init__(
        self,
        settings: Settings,
        threads: int = DELIVERY_THREADS,
        resolve: Resolver = resolve_host,
        *,
        on_outcome: OnOutcome,
        probation_limit: int = PROBATION_LIMIT,
        max_threads: int = MAX_THREADS,
    ) -> None:
        """`threads`: kept even when idle. `resolve` is the host lookup (tests map a
        test name to 127.0.0.1). `on_outcome` counts the outcomes (`OnOutcome`). At least one thread beyond `probation_limit` is needed,
        or good standing would buy nothing."""
        if not 0 < probation_limit < max_threads or not 0 <= threads <= max_threads:
            raise ValueError("need 0 < probation_limit < max_threads and threads <= max_threads")
        self._settings = settings
        self._on_outcome = on_outcome
        self._timeout_s = to_seconds(settings.webhook_timeout_us)
        self._limit = settings.webhook_queue_limit
        self._kept = threads
        self._probation_limit = probation_limit
        self._max_threads = max_threads
        self._resolutions = Resolutions(resolve, {GOOD: max_threads, PROBATION: probation_limit})
        self._lock = threading.Lock()
        # webhook_id -> its waiting deliveries with their submit numbers; never empty
        self._queues: dict[str, deque[tuple[int, Delivery]]] = {}
        self._submitted = 0  # numbers the deliveries, so "oldest" is well defined
        # (-waiting, oldest number, webhook_id) for each queue, stale ones skipped
        self._largest: list[tuple[int, int, str]] = []
        # queues with waiting deliveries and none in flight, first come first served
        self._ready: dict[str, OrderedDict[str, None]] = {
            GOOD: OrderedDict(),
            PROBATION: OrderedDict(),
        }
        self._busy: dict[str, str] = {}  # webhook_id -> lane of its delivery in flight
        self._probation_in_flight = 0
        self._standing: OrderedDict[str, str] = OrderedDict()  # webhook_id -> URL it last reached
        self._queued = 0
        self._started = False
        self._stopped = False
        self._idle: list[_Worker] = []  # last in, first out: the extra threads age out
        self._threads: set[threading.Thread] = set()
        self._context: ssl.SSLContext | None = None  # built on the first delivery

    # -- the exchange's side ----------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._started = True
            for _ in range(self._kept):
                worker = _Worker(None)
                worker.idle = True
                self._idle.append(worker)
                self._spawn(worker)
            self._dispatch()  # what was submitted before the start

    def submit(self, delivery: Delivery) -> None:
        """Queue `delivery` behind its subscription's earlier ones; never blocks on I/O."""
        dropped: Delivery | None = None
        reason = "queue full"
        with self._lock:
            if self._stopped:
                dropped, reason = delivery, "shutdown"
            else:
                key = delivery.webhook_id
                if self._queued >= self._limit:
                    victim = self._most_waiting()
                    if victim is None or victim == key:
                        dropped = delivery
                    else:
                        dropped = self._evict(victim)
                if dropped is not delivery:
                    self._enqueue(key, delivery)
        if dropped is not None:
            self._dropped((dropped,), reason)

    def stop(self) -> None:
        """Abandon the queued deliveries; wait for those in flight, `WEBHOOK_TIMEOUT` at most."""
        with self._lock:
            self._stopped = True
            abandoned = [delivery for waiting in self._queues.values() for _, delivery in waiting]
            self._queues.clear()
            self._largest.clear()
            for ready in self._ready.values():
                ready.clear()
            self._queued = 0
            for worker in self._idle:
                worker.idle = False
                worker.wake.set()
            self._idle.clear()
            threads = list(self._threads)
        self._dropped(abandoned, "shutdown")
        deadline = time.monotonic() + self._timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def stats(self) -> DeliveryStats:
        with self._lock:
            return DeliveryStats(
                self._queued,
                len(self._busy),
                len(self._threads),
            )

    # -- queues, lanes and the backlog bound (all under the lock) ---------------------

    def _enqueue(self, key: str, delivery: Delivery) -> None:
        self._submitted += 1
        waiting = self._queues.get(key)
        if waiting is None:
            waiting = self._queues[key] = deque()
        waiting.append((self._submitted, delivery))
        self._queued += 1
        self._note(key)
        if len(waiting) == 1 and key not in self._busy:
            self._make_ready(key)
            self._dispatch()

    def _note(self, key: str) -> None:
        """Record the queue's new size and oldest delivery in the heap (the entries it
        had go stale). Rebuilt when stale entries outnumber live ones: O(1) amortized."""
        waiting = self._queues.get(key)
        if waiting:
            heapq.heappush(self._largest, (-len(waiting), waiting[0][0], key))
        if len(self._largest) > 2 * len(self._queues) + 64:
            self._largest = [(-len(q), q[0][0], k) for k, q in self._queues.items()]
            heapq.heapify(self._largest)

    def _most_waiting(self) -> str | None:
        """The subscription with the most waiting; ties: the oldest waiting delivery."""
        largest = self._largest
        while largest:
            size, oldest, key = largest[0]
            waiting = self._queues.get(key)
            if waiting and len(waiting) == -size and waiting[0][0] == oldest:
                return key
            heapq.heappop(largest)  # stale
        return None

    def _evict(self, key: str) -> Delivery:
        """Take the oldest waiting delivery of `key` out of the backlog."""
        waiting = self._queues[key]
        _, delivery = waiting.popleft()
        self._queued -= 1
        if waiting:
            self._note(key)
        else:
            del self._queues[key]
            for ready in self._ready.values():
                ready.pop(key, None)
        return delivery

    def _make_ready(self, key: str) -> None:
        """Queue `key` in its lane: good standing if its last delivery reached this URL."""
        head = self._queues[key][0][1]
        lane = GOOD if self._standing.get(key) == head.url else PROBATION
        self._ready[lane][key] = None

    def _take(self) -> Job | None:
        """The next delivery that may start now (the good lane first), marked in flight."""
        if self._ready[GOOD]:
            lane = GOOD
        elif self._ready[PROBATION] and self._probation_in_flight < self._probation_limit:
            lane = PROBATION
            self._probation_in_flight += 1
        else:
            return None
        key, _ = self._ready[lane].popitem(last=False)
        waiting = self._queues[key]
        _, delivery = waiting.popleft()
        if waiting:
            self._note(key)
        else:
            del self._queues[key]
        self._busy[key] = lane
        self._queued -= 1
        return delivery, lane

    def _dispatch(self) -> None:
        """Give every delivery that may start now a thread: an idle one, or a new one."""
        if not self._started or self._stopped:
            return
        while self._idle or len(self._threads) < self._max_threads:
            job = self._take()
            if job is None:
                return
            if self._idle:
                worker = self._idle.pop()
                worker.idle = False
                worker.job = job
                worker.wake.set()
            else:
                self._spawn(_Worker(job))

    def _spawn(self, worker: _Worker) -> None:
        thread = threading.Thread(
            target=self._work, args=(worker,), name="webhook-delivery", daemon=True
        )
        self._threads.add(thread)
        thread.start()

    def _finish(
        self, worker: _Worker, delivery: Delivery, lane: str, outcome: str, seconds: float | None
    ) -> None:
        """Count the outcome, update the subscription's standing, release its queue,
        and hand this thread its next job (None: idle, or stopped)."""
        key = delivery.webhook_id
        with self._lock:
            self._count(delivery.event_type, outcome, seconds)
            del self._busy[key]
            if lane == PROBATION:
                self._probation_in_flight -= 1
            if outcome == DELIVERED:
                self._standing[key] = delivery.url
                self._standing.move_to_end(key)
                if len(self._standing) > STANDING_KEPT:
                    self._standing.popitem(last=False)
            else:
                self._standing.pop(key, None)
            worker.job = None
            if self._stopped:
                return
            if key in self._queues:
                self._make_ready(key)
            worker.job = self._take()
            if worker.job is None:
                worker.wake.clear()
                worker.idle = True
                self._idle.append(worker)
            self._dispatch()  # a probation place freed, say, while this thread is taken

    def _rest(self, worker: _Worker) -> bool:
        """Wait idle until handed a job (True); False: end the thread (stopped, or idle
        `IDLE_EXIT_S` while more than the kept threads are alive). A thread that ends
        leaves the count at once, so `_dispatch` never counts on it."""
        timed_out = False
        while True:
            with self._lock:
                if worker.job is not None:
                    worker.wake.clear()
                    return True
                extra = len(self._threads) > self._kept
                if self._stopped or (timed_out and extra):
                    if worker.idle:
                        worker.idle = False
                        self._idle.remove(worker)
                    self._threads.discard(threading.current_thread())
                    return False
            timed_out = not worker.wake.wait(IDLE_EXIT_S if extra else None)

    # -- delivery threads -------------------------------------------------------------

    def _work(self, worker: _Worker) -> None:
        session: requests.Session | None = None  # this thread's, made when first needed
        try:
            while worker.job is not None or self._rest(worker):
                job = worker.job
                assert job is not None
                delivery, worker.lane = job
                try:
                    if session is None:
                        session = self._new_session(worker)
                    outcome, seconds = self._send(session, delivery)
                except Exception as error:  # the trust store, say: the thread goes on
                    self._log(
                        "webhook_delivery_failed", delivery, f"{type(error).__name__}: {error}"
                    )
                    outcome, seconds = FAILED, None
                self._finish(worker, delivery, worker.lane, outcome, seconds)
        finally:
            if session is not None:
                session.close()
            with self._lock:  # already done, unless something unexpected ended it
                self._threads.discard(threading.current_thread())

    def _new_session(self, worker: _Worker) -> requests.Session:
        """A session for the calling thread; all share one `SSLContext` (a trust store
        costs a tenth of a second to load), made on the first delivery, not at start.
        Its name lookups run in the lane of the delivery in hand."""
        with self._lock:
            if self._context is None:
                self._context = trust_context(self._settings.webhook_ca_bundle)
            context = self._context

        def lookup(host: str, port: int, timeout_s: float) -> list[str]:
            return self._resolutions.lookup(host, port, timeout_s, worker.lane)

        return delivery_session(context, self._settings.webhook_allow_private, lookup)

    def _send(self, session: requests.Session, delivery: Delivery) -> tuple[str, float | None]:
        """One attempt: its outcome and, unless refused, how long it took (logged here;
        counted by the caller)."""
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
            return REFUSED, None
        except requests.Timeout:
            reason = f"no answer within {self._timeout_s:g}s"
        except (ResolutionTimeout, ResolutionBusy) as error:
            reason = str(error)
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
                return DELIVERED, time.perf_counter() - started
            reason = f"status {status}"
        seconds = time.perf_counter() - started
        self._log("webhook_delivery_failed", delivery, reason)
        return FAILED, seconds

    # -- accounting -------------------------------------------------------------------

    def _count(self, event_type: str, outcome: str, seconds: float | None) -> None:
        """Count an outcome (under the lock; after its log line, so whoever sees the
        count finds the line)."""
        self._on_outcome(event_type, outcome, seconds)

    def _dropped(self, deliveries: Iterable[Delivery], reason: str) -> None:
        for delivery in deliveries:
            self._log("webhook_delivery_dropped", delivery, reason)
            with self._lock:
                self._count(delivery.event_type, DROPPED, None)

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
