"""One `/metrics` page from several processes' families (`metrics.merged`,
`metrics.exposition`): each family once with its help and type, every sample summed by
name and labels; and the gunicorn workers' values read from prometheus-client's
multiprocess directory, in processes of their own (the mode is chosen at import)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from miniexchange.metrics import Family, Metrics, exposition, merged
from tests.http.test_metrics import Scrape, labels

ROOT = Path(__file__).resolve().parents[1]

ORDERS_HELP = "Orders, by side and outcome."
WAIT_HELP = "Time waited."


def orders(*samples: tuple[str, str, float]) -> Family:
    return (
        "orders",
        "counter",
        ORDERS_HELP,
        [
            ("orders_total", (("side", side), ("outcome", outcome)), n)
            for side, outcome, n in samples
        ],
    )


def waits(route: str, buckets: tuple[float, float, float], total: float) -> Family:
    """A histogram's series as prometheus-client collects it: cumulative buckets, count, sum."""
    bounds = ("0.1", "1.0", "+Inf")
    return (
        "wait_seconds",
        "histogram",
        WAIT_HELP,
        [
            *(
                ("wait_seconds_bucket", (("route", route), ("le", le)), n)
                for le, n in zip(bounds, buckets, strict=True)
            ),
            ("wait_seconds_count", (("route", route),), buckets[-1]),
            ("wait_seconds_sum", (("route", route),), total),
        ],
    )


def resting(symbol: str, bids: float) -> Family:
    return ("resting", "gauge", "Orders resting.", [("resting", (("symbol", symbol),), bids)])


def test_counters_histograms_and_gauges_are_summed_with_help_and_type_once() -> None:
    worker_one = [orders(("bid", "accepted", 2)), waits("/a", (1, 2, 3), 1.5)]
    worker_two = [
        ("orders", "counter", ORDERS_HELP, []),  # described, no series yet
        waits("/b", (0, 0, 1), 4.0),
        waits("/a", (0, 1, 1), 0.5),
    ]
    shard = [
        # the same labels in another order: the same series
        (
            "orders",
            "counter",
            ORDERS_HELP,
            [
                ("orders_total", (("outcome", "accepted"), ("side", "bid")), 3),
                ("orders_total", (("outcome", "no_liquidity"), ("side", "ask")), 1),
            ],
        ),
        resting("AAPL", 4),
        ("quiet", "counter", "Nothing yet.", []),
    ]
    other_shard = [resting("MSFT", 1), resting("AAPL", 0)]
    page = exposition(merged(worker_one, worker_two, shard, other_shard)).decode()
    assert page == (
        "# HELP orders_total Orders, by side and outcome.\n"
        "# TYPE orders_total counter\n"
        'orders_total{outcome="accepted",side="bid"} 5.0\n'
        'orders_total{outcome="no_liquidity",side="ask"} 1.0\n'
        "# HELP wait_seconds Time waited.\n"
        "# TYPE wait_seconds histogram\n"
        'wait_seconds_bucket{le="0.1",route="/a"} 1.0\n'
        'wait_seconds_bucket{le="1.0",route="/a"} 3.0\n'
        'wait_seconds_bucket{le="+Inf",route="/a"} 4.0\n'
        'wait_seconds_count{route="/a"} 4.0\n'
        'wait_seconds_sum{route="/a"} 2.0\n'
        'wait_seconds_bucket{le="0.1",route="/b"} 0.0\n'
        'wait_seconds_bucket{le="1.0",route="/b"} 0.0\n'
        'wait_seconds_bucket{le="+Inf",route="/b"} 1.0\n'
        'wait_seconds_count{route="/b"} 1.0\n'
        'wait_seconds_sum{route="/b"} 4.0\n'
        "# HELP resting Orders resting.\n"
        "# TYPE resting gauge\n"
        'resting{symbol="AAPL"} 4.0\n'
        'resting{symbol="MSFT"} 1.0\n'
        "# HELP quiet_total Nothing yet.\n"
        "# TYPE quiet_total counter\n"
    )


def test_a_family_of_another_type_under_a_known_name_is_left_out() -> None:
    other: Family = ("orders", "gauge", "Another help.", [("orders", (("side", "bid"),), 9)])
    page = exposition(merged([orders(("bid", "accepted", 1))], [other]))
    assert page.decode() == (
        "# HELP orders_total Orders, by side and outcome.\n"
        "# TYPE orders_total counter\n"
        'orders_total{outcome="accepted",side="bid"} 1.0\n'
    )


