"""The Idempotency-Key store alone, with a manual clock."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import tracemalloc

import orjson
import pytest

from miniexchange.http.idempotency import Answer, IdempotencyStore, IdempotentAnswer
from miniexchange.journal.facts import Fact
from miniexchange.journal.recovery import recover
from miniexchange.model.errors import ExchangeError
from miniexchange.model.idempotency import InFlight
from miniexchange.testing import ManualClock

HOUR_US = 3_600_000_000
FP = hashlib.sha256(b'{"a":1}').digest()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock.at("2026-02-17T09:00:00Z")


def test_first_use_then_replay(clock: ManualClock) -> None:
    store = IdempotencyStore(clock, HOUR_US)
    assert isinstance(store.begin("/orders", "k", b"fp"), InFlight)
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
    assert isinstance(store.begin("/brokers", "k", b"fp"), InFlight)


@pytest.mark.parametrize("status", [400, 422, 500, 503])
def test_answers_not_kept_free_the_key(clock: ManualClock, status: int) -> None:
    store = IdempotencyStore(clock, HOUR_US)
    store.begin("/orders", "k", b"fp")
    store.finish("/orders", "k", status, b"{}")
    assert len(store) == 0
    assert isinstance(store.begin("/orders", "k", b"fixed"), InFlight)


def test_keys_are_forgotten_after_the_ttl(clock: ManualClock) -> None:
    store = IdempotencyStore(clock, HOUR_US)
    store.begin("/orders", "a", b"fp")
    store.finish("/orders", "a", 201, b"{}")
    clock.advance(seconds=1800)
    store.begin("/orders", "b", b"fp")
    store.finish("/orders", "b", 201, b"{}")
    clock.advance(seconds=1799)
    assert isinstance(store.begin("/orders", "a", b"fp"), Answer)  # 59:59 after first use
    clock.advance(seconds=1)
    assert isinstance(store.begin("/orders", "a", b"new"), InFlight)  # forgotten: a first use again
    assert len(store) == 2  # "b" is still kept, "a" in flight again


def test_restore_takes_what_recovery_kept_and_skips_expired_answers(clock: ManualClock) -> None:
    store = IdempotencyStore(clock, HOUR_US)
    now = clock.now()

    def fact(key: str, at: int) -> Fact:
        answer_fact = IdempotentAnswer("/orders", key, FP, at, lambda _: (201, b"{}")).fact(None)
        assert answer_fact is not None
        return answer_fact

    recovered = recover([fact("old", now - HOUR_US), fact("new", now - 1)])
    store.restore(recovered.answers)
    assert len(recovered.answers) == 0  # taken, not copied
    assert isinstance(store.begin("/orders", "old", b"x"), InFlight)
    assert store.begin("/orders", "new", FP) == Answer(FP, 201, b"{}", now - 1)


def keep(store: IdempotencyStore, key: str, body: bytes = b"{}") -> None:
    assert isinstance(store.begin("/orders", key, b"fp"), InFlight)
    store.finish("/orders", key, 201, body)


@pytest.mark.parametrize(
    ("status", "kept"),
    [(200, True), (201, True), (204, True), (404, True), (409, True)]
    + [(status, False) for status in (400, 401, 403, 408, 413, 422, 500, 503)],
)
def test_the_http_side_decides_which_answers_are_journaled(status: int, kept: bool) -> None:
    """Which statuses a key keeps is the idempotency code's rule; the journal only
    records (and reads back) the answers it is handed."""
    keep = IdempotentAnswer("/orders", "k", FP, 7, lambda outcome: (status, b'{"x":1}'))
    answer_fact = keep.fact(None)
    if not kept:
        assert answer_fact is None
        return
    assert answer_fact is not None
    recovered = recover([answer_fact])
    assert [(key, stored) for key, stored in recovered.answers.drain()] == [
        (("/orders", "k"), Answer(FP, status, b'{"x":1}', 7))
    ]


def test_past_max_keys_the_oldest_is_forgotten_first(clock: ManualClock) -> None:
    store = IdempotencyStore(clock, HOUR_US, max_keys=3)
    for key in ("k1", "k2", "k3"):
        keep(store, key)
        clock.advance(seconds=1)
    keep(store, "k4")
    assert len(store) == 3
    assert isinstance(store.begin("/orders", "k2", b"fp"), Answer)  # still a replay
    assert isinstance(store.begin("/orders", "k1", b"fp"), InFlight)  # forgotten: a first use again
    store.finish("/orders", "k1", 201, b"{}")
    assert isinstance(store.begin("/orders", "k2", b"other"), InFlight)  # now k2 was the oldest


def test_expired_keys_leave_memory_without_a_lookup(clock: ManualClock) -> None:
    """An answer that ends another first use is no lookup; the expired key goes anyway."""
    store = IdempotencyStore(clock, HOUR_US)
    keep(store, "a")
    clock.advance(seconds=1800)
    assert isinstance(store.begin("/orders", "b", b"fp"), InFlight)
    clock.advance(seconds=1800)  # "a" expires while "b" is still in flight
    store.finish("/orders", "b", 201, b"{}")
    assert len(store) == 1


def test_expired_keys_leave_memory_while_no_request_comes(clock: ManualClock) -> None:
    """The sweep on the event loop: no request at all, and the expired answers go."""
    store = IdempotencyStore(clock, HOUR_US)
    keep(store, "a")
    clock.advance(seconds=1800)
    keep(store, "b")
    clock.advance(seconds=1800)
    sizes: list[int] = []

    async def serve_idle() -> None:
        sizes.append(len(store))
        store.start_sweeping(0)
        for _ in range(3):  # a few turns of the loop: the sweep ran at least once
            await asyncio.sleep(0)
        sizes.append(len(store))
        clock.advance(seconds=1800)
        for _ in range(3):
            await asyncio.sleep(0)
        store.stop_sweeping()
        sizes.append(len(store))

    asyncio.run(serve_idle())
    assert sizes == [2, 1, 0]


def test_a_kept_key_costs_a_few_hundred_bytes_beside_its_answer(clock: ManualClock) -> None:
    """Bytes held per kept key, counted by tracemalloc: the key, the digest, the answer
    (68 bytes here, rendered by orjson as the app renders it) and the bookkeeping."""
    store = IdempotencyStore(clock, HOUR_US)
    keys = [f"{index:08d}-3f1c-4a6e-9b7d-2c5e8f0a1b3c" for index in range(1000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key in keys:
            assert isinstance(store.begin("/orders", key, FP), InFlight)
            body = orjson.dumps({"error": "broker_not_found", "message": "Broker g does not exist"})
            store.finish("/orders", key, 404, body)
            del body
        gc.collect()
        per_key = (tracemalloc.get_traced_memory()[0] - before) / len(keys)
    finally:
        tracemalloc.stop()
    assert per_key < 1024, per_key
