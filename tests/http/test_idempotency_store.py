"""The Idempotency-Key store alone, with a manual clock (contract §6.1)."""

from __future__ import annotations

import base64

import pytest

from miniexchange.http.idempotency import Answer, IdempotencyStore
from miniexchange.model.errors import ExchangeError
from miniexchange.testing import ManualClock

HOUR_US = 3_600_000_000


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock.at("2026-02-17T09:00:00Z")


def test_first_use_then_replay(clock: ManualClock) -> None:
    store = IdempotencyStore(clock, HOUR_US)
    assert store.begin("/orders", "k", b"fp") is None
    store.finish("/orders", "k", 201, b'{"order_id":"x"}')
    assert store.begin("/orders", "k", b"fp") == Answer(
        b"fp", 201, b'{"order_id":"x"}', clock.now()
    )


def test_other_request_under_the_key_is_422(clock: ManualClock) -> None:
    store = IdempotencyStore(clock, HOUR_US)
    store.begin("/orders", "k", b"fp")
    store.finish("/orders", "k", 409, b"{}")
    with pytest.raises(ExchangeError) as refused:
        store.begin("/orders", "k", b"other")
    assert (refused.value.code, refused.value.message) == (
        "idempotency_key_reused",
        "Idempotency-Key k was already used with a different request",
    )


def test_concurrent_use_is_409_and_keys_belong_to_one_endpoint(clock: ManualClock) -> None:
    store = IdempotencyStore(clock, HOUR_US)
    store.begin("/orders", "k", b"fp")
    with pytest.raises(ExchangeError) as refused:
        store.begin("/orders", "k", b"fp")
    assert (refused.value.code, refused.value.message) == (
        "idempotency_key_in_progress",
        "A request with Idempotency-Key k is still being processed",
    )
    assert store.begin("/brokers", "k", b"fp") is None


@pytest.mark.parametrize("status", [400, 422, 500, 503])
def test_answers_not_kept_free_the_key(clock: ManualClock, status: int) -> None:
    store = IdempotencyStore(clock, HOUR_US)
    store.begin("/orders", "k", b"fp")
    store.finish("/orders", "k", status, b"{}")
    assert len(store) == 0
    assert store.begin("/orders", "k", b"fixed") is None


def test_keys_are_forgotten_after_the_ttl(clock: ManualClock) -> None:
    store = IdempotencyStore(clock, HOUR_US)
    store.begin("/orders", "a", b"fp")
    store.finish("/orders", "a", 201, b"{}")
    clock.advance(seconds=1800)
    store.begin("/orders", "b", b"fp")
    store.finish("/orders", "b", 201, b"{}")
    clock.advance(seconds=1799)
    assert store.begin("/orders", "a", b"fp") is not None  # 59:59 after first use
    clock.advance(seconds=1)
    assert store.begin("/orders", "a", b"new") is None  # forgotten: a first use again
    assert len(store) == 2  # "b" is still kept, "a" in flight again


def test_restore_skips_expired_answers(clock: ManualClock) -> None:
    store = IdempotencyStore(clock, HOUR_US)
    now = clock.now()

    def fact(key: str, at: int) -> dict[str, object]:
        return {
            "endpoint": "/orders", "key": key, "status": 201, "at": at,
            "fingerprint": base64.b64encode(b"fp").decode(),
            "body": base64.b64encode(b"{}").decode(),
        }  # fmt: skip

    store.restore([fact("old", now - HOUR_US), fact("new", now - 1)])
    assert store.begin("/orders", "old", b"x") is None
    assert store.begin("/orders", "new", b"fp") == Answer(b"fp", 201, b"{}", now - 1)
