"""`GET /metrics` with `ENGINE=ray`: one page for the whole exchange, whichever worker
takes the scrape.

The facts are counted where they happen, in several processes:

- the gunicorn workers: the HTTP families. prometheus-client's multiprocess mode keeps
  each worker's values in a file of `PROMETHEUS_MULTIPROC_DIR` (one directory per
  gunicorn, set up by `config/gunicorn.conf.py`). The worker that takes the scrape reads
  its own gunicorn's directory; every other gunicorn (on another machine, or another on
  this one) has a `DirectoryReader`, a small Ray actor on its machine that reads its
  directory, asked like a host;
- the shards: orders, trades, resting orders (account and symbol hosts), webhook
  deliveries (the account hosts' pools); the sequencer: the orders it refuses at the
  cut, the journal's commits. One call per host and scrape (`metric_samples`), all at
  once.

The page is their sum (`metrics.merged`): each family once, with its help and type,
also before it has a series.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from miniexchange.cluster.head import NAMESPACE, import_ray
from miniexchange.metrics import Family, Metrics, exposition, merged, multiprocess_directory

log = logging.getLogger("miniexchange.cluster")

SCRAPE_TIMEOUT_S: Final = 2.0
"""How long a scrape waits for a host's figures: well under Prometheus' default scrape
timeout (10 s), so that one slow host costs the page its figures, not the whole page."""


READER_PREFIX: Final = "miniexchange/metrics-"
"""The Ray names of the gunicorns' `DirectoryReader`s: the prefix, the machine's name and
the gunicorn master's pid."""
READY_S: Final = 60.0
"""How long a worker's start waits for its gunicorn's reader (a new Ray process)."""
WATCH_S: Final = 2.0
"""How often a reader checks that its gunicorn still runs."""


def reader_name(master_pid: int) -> str:
    return f"{READER_PREFIX}{socket.gethostname()}-{master_pid}"


class DirectoryReader:
    """One gunicorn's workers' families, read from their directory on their machine, for
    a scrape taken by another gunicorn's worker. A Ray actor placed on that machine,
    detached (a worker that ends does not take it along), that ends itself once the
    gunicorn master is gone."""

    def __init__(self, directory: str, master_pid: int) -> None:
        self._directory = directory
        self._metrics = Metrics()  # every family's help and type
        watch = threading.Thread(target=self._watch, args=(master_pid,), daemon=True)
        watch.start()

    def metric_samples(self) -> list[Family] | None:
        """The workers' families; None once their directory is gone."""
        try:
            return self._metrics.workers_families(self._directory)
        except (OSError, ValueError):  # removed at the gunicorn's exit
            return None

    @staticmethod
    def _watch(master_pid: int) -> None:
        while _running(master_pid):
            time.sleep(WATCH_S)
        ray = import_ray()
        ray.kill(ray.get_runtime_context().current_actor)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it runs
        return True
    return True


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
        self._reader: str | None = None  # this gunicorn's reader: its workers read locally
        self._readers: dict[str, Any] = {}  # every reader seen, by name

    def start(self) -> None:
        """A served worker (its values in a directory): its gunicorn's `DirectoryReader`
        on this machine, started by the first of its workers (the others find it)."""
        directory = multiprocess_directory()
        if directory is None:
            return
        ray = import_ray()
        master = os.getppid()  # a gunicorn worker's parent is its master
        self._reader = reader_name(master)
        here = ray.get_runtime_context().get_node_id()
        reader = (
            ray.remote(DirectoryReader)
            .options(
                name=self._reader,
                namespace=NAMESPACE,
                get_if_exists=True,
                lifetime="detached",
                max_restarts=0,
                num_cpus=0,
                scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                    here, soft=False
                ),
            )
            .remote(directory, master)
        )
        try:  # ready before this worker serves: the first scrapes elsewhere find it answering
            ray.get(reader.__ray_ready__.remote(), timeout=READY_S)
        except Exception:  # the scrapes leave it out until it answers
            log.warning("the metrics reader %s is not ready", self._reader, exc_info=True)

    async def page(self) -> bytes:
        """Every process's figures, summed. A host or reader that does not answer
        within the timeout, is down, or is closed (being rebuilt) is left out of this
        page rather than failing it: its figures are missing until it answers again (a
        Prometheus counter then seems to drop, which `rate` reads as a reset)."""
        readers = await asyncio.to_thread(self._other_readers)
        answers = await asyncio.gather(
            *(self._figures(process) for process in (*self._hosts(), *readers))
        )
        return exposition(merged(self.own_families(), *(a for a in answers if a is not None)))

    def _other_readers(self) -> list[Any]:
        """The readers of the other gunicorns running now (Ray lists live actors only)."""
        ray = import_ray()
        names = [
            entry["name"]
            for entry in ray.util.list_named_actors(all_namespaces=True)
            if entry["namespace"] == NAMESPACE
            and entry["name"].startswith(READER_PREFIX)
            and entry["name"] != self._reader
        ]
        self._readers = {name: h for name, h in self._readers.items() if name in names}
        readers = []
        for name in names:
            handle = self._readers.get(name)
            if handle is None:
                try:
                    handle = self._readers[name] = ray.get_actor(name, namespace=NAMESPACE)
                except ValueError:  # ended since it was listed
                    continue
            readers.append(handle)
        return readers

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
