"""The exchange's logs: one line per record on standard output.

Why it is built this way:

- The root logger's one handler is the standard library's `QueueHandler`, and ONE
  `QueueListener` thread formats and writes what it queued. A slow or blocked stdout (a
  full pipe, a stalled log shipper) then never blocks the event loop or an actor. The
  queue is bounded: past `QUEUE_LIMIT` waiting records a new one is dropped and counted,
  and the listener says how many once it can write again (memory stays bounded).
- The emitting thread only renders the message (its arguments may change later) and
  notes the request id; JSON or text is produced on the listener thread.
- `request_id` comes from `extra=` when the caller knows it (a webhook delivery logs the
  id of the request that caused it, `None` for an expiry sweep), else from the context
  variable that the HTTP middleware sets for the request being handled (so every line
  written while handling a request carries it). Threads (actors, the journal writer,
  delivery threads) do not see the event loop's context: they pass it explicitly.
- Logging is configured in the worker at lifespan startup (`configure_logging`), never
  at import, so tests and tools that import the app keep their own logging.
- Nothing global of `logging` is changed but the root logger: gunicorn's and uvicorn's
  own lines keep every field their formats show (`%(process)d`).

`LOG_FORMAT=json`: one JSON object per line with `ts` (UTC, RFC 3339, milliseconds, `Z`),
`level`, `event` (from `extra={"event": ...}`, else `log`), `message`, `logger`, every
`extra` field, and `exc_info` (the traceback text) when there is one. `LOG_FORMAT=text`:
`<ts> <level> <event> <message> key=value ...`. Nothing here ever logs `WEBHOOK_SECRET`
or a request body: the `startup` event lists `Settings.public_items()`, where secrets are
`"<set>"`.
"""

from __future__ import annotations

import contextvars
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
"""How often the listener looks for queued records once it has written them all: a line
appears at most this late."""

DEFAULT_EVENT: Final = "log"

ACCESS_LOGGER: Final = "miniexchange.http"
ACCESS_EVENT: Final = "request"


class NotLogged(Enum):
    """A field that this mode does not log (the access line's `broker_id` without API keys)."""

    NOT_LOGGED = "not logged"


NOT_LOGGED: Final = NotLogged.NOT_LOGGED


class AccessLine(NamedTuple):
    """One access line (one per request: request id, method, route, path, status,
    duration) on its way to the listener, which renders it exactly as the record that
    `logging` would make of it (`tests/test_logs.py` compares the two)."""

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
    """Write a request's access line (at `info`), straight onto our queue when
    `configure_logging` installed it, else through `logging` (tests, or an embedding that
    set up its own)."""
    line = AccessLine(
        time.time(), request_id, method, route, path, status, round(seconds * 1000, 3), broker_id
    )
    sink = _access_sink
    # A tuple, not a LogRecord: a record costs the request's thread ~10x (bench/access_line.py).
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

_RECORD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None))
) | {"message", "asctime", "taskName", "event"}
"""What every LogRecord has (and `event`, shown first); anything else came from `extra=`."""

_FIRST_KEYS: Final = ("ts", "level", "event", "message", "logger")


_second_cache: tuple[int, str] = (-1, "")


def utc_timestamp(created: float) -> str:
    """`created` (seconds since the epoch) as RFC 3339 UTC with milliseconds and `Z`."""
    global _second_cache
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    cached_second, prefix = _second_cache
    # Lines come in bursts within a second: strftime per line made formatting one 1.5x dearer.
    if cached_second != seconds:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second_cache = (seconds, prefix)
    return f"{prefix}.{millis:03d}Z"


