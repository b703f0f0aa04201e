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

from miniexchange.actors.seam import Engine, Keys
from miniexchange.clock import Clock
from miniexchange.http.auth import idempotency_scope
from miniexchange.http.errors import render_refusal
from miniexchange.http.fingerprint import fingerprint
from miniexchange.http.resource import header_values, send_json
from miniexchange.journal.facts import Fact, KeepAnswer, answer_fact
from miniexchange.model.errors import ExchangeError, validation_error
from miniexchange.model.idempotency import (
    STORED_STATUSES,
    Decided,
    InFlight,
    KeptAnswers,
    Key,
    KeyIndex,
    StoredAnswer,
    fingerprint_digest,
)
from miniexchange.settings import Settings

Answer = StoredAnswer

SWEEP_INTERVAL_S = 1.0
"""How often, while the server runs, answers past their TTL are looked for."""


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

    @property
    def idempotency_key(self) -> Key:
        return self.endpoint, self.key

    def fact(self, outcome: Any) -> Fact | None:
        status, body = self.render(outcome)
        if status not in STORED_STATUSES:
            return None
        stored = StoredAnswer(self.digest, status, body, self.first_used_at)
        return answer_fact((self.endpoint, self.key), stored)


class IdempotencyStore:
    """This process's keys (`ENGINE=embedded`), on the event loop, with its clock."""

    def __init__(
        self, clock: Clock, ttl_us: int, max_keys: int = Settings().idempotency_max_keys
    ) -> None:
        self._clock = clock
        self._keys = KeyIndex(max_keys, ttl_us)
        self._sweeper: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """Keys held: answers kept and first uses in flight."""
        return len(self._keys)

    def begin(self, endpoint: str, key: str, digest: bytes) -> Answer | InFlight:
        """Look a key up (after the body parsed, before validation); `digest` is its
        request's `fingerprint_digest`. The stored `Answer` to replay, or the first use
        now in flight; 422 for another request under the key, 409 while the first is
        still being processed (`KeyIndex.begin`)."""
        return self._keys.begin((endpoint, key), digest, self._clock.now())

    def finish(self, endpoint: str, key: str, status: int, body: bytes) -> None:
        """The first use answered: kept if the contract says so, else forgotten."""
        self._keys.finish((endpoint, key), status, body, self._clock.now())

    def restore(self, recovered: KeptAnswers) -> None:
        """Take the answers recovered from the journal (`recovered` is left empty)."""
        now = self._clock.now()
        for key, stored in recovered.drain():
            self._keys.answers.put(key, stored, now)

    def forget_expired(self) -> int:
        """Drop the answers past their TTL now; how many went."""
        return self._keys.answers.forget_expired(self._clock.now())

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


class LocalKeys:
    """`Keys` kept by this process's store (`ENGINE=embedded`: it has every request)."""

    __slots__ = ("_store",)

    def __init__(self, store: IdempotencyStore) -> None:
        self._store = store

    async def begin(self, endpoint: str, key: str, digest: bytes) -> Answer | InFlight:
        return self._store.begin(endpoint, key, digest)

    async def finish(self, endpoint: str, key: str, status: int, body: bytes) -> None:
        self._store.finish(endpoint, key, status, body)


class Idempotency:
    """Runs the three POSTs under their `Idempotency-Key`, if they have one. The keys
    are the engine's when it shares them between processes (`Engine.keys`), else this
    process's store's."""

    def __init__(self, store: IdempotencyStore, engine: Engine) -> None:
        self.store = store
        self._keys: Keys = engine.keys or LocalKeys(store)
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
        keys = self._keys
        begun = await keys.begin(endpoint, key, digest)
        if type(begun) is Answer:
            send_json(resp, begun.status, begun.body)
            resp.set_header("Idempotent-Replayed", "true")
            return
        if type(begun) is Decided:  # its first worker died before keeping the answer
            status, data = render(begun.outcome)  # a refusal too, as the first would have
            await keys.finish(endpoint, key, status, data)
            send_json(resp, status, data)
            resp.set_header("Idempotent-Replayed", "true")
            return
        keep = IdempotentAnswer(endpoint, key, digest, begun.first_used_at, render)
        try:
            outcome = await handle(keep)
        except ExchangeError as refusal:
            await keys.finish(endpoint, key, *render_refusal(refusal))
            raise
        except BaseException:
            await keys.finish(endpoint, key, 500, b"")  # never kept: the key is free again
            raise
        status, data = render(outcome)
        await keys.finish(endpoint, key, status, data)
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
