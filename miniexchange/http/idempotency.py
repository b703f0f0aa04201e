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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

import falcon.asgi

from miniexchange.actors.base import Reply
from miniexchange.clock import Clock
from miniexchange.http.auth import idempotency_scope
from miniexchange.http.bridge import answer
from miniexchange.http.core import send_json
from miniexchange.http.errors import render_refusal
from miniexchange.http.parsing import fingerprint, validate_idempotency_key
from miniexchange.journal.facts import STORED_STATUSES, KeepAnswer
from miniexchange.journal.store import Journal
from miniexchange.model.errors import ExchangeError, journal_unavailable

Key = tuple[str, str]  # (endpoint, Idempotency-Key)


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


Render = Callable[[Any], tuple[int, bytes]]
Handle = Callable[[KeepAnswer | None], Awaitable[Any]]


def header_values(req: falcon.asgi.Request, name: bytes) -> list[str]:
    """Every field of one header as sent (Falcon joins repeats with commas, and a key
    may itself contain a comma)."""
    return [value.decode("latin-1") for field, value in req.scope["headers"] if field == name]


class Idempotency:
    """Runs the three POSTs under their `Idempotency-Key`, if they have one."""

    def __init__(self, store: IdempotencyStore, journal: Callable[[], Journal]) -> None:
        self.store = store
        self._journal = journal

    async def respond(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        endpoint: str,
        body: dict[str, Any],
        handle: Handle,
        render: Render,
    ) -> None:
        """Step 5 of §1.2 and on: the key's check, its lookup, then `handle(keep)`
        (steps 6–8), whose outcome `render` turns into the status and body sent. A key
        belongs to the endpoint and to the principal (`http.auth.idempotency_scope`)."""
        endpoint = idempotency_scope(req, endpoint)
        key = validate_idempotency_key(header_values(req, b"idempotency-key"))
        if key is None:
            status, data = render(await handle(None))
            send_json(resp, status, data)
            return
        fingerprint_ = fingerprint(body)
        stored = self.store.begin(endpoint, key, fingerprint_)
        if stored is not None:
            send_json(resp, stored.status, stored.body)
            resp.set_header("Idempotent-Replayed", "true")
            return
        keep = KeepAnswer(
            endpoint, key, fingerprint_, self.store.first_used_at(endpoint, key), render
        )
        try:
            outcome = await handle(keep)
        except ExchangeError as refusal:
            self.store.finish(endpoint, key, *render_refusal(refusal))
            raise
        except BaseException:
            self.store.finish(endpoint, key, 500, b"")  # never kept: the key is free again
            raise
        status, data = render(outcome)
        self.store.finish(endpoint, key, status, data)
        send_json(resp, status, data)

    async def refuse(self, keep: KeepAnswer | None, refusal: ExchangeError) -> NoReturn:
        """A refusal the HTTP layer decides itself (step 7 or 8): with a key, its
        answer is journaled before it is sent, like an actor's."""
        answer_fact = keep.fact(refusal) if keep is not None else None
        if answer_fact is not None:
            journal = self._journal()

            def record(reply: Reply) -> None:
                journal.append(
                    (answer_fact,),
                    lambda error: reply(refusal if error is None else journal_unavailable()),
                )

            await answer(record)
        raise refusal
