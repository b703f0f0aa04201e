"""HTTP load: `healthz`, `limit` (three runs against one growing book) and `mixed`.

Each scenario gets a fresh server with the benchmark brokers registered, so no
scenario inherits another's book. `limit` runs three times back to back against one
server: run 1 is the `limit` figure, and run 3 / run 1 shows whether the server stays
flat while its book and order history grow. One more `limit` run goes to the same
server answering a fixed order (`bench.ceiling`): the gap between the two is what an
order's own work costs, per request.

Every figure is also read as a share of a bare `falcon.asgi.App` answering a constant
(`bench.bare`) under the same gunicorn configuration, measured first in the same run:
the HTTP stack's own ceiling, which our middleware, parsing and actors share. The same
bare app served from inside the exchange's process (`bench.bare_in_exchange`) splits
the gap to our `/healthz` into what the process costs and what the request path does.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.report import Row
from bench.server import Server, running_server
from bench.wrk import CONNECTIONS, WrkResult, run_wrk

# The only refusals a scenario may produce: cancelling an order that filled (or was
# cancelled) meanwhile, and a market order meeting an empty side.
EXPECTED = {
    "healthz": frozenset(),
    "limit": frozenset(),
    "mixed": frozenset({"409 order_not_cancellable", "409 no_liquidity"}),
}
SOCKET_ERRORS = ("connect", "read", "write", "timeout")
CEILING_APP = "bench.ceiling:app"
BARE_APP = "bench.bare:app"
BARE_IN_EXCHANGE_APP = "bench.bare_in_exchange:app"
# Of the bare app's GET /healthz rate (and p99), measured in the same run.
BARE_HEALTHZ_TARGET = 0.80
BARE_LIMIT_TARGET = 0.40
BARE_MIXED_TARGET = 0.35
BARE_P99_TARGET = 2.5
JOURNAL_CONNECTIONS = (32, 256)
JOURNAL_TARGET = 0.75  # journal `full` / `:memory:`, at 256 connections
HEALTHZ_ROUNDS = 3
HEALTHZ_SERVERS = {  # result key: (app, what it is); None: the exchange as served
    "bare_healthz": (BARE_APP, "a bare Falcon app"),
    "bare_in_exchange": (BARE_IN_EXCHANGE_APP, "the bare app in the exchange's process"),
    "healthz": (None, "the exchange"),
}
"""GET /healthz against these three, alternating for `HEALTHZ_ROUNDS` rounds (one server
each, all started first): the VM's rate drifts by tens of percent within minutes, and
every share of the bare app rests on these runs, so each figure is its median run."""


def median_run(runs: list[WrkResult]) -> WrkResult:
    """The run with the median rate (of an odd number; the upper middle of an even one)."""
    return sorted(runs, key=lambda result: result.rps)[len(runs) // 2]


def unexpected(result: WrkResult) -> dict[str, int]:
    """Non-2xx answers the scenario does not expect, plus socket errors and timeouts."""
    bad = {key: n for key, n in result.non_2xx().items() if key not in EXPECTED[result.scenario]}
    for kind in SOCKET_ERRORS:
        if result.errors.get(kind):
            bad[f"socket {kind}"] = result.errors[kind]
    return bad


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key}: {n:,}" for key, n in sorted(counts.items())) or "0"


def _describe(result: WrkResult) -> str:
    return (
        f"{result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
        f"{result.per_cpu_s:,.0f} req per worker CPU-s"
    )


def measured(
    server: Server, scenario: str, duration_s: float, connections: int = CONNECTIONS
) -> WrkResult:
    """One wrk run, with the CPU time the server worker spent on it."""
    cpu_before, switches_before = server.cpu_seconds(), server.context_switches()
    result = run_wrk(scenario, server.url, duration_s, connections=connections)
    result.server_cpu_s = server.cpu_seconds() - cpu_before
    result.server_switches = server.context_switches() - switches_before
    return result


def run_scenarios(duration_s: float, log: Callable[[str], None] = print) -> dict[str, WrkResult]:
    """Run every scenario; keys: bare_healthz, bare_in_exchange and healthz (the median
    of their rounds, and each round as bare_healthz1...), bare_limit, limit1, limit2,
    limit3, mixed, ceiling."""
    results: dict[str, WrkResult] = {}
    healthz_runs: dict[str, list[WrkResult]] = {key: [] for key in HEALTHZ_SERVERS}
    with contextlib.ExitStack() as servers:
        started = {
            key: servers.enter_context(running_server(register=False, app=app))
            for key, (app, _) in HEALTHZ_SERVERS.items()
        }
        for round_number in range(1, HEALTHZ_ROUNDS + 1):
            for key, server in started.items():
                log(
                    f"http: healthz against {HEALTHZ_SERVERS[key][1]}, round {round_number}"
                    f"/{HEALTHZ_ROUNDS}, {duration_s:g} s ..."
                )
                healthz_runs[key].append(measured(server, "healthz", duration_s))
                log(f"  {_describe(healthz_runs[key][-1])}")
        log(f"http: limit against a bare Falcon app, {duration_s:g} s ...")
        results["bare_limit"] = measured(started["bare_healthz"], "limit", duration_s)
        log(f"  {_describe(results['bare_limit'])}")
    for key, runs in healthz_runs.items():
        results[key] = median_run(runs)
        results.update({f"{key}{number}": run for number, run in enumerate(runs, 1)})
    with running_server(app=CEILING_APP) as server:  # right after healthz: compared with it
        log(f"http: limit against a fixed answer (the ceiling), {duration_s:g} s ...")
        results["ceiling"] = measured(server, "limit", duration_s)
        log(f"  {_describe(results['ceiling'])}")
    with running_server() as server:
        for run in (1, 2, 3):
            log(f"http: limit run {run}/3 (one server, book growing), {duration_s:g} s ...")
            results[f"limit{run}"] = measured(server, "limit", duration_s)
            log(f"  {_describe(results[f'limit{run}'])}")
    with running_server() as server:
        log(f"http: mixed, {duration_s:g} s ...")
        results["mixed"] = measured(server, "mixed", duration_s)
        log(f"  {_describe(results['mixed'])}")
    return results


OBSERVABILITY_OFF = {"MINIEXCHANGE_OBSERVABILITY": "off"}
"""Read by `create_served_app` only: no access log, no HTTP metrics (request ids stay)."""
OBSERVABILITY_ROUNDS = 2
OBSERVABILITY_TARGET = 0.10


def observability_rows(duration_s: float, log: Callable[[str], None] = print) -> list[Row]:
    """`limit` with the access log and the HTTP metrics on (as served: LOG_LEVEL=info,
    LOG_FORMAT=json, stdout to a file) and off, each run on a fresh server, the two
    alternating for `OBSERVABILITY_ROUNDS` rounds; the best run of each is compared.

    The cost is read per worker CPU-second (what a busy 2-core machine disturbs least)
    and must stay under 10%. The symbol actors' counters are on in both: they are part
    of the engine, one counter increment per submission."""
    runs: dict[str, list[WrkResult]] = {"off": [], "on": []}
    for round_number in range(1, OBSERVABILITY_ROUNDS + 1):
        for mode, env in (("off", OBSERVABILITY_OFF), ("on", {})):
            log(f"http: limit, observability {mode}, round {round_number}, {duration_s:g} s ...")
            with running_server(extra_env=env) as server:
                result = measured(server, "limit", duration_s)
            log(f"  {_describe(result)}")
            runs[mode].append(result)
    on = max(runs["on"], key=lambda result: result.per_cpu_s)
    off = max(runs["off"], key=lambda result: result.per_cpu_s)
    cost = 1 - on.per_cpu_s / (off.per_cpu_s or 1.0)
    rps_cost = 1 - on.rps / (off.rps or 1.0)
    bad = {**unexpected(on), **unexpected(off)}
    return [
        Row("http limit, logs + metrics off", _describe(off)),
        Row("http limit, logs + metrics on", _describe(on)),
        Row(
            "http limit: cost of access log + metrics",
            f"{cost:.1%} per worker CPU-s ({rps_cost:.1%} in req/s)",
            "< 10%",
            cost < OBSERVABILITY_TARGET,
        ),
        Row("http limit on/off: non-2xx + socket errors", _fmt_counts(bad), "0", not bad),
    ]


def http_rows(duration_s: float, log: Callable[[str], None] = print) -> list[Row]:
    results = run_scenarios(duration_s, log)
    healthz, limit, mixed = results["healthz"], results["limit1"], results["mixed"]
    bare, bare_post = results["bare_healthz"], results["bare_limit"]
    ceiling = healthz.rps or 1.0
    bare_rps = bare.rps or 1.0
    growth = results["limit3"].rps / (limit.rps or 1.0)

    in_process = results["bare_in_exchange"]
    bare_us, in_process_us, healthz_us = (
        1e6 / (result.per_cpu_s or 1.0) for result in (bare, in_process, healthz)
    )

    fixed = results["ceiling"]
    fixed_us = 1e6 / (fixed.per_cpu_s or 1.0)  # worker CPU per request, fixed answer
    order_work_us = 1e6 / (limit.per_cpu_s or 1.0) - fixed_us
    budget_us = 1e6 / (BARE_LIMIT_TARGET * bare.per_cpu_s or 1.0) - fixed_us

    def cpu_share(result: WrkResult, of: WrkResult) -> str:
        # The same share per CPU-second of the worker: what a busy machine distorts least.
        share = result.per_cpu_s / (of.per_cpu_s or 1.0)
        return f"{result.per_cpu_s:,.0f} per worker CPU-s, {share:.0%}"

    def rounds(key: str) -> str:
        rates = " / ".join(f"{results[f'{key}{n}'].rps:,.0f}" for n in range(1, HEALTHZ_ROUNDS + 1))
        return f"median of rounds {rates}"

    def of_bare(result: WrkResult) -> str:
        return (
            f"{result.rps:,.0f} ({result.rps / bare_rps:.0%} of bare; "
            f"{cpu_share(result, bare)}; {result.rps / ceiling:.0%} of our healthz)"
        )

    limit_bad = unexpected(limit)
    mixed_bad = unexpected(mixed)
    healthz_bad = unexpected(healthz)
    bare_bad = {**unexpected(bare), **unexpected(bare_post)}
    mixed_expected = {k: n for k, n in mixed.non_2xx().items() if k in EXPECTED["mixed"]}
    limit_created = limit.count("201")
    p99_limit = BARE_P99_TARGET * bare.p99_ms
    return [
        Row(
            "http bare Falcon app, GET /healthz: req/s (the ceiling)",
            f"{bare.rps:,.0f} ({bare.per_cpu_s:,.0f} per worker CPU-s), "
            f"p50 {bare.p50_ms:.2f} ms / p99 {bare.p99_ms:.2f} ms; {rounds('bare_healthz')}",
        ),
        Row(
            "http bare Falcon app, POST /orders (`limit` bodies): req/s",
            f"{bare_post.rps:,.0f} ({bare_post.per_cpu_s:,.0f} per worker CPU-s), "
            f"p99 {bare_post.p99_ms:.2f} ms",
        ),
        Row(
            "http bare Falcon app: non-2xx + socket errors",
            _fmt_counts(bare_bad),
            "0",
            not bare_bad,
        ),
        Row(
            "http healthz: req/s",
            f"{healthz.rps:,.0f} ({healthz.rps / bare_rps:.0%} of bare; {cpu_share(healthz, bare)}); "
            f"{rounds('healthz')}",
            f"≥ {BARE_HEALTHZ_TARGET:.0%} of bare",
            healthz.rps >= BARE_HEALTHZ_TARGET * bare_rps,
        ),
        Row("http healthz: p50 / p99", f"{healthz.p50_ms:.2f} ms / {healthz.p99_ms:.2f} ms"),
        Row(
            "http bare app in the exchange's process, GET /healthz: req/s",
            f"{in_process.rps:,.0f} ({in_process.rps / bare_rps:.0%} of bare; "
            f"{cpu_share(in_process, bare)}); {rounds('bare_in_exchange')}",
        ),
        Row(
            "http healthz, worker CPU per request: bare, the process, our request path",
            f"{bare_us:,.0f} µs bare, {in_process_us - bare_us:+,.0f} µs the process, "
            f"{healthz_us - in_process_us:+,.0f} µs our request path = {healthz_us:,.0f} µs",
        ),
        Row(
            "http healthz: non-2xx + socket errors", _fmt_counts(healthz_bad), "0", not healthz_bad
        ),
        Row(
            "http limit: req/s (run 1)",
            of_bare(limit),
            f"≥ {BARE_LIMIT_TARGET:.0%} of bare",
            limit.rps >= BARE_LIMIT_TARGET * bare_rps,
        ),
        Row(
            "http limit: p50 / p99",
            f"{limit.p50_ms:.2f} ms / {limit.p99_ms:.2f} ms "
            f"(p99 {limit.p99_ms / (bare.p99_ms or 1.0):.1f}× bare)",
            f"p99 ≤ {BARE_P99_TARGET}× bare ({p99_limit:.1f} ms)",
            limit.p99_ms <= p99_limit,
        ),
        Row("http limit: non-2xx + socket errors", _fmt_counts(limit_bad), "0", not limit_bad),
        Row(
            "http limit ceiling: POST /orders answering a fixed order",
            f"{fixed.rps:,.0f} req/s ({fixed.rps / bare_rps:.0%} of bare; "
            f"{cpu_share(fixed, bare)}), p99 {fixed.p99_ms:.2f} ms",
        ),
        Row(
            "http limit: an order's own work, worker CPU per request",
            f"{order_work_us:,.0f} µs ({BARE_LIMIT_TARGET:.0%} of bare leaves it "
            f"{budget_us:,.0f} µs)",
        ),
        Row(
            "http limit: orders that traded",
            f"{limit.crossed / max(limit_created, 1):.0%} of {limit_created:,}",
        ),
        Row(
            "http limit, 3 runs on one server: req/s",
            " → ".join(f"{results[f'limit{n}'].rps:,.0f}" for n in (1, 2, 3))
            + " (p99 "
            + " → ".join(f"{results[f'limit{n}'].p99_ms:.1f}" for n in (1, 2, 3))
            + " ms)",
        ),
        Row(
            "http limit, run 3 / run 1",
            f"{growth:.2f} ({cpu_share(results['limit3'], limit)})",
            "≥ 0.90",
            growth >= 0.90,
        ),
        Row(
            "http mixed: req/s",
            of_bare(mixed),
            f"≥ {BARE_MIXED_TARGET:.0%} of bare",
            mixed.rps >= BARE_MIXED_TARGET * bare_rps,
        ),
        Row("http mixed: p50 / p99", f"{mixed.p50_ms:.2f} ms / {mixed.p99_ms:.2f} ms"),
        Row(
            "http mixed: unexpected non-2xx + socket errors",
            _fmt_counts(mixed_bad),
            "0",
            not mixed_bad,
        ),
        Row("http mixed: expected 409s", _fmt_counts(mixed_expected)),
        Row(
            "http: worker context switches per request (healthz / limit / mixed)",
            " / ".join(f"{r.switches_per_request:.2f}" for r in (healthz, limit, mixed)),
        ),
    ]


def journal_http_rows(duration_s: float, log: Callable[[str], None] = print) -> list[Row]:
    """`limit` over HTTP with the journal off (`:memory:`) and `DATABASE_SYNC=full`, at
    32 and 256 connections, a fresh server per run. At 32 a commit's latency bounds the
    rate (Little's law: connections ÷ latency); at 256 the writer's group commits fill."""
    rows: list[Row] = []
    for connections in JOURNAL_CONNECTIONS:
        runs: dict[str, WrkResult] = {}
        for mode in (":memory:", "full"):
            with tempfile.TemporaryDirectory(prefix="bench-journal-") as directory:
                env = (
                    {}
                    if mode == ":memory:"
                    else {
                        "DATABASE_PATH": str(Path(directory) / "exchange.db"),
                        "DATABASE_SYNC": "full",
                    }
                )
                log(f"http: limit, journal {mode}, {connections} connections, {duration_s:g} s ...")
                with running_server(extra_env=env) as server:
                    runs[mode] = measured(server, "limit", duration_s, connections)
                log(f"  {_describe(runs[mode])}")
        memory, full = runs[":memory:"], runs["full"]
        share = full.rps / (memory.rps or 1.0)
        bad = {**unexpected(memory), **unexpected(full)}
        target = connections == JOURNAL_CONNECTIONS[-1]
        rows.append(
            Row(
                f"http limit, journal full / :memory:, {connections} connections",
                f"{share:.2f} ({full.rps:,.0f} / {memory.rps:,.0f} req/s; p99 "
                f"{full.p99_ms:.1f} / {memory.p99_ms:.1f} ms)"
                + (f"; errors {_fmt_counts(bad)}" if bad else ""),
                f"≥ {JOURNAL_TARGET}" if target else "",
                share >= JOURNAL_TARGET and not bad if target else None,
            )
        )
    return rows


ACCOUNT_ACTOR_COUNTS = (1, 2, 4)
ACCOUNT_ACTOR_ROUNDS = 3


def account_actor_rows(duration_s: float, log: Callable[[str], None] = print) -> list[Row]:
    """`limit` with `ACCOUNT_ACTORS` 1, 2 and 4, each run on a fresh server, the counts
    alternating for `ACCOUNT_ACTOR_ROUNDS` rounds; the median of each count (the
    default of the setting was chosen from these figures)."""
    runs: dict[int, list[WrkResult]] = {count: [] for count in ACCOUNT_ACTOR_COUNTS}
    for round_number in range(1, ACCOUNT_ACTOR_ROUNDS + 1):
        for count in ACCOUNT_ACTOR_COUNTS:
            log(f"http: limit, ACCOUNT_ACTORS={count}, round {round_number} ...")
            with running_server(extra_env={"ACCOUNT_ACTORS": str(count)}) as server:
                result = measured(server, "limit", duration_s)
            log(f"  {_describe(result)}")
            runs[count].append(result)
    rows = []
    for count, results in runs.items():
        median = median_run(results)
        bad = {key: n for result in results for key, n in unexpected(result).items()}
        rows.append(
            Row(
                f"http limit, ACCOUNT_ACTORS={count} (median of {len(results)})",
                f"{_describe(median)}; all runs: "
                + " / ".join(f"{result.rps:,.0f}" for result in results)
                + (f"; errors {_fmt_counts(bad)}" if bad else ""),
            )
        )
    return rows
