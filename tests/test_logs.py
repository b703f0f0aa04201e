"""`miniexchange.logs`: the line formats, the level filter, the request id
from the context, and the queue that keeps a slow stdout off the callers' threads."""

from __future__ import annotations

import contextvars
import io
import logging
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from miniexchange import logs
from miniexchange.logs import configure_logging, request_id_var, utc_timestamp
from miniexchange.settings import Settings

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture(autouse=True)
def keep_root_logger() -> Iterator[None]:
    """`configure_logging` takes over the root logger: give pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines()]


def test_utc_timestamp_is_rfc3339_with_milliseconds() -> None:
    assert utc_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert utc_timestamp(1_771_318_800.1239) == "2026-02-17T09:00:00.123Z"


def test_json_lines_have_ts_level_event_message_and_every_extra() -> None:
    out = io.StringIO()
    setup = configure_logging(Settings(log_format="json"), out)
    log = logging.getLogger("miniexchange.test")
    log.info("hello %s", "world", extra={"event": "greeting", "who": "world", "n": 3})
    log.warning("plain")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed", extra={"event": "oops", "request_id": None})
    setup.stop()
    first, second, third = json_lines(out.getvalue())
    assert TS.fullmatch(first.pop("ts"))
    assert first == {
        "level": "info", "event": "greeting", "message": "hello world",
        "logger": "miniexchange.test", "who": "world", "n": 3,
    }  # fmt: skip
    assert (second["level"], second["event"], second["message"]) == ("warn", "log", "plain")
    assert "request_id" not in second  # logged outside any request
    assert third["level"] == "error" and third["event"] == "oops"
    assert third["request_id"] is None  # kept as given: `null`
    assert "ValueError: boom" in third["exc_info"]


def test_text_lines_are_for_people() -> None:
    out = io.StringIO()
    setup = configure_logging(Settings(log_format="text"), out)
    logging.getLogger("x").info(
        "GET /healthz 200", extra={"event": "request", "status": 200, "path": "/a b"}
    )
    setup.stop()
    (line,) = out.getvalue().splitlines()
    ts, rest = line.split(" ", 1)
    assert TS.fullmatch(ts)
    assert rest == 'info  request GET /healthz 200 status=200 path="/a b"'


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("debug", ["debug", "info", "warn", "error"]),
        ("info", ["info", "warn", "error"]),
        ("warn", ["warn", "error"]),
        ("error", ["error"]),
    ],
)
def test_log_level_filters(level: Any, shown: list[str]) -> None:
    out = io.StringIO()
    setup = configure_logging(Settings(log_level=level), out)
    log = logging.getLogger("miniexchange.test")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    setup.stop()
    assert [line["level"] for line in json_lines(out.getvalue())] == shown


def test_the_request_id_comes_from_the_context_of_the_caller() -> None:
    out = io.StringIO()
    setup = configure_logging(Settings(), out)
    log = logging.getLogger("miniexchange.test")

    def in_request() -> None:
        request_id_var.set("req-1")
        log.info("inside")
        log.info("explicit", extra={"request_id": "other"})

    contextvars.copy_context().run(in_request)
    log.info("outside")
    setup.stop()
    inside, explicit, outside = json_lines(out.getvalue())
    assert inside["request_id"] == "req-1"
    assert explicit["request_id"] == "other"
    assert "request_id" not in outside


class BlockedStream(io.StringIO):
    """A stdout that blocks until released, like a pipe nobody reads."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait(60)
        return super().write(text)


def test_a_blocked_stdout_never_blocks_the_caller_and_drops_are_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs, "QUEUE_LIMIT", 10)
    out = BlockedStream()
    setup = configure_logging(Settings(), out)
    log = logging.getLogger("miniexchange.test")
    for n in range(100):
        log.info("line %d", n)
    # the writes wait (nothing reached the stream); the caller did not: it got here
    assert out.getvalue() == "" and not out.release.is_set()
    out.release.set()
    setup.stop()
    written = json_lines(out.getvalue())
    messages = [line["message"] for line in written if line["event"] == "log"]
    dropped = [line for line in written if line["event"] == "log_records_dropped"]
    assert messages[0] == "line 0" and len(messages) < 100
    assert sum(line["count"] for line in dropped) == 100 - len(messages)


