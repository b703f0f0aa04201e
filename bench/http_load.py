"""HTTP load: `healthz`, `limit` (three runs against one growing book) and `mixed`.

Each scenario gets a fresh server with the benchmark brokers registered, so no
scenario inherits another's book. `limit` runs three times back to back against one
server: run 1 is the `limit` figure, and run 3 / run 1 shows whether the server stays
flat while its book and order history grow. One more `limit` run goes to the same
server answering a fixed order (`bench.ceiling`): the gap between the two is what an
order's own work costs, per request.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.report import Row
from bench.server import Server, running_server
from bench.wrk import WrkResult, run_wrk

# The only refusals a scenario may produce: cancelling an order that filled (or was
# cancelled) meanwhile, and a market order meeting an empty side.
EXPECTED = {
    "healthz": frozenset(),
    "limit": frozenset(),
    "mixed": frozenset({"409 order_not_cancellable", "409 no_liquidity"}),
}
SOCKET_ERRORS = ("connect", "read", "write", "timeout")
CEILING_APP = "bench.ceiling:app"
LIMIT_TARGET = 0.60  # of healthz


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


def measured(server: Server, scenario: str, duration_s: float) -> WrkResult:
    """One wrk run, with the CPU time the server worker spent on it."""
    cpu_before, switches_before = server.cpu_seconds(), server.context_switches()
    result = run_wrk(scenario, server.url, duration_s)
    result.server_cpu_s = server.cpu_seconds() - cpu_before
    result.server_switches = server.context_switches() - switches_before
    return result


def run_scenarios(duration_s: float, log: Callable[[str], None] = print) -> dict[str, WrkResult]:
    """Run every scenario; keys: healthz, limit1, limit2, limit3, mixed, ceiling."""
    results: dict[str, WrkResult] = {}
    with running_server() as server:
        log(f"http: healthz, {duration_s:g} s ...")
        results["healthz"] = measured(server, "healthz", duration_s)
        log(f"  {_describe(results['healthz'])}")
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
    ceiling = healthz.rps or 1.0
    limit_share = limit.rps / ceiling
    mixed_share = mixed.rps / ceiling
    growth = results["limit3"].rps / (limit.rps or 1.0)

    fixed = results["ceiling"]
    fixed_us = 1e6 / (fixed.per_cpu_s or 1.0)  # worker CPU per request, fixed answer
    order_work_us = 1e6 / (limit.per_cpu_s or 1.0) - fixed_us
    budget_us = 1e6 / (LIMIT_TARGET * healthz.per_cpu_s or 1.0) - fixed_us

    def cpu_share(result: WrkResult, of: WrkResult) -> str:
        # The same share per CPU-second of the worker: what a busy machine distorts least.
        share = result.per_cpu_s / (of.per_cpu_s or 1.0)
        return f"{result.per_cpu_s:,.0f} per worker CPU-s, {share:.0%}"

    limit_bad = unexpected(limit)
    mixed_bad = unexpected(mixed)
    healthz_bad = unexpected(healthz)
    mixed_expected = {k: n for k, n in mixed.non_2xx().items() if k in EXPECTED["mixed"]}
    limit_created = limit.count("201")
    return [
        Row(
            "http healthz: req/s (the ceiling)",
            f"{healthz.rps:,.0f} ({healthz.per_cpu_s:,.0f} per worker CPU-s)",
        ),
        Row(
            "http healthz: p50 / p99",
            f"{healthz.p50_ms:.2f} ms / {healthz.p99_ms:.2f} ms",
            "",
            None,
        ),
        Row(
            "http healthz: non-2xx + socket errors", _fmt_counts(healthz_bad), "0", not healthz_bad
        ),
        Row(
            "http limit: req/s (run 1)",
            f"{limit.rps:,.0f} ({limit_share:.0%} of healthz; {cpu_share(limit, healthz)})",
            "≥ 60% of healthz",
            limit_share >= LIMIT_TARGET,
        ),
        Row(
            "http limit: p50 / p99",
            f"{limit.p50_ms:.2f} ms / {limit.p99_ms:.2f} ms",
            "p99 < 10 ms",
            limit.p99_ms < 10.0,
        ),
        Row("http limit: non-2xx + socket errors", _fmt_counts(limit_bad), "0", not limit_bad),
        Row(
            "http limit ceiling: POST /orders answering a fixed order",
            f"{fixed.rps:,.0f} req/s ({fixed.rps / ceiling:.0%} of healthz; "
            f"{cpu_share(fixed, healthz)}), p99 {fixed.p99_ms:.2f} ms",
        ),
        Row(
            "http limit: an order's own work, worker CPU per request",
            f"{order_work_us:,.0f} µs (60% of healthz leaves it {budget_us:,.0f} µs)",
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
            f"{mixed.rps:,.0f} ({mixed_share:.0%} of healthz; {cpu_share(mixed, healthz)})",
            "≥ 50% of healthz",
            mixed_share >= 0.50,
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
        median = sorted(results, key=lambda result: result.rps)[len(results) // 2]
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
