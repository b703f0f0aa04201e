"""The stored `Idempotency-Key` answers, bounded in number and in time.

One store serves the live HTTP side and the recovery fold, so both forget alike: at
most `max_keys` answers, and none past `ttl_us` after its first use. A request is kept
as the SHA-256 of its fingerprint, never the body itself, so a stored key costs the
same whatever the size of the request it answered.

Answers are ordered by first use (ties: in arrival order). Then the expired answers
and the ones over the cap are both a prefix of that order, so dropping them is popping
from the front, and the kept set is a function of the answers put (in their order)
and of the latest time seen — not of when the purges ran. That makes a fold that stops (a snapshot) and
resumes keep exactly what one fold over the same facts keeps. An answer that arrives
after a later-used one (a slow request) walks back only over the answers that arrived
meanwhile.

No clock here: every call that can forget takes `now`, and time never goes back for
the store (the latest `now` it was given counts).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from miniexchange.model.errors import key_in_progress, key_reused

Key = tuple[str, str]
"""(endpoint, `Idempotency-Key`): a key belongs to one endpoint (and principal)."""


def fingerprint_digest(fingerprint: bytes) -> bytes:
    """The fixed-size stand-in for a fingerprint: 32 bytes, equal exactly when the
    fingerprints are (short of a SHA-256 collision)."""
    return hashlib.sha256(fingerprint).digest()


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    digest: bytes  # `fingerprint_digest` of the request's fingerprint
    status: int
    body: bytes  # the exact bytes first sent
    first_used_at: int


class KeptAnswers:
    """Answers by key, oldest first use first, at most `max_keys` and within `ttl_us`."""

    __slots__ = ("_by_key", "_horizon", "_max_keys", "_order", "_seq", "_ttl_us")

    def __init__(self, max_keys: int, ttl_us: int) -> None:
        if max_keys < 1 or ttl_us < 1:
            raise ValueError("max_keys and ttl_us must be positive")
        self._max_keys = max_keys
        self._ttl_us = ttl_us
        self._by_key: dict[Key, tuple[int, StoredAnswer]] = {}  # key -> (seq, answer)
        self._order: deque[tuple[int, int, Key]] = deque()  # (first_used_at, seq, key)
        self._seq = 0
        self._horizon = -(1 << 62)  # answers first used at or before it are expired

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: Key, now: int) -> StoredAnswer | None:
        """The answer kept under `key`, or None (never stored, forgotten or expired)."""
        self.forget_expired(now)
        held = self._by_key.get(key)
        return held[1] if held is not None else None

    def put(self, key: Key, answer: StoredAnswer, now: int) -> None:
        """Keep `answer` (replacing what `key` held); then the oldest go past `max_keys`.
        An answer already expired at `now` is not kept."""
        self.forget_expired(now)
        if answer.first_used_at <= self._horizon:
            return
        if key in self._by_key:
            self._by_key.pop(key)  # its place in `_order` goes stale
            self._compact_if_stale()
        seq = self._seq
        self._seq += 1
        self._by_key[key] = (seq, answer)
        order = self._order
        at = answer.first_used_at
        if not order or order[-1][0] <= at:
            order.append((at, seq, key))
        else:  # first used before answers already kept: its place in the order
            index = len(order) - 1
            while index > 0 and order[index - 1][0] > at:
                index -= 1
            order.insert(index, (at, seq, key))
        while len(self._by_key) > self._max_keys:
            self._pop_oldest()

    def forget_expired(self, now: int) -> int:
        """Drop every answer first used `ttl_us` or more before `now`; how many went."""
        horizon = now - self._ttl_us
        if horizon > self._horizon:
            self._horizon = horizon
        forgotten = 0
        order = self._order
        while order and order[0][0] <= self._horizon:
            forgotten += self._pop_oldest()
        return forgotten

    def items(self) -> Iterator[tuple[Key, StoredAnswer]]:
        """What is kept, oldest first use first (what a snapshot carries)."""
        by_key = self._by_key
        for _, seq, key in self._order:
            held = by_key.get(key)
            if held is not None and held[0] == seq:
                yield key, held[1]

    def drain(self) -> Iterator[tuple[Key, StoredAnswer]]:
        """Take everything out, oldest first: a store handing its answers to another
        keeps no second copy."""
        while self._order:
            _, seq, key = self._order.popleft()
            held = self._by_key.get(key)
            if held is not None and held[0] == seq:
                del self._by_key[key]
                yield key, held[1]

    def _pop_oldest(self) -> int:
        """Remove the front of the order; 1 if it was a kept answer, 0 if stale."""
        _, seq, key = self._order.popleft()
        held = self._by_key.get(key)
        if held is None or held[0] != seq:
            return 0
        del self._by_key[key]
        return 1

    def _compact_if_stale(self) -> None:
        """A replaced answer leaves its old place behind; past as many stale places as
        kept answers, rebuild the order (amortized O(1) per replacement)."""
        if len(self._order) > 2 * len(self._by_key) + 16:
            by_key = self._by_key
            self._order = deque(
                entry for entry in self._order if by_key.get(entry[2], (-1,))[0] == entry[1]
            )


STORED_STATUSES = frozenset((200, 201, 204, 404, 409))
"""What a first use of a key keeps: 2xx, the 404s of an unknown resource and the 409s
of a refused command (the 409 of a key in progress never comes from a first use)."""


@dataclass(frozen=True, slots=True)
class InFlight:
    """A key's first use, not answered yet."""

    digest: bytes
    first_used_at: int


