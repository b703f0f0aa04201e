"""Shared fixtures: the ASGI app in-process with real actors and a manual clock.

`AppClient` keeps one `falcon.testing.ASGIConductor` (one ASGI lifespan, so one set of
actors) open for a whole test, on an event loop in a background thread, and offers
plain synchronous calls; several test threads may call it at once.

Hypothesis runs under the `ci` profile unless `HYPOTHESIS_PROFILE` names another: the
same examples on every run (derandomized, no example database), so a red CI run
replays exactly on a laptop, and a failure prints the blob that reproduces it.
`HYPOTHESIS_PROFILE=explore` draws fresh random examples to look for new
counterexamples (`--hypothesis-seed=N` repeats one such run).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import hypothesis
import pykka
import pytest
from falcon import testing

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.seam import EmbeddedEngine
from miniexchange.http.app import create_app
from miniexchange.metrics import Metrics
from miniexchange.settings import load_settings
from miniexchange.testing import ManualClock, SequentialIds
from miniexchange.webhooks.delivery import Deliveries, DeliveryPool

START = "2026-02-17T09:00:00Z"

# No timing checks either: a loaded CI machine must not fail a test for being slow.
_UNTIMED: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [hypothesis.HealthCheck.too_slow],
    "print_blob": True,
}
hypothesis.settings.register_profile("ci", derandomize=True, database=None, **_UNTIMED)
hypothesis.settings.register_profile("explore", **_UNTIMED)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

T = TypeVar("T")


class AppClient:
    def __init__(self, app: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._conductor = testing.ASGIConductor(app)
        self._run(self._conductor.__aenter__())

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        query: str | None = None,
    ) -> testing.Result:
        kwargs: dict[str, Any] = {"headers": headers, "query_string": query}
        if json is not None:
            kwargs["json"] = json
        elif body is not None:
            kwargs["body"] = body
        return self._run(self._conductor.simulate_request(method, path, **kwargs))

    def get(self, path: str, **kwargs: Any) -> testing.Result:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> testing.Result:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> testing.Result:
        return self.request("DELETE", path, **kwargs)

    def run(self, use: Callable[[testing.ASGIConductor], Awaitable[T]]) -> T:
        """Run `use(conductor)` on the client's loop: for what plain calls cannot do,
        such as reading an event stream (`conductor.simulate_get_stream`)."""
        return self._run(use(self._conductor))

    def close(self) -> None:
        self._run(self._conductor.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock.at(START)


@pytest.fixture
def metrics() -> Metrics:
    """The exchange's Prometheus families; the delivery pool counts into them too."""
    return Metrics()


@pytest.fixture
def deliveries(metrics: Metrics) -> Deliveries:
    """A real delivery pool with the default settings, wired as the app wires its own. A
    module that checks the webhooks it sends overrides this with a `FakeDeliveries`,
    which records them instead."""
    return DeliveryPool(load_settings({}), on_outcome=metrics.count_delivery)


@pytest.fixture
def exchange(clock: ManualClock, deliveries: Deliveries, metrics: Metrics) -> Exchange:
    """Real actors, a manual clock, no ticker: tests expire by moving the clock."""
    return Exchange(clock, SequentialIds(), deliveries, expiration_interval_s=None, metrics=metrics)


def _open(app: Any) -> Iterator[AppClient]:
    """An `AppClient` over `app` for one test; every actor is stopped after it."""
    app_client = AppClient(app)
    try:
        yield app_client
    finally:
        app_client.close()
        pykka.ActorRegistry.stop_all()


@pytest.fixture
def client(clock: ManualClock, exchange: Exchange) -> Iterator[AppClient]:
    yield from _open(create_app(load_settings({}), clock=clock, engine=EmbeddedEngine(exchange)))
