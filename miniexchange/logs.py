"""The exchange's logs (contract §6.3): one line per record on standard output.

Why it is built this way:

- Records are handed to a bounded queue (`logging.handlers.QueueHandler`) and ONE
  writer thread formats and writes them every 50 ms, flushing once per round. A slow
  or blocked stdout (a full pipe, a stalled log shipper) then never blocks the event
  loop or an actor, and handing a record over never wakes a thread; if the queue is
  full, records are dropped and counted, and the writer says how many once it can
  write again (memory stays bounded).
- The emitting thread only renders the message (its arguments may change later) and
  notes the request id; JSON or text is produced on the listener thread.
- `request_id` comes from `extra=` when the caller knows it (a webhook delivery logs the
  id of the request that caused it, `None` for an expiry sweep), else from the context
  variable that the HTTP middleware sets for the request being handled (so every line
  written while handling a request carries it). Threads (actors, the journal writer,
  delivery threads) do not see the event loop's context: they pass it explicitly.
- Logging is configured in the worker at lifespan startup (`configure_logging`), never
  at import, so tests and tools that import the app keep their own logging.

`LOG_FORMAT=json`: one JSON object per line with `ts` (UTC, RFC 3339, milliseconds, `Z`),
`level`, `event` (from `extra={"event": ...}`, else `log`), `message`, `logger`, every
`extra` field, and `exc_info` (the traceback text) when there is one. `LOG_FORMAT=text`:
`<ts> <level> <event> <message> key=value ...`. Nothing here ever logs `WEBHOOK_SECRET`
or a request body: the `startup` event lists `Settings.public_items()`, where secrets are
`"<set>"`.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import logging.handlers
import queue
import sys
import threading
import time
from collections.abc import Callable
from enum import Enum
from typing import IO, Any, Final, NamedTuple

import orjson

from miniexchange.settings import Settings

__all__ = [
    "QUEUE_LIMIT",
    "AccessLine",
    "JsonFormatter",
    "LogSetup",
    "RequestIdFilter",
    "TextFormatter",
    "configure_logging",
    "log_access",
    "request_id_var",
]

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "miniexchange_request_id", default=None
)
"""The id of the request being handled on this task (set by the HTTP middleware)."""

QUEUE_LIMIT: Final = 100_000
"""Records waiting for the listener at most; past it new records are dropped, counted."""

WRITE_INTERVAL_S: Final = 0.05
"""How often the writer thread writes what was queued: a line appears at most this late."""

DEFAULT_EVENT: Final = "log"

ACCESS_LOGGER: Final = "miniexchange.http"
ACCESS_EVENT: Final = "request"


class NotLogged(Enum):
    """A field that this mode does not log (the access line's `broker_id` without API keys)."""

    NOT_LOGGED = "not logged"


NOT_LOGGED: Final = NotLogged.NOT_LOGGED


class AccessLine(NamedTuple):
    """One access line (§6.3) on its way to the writer thread.

    The access line is the one record of every request; made as a `LogRecord` it cost
    about 15 µs of the request's thread (logger, record, filters, handler), a fifth of
    a bare `GET /healthz` in the worker. Once `configure_logging` runs, it is handed to
    the writer as this tuple instead, and the formatter renders it exactly as it would
    the record (`tests/test_logs.py` compares the two)."""

    created: float  # seconds since the epoch, like LogRecord.created
    request_id: str
    method: str
    route: str
    path: str
    status: int
    duration_ms: float
    # with API keys on: the broker whose key was used (None: the admin, or no token)
    broker_id: str | NotLogged | None = NOT_LOGGED

    def extra(self) -> dict[str, Any]:
        """The line's fields after `logger`, as `extra=` would give them."""
        fields = {
            "request_id": self.request_id,
            "method": self.method,
            "route": self.route,
            "path": self.path,
            "status": self.status,
            "duration_ms": self.duration_ms,
        }
        if self.broker_id is not NOT_LOGGED:
            fields["broker_id"] = self.broker_id
        return fields

    def message(self) -> str:
        return f"{self.method} {self.path} {self.status}"


_access_sink: Callable[[AccessLine], None] | None = None
"""Where `log_access` hands lines once `configure_logging` installed the writer."""
_access_log = logging.getLogger(ACCESS_LOGGER)


def log_access(
    request_id: str,
    method: str,
    route: str,
    path: str,
    status: int,
    seconds: float,
    broker_id: str | NotLogged | None = NOT_LOGGED,
) -> None:
    """Write a request's access line (at `info`), the cheap way when the writer thread
    is ours, else through `logging` (tests, or an embedding that set up its own)."""
    line = AccessLine(
        time.time(), request_id, method, route, path, status, round(seconds * 1000, 3), broker_id
    )
    sink = _access_sink
    if sink is not None:
        sink(line)
    elif _access_log.isEnabledFor(logging.INFO):
        _access_log.info(
            "%s %s %d", method, path, status, extra={"event": ACCESS_EVENT, **line.extra()}
        )


LEVEL_NAMES: Final[dict[int, str]] = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",  # the word LOG_LEVEL uses
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}

