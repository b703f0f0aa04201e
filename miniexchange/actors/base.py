"""What every actor of the exchange shares: replies through callbacks, never a crash."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pykka

from miniexchange.model.errors import ExchangeError

log = logging.getLogger("miniexchange.actors")

Reply = Callable[[Any], None]
"""Receives the answer to a request: a value, or the exception that refused it.

The HTTP layer's reply completes an asyncio future on the event loop; a test's reply
can be a `queue.Queue.put`. The actor never blocks on whoever asked.
"""

ACTOR_STACK_SIZE = 512 * 1024
"""Actor threads run shallow code; a small stack lets thousands of actors fit."""


def start_actor_threads_small() -> None:
    """Give threads created from now on a small stack (see `ACTOR_STACK_SIZE`)."""
    threading.stack_size(ACTOR_STACK_SIZE)


DEFERRED = object()
"""Returned by a handler that answers later itself (once its facts are durable)."""


class ExchangeActor(pykka.ThreadingActor):
    """A pykka actor whose messages are typed dataclasses dispatched by type.

    A tell whose handler raises would stop a pykka actor; here a refusal
    (`ExchangeError`) or a bug goes back to the requester through the message's
    `reply`, and the actor keeps serving.
    """

    handlers: ClassVar[dict[type, Callable[[Any, Any], Any]]] = {}

    def _start_actor_loop(self) -> None:
        """pykka registers an actor before it starts its thread: when the system refuses
        the thread (a pids limit), take the actor out again, or stopping every actor
        would wait forever for this one, which never ran."""
        try:
            super()._start_actor_loop()
        except BaseException:
            pykka.ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()
            raise

    def on_receive(self, message: Any) -> Any:
        handler = self.handlers[type(message)]
        reply: Reply | None = getattr(message, "reply", None)
        try:
            result = handler(self, message)
        except ExchangeError as refusal:
            if reply is None:
                raise
            reply(refusal)
            return None
        except Exception as bug:
            log.exception("actor %s failed on %s", self.actor_urn, type(message).__name__)
            if reply is None:
                return None
            reply(bug)
            return None
        if reply is not None and result is not DEFERRED:
            reply(result)
        return result
