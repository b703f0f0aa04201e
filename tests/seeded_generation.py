"""schemathesis generation hooks shared by the runs in process and the run against the
real server: now and then a generated request names a resource that exists (a seeded
broker, order, symbol or subscription), so that it gets past 404 to the states behind it.

The hooks read `SEEDS`, which the run fills once it has seeded its exchange: they are
registered before any exchange exists, and schemathesis also draws before that (the
document's examples), when there are no seeds yet.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

EVENTS = ["trade.executed", "order.expired", "order.cancelled"]
SEEDS_VARIABLE = "MINIEXCHANGE_TEST_SEEDS"
"""For a run in another process (`schemathesis run`): the environment variable that
holds the JSON of its `Seeds`."""
PATH_PARAMETER = re.compile(r"\{([^}]+)\}")


@dataclass
class Seeds:
    """Existing resources, mixed into the generated requests so that they reach past 404."""

    path_values: dict[str, list[str]] = field(default_factory=dict)
    brokers: list[str] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)
    webhook_urls: list[str] = field(default_factory=list)
    """The URLs a seeded subscription gets: a local receiver's, or ones never called."""
    expires_at: str = ""
    """A moment after the whole run, for the seeded limit orders."""
    server: str = ""
    """The exchange's base URL, when a hook must call it."""

    def replace(self, other: Seeds) -> None:
        """Take `other`'s values in place: the hooks hold this very object."""
        self.__dict__.update(other.__dict__)


SEEDS = Seeds()


def seeded(
    order_ids: list[str],
    webhook_ids: list[str],
    webhook_urls: list[str],
    expires_at: str,
    server: str = "",
) -> Seeds:
    """The `Seeds` of a run's seeding (both runs seed the same brokers and symbols): its
    orders, subscriptions and the URLs they deliver to."""
    brokers = ["alice", "bob", "carol"]
    symbols = ["AAPL", "GOOG", "MSFT"]
    return Seeds(
        path_values={
            "order_id": order_ids,
            "broker_id": brokers,
            "symbol": symbols,
            "webhook_id": webhook_ids,
            # a `/` in a path parameter is sent as `%2F`: the vendored files are then 404s
            "path": ["market.js", "market.css", "vendor/LICENSE"],
        },
        brokers=brokers,
        symbols=symbols,
        webhook_urls=webhook_urls,
        expires_at=expires_at,
        server=server,
    )


@st.composite
def _or_seeded(
    draw: st.DrawFn,
    generated: st.SearchStrategy[Any],
    seeded: Callable[[Seeds], st.SearchStrategy[Any] | None],
) -> Any:
    """The generated value, or now and then one built from the seeded resources."""
    strategy = seeded(SEEDS) if SEEDS.brokers else None
    if strategy is None or draw(st.booleans()):
        return draw(generated)
    return draw(strategy)


def _pick(values: list[str]) -> st.SearchStrategy[str]:
    """One of `values`, drawn the same way whatever their number: the lists grow during
    the run, and Hypothesis wants a replayed example to draw exactly as it first did."""
    return st.integers(0, 1 << 16).map(lambda index: values[index % len(values)])


def _seeded_path(names: list[str]) -> Callable[[Seeds], st.SearchStrategy[Any]]:
    return lambda seeds: st.fixed_dictionaries(
        {name: _pick(seeds.path_values[name]) for name in names}
    )


def _seeded_order(seeds: Seeds) -> st.SearchStrategy[dict[str, Any]]:
    common = {
        "broker_id": _pick(seeds.brokers),
        "document_number": st.just("12345678900"),
        "side": st.sampled_from(["bid", "ask"]),
        "symbol": _pick(seeds.symbols),
        "quantity": st.integers(1, 300),
    }
    # near the seeded books (AAPL bid 149.50 / ask 150.00, GOOG ask 2800.00), so that
    # orders trade and rest there, or any price of 2 decimals
    price = st.one_of(
        st.sampled_from([150, 149.5, 150.5, 2800]),
        st.integers(1, 20_000).map(lambda cents: cents / 100),
    )
    limit = st.fixed_dictionaries(
        {
            **common,
            "type": st.just("limit"),
            "price": price,
            "expires_at": st.just(seeds.expires_at),
        }
    )
    market = st.fixed_dictionaries({**common, "type": st.just("market")})
    return st.one_of(limit, market)


def _seeded_registration(seeds: Seeds) -> st.SearchStrategy[dict[str, Any]]:
    """An id already registered: 409."""
    return st.fixed_dictionaries({"broker_id": _pick(seeds.brokers), "initial_cash": st.just(1)})


def _seeded_subscription(seeds: Seeds) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "broker_id": _pick([*seeds.brokers, "nobody"]),
            "url": st.sampled_from(seeds.webhook_urls),
            "events": st.lists(st.sampled_from(EVENTS), min_size=1, max_size=4),
        }
    )


def _seeded_broker_query(seeds: Seeds) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"broker_id": _pick(seeds.brokers)})


SEEDED_BODIES = {
    "/orders": _seeded_order,
    "/brokers": _seeded_registration,
    "/webhooks": _seeded_subscription,
}


def before_generate_path_parameters(context: Any, strategy: st.SearchStrategy) -> Any:
    """Now and then an existing order, broker, symbol or subscription."""
    names = PATH_PARAMETER.findall(context.operation.path)
    return _or_seeded(strategy, _seeded_path(names)) if names else strategy


def before_generate_query(context: Any, strategy: st.SearchStrategy) -> Any:
    if context.operation.path != "/webhooks":
        return strategy
    return _or_seeded(strategy, _seeded_broker_query)


def before_generate_body(context: Any, strategy: st.SearchStrategy) -> Any:
    """Now and then a body naming existing brokers and symbols, to reach 201, 404 and 409."""
    seeded = SEEDED_BODIES.get(context.operation.path)
    return strategy if seeded is None else _or_seeded(strategy, seeded)


def after_call(context: Any, case: Any, response: Any) -> None:
    """Orders and subscriptions the run creates join the seeds, so that later operations
    (a DELETE of an active order, say) find live ones too."""
    if case.method != "POST" or response.status_code not in (200, 201) or not SEEDS.brokers:
        return
    if case.path == "/orders":
        SEEDS.path_values["order_id"].append(response.json()["order_id"])
    elif case.path == "/webhooks":
        known = SEEDS.path_values["webhook_id"]
        known.extend(
            w["webhook_id"] for w in response.json()["webhooks"] if w["webhook_id"] not in known
        )


GENERATION_HOOKS = (
    before_generate_path_parameters,
    before_generate_query,
    before_generate_body,
    after_call,
)
