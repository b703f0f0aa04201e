"""The delivery pool against a real local HTTPS receiver (a `trustme` CA, 127.0.0.1 only):
headers and signature, per-subscription order, isolation of failing subscriptions, the
backlog bound and its eviction rule, bounded name resolution, refusals, TLS, failures,
timeouts, shutdown. No test asserts how fast anything is; names resolve through fakes."""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from miniexchange.metrics import Metrics
from miniexchange.settings import Settings
from miniexchange.webhooks.delivery import Delivery, DeliveryPool, signature
from miniexchange.webhooks.transport import (
    Refused,
    ResolutionBusy,
    Resolutions,
    ResolutionTimeout,
    Resolver,
    is_public,
    trust_context,
    vetted_address,
)
from tests.e2e.receiver import Receiver, receiving, verify_signature

SECRET = "s3cret"
WAIT_S = 60.0
"""How long to wait for what must happen; never an upper bound on speed."""

PoolFactory = Callable[..., DeliveryPool]

COUNTED: weakref.WeakKeyDictionary[DeliveryPool, Metrics] = weakref.WeakKeyDictionary()
"""Each pool's outcomes, counted as the app counts them (`counted_pool`)."""


def counted_pool(settings: Settings, threads: int, **options: Any) -> DeliveryPool:
    """A pool whose outcomes go to a `Metrics` of its own, wired as the app wires it."""
    metrics = Metrics()
    pool = DeliveryPool(settings, threads, on_outcome=metrics.count_delivery, **options)
    COUNTED[pool] = metrics
    return pool


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with receiving(tmp_path) as running:
        yield running


@pytest.fixture
def make_pool(receiver: Receiver) -> Iterator[PoolFactory]:
    """Started pools that trust the receiver's CA and may post to 127.0.0.1 (unless
    told otherwise); stopped at the end of the test."""
    pools: list[DeliveryPool] = []

    def make(
        resolve: Resolver | None = None, threads: int = 4, start: bool = True, **overrides: Any
    ) -> DeliveryPool:
        settings = {
            "webhook_ca_bundle": str(receiver.ca_path),
            "webhook_allow_private": True,
            "webhook_secret": SECRET,
            **overrides,
        }
        extra = {} if resolve is None else {"resolve": resolve}
        pool = counted_pool(Settings(**settings), threads, **extra)
        if start:
            pool.start()
        pools.append(pool)
        return pool

    yield make
    receiver.release_all()
    for pool in pools:
        pool.stop()


def delivery(url: str, webhook_id: str = "wh-1", body: bytes = b'{"n":1}') -> Delivery:
    return Delivery(str(uuid.uuid4()), webhook_id, url, "trade.executed", body)


def sample(pool: DeliveryPool, name: str, **labels: str) -> float | None:
    """One sample of the pool's delivery families (None: no such series yet)."""
    return COUNTED[pool].registry.get_sample_value(f"miniexchange_webhook_{name}", labels)


def outcome_count(pool: DeliveryPool, outcome: str, event: str = "trade.executed") -> int:
    return int(sample(pool, "deliveries_total", event=event, outcome=outcome) or 0)


def outcomes(pool: DeliveryPool) -> dict[tuple[str, str], int]:
    """(event, outcome) -> count, for every series the pool has counted into."""
    return {
        (s.labels["event"], s.labels["outcome"]): int(s.value)
        for family in COUNTED[pool].registry.collect()
        for s in family.samples
        if s.name == "miniexchange_webhook_deliveries_total"
    }


def wait_for_outcome(pool: DeliveryPool, outcome: str, count: int = 1) -> None:
    deadline = time.monotonic() + WAIT_S
    while outcome_count(pool, outcome) < count:
        assert time.monotonic() < deadline, f"no {count} {outcome}: {pool.stats()}"
        time.sleep(0.01)