@dataclass(frozen=True, slots=True)
class Decided:
    """A first use whose command was decided but whose answer was never kept: the
    process serving it died in between (`ENGINE=ray`: an ingress worker). A retry
    renders `outcome` as the first use would have (rendering is deterministic), keeps
    that answer, and sends it as a replay."""

    outcome: Any


class KeyIndex:
    """The `Idempotency-Key`s of one exchange: the answers kept (`KeptAnswers`) and the
    first uses in flight, apart (as many as the requests being served). The HTTP layer
    holds one per process (`ENGINE=embedded`); the sequencer holds the cluster's."""

    __slots__ = ("_in_flight", "answers")

    def __init__(self, max_keys: int, ttl_us: int) -> None:
        self.answers = KeptAnswers(max_keys, ttl_us)
        self._in_flight: dict[Key, InFlight] = {}

    def __len__(self) -> int:
        """Keys held: answers kept and first uses in flight."""
        return len(self.answers) + len(self._in_flight)

    def begin(
        self, key: Key, digest: bytes, now: int, stale_after_us: int | None = None
    ) -> StoredAnswer | InFlight:
        """The stored answer to replay, or the first use now marked in flight; raises
        `idempotency_key_reused` for another request under the key, and
        `idempotency_key_in_progress` while the first is still being processed.
        `stale_after_us`: a first use in flight that long is taken for abandoned (the
        process serving it died) and this one becomes the first use (the caller knows
        that no command of it was sent)."""
        flying = self._in_flight.get(key)
        if flying is not None and (
            stale_after_us is None or now - flying.first_used_at < stale_after_us
        ):
            raise key_reused(key[1]) if flying.digest != digest else key_in_progress(key[1])
        stored = self.answers.get(key, now)
        if stored is None:
            flying = self._in_flight[key] = InFlight(digest, now)
            return flying
        if stored.digest != digest:
            raise key_reused(key[1])
        return stored

    def in_flight(self, key: Key) -> InFlight | None:
        return self._in_flight.get(key)

    def finish(self, key: Key, status: int, body: bytes, now: int) -> None:
        """The first use answered: keep the answer if the contract says so, else
        forget the key so that a corrected retry is a first use again."""
        flying = self._in_flight.pop(key, None)
        if flying is None:
            return
        if status in STORED_STATUSES:  # exact-size copy: orjson's buffer is larger
            answer = StoredAnswer(
                flying.digest, status, memoryview(body).tobytes(), flying.first_used_at
            )
            self.answers.put(key, answer, now)
        else:
            self.answers.forget_expired(now)
