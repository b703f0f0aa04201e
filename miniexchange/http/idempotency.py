"""Idempotent retries with the `Idempotency-Key` header.

The store lives on the event loop (one thread, so no lock): a key is looked up right
after its own check; the first use marks it in flight, and its answer is kept once it
is known — a 2xx, a 404 of a missing resource or a 409 of a refused command — for `IDEMPOTENCY_TTL` after
first use. Answers are journaled in the same commit as the facts they describe (the
actors append them, see `KeepAnswer`), so a retry after a crash is a replay.

What is kept is bounded: the answers sit in a `KeptAnswers` (at most
`IDEMPOTENCY_MAX_KEYS`, the oldest forgotten first; the same store recovery folds the
journal into), each request as the 32-byte digest of its fingerprint. Keys in flight
are apart, as many as the requests being served. Expired answers go on every use of
the store and, while no request comes, on a timer: each goes once, from the front.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import falcon.asgi

from miniexchange.actors.seam import Engine
from miniexchange.clock import Clock
from miniexchange.http.auth import idempotency_scope
from miniexchange.http.errors import render_refusal
from miniexchange.http.fingerprint import fingerprint
from miniexchange.http.resource import header_values, send_json
from miniexchange.journal.facts import Fact, KeepAnswer, answer_fact
from miniexchange.model.errors import ExchangeError, validation_error
from miniexchange.model.idempotency import KeptAnswers, Key, StoredAnswer, fingerprint_digest
from miniexchange.settings import Settings

Answer = StoredAnswer

STORED_STATUSES = frozenset((200, 201, 204, 404, 409))
"""What a first use of a key keeps: 2xx, the 404s of an unknown resource and the 409s
of a refused command (the 409 of a key in progress never comes from a first use)."""

SWEEP_INTERVAL_S = 1.0
"""How often, while the server runs, answers past their TTL are looked for."""


@dataclass(frozen=True, slots=True)
class InFlight:
    digest: bytes
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


@dataclass(frozen=True, slots=True)
class IdempotentAnswer:
    """The `KeepAnswer` of a request under a key: the actor that decides its command
    renders the outcome with `render` and journals the answer, if kept, with the
    outcome's own facts."""

    endpoint: str
    key: str
    digest: bytes  # `fingerprint_digest` of the request's fingerprint
    first_used_at: int
    render: Callable[[Any], tuple[int, bytes]]

    def fact(self, outcome: Any) -> Fact | None:
        status, body = self.render(outcome)
        if status not in STORED_STATUSES:
            return None
        stored = StoredAnswer(self.digest, status, body, self.first_used_at)
        return answer_fact((self.endpoint, self.key), stored)