def wait_until(condition: Callable[[], bool], what: str | Callable[[], str]) -> None:
    """Until `condition` holds; `what` says (at that moment, if a callable) what is missing."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(0.01)


def records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


# -- a delivery as it arrives ---------------------------------------------------------


def test_delivery_headers_body_and_signature(make_pool: PoolFactory, receiver: Receiver) -> None:
    pool = make_pool()
    sent = delivery(receiver.url("/hooks"), "wh-42", b'{"event":"trade.executed","n":1.50}')
    pool.submit(sent)
    (got,) = receiver.wait("/hooks", 1)
    assert got.body == sent.body
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-delivery-id"] == sent.delivery_id
    assert str(uuid.UUID(sent.delivery_id)) == sent.delivery_id
    assert got.headers["x-webhook-id"] == "wh-42"
    assert got.headers["x-event-type"] == "trade.executed"
    assert got.headers["x-signature"] == signature(SECRET, sent.body)
    assert verify_signature(SECRET, got.body, got.headers["x-signature"])
    assert not verify_signature("wrong", got.body, got.headers["x-signature"])
    wait_for_outcome(pool, "delivered")
    assert outcomes(pool) == {("trade.executed", "delivered"): 1}
    assert sample(pool, "delivery_duration_seconds_count", event="trade.executed") == 1
    assert sample(pool, "delivery_duration_seconds_bucket", event="trade.executed", le="+Inf") == 1


def test_a_brokers_own_secret_signs_instead_of_webhook_secret(
    make_pool: PoolFactory, receiver: Receiver
) -> None:
    pool = make_pool()
    own = Delivery(
        str(uuid.uuid4()), "wh-1", receiver.url("/own"), "trade.executed", b"{}", None, "whsec_own"
    )
    pool.submit(own)
    (got,) = receiver.wait("/own", 1)
    assert got.headers["x-signature"] == signature("whsec_own", own.body)
    assert not verify_signature(SECRET, got.body, got.headers["x-signature"])
    make_pool(webhook_secret=None).submit(own)  # with no WEBHOOK_SECRET at all, too
    (_, again) = receiver.wait("/own", 2)
    assert again.headers["x-signature"] == signature("whsec_own", own.body)


def test_no_signature_without_a_secret(make_pool: PoolFactory, receiver: Receiver) -> None:
    make_pool(webhook_secret=None).submit(delivery(receiver.url("/plain")))
    (got,) = receiver.wait("/plain", 1)
    assert "x-signature" not in got.headers


def test_connects_to_the_vetted_address_with_the_host_name_kept(
    make_pool: PoolFactory, receiver: Receiver
) -> None:
    """`receiver.test` resolves (here) to 127.0.0.1: the socket goes to that address,
    while the Host header, SNI and the certificate check use the name."""
    looked_up: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        looked_up.append((host, port))
        return ["127.0.0.1"]

    pool = make_pool(resolve)
    pool.submit(delivery(receiver.url("/named", host="receiver.test")))
    (got,) = receiver.wait("/named", 1)
    assert got.headers["host"] == f"receiver.test:{receiver.port}"
    assert looked_up == [("receiver.test", receiver.port)]


# -- order and independence -----------------------------------------------------------


def test_one_subscription_in_order_others_not_held(
    make_pool: PoolFactory, receiver: Receiver
) -> None:
    pool = make_pool()
    gate = receiver.hold("/slow")
    first = delivery(receiver.url("/slow"), "wh-slow", b'{"n":1}')
    pool.submit(first)
    assert gate.entered.wait(WAIT_S)
    for n in (2, 3):
        pool.submit(delivery(receiver.url("/slow"), "wh-slow", b'{"n":%d}' % n))
    pool.submit(delivery(receiver.url("/fast"), "wh-fast"))
    receiver.wait("/fast", 1)  # arrives while /slow is held
    assert not gate.left.is_set()
    assert len(receiver.received("/slow")) == 1  # the next one waits for the first
    gate.release.set()
    assert [r.json()["n"] for r in receiver.wait("/slow", 3)] == [1, 2, 3]


def test_failing_subscriptions_never_hold_one_in_good_standing(
    make_pool: PoolFactory, receiver: Receiver
) -> None:
    """More hung receivers than the pool keeps threads: each hangs on its own thread,
    and a subscription whose last delivery succeeded still goes at once (none of them
    times out meanwhile: WEBHOOK_TIMEOUT is longer than any wait here)."""
    pool = make_pool(threads=4, webhook_timeout_us=60_000_000)
    pool.submit(delivery(receiver.url("/good"), "wh-good", b'{"n":1}'))
    receiver.wait("/good", 1)
    wait_for_outcome(pool, "delivered")  # its last delivery succeeded
    gates = [receiver.hold(f"/hung/{n}") for n in range(12)]
    for n in range(12):
        pool.submit(delivery(receiver.url(f"/hung/{n}"), f"wh-hung-{n}"))
    wait_until(
        lambda: all(gate.entered.is_set() for gate in gates),
        lambda: f"{sum(g.entered.is_set() for g in gates)} of 12 hung receivers got theirs",
    )
    pool.submit(delivery(receiver.url("/good"), "wh-good", b'{"n":2}'))
    assert [r.json()["n"] for r in receiver.wait("/good", 2)] == [1, 2]
    wait_for_outcome(pool, "delivered", 2)
    assert not any(gate.left.is_set() for gate in gates)  # all 12 still hang
    stats = pool.stats()
    assert stats.in_flight == 12
    assert stats.threads == 13  # one per hung receiver, and one that served /good
    receiver.release_all()
    wait_for_outcome(pool, "delivered", 14)


def long_timeout(receiver: Receiver) -> Settings:
    """Settings for a pool whose held deliveries never time out during a test."""
    return Settings(
        webhook_ca_bundle=str(receiver.ca_path),
        webhook_allow_private=True,
        webhook_timeout_us=60_000_000,
    )


def test_failing_subscriptions_are_capped_and_good_ones_keep_their_threads(
    receiver: Receiver,
) -> None:
    """With room for 2 failing (or new) subscriptions in flight and 3 threads in all:
    a third hung one waits, a subscription in good standing does not."""
    pool = counted_pool(long_timeout(receiver), 1, probation_limit=2, max_threads=3)
    pool.start()
    try:
        pool.submit(delivery(receiver.url("/ok"), "wh-ok", b'{"n":1}'))
        receiver.wait("/ok", 1)
        wait_for_outcome(pool, "delivered")
        gates = [receiver.hold(f"/capped/{n}") for n in range(3)]
        for n in range(3):
            pool.submit(delivery(receiver.url(f"/capped/{n}"), f"wh-capped-{n}"))
        wait_until(lambda: gates[0].entered.is_set() and gates[1].entered.is_set(), "2 in flight")
        pool.submit(delivery(receiver.url("/ok"), "wh-ok", b'{"n":2}'))
        assert [r.json()["n"] for r in receiver.wait("/ok", 2)] == [1, 2]
        wait_for_outcome(pool, "delivered", 2)
        assert receiver.received("/capped/2") == []  # waits for one of the two to end
        stats = pool.stats()
        assert (stats.in_flight, stats.queued, stats.threads) == (2, 1, 3)
        gates[0].release.set()
        receiver.wait("/capped/2", 1)
    finally:
        receiver.release_all()
        pool.stop()


def test_a_subscription_whose_last_delivery_failed_is_served_apart(
    receiver: Receiver,
) -> None:
    """Good standing is lost on a failure and won back on a success: with no room for
    subscriptions out of good standing beyond one, a failed one waits its turn there."""
    pool = counted_pool(long_timeout(receiver), 1, probation_limit=1, max_threads=3)
    pool.start()
    try:
        receiver.answer("/flaky", 500)
        pool.submit(delivery(receiver.url("/flaky"), "wh-flaky", b'{"n":1}'))
        wait_for_outcome(pool, "failed")
        gate = receiver.hold("/new")
        pool.submit(delivery(receiver.url("/new"), "wh-new"))  # no delivery yet: on probation
        assert gate.entered.wait(WAIT_S)
        receiver.answer("/flaky", 200)
        pool.submit(delivery(receiver.url("/flaky"), "wh-flaky", b'{"n":2}'))
        assert len(receiver.received("/flaky")) == 1  # the one place is taken
        gate.release.set()
        assert [r.json()["n"] for r in receiver.wait("/flaky", 2)] == [1, 2]
        wait_for_outcome(pool, "delivered", 2)
        gate = receiver.hold("/new")
        pool.submit(delivery(receiver.url("/new"), "wh-new"))  # its last one succeeded
        assert gate.entered.wait(WAIT_S)
        pool.submit(delivery(receiver.url("/flaky"), "wh-flaky", b'{"n":3}'))
        assert [r.json()["n"] for r in receiver.wait("/flaky", 3)] == [1, 2, 3]
    finally:
        receiver.release_all()
        pool.stop()


def test_backlog_past_the_limit_is_dropped_logged_and_counted(
    make_pool: PoolFactory, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(webhook_queue_limit=2)
    gate = receiver.hold("/q")
    pool.submit(delivery(receiver.url("/q"), body=b'{"n":1}'))
    assert gate.entered.wait(WAIT_S)  # in flight: no longer waiting in the backlog
    for n in (2, 3):
        pool.submit(delivery(receiver.url("/q"), body=b'{"n":%d}' % n))
    dropped = delivery(receiver.url("/q"), body=b'{"n":4}')
    pool.submit(dropped)
    assert outcome_count(pool, "dropped") == 1
    assert pool.stats().queued == 2
    (record,) = records(caplog, "webhook_delivery_dropped")
    assert (record.delivery_id, record.webhook_id, record.event_type) == (  # type: ignore[attr-defined]
        dropped.delivery_id,
        "wh-1",
        "trade.executed",
    )
    assert record.reason == "queue full"  # type: ignore[attr-defined]
    assert record.request_id is None  # type: ignore[attr-defined]
    gate.release.set()
    assert [r.json()["n"] for r in receiver.wait("/q", 3)] == [1, 2, 3]
    wait_for_outcome(pool, "delivered", 3)
    assert len(receiver.received("/q")) == 3


def test_a_full_backlog_evicts_from_the_subscription_with_the_most_waiting(
    make_pool: PoolFactory, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing is sent until the pool starts, so every delivery waits: A1 A2 B1 B2 B3 C1
    fill a limit of 6. Then, the victim of each newcomer:
    C2 -> B1 (B has the most); A3 -> A3 itself (A, B, C tie at 2, A's oldest is oldest);
    D1 -> A1 (same tie); B4 -> B4 itself (B and C tie, B2 is older than C1);
    C3 -> B2 (same tie, not C's own)."""
    pool = make_pool(webhook_queue_limit=6, start=False)
    made: dict[str, Delivery] = {}

    def submit(name: str) -> None:
        made[name] = delivery(receiver.url(f"/{name[0]}"), f"wh-{name[0]}", b'"%s"' % name.encode())
        pool.submit(made[name])

    for name in ("A1", "A2", "B1", "B2", "B3", "C1"):
        submit(name)
    assert (pool.stats().queued, outcome_count(pool, "dropped")) == (6, 0)
    for name in ("C2", "A3", "D1", "B4", "C3"):
        submit(name)
    by_id = {sent.delivery_id: name for name, sent in made.items()}
    dropped = [r.delivery_id for r in records(caplog, "webhook_delivery_dropped")]  # type: ignore[attr-defined]
    assert [by_id[delivery_id] for delivery_id in dropped] == ["B1", "A3", "A1", "B4", "B2"]
    assert {r.reason for r in records(caplog, "webhook_delivery_dropped")} == {"queue full"}  # type: ignore[attr-defined]
    assert (pool.stats().queued, outcome_count(pool, "dropped")) == (6, 5)
    pool.start()
    arrived = {path: [r.json() for r in receiver.wait(f"/{path}", n)] for path, n in
               (("A", 1), ("B", 1), ("C", 3), ("D", 1))}  # fmt: skip
    assert arrived == {"A": ["A2"], "B": ["B3"], "C": ["C1", "C2", "C3"], "D": ["D1"]}
    wait_for_outcome(pool, "delivered", 6)
    assert outcome_count(pool, "delivered") == 6