_STANDARD_COUNT: Final = len(vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None)))
"""How many attributes `LogRecord.__init__` sets: they come first in a record's `__dict__`
(insertion order), so the `extra=` fields are found after them without scanning these."""
_RECORD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None))
) | {"message", "asctime", "taskName", "event"}
"""What every LogRecord has (and `event`, shown first); anything else came from `extra=`."""

_FIRST_KEYS: Final = ("ts", "level", "event", "message", "logger")


_second_cache: tuple[int, str] = (-1, "")


def utc_timestamp(created: float) -> str:
    """`created` (seconds since the epoch) as RFC 3339 UTC with milliseconds and `Z`.

    The formatted second is cached: lines come in bursts within one second."""
    global _second_cache
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    cached_second, prefix = _second_cache
    if cached_second != seconds:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second_cache = (seconds, prefix)
    return f"{prefix}.{millis:03d}Z"


def level_name(levelno: int) -> str:
    return LEVEL_NAMES.get(levelno) or logging.getLevelName(levelno).lower()


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's `extra=` fields (and the request id), in the order they were set."""
    attributes = _RECORD_ATTRIBUTES
    return {
        key: value
        for key, value in itertools.islice(vars(record).items(), _STANDARD_COUNT, None)
        if key not in attributes
    }


def _default(value: object) -> str:
    """orjson's fallback for values it does not know (a Path, an exception...)."""
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: `ts`, `level`, `event`, `message`, `logger`, extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": utc_timestamp(record.created),
            "level": level_name(record.levelno),
            "event": getattr(record, "event", None) or DEFAULT_EVENT,
            "message": record.getMessage(),
            "logger": record.name,
        }
        for key, value in extra_fields(record).items():
            if key not in _FIRST_KEYS:
                line[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = record.stack_info
        return orjson.dumps(line, default=_default, option=orjson.OPT_NON_STR_KEYS).decode()

    def format_access(self, access: AccessLine) -> str:
        line: dict[str, Any] = {
            "ts": utc_timestamp(access.created),
            "level": "info",
            "event": ACCESS_EVENT,
            "message": access.message(),
            "logger": ACCESS_LOGGER,
        }
        line.update(access.extra())
        return orjson.dumps(line).decode()


class TextFormatter(logging.Formatter):
    """A line for people: `<ts> <level> <event> <message> key=value ...` (+ traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None) or DEFAULT_EVENT
        parts = [
            utc_timestamp(record.created),
            f"{level_name(record.levelno):<5}",
            event,
            record.getMessage(),
        ]
        for key, value in extra_fields(record).items():
            parts.append(f"{key}={_text_value(value)}")
        line = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line

    def format_access(self, access: AccessLine) -> str:
        parts = [utc_timestamp(access.created), "info ", ACCESS_EVENT, access.message()]
        parts += [f"{key}={_text_value(value)}" for key, value in access.extra().items()]
        return " ".join(parts)


def _text_value(value: object) -> str:
    """Plain when unambiguous; JSON when the value has spaces, quotes or structure."""
    if value is None:
        return "null"
    if isinstance(value, bool | int | float):
        return orjson.dumps(value).decode()
    if isinstance(value, str) and value and not any(c in value for c in ' "=\n\t'):
        return value
    return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS).decode()


class RequestIdFilter(logging.Filter):
    """Adds the request id of the current task to records that do not carry one.

    Runs on the emitting thread (handler filters do), which is the only place the
    request's context variable can be read."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "request_id" not in vars(record):
            request_id = request_id_var.get()
            if request_id is not None:
                record.request_id = request_id
        return True


class _Enqueue(logging.handlers.QueueHandler):
    """The root logger's only handler: hands records over without blocking or raising.

    The queue is a `SimpleQueue` (C, no condition variable) bounded by its size: past
    `limit` waiting records a new one is dropped and counted. No handler lock is taken:
    the queue is thread-safe, and the record is ours alone (no other handler sees it),
    so it is prepared in place rather than copied."""

    def __init__(self, records: queue.SimpleQueue[Any], limit: int) -> None:
        super().__init__(records)  # type: ignore[arg-type]
        self.limit = limit
        self.dropped = 0
        self._dropped_lock = threading.Lock()

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        if self.filter(record):
            self.emit(record)
            return True
        return False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.enqueue(self.prepare(record))
        except Exception:
            self.handleError(record)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Render the message (its arguments may change once we return) and the
        traceback text here; keep `extra=` fields for the formatter."""
        record.message = record.getMessage()
        record.msg = record.message
        record.args = None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        records: queue.SimpleQueue[Any] = self.queue  # type: ignore[assignment]
        if records.qsize() < self.limit:
            records.put_nowait(record)
            return
        with self._dropped_lock:
            self.dropped += 1

    def take_dropped(self) -> int:
        with self._dropped_lock:
            dropped, self.dropped = self.dropped, 0
        return dropped


class _Writer(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes formatted lines without flushing each one: the listener flushes once the
    queue is empty, so a burst of records costs one write to stdout, not one each."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def write_access(self, access: AccessLine) -> None:
        formatter: JsonFormatter | TextFormatter = self.formatter  # type: ignore[assignment]
        try:
            self.stream.write(formatter.format_access(access) + "\n")
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": access.message()}))


class _Listener:
    """The one writer thread. It wakes every `WRITE_INTERVAL_S` (or at stop), writes
    every record queued meanwhile, reports records dropped on a full queue, and flushes
    once. A thread that woke for each record cost a thread hand-off per request (the
    access line) on the server's core; this costs one per interval."""

    def __init__(self, records: queue.SimpleQueue[Any], writer: _Writer, source: _Enqueue) -> None:
        self._records = records
        self._writer = writer
        self._source = source
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            stopping = self._stopping.wait(WRITE_INTERVAL_S)
            self._write_queued()
            if stopping:
                return

    def _write_queued(self) -> None:
        records, writer = self._records, self._writer
        wrote = False
        while True:
            try:
                record = records.get_nowait()
            except queue.Empty:
                break
            if type(record) is AccessLine:
                writer.write_access(record)
            else:
                writer.handle(record)
            wrote = True
        dropped = self._source.take_dropped() if self._source.dropped else 0
        if dropped:
            writer.handle(_dropped_note(dropped))
        if wrote or dropped:
            writer.flush()


def _dropped_note(dropped: int) -> logging.LogRecord:
    note = logging.LogRecord(
        "miniexchange.logs", logging.WARNING, __file__, 0,
        "%d log records dropped: standard output did not keep up", (dropped,), None,
    )  # fmt: skip
    note.event = "log_records_dropped"
    note.count = dropped
    return note


# Not `logProcesses`: gunicorn's and uvicorn's own lines show `%(process)d`.
_RECORD_OPTIONS: Final = ("logThreads", "logMultiprocessing")


class LogSetup:
    """What `configure_logging` installed, so that `stop` can flush and undo it."""

    def __init__(
        self,
        handler: _Enqueue,
        listener: _Listener,
        writer: _Writer,
        previous: dict[str, Any],
    ) -> None:
        self.handler = handler
        self.listener = listener
        self.writer = writer
        self._previous = previous

    def stop(self) -> None:
        """Write what is queued, stop the thread; later records are written directly
        (at shutdown nothing is latency-sensitive any more)."""
        global _access_sink
        root = logging.getLogger()
        _access_sink = None  # from now on through `logging`, to the direct handler
        self.listener.stop()
        root.removeHandler(self.handler)
        dropped = self.handler.take_dropped()
        if dropped:
            self.writer.handle(_dropped_note(dropped))
        self.writer.flush()
        direct = logging.StreamHandler(self.writer.stream)
        direct.setFormatter(self.writer.formatter)
        direct.addFilter(RequestIdFilter())
        root.addHandler(direct)
        for name, value in self._previous.items():
            setattr(logging, name, value)


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> LogSetup:
    """Route every record of the process through the queue to `stream` (stdout).

    The root logger's level is `LOG_LEVEL` (`warn` is WARNING); its previous handlers
    are removed, so each record is written once, in the chosen format. The server
    framework's own loggers (gunicorn, uvicorn) do not propagate to the root logger:
    their lines stay on standard error in their own format (§6.3).

    Records stop collecting what no line shows (the caller's file and line, found by
    walking the stack; thread and process names): the logging HOWTO's optimizations,
    and most of a record's cost on the emitting thread.
    """
    writer = _Writer(stream if stream is not None else sys.stdout)
    writer.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    records: queue.SimpleQueue[Any] = queue.SimpleQueue()
    handler = _Enqueue(records, QUEUE_LIMIT)
    handler.addFilter(RequestIdFilter())
    listener = _Listener(records, writer, handler)
    previous: dict[str, Any] = {"_srcfile": logging._srcfile}  # type: ignore[attr-defined]
    previous.update((name, getattr(logging, name)) for name in _RECORD_OPTIONS)
    logging._srcfile = None  # type: ignore[attr-defined]
    for name in _RECORD_OPTIONS:
        setattr(logging, name, False)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.setLevel(settings.log_level_number)
    root.addHandler(handler)
    listener.start()
    global _access_sink
    _access_sink = handler.enqueue if root.isEnabledFor(logging.INFO) else None
    return LogSetup(handler, listener, writer, previous)