def test_records_after_stop_are_still_written() -> None:
    out = io.StringIO()
    setup = configure_logging(Settings(), out)
    setup.stop()
    logging.getLogger("miniexchange.test").warning("late")
    assert [line["message"] for line in json_lines(out.getvalue())] == ["late"]


def module_settings() -> dict[str, object]:
    """The `logging` module's own plain values (its switches, `_srcfile`...)."""
    plain = bool | int | str | type(None)
    return {name: value for name, value in vars(logging).items() if isinstance(value, plain)}


def test_the_logging_module_is_left_alone_so_other_formats_keep_their_fields() -> None:
    """gunicorn's and uvicorn's own lines (on standard error, their own handler) show
    `%(process)d`: a record made while our logging is installed still has it."""
    before = module_settings()
    setup = configure_logging(Settings(), io.StringIO())
    try:
        assert module_settings() == before
        record = logging.getLogger("gunicorn.error").makeRecord(
            "gunicorn.error", logging.INFO, __file__, 1, "Booting worker", (), None
        )
        theirs = logging.Formatter("[%(process)d] [%(thread)d %(processName)s] %(message)s")
        assert theirs.format(record) == (
            f"[{os.getpid()}] [{threading.get_ident()} MainProcess] Booting worker"
        )
    finally:
        setup.stop()
    assert module_settings() == before


def test_settings_are_listed_with_the_secret_hidden() -> None:
    settings = Settings(webhook_secret="s3cr3t-value")
    public = settings.public_items()
    assert public["webhook_secret"] == "<set>"
    assert "s3cr3t-value" not in orjson.dumps(public).decode()


# -- the access line's own path -------------------------------------------------------


ACCESS = ("req-7", "POST", "/orders", "/orders", 201, 0.0012345)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_an_access_line_reads_exactly_like_the_record_it_stands_for(log_format: Any) -> None:
    """`log_access` hands the writer an `AccessLine`; through `logging` (no writer of
    ours) it is a record. Both must print the same line."""
    fast = io.StringIO()
    setup = configure_logging(Settings(log_format=log_format), fast)
    logs.log_access(*ACCESS)
    setup.stop()  # the fast path is off again: the same call now goes through logging
    slow = io.StringIO()
    handler = logging.StreamHandler(slow)
    handler.setFormatter(logs.JsonFormatter() if log_format == "json" else logs.TextFormatter())
    access_logger = logging.getLogger(logs.ACCESS_LOGGER)
    access_logger.addHandler(handler)
    access_logger.setLevel(logging.INFO)
    try:
        logs.log_access(*ACCESS)
    finally:
        access_logger.removeHandler(handler)
        access_logger.setLevel(logging.NOTSET)
    strip_ts = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
    fast_line = strip_ts.sub("TS", fast.getvalue().splitlines()[0])
    slow_line = strip_ts.sub("TS", slow.getvalue().splitlines()[0])
    assert fast_line == slow_line
    if log_format == "json":
        assert orjson.loads(fast_line) == {
            "ts": "TS", "level": "info", "event": "request", "message": "POST /orders 201",
            "logger": "miniexchange.http", "request_id": "req-7", "method": "POST",
            "route": "/orders", "path": "/orders", "status": 201, "duration_ms": 1.234,
        }  # fmt: skip


def test_access_lines_follow_the_level_and_the_queue_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    setup = configure_logging(Settings(log_level="warn"), out)
    logs.log_access(*ACCESS)
    setup.stop()
    assert out.getvalue() == ""  # access lines are at info

    monkeypatch.setattr(logs, "QUEUE_LIMIT", 10)
    blocked = BlockedStream()
    setup = configure_logging(Settings(), blocked)
    for _ in range(100):
        logs.log_access(*ACCESS)
    blocked.release.set()
    setup.stop()
    written = json_lines(blocked.getvalue())
    requests = [line for line in written if line["event"] == "request"]
    dropped = [line for line in written if line["event"] == "log_records_dropped"]
    assert 0 < len(requests) < 100
    assert sum(line["count"] for line in dropped) == 100 - len(requests)
