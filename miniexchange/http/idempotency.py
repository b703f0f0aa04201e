"""Idempotent retries with the `Idempotency-Key` header (contract §6.1).

The store lives on the event loop (one thread, so no lock): a key is looked up right
after its own check; the first use marks it in flight, and its answer is kept once it
is known — a 2xx, a 404 of step 7 or a 409 of step 8 — for `IDEMPOTENCY_TTL` after
first use. Answers are journaled in the same commit as the facts they describe (the
actors append them, see `KeepAnswer`), so a retry after a crash is a replay.

First uses happen in time order (the clock never goes back), so a FIFO queue of first
uses is also the expiry order: forgetting costs the keys that expired, never a scan.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from miniexchange.clock import Clock
from miniexchange.journal import facts
from miniexchange.model.errors import ExchangeError

Key = tuple[str, str]  # (endpoint, Idempotency-Key)

STORED_STATUSES = frozenset((200, 201, 204, 404, 409))
"""What a first use keeps: 2xx, the 404s of step 7 and the 409s of step 8 (the 409 of
a key in progress is never produced by a first use)."""


@dataclass(frozen=True, slots=True)
class Answer:
    fingerprint: bytes
    status: int
    body: bytes
    first_used_at: int


@dataclass(frozen=True, slots=True)
class InFlight:
    fingerprint: bytes
    first_used_at: int


@dataclass(frozen=True, slots=True)
class KeepAnswer:
    """Travels with a command to the actor that decides it: the actor renders its
    outcome with `render` and journals the answer with the outcome's own facts."""

    endpoint: str
    key: str
    fingerprint: bytes
    first_used_at: int
    render: Callable[[Any], tuple[int, bytes]]

    def fact(self, outcome: Any) -> facts.Fact | None:
        """The journal fact of the answer to `outcome` (None if it is not kept)."""
        status, body = self.render(outcome)
        if status not in STORED_STATUSES:
            return None
        return facts.idempotent_answer(
            {
                "endpoint": self.endpoint,
                "key": self.key,
                "fingerprint": base64.b64encode(self.fingerprint).decode(),
                "status": status,
                "body": base64.b64encode(body).decode(),
                "at": self.first_used_at,
            }
        )


def reused(key: str) -> ExchangeError:
    return ExchangeError(
        "idempotency_key_reused", f"Idempotency-Key {key} was already used with a different request"
    )


def in_progress(key: str) -> ExchangeError:
    return ExchangeError(
        "idempotency_key_in_progress",
        f"A request with Idempotency-Key {key} is still being processed",
    )


class IdempotencyStore:
    def __init__(self, clock: Clock, ttl_us: int) -> None:
        self._clock = clock
        self._ttl_us = ttl_us
        self._entries: dict[Key, Answer | InFlight] = {}
        self._first_uses: deque[tuple[int, Key]] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def begin(self, endpoint: str, key: str, fingerprint: bytes) -> Answer | None:
        """Look a key up (step 5 of §1.2).

        Returns the stored `Answer` to replay, or marks a first use in flight and
        returns None; raises 422 for another request under the key, 409 while the
        first is still being processed.
        """
        now = self._clock.now()
        self._forget_expired(now)
        entry = self._entries.get((endpoint, key))
        if entry is None:
            self._entries[(endpoint, key)] = InFlight(fingerprint, now)
            self._first_uses.append((now, (endpoint, key)))
            return None
        if entry.fingerprint != fingerprint:
            raise reused(key)
        if isinstance(entry, InFlight):
            raise in_progress(key)
        return entry

    def first_used_at(self, endpoint: str, key: str) -> int:
        return self._entries[(endpoint, key)].first_used_at

    def finish(self, endpoint: str, key: str, status: int, body: bytes) -> None:
        """The first use answered: keep the answer if the contract says so, else
        forget the key so that a corrected retry is a first use again."""
        entry = self._entries.get((endpoint, key))
        if not isinstance(entry, InFlight):
            return
        if status in STORED_STATUSES:
            self._entries[(endpoint, key)] = Answer(
                entry.fingerprint, status, body, entry.first_used_at
            )
        else:
            del self._entries[(endpoint, key)]

    def restore(self, answers: Iterable[dict[str, Any]]) -> None:
        """Answers recovered from the journal, in journal order."""
        now = self._clock.now()
        for fact in sorted(answers, key=lambda a: a["at"]):
            if fact["at"] + self._ttl_us <= now:
                continue
            key = (fact["endpoint"], fact["key"])
            self._entries[key] = Answer(
                base64.b64decode(fact["fingerprint"]),
                fact["status"],
                base64.b64decode(fact["body"]),
                fact["at"],
            )
            self._first_uses.append((fact["at"], key))

    def _forget_expired(self, now: int) -> None:
        first_uses = self._first_uses
        horizon = now - self._ttl_us
        while first_uses and first_uses[0][0] <= horizon:
            _, key = first_uses.popleft()
            entry = self._entries.get(key)
            if isinstance(entry, InFlight):  # still running: look again later
                first_uses.append((now, key))
            elif entry is not None and entry.first_used_at <= horizon:
                del self._entries[key]