def level_name(levelno: int) -> str:
    return LEVEL_NAMES.get(levelno) or logging.getLevelName(levelno).lower()


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's `extra=` fields (and the request id), in the order they were set."""
    attributes = _RECORD_ATTRIBUTES
    return {key: value for key, value in vars(record).items() if key not in attributes}


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
    """The root logger's only handler: hands records to the listener, never blocking."""

    def __init__(self, records: queue.SimpleQueue[Any], limit: int) -> None:
        super().__init__(records)  # type: ignore[arg-type]
        self.limit = limit
        self.dropped = 0
        self._dropped_lock = threading.Lock()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Render the message (its arguments may change once we return) and the traceback
        text, kept apart from it; `extra=` fields stay for the formatter. The record is
        ours alone (the root logger has no other handler): prepared in place, not copied."""
        record.message = record.getMessage()
        record.msg = record.message
        record.args = None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record

    def enqueue(self, record: logging.LogRecord | AccessLine) -> None:
        """Queue the record, or drop and count it when `limit` records are waiting."""
        records: queue.SimpleQueue[Any] = self.queue  # type: ignore[assignment]
        # SimpleQueue and qsize, not Queue(maxsize): its lock and condition doubled an access line.
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
    """Writes lines without flushing each: the listener flushes once it has written all
    that was queued, so a burst of records costs one write to stdout, not one each."""

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


class _Listener(logging.handlers.QueueListener):
    """The one writer thread: writes every queued record, then reports the records dropped
    meanwhile, flushes, and sleeps `WRITE_INTERVAL_S` before looking again."""

    def __init__(self, records: queue.SimpleQueue[Any], writer: _Writer, source: _Enqueue) -> None:
        super().__init__(records, writer)  # type: ignore[arg-type]
        self.writer = writer
        self.source = source

    def dequeue(self, block: bool) -> Any:
        records: queue.SimpleQueue[Any] = self.queue  # type: ignore[assignment]
        while True:
            try:
                return records.get_nowait()
            except queue.Empty:
                self.drained()
                # Sleep, not a blocking get: a thread woken per line costs a hand-off per request.
                time.sleep(WRITE_INTERVAL_S)

    def handle(self, record: logging.LogRecord | AccessLine) -> None:  # type: ignore[override]
        if type(record) is AccessLine:
            self.writer.write_access(record)
        else:
            self.writer.handle(record)  # type: ignore[arg-type]

    def drained(self) -> None:
        dropped = self.source.take_dropped()
        if dropped:
            self.writer.handle(_dropped_note(dropped))
        self.writer.flush()


def _dropped_note(dropped: int) -> logging.LogRecord:
    note = logging.LogRecord(
        "miniexchange.logs", logging.WARNING, __file__, 0,
        "%d log records dropped: standard output did not keep up", (dropped,), None,
    )  # fmt: skip
    note.event = "log_records_dropped"
    note.count = dropped
    return note


class LogSetup:
    """What `configure_logging` installed, so that `stop` can flush and undo it."""

    def __init__(self, handler: _Enqueue, listener: _Listener, writer: _Writer) -> None:
        self.handler = handler
        self.listener = listener
        self.writer = writer

    def stop(self) -> None:
        """Write what is queued and stop the thread; later records are written directly
        (at shutdown nothing is latency-sensitive any more)."""
        global _access_sink
        root = logging.getLogger()
        direct = logging.StreamHandler(self.writer.stream)
        direct.setFormatter(self.writer.formatter)
        direct.addFilter(RequestIdFilter())
        root.addHandler(direct)
        root.removeHandler(self.handler)
        _access_sink = None  # from now on through `logging`, to the direct handler
        self.listener.stop()  # everything queued before this is written
        self.listener.drained()


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> LogSetup:
    """Route every record of the process through the queue to `stream` (stdout).

    The root logger's level is `LOG_LEVEL` (`warn` is WARNING); its previous handlers
    are removed, so each record is written once, in the chosen format. The server
    framework's own loggers (gunicorn, uvicorn) do not propagate to the root logger:
    their lines stay on standard error in their own format.
    """
    writer = _Writer(stream if stream is not None else sys.stdout)
    writer.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    records: queue.SimpleQueue[Any] = queue.SimpleQueue()
    handler = _Enqueue(records, QUEUE_LIMIT)
    handler.addFilter(RequestIdFilter())
    listener = _Listener(records, writer, handler)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.setLevel(settings.log_level_number)
    root.addHandler(handler)
    listener.start()
    global _access_sink
    _access_sink = handler.enqueue if root.isEnabledFor(logging.INFO) else None
    return LogSetup(handler, listener, writer)
