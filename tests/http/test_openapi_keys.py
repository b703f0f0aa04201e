"""schemathesis against the document `AUTH=api_key` serves, with the admin token.

The same seeded exchange and generation hooks as `test_openapi`'s run, on the app built
with API keys: every operation, the two that issue credentials included, must answer
as its document says (statuses, content types, schemas), with no server error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hypothesis
import orjson
import pytest
import schemathesis

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.seam import EmbeddedEngine
from miniexchange.http.app import create_app
from miniexchange.http.docs import OpenApiResource
from miniexchange.settings import load_settings
from miniexchange.testing import FakeDeliveries, ManualClock, SequentialIds
from tests.conftest import START, AppClient
from tests.http.test_openapi import CHECKS, WithoutLifespan, serve_seeded
from tests.seeded_generation import EVENTS, GENERATION_HOOKS

ADMIN = "schemathesis-admin-token-" + "k" * 32
SETTINGS = load_settings({"AUTH": "api_key", "ADMIN_TOKEN": ADMIN})
AUTHORIZATION = {"Authorization": f"Bearer {ADMIN}"}


def _served_document() -> dict[str, Any]:
    """What an app built with API keys serves at `/openapi.json` (no lifespan needed)."""
    clock = ManualClock.at(START)
    app = create_app(
        SETTINGS,
        clock=clock,
        engine=EmbeddedEngine(
            Exchange(clock, SequentialIds(), FakeDeliveries(), expiration_interval_s=None)
        ),
    )
    resource, *_ = app._router.find("/openapi.json")
    assert isinstance(resource, OpenApiResource)
    return orjson.loads(resource.body)


SCHEMA = schemathesis.openapi.from_dict(_served_document())
for hook in GENERATION_HOOKS:
    SCHEMA.hook(hook)


class AdminClient(AppClient):
    """Every request with the admin token (the seeding acts for all brokers)."""

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        kwargs["headers"] = {**(kwargs.get("headers") or {}), **AUTHORIZATION}
        return super().request(method, path, **kwargs)


@pytest.fixture(scope="module")
def served(refused: list[str], recorder: FakeDeliveries) -> Iterator[WithoutLifespan]:
    yield from serve_seeded(SETTINGS, recorder, AdminClient)


@SCHEMA.parametrize()
@hypothesis.settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.filter_too_much],
)
def test_schemathesis_finds_nothing_with_api_keys(case: Any, served: WithoutLifespan) -> None:
    timeout = 0.25 if case.path.endswith("/stream") else 30
    case.call_and_validate(app=served, checks=CHECKS, timeout=timeout, headers=AUTHORIZATION)


def test_webhooks_were_due_and_none_left_the_machine(
    served: WithoutLifespan, recorder: FakeDeliveries, refused: list[str]
) -> None:
    assert {delivery.event_type for delivery in recorder.recorded()} == set(EVENTS)
    assert refused == []
