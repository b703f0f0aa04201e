"""The bounded store of `Idempotency-Key` answers shared by the HTTP side and recovery."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from miniexchange.model.idempotency import KeptAnswers, Key, StoredAnswer, fingerprint_digest

TTL = 100


def answer(at: int) -> StoredAnswer:
    return StoredAnswer(fingerprint_digest(str(at).encode()), 201, b"{}", at)


def kept(store: KeptAnswers) -> list[str]:
    return [key for (_, key), _ in store.items()]


def test_the_cap_forgets_the_oldest_first_use_first() -> None:
    store = KeptAnswers(3, TTL)
    for index, at in enumerate((10, 11, 12, 13)):
        store.put(("/orders", f"k{index}"), answer(at), at)
    assert kept(store) == ["k1", "k2", "k3"]
    store.put(("/orders", "late"), answer(12), 13)  # first used before k3, answered after
    assert kept(store) == ["k2", "late", "k3"]


def test_expired_answers_are_not_kept_and_time_never_goes_back() -> None:
    store = KeptAnswers(10, TTL)
    store.put(("/orders", "a"), answer(10), 10)
    store.put(("/orders", "b"), answer(50), 50)
    assert store.forget_expired(110) == 1  # "a": first used 100 µs before
    assert store.get(("/orders", "a"), 0) is None
    store.put(("/orders", "c"), answer(10), 0)  # expired for the latest time seen: dropped
    assert kept(store) == ["b"]
    assert store.get(("/orders", "b"), 149) == answer(50)
    assert store.get(("/orders", "b"), 150) is None
    assert len(store) == 0


def test_drain_hands_everything_over_in_order() -> None:
    store = KeptAnswers(10, TTL)
    for key, at in (("x", 3), ("y", 1), ("z", 2)):
        store.put(("/orders", key), answer(at), 3)
    assert [key for (_, key), _ in store.drain()] == ["y", "z", "x"]
    assert len(store) == 0 and kept(store) == []


def test_a_replaced_answer_leaves_no_stale_place_behind() -> None:
    store = KeptAnswers(2, 10**9)
    for at in range(1000):
        store.put(("/orders", "same"), answer(at), at)
    assert kept(store) == ["same"]
    assert len(store._order) <= 2 * len(store) + 16


@pytest.mark.parametrize("bounds", [(0, 1), (1, 0)])
def test_bounds_must_be_positive(bounds: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        KeptAnswers(*bounds)


Step = tuple[str, int]  # ("put", first use offset back from the latest time) or ("tick", µs)


@given(
    max_keys=st.integers(1, 6),
    steps=st.lists(
        st.tuples(st.sampled_from(("put", "put", "tick")), st.integers(0, 40)), max_size=60
    ),
    cut=st.integers(0, 60),
    purges=st.sets(st.integers(0, 60)),
)
def test_what_is_kept_depends_on_the_answers_and_the_latest_time_alone(
    max_keys: int, steps: list[Step], cut: int, purges: set[int]
) -> None:
    """One fold; the same fold stopped at `cut`, carried over by `items()` (a snapshot)
    and resumed; and extra purges anywhere: all keep exactly the last `max_keys` answers
    by first use among those not expired at the latest time."""
    now = 1000
    puts: list[tuple[Key, StoredAnswer, int]] = []  # (key, answer, now when put)
    for index, (kind, amount) in enumerate(steps):
        if kind == "tick":
            now += amount
        else:  # first uses arrive a little out of order, as slow requests answer late
            puts.append((("/orders", f"k{index}"), answer(now - amount), now))
    latest = max([now, *(put_now for _, _, put_now in puts)])

    def fold(stop_at: int | None, purge_at: set[int]) -> list[Key]:
        store = KeptAnswers(max_keys, TTL)
        for index, (key, stored, put_now) in enumerate(puts):
            if index == stop_at:
                resumed = KeptAnswers(max_keys, TTL)
                for carried_key, carried in store.items():
                    resumed.put(carried_key, carried, put_now)
                store = resumed
            if index in purge_at:
                store.forget_expired(put_now)
            store.put(key, stored, put_now)
        store.forget_expired(latest)
        return [key for key, _ in store.items()]

    order = sorted(range(len(puts)), key=lambda i: (puts[i][1].first_used_at, i))
    alive = [puts[i][0] for i in order if puts[i][1].first_used_at > latest - TTL]
    expected = alive[-max_keys:] if alive else []
    assert fold(None, set()) == expected
    assert fold(cut, set()) == expected
    assert fold(None, purges) == expected
