"""gunicorn configuration: code that reads the environment (every setting is an
environment variable, see config/example.env), not a settings file.

Run: `gunicorn -c config/gunicorn.conf.py` (what `make run` and the Dockerfile do).
The settings are validated here, in the master, before anything starts: a bad variable
stops gunicorn with its one-line message and exit status 2. The app reads the same
environment again in its worker at lifespan startup.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from miniexchange.settings import SettingsError, load_settings, to_seconds

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

try:
    settings = load_settings()
except SettingsError as error:
    print(error, file=sys.stderr)
    sys.exit(2)  # SystemExit passes through gunicorn's config loader: it stops here

# Extra time gunicorn allows, after the in-flight requests' SHUTDOWN_TIMEOUT, for the app's
# lifespan shutdown (stop the clock, the actors, the journal) before it SIGKILLs the worker.
SHUTDOWN_MARGIN_S = 5

wsgi_app = "miniexchange.http.app:app"  # the Falcon ASGI app, despite gunicorn's name
# loop and http: `post_worker_init` sets uvloop accepting in batches and our httptools protocol
worker_class = "uvicorn_worker.UvicornWorker"
# ENGINE=embedded: all exchange state (books, balances, subscriptions) lives in the one
# worker process. ENGINE=ray: the state lives in the cluster's shards and any worker may
# take any request, so WORKERS of them (`make run-ray` starts the cluster first).
EMBEDDED = settings.engine == "embedded"
workers = 1 if EMBEDDED else settings.workers
preload_app = False  # actors start (or Ray is joined) in the worker's lifespan, never here


MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # a name, not an import: see below


def fresh_metrics_directory(given: str | None) -> tuple[str, bool]:
    """The directory the workers' metric values live in, emptied of an earlier run's
    files (their counters would be added to this run's), and whether it is a temporary
    one made here (removed at exit)."""
    if not given:
        return tempfile.mkdtemp(prefix="miniexchange-metrics-"), True
    directory = Path(given)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    return str(directory), False


# ENGINE=ray: any worker may take a scrape, so each keeps its metric values in a file of
# one directory (prometheus-client's multiprocess mode) and the one scraped reads them all
# (`cluster.scrape`). prometheus-client picks where values live when it is first imported,
# so `on_starting` sets the variable in the master, before any worker exists (nothing here
# imports prometheus-client; the workers import it after they fork).
# ENGINE=embedded: one worker, its values in memory, no directory.
METRICS_DIRECTORY: str | None = None
METRICS_DIRECTORY_IS_TEMPORARY = False
max_requests = 0  # a recycled embedded worker would lose the in-memory state
control_socket_disable = True  # its commands can change the worker count at run time

bind = f"0.0.0.0:{settings.port}"
# Seconds without a heartbeat before the master kills the worker. The uvicorn worker beats
# from its event loop, so this bounds a blocked loop, and also app import + lifespan startup
# (journal recovery): keep recovery well below it.
timeout = 120
# uvicorn's timeout_keep_alive; the exchange's protocol uses IDLE_TIMEOUT itself, unrounded
keepalive = math.ceil(to_seconds(settings.idle_timeout_us))
graceful_timeout = math.ceil(to_seconds(settings.shutdown_timeout_us)) + SHUTDOWN_MARGIN_S

loglevel = {"warn": "warning"}.get(settings.log_level, settings.log_level)
# The app writes its own access line (`http.observability`). With no gunicorn access
# log, the uvicorn worker gives `uvicorn.access` no handler (and no propagation), and
# uvicorn writes an access line only when that logger has a handler: none is written.
accesslog = None
# gunicorn's own lines (and uvicorn's `uvicorn.error`, which the worker points at the same
# handler, not propagating) go to standard error; standard output is the app's JSON lines.
errorlog = "-"
proc_name = "miniexchange"
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"  # the heartbeat file; a disk-backed /tmp can stall it


# Every connection's kernel send buffer is capped (Linux doubles the value: 512 KiB in all)
# instead of growing to the 4 MiB that autotuning allows. A client that stops reading, an
# event stream's reader above all, then pins little kernel memory, and the stream's
# own limit (1000 unsent trade events) takes effect after ~1 MiB of events rather than ~5.
# Responses here are small; 512 KiB in flight still fills any link the exchange serves.
SEND_BUFFER_BYTES = 256 * 1024


def when_ready(server: Arbiter) -> None:
    """Cap the send buffer on the listening sockets: accepted connections inherit it."""
    for listener in server.LISTENERS:
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


def _refuse(message: str) -> None:
    print(f"miniexchange: {message}", file=sys.stderr)
    sys.exit(2)


def on_starting(server: Arbiter) -> None:
    """Embedded: refuse more than one worker (`-w`, `--workers` and GUNICORN_CMD_ARGS
    override this file). Ray: refuse to start with no head to join, else set up the
    workers' metrics directory. Make SIGINT stop as gracefully as SIGTERM."""
    # gunicorn's SIGINT is a "quick" stop that sends the worker SIGQUIT, which the uvicorn
    # worker does not act on: it went on serving until the graceful timeout and was then
    # SIGKILLed with requests in flight. A second SIGINT still forces a quick stop.
    server.handle_int = server.handle_term  # type: ignore[method-assign]
    global METRICS_DIRECTORY, METRICS_DIRECTORY_IS_TEMPORARY
    if not EMBEDDED:
        if settings.ray_address is None:
            _refuse(
                "ENGINE=ray needs RAY_ADDRESS, the head the workers join: `make run-ray` "
                "starts a head and the shards, then these workers"
            )
        METRICS_DIRECTORY, METRICS_DIRECTORY_IS_TEMPORARY = fresh_metrics_directory(
            os.environ.get(MULTIPROC_DIR)
        )
        os.environ[MULTIPROC_DIR] = METRICS_DIRECTORY
        return
    if server.cfg.workers != 1:
        _refuse(
            f"refusing to start with {server.cfg.workers} workers: all exchange state "
            "(order books, balances, subscriptions) lives in the one worker process, so more "
            "workers would split the books; run with one worker (no -w/--workers on the command line or in GUNICORN_CMD_ARGS)"
        )


def child_exit(server: Arbiter, worker: Worker) -> None:
    """ENGINE=ray: a worker that ended is marked dead in the metrics directory (its
    counters stay in the sums; only live gauges, which none of its families are, would
    be dropped)."""
    if METRICS_DIRECTORY is not None:
        from prometheus_client import multiprocess  # after the variable: files, not memory

        multiprocess.mark_process_dead(worker.pid, METRICS_DIRECTORY)


def on_exit(server: Arbiter) -> None:
    """Remove the temporary metrics directory made for this run."""
    if METRICS_DIRECTORY is not None and METRICS_DIRECTORY_IS_TEMPORARY:
        shutil.rmtree(METRICS_DIRECTORY, ignore_errors=True)


def nworkers_changed(server: Arbiter, new_value: int, old_value: int | None) -> None:
    """Undo a run-time increase (SIGTTIN): a second worker would hold a second exchange."""
    if EMBEDDED and old_value is not None and new_value > 1:
        server.log.error(
            "miniexchange: ignoring a request for %d workers: the exchange runs in exactly one",
            new_value,
        )
        server.num_workers = 1


def post_worker_init(worker: Worker) -> None:
    """Bound uvicorn's wait for in-flight requests at shutdown by SHUTDOWN_TIMEOUT,
    serve connections with the exchange's protocol (its limits on header size and time,
    body time and connections at once: `miniexchange/http/protocol.py`), and run uvloop
    with new connections accepted in batches (`miniexchange/http/accept.py`).

    The uvicorn worker passes no graceful-shutdown timeout of its own: without this it
    waits for open requests until gunicorn kills it, and the lifespan shutdown never runs.
    Its config is loaded (the protocol class resolved) only when the server starts, after
    this hook.
    """
    config = getattr(worker, "config", None)  # uvicorn.Config, read again at shutdown
    if config is not None:
        from miniexchange.http.protocol import serving_protocol  # in the worker only

        config.timeout_graceful_shutdown = to_seconds(settings.shutdown_timeout_us)
        config.http = serving_protocol(settings)
        config.loop = "miniexchange.http.accept:ExchangeLoop"  # new connections in batches
