"""The delivery pool against a real local HTTPS receiver (a `trustme` CA, 127.0.0.1 only):
headers and signature, per-subscription order, the backlog bound, refusals, TLS,
failures, timeouts, shutdown. No test asserts how fast anything is."""

from __future__ import annotations

import ipaddress
import logging
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from miniexchange.settings import Settings
from miniexchange.webhooks.delivery import Delivery, DeliveryPool, signature
from miniexchange.webhooks.transport import (
    Refused,
    Resolver,
    is_public,
    trust_context,
    vetted_address,
)
from tests.e2e.receiver import Receiver, verify_signature

SECRET = "s3cret"
WAIT_S = 20.0
"""How long to wait for what must happen; never an upper bound on speed."""

PoolFactory = Callable[..., DeliveryPool]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    running = Receiver(tmp_path).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def make_pool(receiver: Receiver) -> Iterator[PoolFactory]:
    """Started pools that trust the receiver's CA and may post to 127.0.0.1 (unless
    told otherwise); stopped at the end of the test."""
    pools: list[DeliveryPool] = []

    def make(resolve: Resolver | None = None, threads: int = 4, **overrides: Any) -> DeliveryPool:
        settings = {
            "webhook_ca_bundle": str(receiver.ca_path),
            "webhook_allow_private": True,
            "webhook_secret": SECRET,
            **overrides,
        }
        extra = {} if resolve is None else {"resolve": resolve}
        pool = DeliveryPool(Settings(**settings), threads, **extra)
        pool.start()
        pools.append(pool)
        return pool

    yield make
    receiver.release_all()
    for pool in pools:
        pool.stop()


def delivery(url: str, webhook_id: str = "wh-1", body: bytes = b'{"n":1}') -> Delivery:
    return Delivery(str(uuid.uuid4()), webhook_id, url, "trade.executed", body)


def outcome_count(pool: DeliveryPool, outcome: str, event: str = "trade.executed") -> int:
    return pool.stats().outcomes.get((event, outcome), 0)


def wait_for_outcome(pool: DeliveryPool, outcome: str, count: int = 1) -> None:
    deadline = time.monotonic() + WAIT_S
    while outcome_count(pool, outcome) < count:
        assert time.monotonic() < deadline, f"no {count} {outcome}: {pool.stats()}"
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
    stats = pool.stats()
    assert stats.outcomes == {("trade.executed", "delivered"): 1}
    assert stats.durations["trade.executed"].count == 1
    assert sum(stats.durations["trade.executed"].buckets) == 1


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
    assert "delivered" not in {outcome for _, outcome in pool.stats().outcomes}


def test_tls_is_verified_without_the_extra_ca(
    make_pool: PoolFactory, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(webhook_ca_bundle=None)
    pool.submit(delivery(receiver.url("/untrusted")))
    wait_for_outcome(pool, "failed")
    (record,) = records(caplog, "webhook_delivery_failed")
    assert "CERTIFICATE_VERIFY_FAILED" in record.reason  # type: ignore[attr-defined]
    assert receiver.received("/untrusted") == []


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
    pool = make_pool(threads=1, webhook_timeout_us=200_000)  # its one thread is held
    gate = receiver.hold("/stop")
    pool.submit(delivery(receiver.url("/stop")))
    assert gate.entered.wait(WAIT_S)
    pool.submit(delivery(receiver.url("/stop")))
    pool.submit(delivery(receiver.url("/stop"), "wh-2"))
    pool.stop()
    pool.submit(delivery(receiver.url("/stop")))  # after stop: dropped too
    assert outcome_count(pool, "dropped") == 3
    assert pool.stats().queued == 0
    reasons = [r.reason for r in records(caplog, "webhook_delivery_dropped")]  # type: ignore[attr-defined]
    assert reasons == ["shutdown"] * 3
    gate.release.set()
    assert len(receiver.received("/stop")) == 1


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
