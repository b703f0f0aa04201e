"""`GET /metrics` with `ENGINE=ray`: one page for the whole exchange, whichever worker
takes the scrape.

The facts are counted where they happen, in several processes:

- the gunicorn workers: the HTTP families. prometheus-client's multiprocess mode keeps
  each worker's values in a file of `PROMETHEUS_MULTIPROC_DIR` (one directory per
  gunicorn, set up by `config/gunicorn.conf.py`), and the worker that takes the scrape
  reads them all: the workers of its own machine;
- the shards: orders, trades, resting orders (account and symbol hosts), webhook
  deliveries (the account hosts' pools); the sequencer: the orders it refuses at the
  cut, the journal's commits. One call per host and scrape (`metric_samples`), all at
  once.

The page is their sum (`metrics.merged`): each family once, with its help and type,
also before it has a series.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Final

from miniexchange.metrics import Family, Metrics, exposition, merged, multiprocess_directory

SCRAPE_TIMEOUT_S: Final = 2.0
"""How long a scrape waits for a host's figures: well under Prometheus' default scrape
timeout (10 s), so that one slow host costs the page its figures, not the whole page."""


class ClusterMetrics(Metrics):
    """A worker's families (the HTTP ones move here), and the page of every process."""

    def __init__(
        self,
        hosts: Callable[[], Sequence[Any]],
        journal: bool = False,
        timeout_s: float = SCRAPE_TIMEOUT_S,
    ) -> None:
        """`hosts`: the handles of the sequencer and the shards, asked at each scrape.
        `journal`: the page has the journal's family from the start (the sequencer's
        commits fill it)."""
        super().__init__(journal)
        self._hosts = hosts
        self._timeout_s = timeout_s

    async def page(self) -> bytes:
        """Every process's figures, summed. A host that does not answer within the
        timeout, is down, or is closed (being rebuilt) is left out of this page rather
        than failing it: its figures are missing until it answers again (a Prometheus
        counter then seems to drop, which `rate` reads as a reset)."""
        answers = await asyncio.gather(*(self._figures(host) for host in self._hosts()))
        return exposition(merged(self.own_families(), *(a for a in answers if a is not None)))

    def own_families(self) -> list[Family]:
        """The workers' families: every worker of this machine's gunicorn when their
        values live in files (`PROMETHEUS_MULTIPROC_DIR`), else this process's."""
        directory = multiprocess_directory()
        return self.families() if directory is None else self.workers_families(directory)

    async def _figures(self, host: Any) -> list[Family] | None:
        async def asked() -> list[Family] | None:
            figures: list[Family] | None = await host.metric_samples.remote()
            return figures

        try:
            return await asyncio.wait_for(asked(), self._timeout_s)
        except Exception:  # down, restarting, slow: this page goes without it
            return None