class IdempotencyStore:
    def __init__(
        self, clock: Clock, ttl_us: int, max_keys: int = Settings().idempotency_max_keys
    ) -> None:
        self._clock = clock
        self._answers = KeptAnswers(max_keys, ttl_us)
        self._in_flight: dict[Key, InFlight] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """Keys held: answers kept and first uses in flight."""
        return len(self._answers) + len(self._in_flight)

    def begin(self, endpoint: str, key: str, digest: bytes) -> Answer | None:
        """Look a key up (after the body parsed, before validation); `digest` is its request's `fingerprint_digest`.

        Returns the stored `Answer` to replay, or marks a first use in flight and
        returns None; raises 422 for another request under the key, 409 while the
        first is still being processed.
        """
        now = self._clock.now()
        scoped = (endpoint, key)
        flying = self._in_flight.get(scoped)
        if flying is not None:
            raise reused(key) if flying.digest != digest else in_progress(key)
        stored = self._answers.get(scoped, now)
        if stored is None:
            self._in_flight[scoped] = InFlight(digest, now)
            return None
        if stored.digest != digest:
            raise reused(key)
        return stored

    def first_used_at(self, endpoint: str, key: str) -> int:
        return self._in_flight[(endpoint, key)].first_used_at

    def finish(self, endpoint: str, key: str, status: int, body: bytes) -> None:
        """The first use answered: keep the answer if the contract says so, else
        forget the key so that a corrected retry is a first use again."""
        flying = self._in_flight.pop((endpoint, key), None)
        if flying is None:
            return
        now = self._clock.now()
        if status in STORED_STATUSES:  # exact-size copy: orjson's buffer is larger
            answer_ = Answer(
                flying.digest, status, memoryview(body).tobytes(), flying.first_used_at
            )
            self._answers.put((endpoint, key), answer_, now)
        else:
            self._answers.forget_expired(now)

    def restore(self, recovered: KeptAnswers) -> None:
        """Take the answers recovered from the journal (`recovered` is left empty)."""
        now = self._clock.now()
        for key, stored in recovered.drain():
            self._answers.put(key, stored, now)

    def forget_expired(self) -> int:
        """Drop the answers past their TTL now; how many went."""
        return self._answers.forget_expired(self._clock.now())

    def start_sweeping(self, interval_s: float = SWEEP_INTERVAL_S) -> None:
        """On the event loop, until `stop_sweeping`: expired answers leave memory as
        time passes, also when no request comes to look."""
        loop = asyncio.get_running_loop()

        def sweep() -> None:
            self.forget_expired()
            self._sweeper = loop.call_later(interval_s, sweep)

        self.stop_sweeping()
        self._sweeper = loop.call_later(interval_s, sweep)

    def stop_sweeping(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


IDEMPOTENCY_KEY_MESSAGE: Final = "Idempotency-Key must be 1 to 255 visible ASCII characters"
_IDEMPOTENCY_KEY_RE: Final = re.compile(r"[\x21-\x7e]{1,255}", re.ASCII)


def validate_idempotency_key(values: list[str]) -> str | None:
    """The key, None without the header, or 400 (also for more than one header field).

    `values` are the raw field values, one per header line (not a comma-joined merge:
    a single key may itself contain a comma).
    """
    if not values:
        return None
    if len(values) > 1:
        raise validation_error(IDEMPOTENCY_KEY_MESSAGE)
    key = values[0].strip(" \t")
    if _IDEMPOTENCY_KEY_RE.fullmatch(key) is None:
        raise validation_error(IDEMPOTENCY_KEY_MESSAGE)
    return key


Render = Callable[[Any], tuple[int, bytes]]
Handle = Callable[[KeepAnswer | None], Awaitable[Any]]


class Idempotency:
    """Runs the three POSTs under their `Idempotency-Key`, if they have one."""

    def __init__(self, store: IdempotencyStore, engine: Engine) -> None:
        self.store = store
        self._engine = engine

    async def respond(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        endpoint: str,
        body: dict[str, Any],
        handle: Handle,
        render: Render,
    ) -> None:
        """The key's check and its lookup (right after the body parsed), then
        `handle(keep)` (validation, lookups, state checks), whose outcome `render` turns into the status and body sent. A key
        belongs to the endpoint and to the principal (`http.auth.idempotency_scope`)."""
        endpoint = idempotency_scope(req, endpoint)
        key = validate_idempotency_key(header_values(req, b"idempotency-key"))
        if key is None:
            status, data = render(await handle(None))
            send_json(resp, status, data)
            return
        digest = fingerprint_digest(fingerprint(body))
        stored = self.store.begin(endpoint, key, digest)
        if stored is not None:
            send_json(resp, stored.status, stored.body)
            resp.set_header("Idempotent-Replayed", "true")
            return
        keep = IdempotentAnswer(
            endpoint, key, digest, self.store.first_used_at(endpoint, key), render
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
        try:
            if answer_fact is not None:  # journal_unavailable if it cannot be
                await self._engine.journal_answer(answer_fact)
            raise refusal
        finally:  # this frame must not hold what its traceback holds: that cycle would
            del refusal  # keep the request (its body) alive until the collector runs
