"""`make run-ray`: the exchange with `ENGINE=ray` on this machine, as one foreground
command that an operator stops with SIGTERM or Ctrl-C, as they stop `make run`.

In order: a local head (`cluster.head.start_head`: loopback only, no usage statistics,
no dashboard), unless `RAY_ADDRESS` names one already running (a head started with
`ray start --head`, which other machines may join); the hosts (`cluster.hosts`: the
sequencer with its journal, `ACCOUNT_SHARDS` account shards, `SYMBOL_SHARDS` symbol
shards); then gunicorn with `WORKERS` workers, each joining the head. A stop runs the
other way: gunicorn first (its workers finish their requests), then the hosts, then the
head if this command started it.

The hosts belong to this command's Ray driver: they end when it ends. Another machine's
workers join them with `ENGINE=ray RAY_ADDRESS=<head> gunicorn -c
config/gunicorn.conf.py` (README, "Running on Ray").

A start over a journal rebuilds the shards from it before the workers start: the
sequencer sends its batches again (`SequencerHost.replay`); so does a shard's process
that Ray restarted after it died.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from types import FrameType

from miniexchange.cluster.head import Head, connect, disconnect, import_ray, start_head
from miniexchange.cluster.hosts import Hosts, count_delivery, start_hosts
from miniexchange.cluster.shards import Placement
from miniexchange.cluster.snapshot_file import read_cluster_snapshot, snapshot_file
from miniexchange.journal.store import JournalFormatError, SqliteJournal
from miniexchange.metrics import MULTIPROC_DIR
from miniexchange.settings import Settings, SettingsError, load_settings
from miniexchange.webhooks.delivery import DeliveryPool

GUNICORN_CONFIG = Path(__file__).resolve().parents[2] / "config" / "gunicorn.conf.py"

EXIT_SETTINGS = 2  # as gunicorn's configuration exits on a bad variable
EXIT_REFUSED = 3  # as a worker refusing its journal (gunicorn's boot error)


def say(message: str) -> None:
    print(f"miniexchange: {message}", file=sys.stderr, flush=True)


def refusal_of_journal(settings: Settings) -> str | None:
    """Why the journal at DATABASE_PATH must not be opened (another engine's, a newer
    format, damaged), or None: one line now, rather than a sequencer failing to start."""
    if not settings.journal_enabled or not Path(settings.database_path).exists():
        return None
    journal = SqliteJournal(settings.database_path, engine="ray")
    try:
        next(journal.facts(), None)
        read_cluster_snapshot(
            snapshot_file(settings.database_path),
            Placement(settings.account_shards, settings.symbol_shards),
        )
    except JournalFormatError as refused:
        return str(refused)
    finally:
        journal.close()
    return None


def started_hosts(settings: Settings) -> Hosts:
    """The sequencer and the shards, rebuilt from the journal and open."""
    hosts = start_hosts(
        Placement(settings.account_shards, settings.symbol_shards),
        partial(DeliveryPool, settings, on_outcome=count_delivery),
        settings.database_path,
        settings.max_symbols,
        settings.expiration_interval_us,
        settings.vwap_window_us,
        idempotency_max_keys=settings.idempotency_max_keys,
        idempotency_ttl_us=settings.idempotency_ttl_us,
        snapshot_interval_us=settings.snapshot_interval_us,
    )
    if hosts.replayed:
        say(f"the shards rebuilt from {hosts.replayed} batches of {settings.database_path}")
    return hosts


def stopped_hosts(hosts: Hosts) -> None:
    """Each shard stops its actors and delivery pool; the driver's end ends them all."""
    ray = import_ray()
    with contextlib.suppress(Exception):  # a host already gone has nothing to stop
        ray.get([shard.stop.remote() for shard in (*hosts.accounts, *hosts.symbols)])


def serve(settings: Settings) -> int:
    """Run until gunicorn ends; its exit status."""
    # the gunicorn workers' metrics directory (`config/gunicorn.conf.py` makes a fresh
    # one, or empties the one given), for gunicorn only: a Ray process started with it
    # (the head, the hosts) would keep its values there too, and the workers would count
    # the shards' figures twice
    metrics_directory = os.environ.pop(MULTIPROC_DIR, None)
    head: Head | None = None
    address = settings.ray_address
    if address is None:
        head = start_head()
        address = head.address
    try:
        connect(address)
        hosts = started_hosts(settings)
        say(
            f"Ray head at {address}: a sequencer, {settings.account_shards} account "
            f"shard(s), {settings.symbol_shards} symbol shard(s); {settings.workers} worker(s)"
        )
        try:
            return run_gunicorn(address, metrics_directory)
        finally:
            stopped_hosts(hosts)
            disconnect()
    finally:
        if head is not None:
            head.stop()


def run_gunicorn(address: str, metrics_directory: str | None = None) -> int:
    """gunicorn in the foreground, told to stop (SIGTERM) when this command is.
    `metrics_directory`: the operator's `PROMETHEUS_MULTIPROC_DIR` (None: a temporary
    one, made by gunicorn's configuration)."""
    gunicorn = Path(sys.executable).with_name("gunicorn")
    environment = {**os.environ, "ENGINE": "ray", "RAY_ADDRESS": address}
    if metrics_directory is not None:
        environment[MULTIPROC_DIR] = metrics_directory
    process = subprocess.Popen([str(gunicorn), "-c", str(GUNICORN_CONFIG)], env=environment)

    def stop(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    return process.wait()


def main() -> int:
    # SIGTERM before gunicorn runs (a slow start stopped) must unwind through the
    # `finally` blocks that stop the head; Python's default would leave it running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        settings = load_settings({**os.environ, "ENGINE": "ray"})
    except SettingsError as error:
        print(error, file=sys.stderr)
        return EXIT_SETTINGS
    refused = refusal_of_journal(settings)
    if refused is not None:
        say(refused)
        return EXIT_REFUSED
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