def test_an_evicted_subscriptions_last_waiting_delivery_leaves_no_trace(
    make_pool: PoolFactory, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """All tie at one waiting: the oldest goes, and its subscription is not served."""
    pool = make_pool(webhook_queue_limit=2, start=False)
    sent = [delivery(receiver.url(f"/solo/{n}"), f"wh-solo-{n}") for n in range(3)]
    for each in sent:
        pool.submit(each)
    (record,) = records(caplog, "webhook_delivery_dropped")
    assert record.delivery_id == sent[0].delivery_id  # type: ignore[attr-defined]
    pool.start()
    receiver.wait("/solo/1", 1)
    receiver.wait("/solo/2", 1)
    wait_for_outcome(pool, "delivered", 2)
    assert receiver.received("/solo/0") == []
    assert pool.stats().queued == 0


# -- name resolution ------------------------------------------------------------------


class HangingResolver:
    """A name server that never answers for `hung` names (until released) and answers
    127.0.0.1 for the others; records every lookup it is asked for."""

    def __init__(self, hung: frozenset[str] = frozenset({"stuck.test"})) -> None:
        self.hung = hung
        self.calls: list[tuple[str, int]] = []
        self.release = threading.Event()

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host in self.hung:
            self.release.wait(WAIT_S)
        return ["127.0.0.1"]


def test_name_resolution_is_bounded_and_frees_the_thread(
    make_pool: PoolFactory, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    resolver = HangingResolver()
    pool = make_pool(resolver, threads=1, webhook_timeout_us=200_000)
    try:
        pool.submit(delivery(receiver.url("/dns", host="stuck.test"), "wh-dns"))
        wait_for_outcome(pool, "failed")
        (record,) = records(caplog, "webhook_delivery_failed")
        assert record.reason == "name resolution of stuck.test took over 0.2s"  # type: ignore[attr-defined]
        assert pool.stats().in_flight == 0  # the delivery thread is free again
        pool.submit(delivery(receiver.url("/dns", host="stuck.test"), "wh-dns"))
        wait_for_outcome(pool, "failed", 2)
        assert resolver.calls == [("stuck.test", receiver.port)]  # still the one lookup
        pool.submit(delivery(receiver.url("/after"), "wh-after"))  # an address: no lookup
        receiver.wait("/after", 1)
    finally:
        resolver.release.set()
    assert receiver.received("/dns") == []


def test_lookups_are_shared_and_capped_per_lane() -> None:
    """Lane "probation" may have one lookup running, "good" two. A hung lookup fills
    the probation lane: the next probation lookup fails at once, without asking the
    name server; the good lane still resolves; asking for the hung name again joins the
    running lookup. Threads are reused: two in all."""
    resolver = HangingResolver(frozenset({"hung.test"}))
    resolutions = Resolutions(resolver, {"good": 2, "probation": 1})
    try:
        with pytest.raises(ResolutionTimeout, match=r"^name resolution of hung.test took over"):
            resolutions.lookup("hung.test", 443, 0.05, "probation")
        with pytest.raises(ResolutionBusy, match="1 lookups still running"):
            resolutions.lookup("other.test", 443, WAIT_S, "probation")
        assert resolutions.lookup("fine.test", 443, WAIT_S, "good") == ["127.0.0.1"]
        with pytest.raises(ResolutionTimeout):
            resolutions.lookup("hung.test", 443, 0.05, "good")
        assert resolver.calls == [("hung.test", 443), ("fine.test", 443)]
    finally:
        resolver.release.set()
    assert resolutions.lookup("hung.test", 443, WAIT_S, "good") == ["127.0.0.1"]
    wait_until(lambda: resolutions.threads() == 2 and len(resolver.calls) >= 2, "settled")
    assert resolutions.lookup("other.test", 443, WAIT_S, "probation") == ["127.0.0.1"]
    assert resolutions.threads() == 2


def test_an_address_is_not_looked_up_and_errors_reach_the_caller() -> None:
    def resolve(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    resolutions = Resolutions(resolve, {"good": 1})
    assert resolutions.lookup("127.0.0.1", 443, WAIT_S, "good") == ["127.0.0.1"]
    assert resolutions.lookup("[::1]", 443, WAIT_S, "good") == ["::1"]
    assert resolutions.threads() == 0
    with pytest.raises(socket.gaierror, match="Name or service not known"):
        resolutions.lookup("nowhere.test", 443, WAIT_S, "good")


def test_an_answer_is_reused_for_a_moment_and_a_failure_is_not() -> None:
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        if host == "nowhere.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return ["127.0.0.1"]

    resolutions = Resolutions(resolve, {"good": 1})
    for _ in range(3):
        assert resolutions.lookup("busy.test", 443, WAIT_S, "good") == ["127.0.0.1"]
        with pytest.raises(socket.gaierror):
            resolutions.lookup("nowhere.test", 443, WAIT_S, "good")
    assert calls == ["busy.test"] + ["nowhere.test"] * 3


# -- refused, failed ------------------------------------------------------------------


@pytest.mark.parametrize(
    "addresses",
    [["127.0.0.1"], ["93.184.216.34", "10.0.0.7"], ["::1"], ["169.254.169.254"]],
)
def test_non_public_addresses_are_refused_unless_allowed(
    make_pool: PoolFactory,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
    addresses: list[str],
) -> None:
    pool = make_pool(lambda host, port: addresses, webhook_allow_private=False)
    sent = delivery(receiver.url("/private", host="receiver.test"))
    pool.submit(sent)
    wait_for_outcome(pool, "refused")
    (record,) = records(caplog, "webhook_delivery_refused")
    assert record.delivery_id == sent.delivery_id  # type: ignore[attr-defined]
    assert record.webhook_id == "wh-1"  # type: ignore[attr-defined]
    assert "non-public address" in record.reason  # type: ignore[attr-defined]
    assert record.request_id is None  # type: ignore[attr-defined]
    assert receiver.received("/private") == []
    assert outcomes(pool) == {("trade.executed", "refused"): 1}


def test_tls_is_verified_without_the_extra_ca(
    make_pool: PoolFactory, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(webhook_ca_bundle=None)
    pool.submit(delivery(receiver.url("/untrusted")))
    wait_for_outcome(pool, "failed")
    (record,) = records(caplog, "webhook_delivery_failed")
    assert "CERTIFICATE_VERIFY_FAILED" in record.reason  # type: ignore[attr-defined]
    assert receiver.received("/untrusted") == []


def test_a_failure_outside_the_post_fails_the_delivery_and_keeps_the_thread(
    make_pool: PoolFactory, receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A CA bundle that cannot be read fails each delivery (logged, counted); the
    threads (one per subscription) go on to the next one and none stays busy."""
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("not a certificate")
    pool = make_pool(threads=1, webhook_ca_bundle=str(bad))
    for n in range(3):
        pool.submit(delivery(receiver.url("/never"), f"wh-{n % 2}"))
    wait_for_outcome(pool, "failed", 3)
    failed = sorted(r.webhook_id for r in records(caplog, "webhook_delivery_failed"))  # type: ignore[attr-defined]
    assert failed == ["wh-0", "wh-0", "wh-1"]  # the two subscriptions run side by side
    assert (pool.stats().in_flight, pool.stats().queued, pool.stats().threads) == (0, 0, 2)
    assert receiver.received("/never") == []


@pytest.mark.parametrize("status", [500, 404, 302])
def test_non_2xx_is_a_failure_and_redirects_are_not_followed(
    make_pool: PoolFactory, receiver: Receiver, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    receiver.answer("/answers", status)
    pool = make_pool()
    sent = delivery(receiver.url("/answers"))
    pool.submit(sent)
    wait_for_outcome(pool, "failed")
    (record,) = records(caplog, "webhook_delivery_failed")
    assert record.reason == f"status {status}"  # type: ignore[attr-defined]
    assert record.delivery_id == sent.delivery_id  # type: ignore[attr-defined]
    assert len(receiver.received("/answers")) == 1
    assert receiver.received("/answers/redirected") == []


def test_a_receiver_that_does_not_answer_times_out_and_the_queue_moves_on(
    make_pool: PoolFactory, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(webhook_timeout_us=200_000)
    gate = receiver.hold("/hang")
    pool.submit(delivery(receiver.url("/hang"), body=b'{"n":1}'))
    pool.submit(delivery(receiver.url("/hang"), body=b'{"n":2}'))
    wait_for_outcome(pool, "failed")
    (record,) = records(caplog, "webhook_delivery_failed")
    assert record.reason == "no answer within 0.2s"  # type: ignore[attr-defined]
    assert [r.json()["n"] for r in receiver.wait("/hang", 2)] == [1, 2]
    gate.release.set()


def test_stop_abandons_what_is_queued(
    make_pool: PoolFactory, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Two subscriptions each with one delivery in flight (held) and one waiting: stop
    drops the two waiting and waits for the two in flight, which still arrive."""
    pool = make_pool(threads=1, webhook_timeout_us=60_000_000)
    gates = [receiver.hold("/stop/1"), receiver.hold("/stop/2")]
    for n in (1, 2):
        pool.submit(delivery(receiver.url(f"/stop/{n}"), f"wh-{n}"))
    assert all(gate.entered.wait(WAIT_S) for gate in gates)
    for n in (1, 2):
        pool.submit(delivery(receiver.url(f"/stop/{n}"), f"wh-{n}"))
    stopping = threading.Thread(target=pool.stop)
    stopping.start()
    wait_until(lambda: outcome_count(pool, "dropped") == 2, "the two waiting dropped")
    assert stopping.is_alive()  # waiting for the two in flight
    for gate in gates:
        gate.release.set()
    stopping.join(WAIT_S)
    assert not stopping.is_alive()
    pool.submit(delivery(receiver.url("/stop/1"), "wh-1"))  # after stop: dropped too
    assert (outcome_count(pool, "dropped"), outcome_count(pool, "delivered")) == (3, 2)
    assert (pool.stats().queued, pool.stats().threads) == (0, 0)
    reasons = [r.reason for r in records(caplog, "webhook_delivery_dropped")]  # type: ignore[attr-defined]
    assert reasons == ["shutdown"] * 3
    assert [len(receiver.received(f"/stop/{n}")) for n in (1, 2)] == [1, 1]


# -- the guards themselves ------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
        "100.64.0.1", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "fe80::1",
        "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "ff02::1",
    ],
)  # fmt: skip
def test_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def teredo(server: str, client: str) -> str:
    """A Teredo address: 2001:0::/32, the server's IPv4, flags and port 0, and the
    client's IPv4 obfuscated (every bit flipped) in the last 32 bits."""
    server_bits = int(ipaddress.IPv4Address(server))
    client_bits = int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF
    return str(ipaddress.IPv6Address((0x20010000 << 96) | (server_bits << 64) | client_bits))


EMBEDDING = {
    "6to4": lambda v4: str(ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80))),
    "teredo-client": lambda v4: teredo("8.8.8.8", str(v4)),
    "teredo-server": lambda v4: teredo(str(v4), "8.8.4.4"),
    "nat64": lambda v4: str(ipaddress.IPv6Address((0x64FF9B << 96) | int(v4))),
    "mapped": lambda v4: str(ipaddress.IPv6Address((0xFFFF << 32) | int(v4))),
}


@pytest.mark.parametrize("embedded", ["127.0.0.1", "169.254.169.254", "10.0.0.7", "0.0.0.0"])
@pytest.mark.parametrize("kind", list(EMBEDDING))
def test_an_address_embedding_a_non_public_ipv4_is_refused(kind: str, embedded: str) -> None:
    """Judged by the IPv4 address it carries, and refused without connecting."""
    address = EMBEDDING[kind](ipaddress.IPv4Address(embedded))
    assert not is_public(ipaddress.ip_address(address)), address
    with pytest.raises(Refused, match=f"non-public address {address}"):
        vetted_address("hook.test", 443, False, lambda host, port: [address])


@pytest.mark.parametrize("kind", list(EMBEDDING))
def test_an_address_embedding_a_public_ipv4_is_public(kind: str) -> None:
    address = EMBEDDING[kind](ipaddress.IPv4Address("93.184.216.34"))
    assert is_public(ipaddress.ip_address(address)), address
    assert vetted_address("hook.test", 443, False, lambda host, port: [address]) == address


def test_the_examples_written_out() -> None:
    """The same rule on addresses as one would meet them, written by hand."""
    assert teredo("8.8.8.8", "127.0.0.1") == "2001:0:808:808::80ff:fffe"
    for address in (
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2001:0:808:808::80ff:fffe",  # Teredo, client 127.0.0.1
        "2001:0:a9fe:a9fe::f7f7:f7f7",  # Teredo, server 169.254.169.254
        "2001:0:5db8:d822::5601:54fe",  # Teredo, client 169.254.171.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "::ffff:a9fe:a9fe",  # IPv4-mapped 169.254.169.254
    ):
        assert not is_public(ipaddress.ip_address(address)), address
    assert is_public(ipaddress.ip_address("64:ff9b::808:808"))  # NAT64 of 8.8.8.8


def test_extra_ca_bundle_extends_the_default_trust(receiver: Receiver) -> None:
    default = trust_context(None)
    extended = trust_context(str(receiver.ca_path))
    assert extended.cert_store_stats()["x509_ca"] == default.cert_store_stats()["x509_ca"] + 1
    assert extended.verify_mode == ssl.CERT_REQUIRED
    assert extended.check_hostname