def test_one_process_merged_alone_is_its_own_page() -> None:
    """The embedded page (`Metrics.render`) and the merged one of the same registry agree."""
    metrics = Metrics(journal=True)
    metrics.observe_request("POST", "/orders", 201, 0.002)
    metrics.count_order("limit", "bid", "accepted")
    metrics.count_trades("AAPL", ())
    metrics.watch_resting("AAPL", lambda: 3, lambda: 0)
    metrics.observe_journal_commit(0.0004, 2)
    assert exposition(merged(metrics.families())) == metrics.render()


def test_the_page_of_two_registries_sums_them() -> None:
    one, two = Metrics(), Metrics()
    for metrics, count in ((one, 2), (two, 3)):
        for _ in range(count):
            metrics.count_order("market", "ask", "accepted")
            metrics.observe_request("GET", "/stocks", 200, 0.004)
    one.watch_resting("AAPL", lambda: 2, lambda: 1)
    two.watch_resting("MSFT", lambda: 0, lambda: 5)
    page = Scrape(exposition(merged(one.families(), two.families())).decode())
    assert page.samples("miniexchange_orders") == {
        labels(type="market", side="ask", outcome="accepted"): 5
    }
    assert page.samples("miniexchange_http_requests") == {
        labels(method="GET", route="/stocks", status="200"): 5
    }
    assert page.samples("miniexchange_http_request_duration_seconds", "_count") == {
        labels(method="GET", route="/stocks"): 5
    }
    assert page.samples("miniexchange_resting_orders") == {
        labels(symbol="AAPL", side="bid"): 2,
        labels(symbol="AAPL", side="ask"): 1,
        labels(symbol="MSFT", side="bid"): 0,
        labels(symbol="MSFT", side="ask"): 5,
    }


# -- the workers' values in files: prometheus-client's multiprocess mode --------------------

COUNT_REQUESTS = """
import sys
from miniexchange.metrics import Metrics, multiprocess_directory
assert multiprocess_directory() is not None  # the values live in files
metrics = Metrics()
for _ in range(int(sys.argv[1])):
    metrics.observe_request("POST", "/orders", 201, 0.001)
"""

READ_EVERY_WORKER = """
from miniexchange.metrics import Metrics, exposition, multiprocess_directory
metrics = Metrics()
metrics.observe_request("GET", "/stocks", 200, 0.001)  # this process's own, in its file
print(exposition(metrics.workers_families(multiprocess_directory())).decode(), end="")
"""


def run(script: str, directory: Path | None, *args: str) -> str:
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    if directory is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_workers_values_are_read_from_the_directory_and_summed(tmp_path: Path) -> None:
    run(COUNT_REQUESTS, tmp_path, "3")  # two workers that have ended
    run(COUNT_REQUESTS, tmp_path, "4")
    page = Scrape(run(READ_EVERY_WORKER, tmp_path))
    assert page.samples("miniexchange_http_requests") == {
        labels(method="POST", route="/orders", status="201"): 7,
        labels(method="GET", route="/stocks", status="200"): 1,
    }
    assert page.samples("miniexchange_http_request_duration_seconds", "_count") == {
        labels(method="POST", route="/orders"): 7,
        labels(method="GET", route="/stocks"): 1,
    }
    buckets = page.samples("miniexchange_http_request_duration_seconds", "_bucket")
    assert buckets[labels(method="POST", route="/orders", le="0.001")] == 7
    assert buckets[labels(method="POST", route="/orders", le="0.0005")] == 0
    # every family is described, also those no worker counted
    for family in ("miniexchange_orders", "miniexchange_resting_orders", "miniexchange_trades"):
        assert page.families[family].samples == []


def test_a_variable_set_after_the_import_changes_nothing(tmp_path: Path) -> None:
    """prometheus-client chose memory at import: the directory is not taken for this
    process's values (they would be missing from it)."""
    script = (
        "import os\n"
        "from miniexchange.metrics import multiprocess_directory\n"
        f"os.environ['PROMETHEUS_MULTIPROC_DIR'] = {str(tmp_path)!r}\n"
        "print(multiprocess_directory())\n"
    )
    assert run(script, None) == "None\n"
