"""Settings (the README's "Configuration"): defaults, every variable's valid and invalid
values, durations, and the gunicorn configuration that stops the start on a bad value or
a second worker."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from miniexchange.settings import (
    Settings,
    SettingsError,
    format_duration,
    load_settings,
    parse_duration,
    to_seconds,
)

REPO = Path(__file__).resolve().parent.parent
CANONICAL = re.compile(r"(?:([1-9][0-9]*)h)?(?:([1-9][0-9]*)m)?(?:([1-9][0-9]*)s)?(?:([0-9]+)ms)?")
DURATION_FORM = "(expected e.g. 500ms, 1s, 5m, 1h30m; must be > 0)"
DURATION_VARIABLES = {
    "EXPIRATION_INTERVAL": "expiration_interval_us",
    "WEBHOOK_TIMEOUT": "webhook_timeout_us",
    "VWAP_WINDOW": "vwap_window_us",
    "READ_TIMEOUT": "read_timeout_us",
    "WRITE_TIMEOUT": "write_timeout_us",
    "IDLE_TIMEOUT": "idle_timeout_us",
    "SHUTDOWN_TIMEOUT": "shutdown_timeout_us",
    "IDEMPOTENCY_TTL": "idempotency_ttl_us",
    "SNAPSHOT_INTERVAL": "snapshot_interval_us",
}
ALL_VARIABLES = [
    "PORT",
    "LOG_LEVEL",
    *DURATION_VARIABLES,
    "WEBHOOK_CA_BUNDLE",
    "WEBHOOK_ALLOW_PRIVATE",
    "WEBHOOK_SECRET",
    "WEBHOOK_QUEUE_LIMIT",
    "DATABASE_PATH",
    "DATABASE_SYNC",
    "LOG_FORMAT",
    "ACCOUNT_ACTORS",
    "AUTH",
    "ADMIN_TOKEN",
    "MAX_CONNECTIONS",
    "MAX_STREAMS",
    "MAX_SYMBOLS",
    "IDEMPOTENCY_MAX_KEYS",
    "ENGINE",
    "WORKERS",
    "ACCOUNT_SHARDS",
    "SYMBOL_SHARDS",
    "RAY_ADDRESS",
]

EXPECTED_DEFAULTS = {
    "port": 8080,
    "log_level": "info",
    "expiration_interval_us": 1_000_000,
    "webhook_timeout_us": 5_000_000,
    "vwap_window_us": 300_000_000,
    "read_timeout_us": 5_000_000,
    "write_timeout_us": 10_000_000,
    "idle_timeout_us": 60_000_000,
    "shutdown_timeout_us": 10_000_000,
    "webhook_ca_bundle": None,
    "webhook_allow_private": False,
    "webhook_secret": None,
    "webhook_queue_limit": 10_000,
    "database_path": "data/miniexchange.db",
    "database_sync": "full",
    "idempotency_ttl_us": 86_400_000_000,
    "log_format": "json",
    "account_actors": 2,
    "auth": "none",
    "admin_token": None,
    "max_connections": 1000,
    "max_streams": 100,
    "max_symbols": 10_000,
    "idempotency_max_keys": 1_000_000,
    "snapshot_interval_us": 300_000_000,
    "engine": "embedded",
    "workers": 1,
    "account_shards": 1,
    "symbol_shards": 1,
    "ray_address": None,
}


# --- defaults ----------------------------------------------------------------------------


def test_unset_variables_take_their_defaults() -> None:
    assert dataclasses.asdict(load_settings({})) == EXPECTED_DEFAULTS


def test_empty_variables_take_their_defaults() -> None:
    assert dataclasses.asdict(load_settings(dict.fromkeys(ALL_VARIABLES, ""))) == EXPECTED_DEFAULTS


def test_unrelated_variables_are_ignored() -> None:
    assert load_settings({"HOME": "/root", "port": "1"}) == Settings()


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9090")
    assert load_settings().port == 9090


# --- valid values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "raw", "field", "expected"),
    [
        ("PORT", "1", "port", 1),
        ("PORT", "65535", "port", 65535),
        ("PORT", "18080", "port", 18080),
        ("LOG_LEVEL", "debug", "log_level", "debug"),
        ("LOG_LEVEL", "info", "log_level", "info"),
        ("LOG_LEVEL", "warn", "log_level", "warn"),
        ("LOG_LEVEL", "error", "log_level", "error"),
        ("EXPIRATION_INTERVAL", "250ms", "expiration_interval_us", 250_000),
        ("WEBHOOK_TIMEOUT", "1.5s", "webhook_timeout_us", 1_500_000),
        ("VWAP_WINDOW", "1h30m", "vwap_window_us", 5_400_000_000),
        ("READ_TIMEOUT", "2s", "read_timeout_us", 2_000_000),
        ("WRITE_TIMEOUT", "1m", "write_timeout_us", 60_000_000),
        ("IDLE_TIMEOUT", "90s", "idle_timeout_us", 90_000_000),
        ("SHUTDOWN_TIMEOUT", "30s", "shutdown_timeout_us", 30_000_000),
        ("IDEMPOTENCY_TTL", "1h", "idempotency_ttl_us", 3_600_000_000),
        ("WEBHOOK_ALLOW_PRIVATE", "true", "webhook_allow_private", True),
        ("WEBHOOK_ALLOW_PRIVATE", "false", "webhook_allow_private", False),
        ("WEBHOOK_SECRET", "s3cr3t value", "webhook_secret", "s3cr3t value"),
        ("WEBHOOK_QUEUE_LIMIT", "1", "webhook_queue_limit", 1),
        ("WEBHOOK_QUEUE_LIMIT", "250000", "webhook_queue_limit", 250_000),
        ("ACCOUNT_ACTORS", "1", "account_actors", 1),
        ("ACCOUNT_ACTORS", "16", "account_actors", 16),
        ("MAX_CONNECTIONS", "1", "max_connections", 1),
        ("MAX_STREAMS", "5", "max_streams", 5),
        ("MAX_SYMBOLS", "20000", "max_symbols", 20_000),
        ("IDEMPOTENCY_MAX_KEYS", "100", "idempotency_max_keys", 100),
        ("SNAPSHOT_INTERVAL", "30s", "snapshot_interval_us", 30_000_000),
        ("DATABASE_PATH", ":memory:", "database_path", ":memory:"),
        ("DATABASE_PATH", "/var/lib/mx/journal.db", "database_path", "/var/lib/mx/journal.db"),
        ("DATABASE_SYNC", "full", "database_sync", "full"),
        ("DATABASE_SYNC", "normal", "database_sync", "normal"),
        ("LOG_FORMAT", "json", "log_format", "json"),
        ("LOG_FORMAT", "text", "log_format", "text"),
    ],
)
def test_valid_value(variable: str, raw: str, field: str, expected: object) -> None:
    settings = load_settings({variable: raw})
    assert getattr(settings, field) == expected
    others = {name: value for name, value in EXPECTED_DEFAULTS.items() if name != field}
    assert {name: getattr(settings, name) for name in others} == others


# --- invalid values: one line naming the variable and the accepted form ---------------------

INVALID = [
    ("PORT", "0", "PORT: invalid port '0' (expected an integer 1 to 65535)"),
    ("PORT", "65536", "PORT: invalid port '65536' (expected an integer 1 to 65535)"),
    ("PORT", "-1", "PORT: invalid port '-1' (expected an integer 1 to 65535)"),
    ("PORT", "80.0", "PORT: invalid port '80.0' (expected an integer 1 to 65535)"),
    ("PORT", " 80", "PORT: invalid port ' 80' (expected an integer 1 to 65535)"),
    ("PORT", "http", "PORT: invalid port 'http' (expected an integer 1 to 65535)"),
    ("PORT", "٨٠", "PORT: invalid port '٨٠' (expected an integer 1 to 65535)"),
    (
        "LOG_LEVEL",
        "warning",
        "LOG_LEVEL: invalid value 'warning' (expected one of debug, info, warn, error)",
    ),
    (
        "LOG_LEVEL",
        "INFO",
        "LOG_LEVEL: invalid value 'INFO' (expected one of debug, info, warn, error)",
    ),
    *[
        (variable, raw, f"{variable}: invalid duration {raw!r} {DURATION_FORM}")
        for variable in DURATION_VARIABLES
        for raw in ("0s", "5", "1x")
    ],
    ("VWAP_WINDOW", "-5m", f"VWAP_WINDOW: invalid duration '-5m' {DURATION_FORM}"),
    ("VWAP_WINDOW", "5 m", f"VWAP_WINDOW: invalid duration '5 m' {DURATION_FORM}"),
    ("VWAP_WINDOW", "0.0001ms", f"VWAP_WINDOW: invalid duration '0.0001ms' {DURATION_FORM}"),
    (
        "WEBHOOK_ALLOW_PRIVATE",
        "yes",
        "WEBHOOK_ALLOW_PRIVATE: invalid boolean 'yes' (expected true or false)",
    ),
    (
        "WEBHOOK_ALLOW_PRIVATE",
        "True",
        "WEBHOOK_ALLOW_PRIVATE: invalid boolean 'True' (expected true or false)",
    ),
    (
        "WEBHOOK_ALLOW_PRIVATE",
        "1",
        "WEBHOOK_ALLOW_PRIVATE: invalid boolean '1' (expected true or false)",
    ),
    (
        "WEBHOOK_QUEUE_LIMIT",
        "0",
        "WEBHOOK_QUEUE_LIMIT: invalid integer '0' (expected a positive integer, e.g. 10000)",
    ),
    (
        "WEBHOOK_QUEUE_LIMIT",
        "1e4",
        "WEBHOOK_QUEUE_LIMIT: invalid integer '1e4' (expected a positive integer, e.g. 10000)",
    ),
    (
        "WEBHOOK_QUEUE_LIMIT",
        "-10",
        "WEBHOOK_QUEUE_LIMIT: invalid integer '-10' (expected a positive integer, e.g. 10000)",
    ),
    (
        "ACCOUNT_ACTORS",
        "0",
        "ACCOUNT_ACTORS: invalid integer '0' (expected a positive integer, e.g. 10000)",
    ),
    *(
        (name, "0", f"{name}: invalid integer '0' (expected a positive integer, e.g. 10000)")
        for name in (
            "MAX_CONNECTIONS",
            "MAX_STREAMS",
            "MAX_SYMBOLS",
            "IDEMPOTENCY_MAX_KEYS",
            "ACCOUNT_SHARDS",
            "SYMBOL_SHARDS",
        )
    ),
    ("ENGINE", "cluster", "ENGINE: invalid value 'cluster' (expected one of embedded, ray)"),
    (
        "WORKERS",
        "2",
        "WORKERS: more than 1 needs ENGINE=ray (the embedded exchange is one process)",
    ),
    (
        "WORKERS",
        "0",
        "WORKERS: invalid integer '0' (expected a positive integer, e.g. 10000)",
    ),
    (
        "WEBHOOK_CA_BUNDLE",
        "/nonexistent/ca.pem",
        "WEBHOOK_CA_BUNDLE: cannot load '/nonexistent/ca.pem' "
        "(expected empty or a readable PEM file of CA certificates)",
    ),
    (
        "DATABASE_SYNC",
        "off",
        "DATABASE_SYNC: invalid value 'off' (expected one of full, normal)",
    ),
    ("LOG_FORMAT", "xml", "LOG_FORMAT: invalid value 'xml' (expected one of json, text)"),
]


@pytest.mark.parametrize(("variable", "raw", "message"), INVALID)
def test_invalid_value(variable: str, raw: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({variable: raw})
    assert str(caught.value) == message
    assert caught.value.variable == variable


def test_message_stays_on_one_line_whatever_the_value() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"LOG_FORMAT": "json\ntext"})
    assert (
        str(caught.value) == r"LOG_FORMAT: invalid value 'json\ntext' (expected one of json, text)"
    )
    assert "\n" not in str(caught.value)


# --- WEBHOOK_CA_BUNDLE --------------------------------------------------------------------


def test_ca_bundle_accepts_a_pem_file(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    assert load_settings({"WEBHOOK_CA_BUNDLE": str(bundle)}).webhook_ca_bundle == str(bundle)


@pytest.mark.parametrize("content", [b"", b"not a certificate\n"])
def test_ca_bundle_rejects_a_file_without_certificates(tmp_path: Path, content: bytes) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(content)
    with pytest.raises(SettingsError, match=r"^WEBHOOK_CA_BUNDLE: cannot load '.*ca\.pem' \("):
        load_settings({"WEBHOOK_CA_BUNDLE": str(bundle)})


def test_ca_bundle_rejects_a_directory(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^WEBHOOK_CA_BUNDLE: cannot load "):
        load_settings({"WEBHOOK_CA_BUNDLE": str(tmp_path)})


# --- the Settings object ------------------------------------------------------------------


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("level", "number"),
    [
        ("debug", logging.DEBUG),
        ("info", logging.INFO),
        ("warn", logging.WARNING),
        ("error", logging.ERROR),
    ],
)
def test_log_level_number(level: str, number: int) -> None:
    assert load_settings({"LOG_LEVEL": level}).log_level_number == number


def test_journal_enabled_unless_in_memory() -> None:
    assert load_settings({}).journal_enabled
    assert not load_settings({"DATABASE_PATH": ":memory:"}).journal_enabled


def test_public_items_defaults() -> None:
    assert load_settings({}).public_items() == {
        "port": 8080,
        "log_level": "info",
        "expiration_interval": "1s",
        "webhook_timeout": "5s",
        "vwap_window": "5m",
        "read_timeout": "5s",
        "write_timeout": "10s",
        "idle_timeout": "1m",
        "shutdown_timeout": "10s",
        "webhook_ca_bundle": None,
        "webhook_allow_private": False,
        "webhook_secret": None,
        "webhook_queue_limit": 10_000,
        "database_path": "data/miniexchange.db",
        "database_sync": "full",
        "idempotency_ttl": "24h",
        "log_format": "json",
        "account_actors": 2,
        "auth": "none",
        "admin_token": None,
        "max_connections": 1000,
        "max_streams": 100,
        "max_symbols": 10_000,
        "idempotency_max_keys": 1_000_000,
        "snapshot_interval": "5m",
        "engine": "embedded",
        "workers": 1,
        "account_shards": 1,
        "symbol_shards": 1,
        "ray_address": None,
    }


def test_secret_is_never_shown() -> None:
    settings = load_settings({"WEBHOOK_SECRET": "hunter2"})
    assert settings.webhook_secret == "hunter2"
    assert settings.public_items()["webhook_secret"] == "<set>"
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.public_items())


# --- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "us"),
    [
        ("1h30m", 5_400_000_000),
        ("1.5s", 1_500_000),
        ("500ms", 500_000),
        ("1s", 1_000_000),
        ("5m", 300_000_000),
        ("24h", 86_400_000_000),
        ("1m30s", 90_000_000),
        ("1h2m3s4ms", 3_723_004_000),
        ("0.5ms", 500),
        ("0.001ms", 1),
        ("0.1s", 100_000),
        ("0s1ms", 1_000),
        ("1.25h", 4_500_000_000),
        ("90s", 90_000_000),
        ("1s1s", 2_000_000),
        ("007s", 7_000_000),
        # exact, where binary floating point would drift
        ("0.3s", 300_000),
        ("1234567890.123456s", 1_234_567_890_123_456),
    ],
)
def test_parse_duration(text: str, us: int) -> None:
    assert parse_duration(text) == us


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0s",
        "0ms",
        "0h0m0s",
        "0.0s",
        "5",
        "1x",
        "s",
        "1.s",
        ".5s",
        "1,5s",
        "-1s",
        "+1s",
        " 1s",
        "1s ",
        "1 s",
        "1S",
        "1us",
        "1µs",
        "1d",
        "1e3ms",
        "1sec",
        "1h30",
        "١s",
        "0.0001ms",
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("us", "text"),
    [
        (300_000_000, "5m"),
        (3_000_000, "3s"),
        (90_000_000, "1m30s"),
        (500_000, "500ms"),
        (3_600_000_000, "1h"),
        (5_400_000_000, "1h30m"),
        (1_500_000, "1s500ms"),
        (3_600_000_500_000, "1000h500ms"),
        (3_601_000_000, "1h1s"),
        (86_400_000_000, "24h"),
        (1_500, "1.5ms"),
        (1, "0.001ms"),
        (2_000_010, "2s0.01ms"),
        (0, "0s"),
    ],
)
def test_format_duration(us: int, text: str) -> None:
    assert format_duration(us) == text


def test_format_duration_rejects_negative() -> None:
    with pytest.raises(ValueError):
        format_duration(-1)


@given(st.integers(min_value=1, max_value=10**15))
def test_format_then_parse_round_trips(us: int) -> None:
    assert parse_duration(format_duration(us)) == us


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10_000), st.sampled_from(["h", "m", "s", "ms"])
        ),
        min_size=1,
        max_size=4,
    ).filter(lambda parts: any(n for n, _ in parts))
)
def test_parse_then_format_is_canonical(parts: list[tuple[int, str]]) -> None:
    """Any spelling formats to units in descending order, none zero, none overflowing."""
    us = parse_duration("".join(f"{n}{unit}" for n, unit in parts))
    text = format_duration(us)
    assert parse_duration(text) == us
    match = CANONICAL.fullmatch(text)
    assert match is not None, text
    _hours, minutes, seconds, millis = match.groups()
    assert minutes is None or 0 < int(minutes) < 60
    assert seconds is None or 0 < int(seconds) < 60
    assert millis is None or 0 < int(millis) < 1000


def test_to_seconds() -> None:
    assert to_seconds(1_500_000) == 1.5


# --- config/gunicorn.conf.py: fail fast, before anything starts ---------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _gunicorn(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run gunicorn with our config file; every case here exits before binding a socket."""
    environ = {k: v for k, v in os.environ.items() if k not in ALL_VARIABLES}
    environ.pop("GUNICORN_CMD_ARGS", None)
    environ.pop("WEB_CONCURRENCY", None)
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", *args],
        cwd=REPO,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_gunicorn_stops_with_the_one_line_message_on_a_bad_setting() -> None:
    result = _gunicorn(EXPIRATION_INTERVAL="0s")
    assert result.returncode == 2
    assert result.stderr == f"EXPIRATION_INTERVAL: invalid duration '0s' {DURATION_FORM}\n"


@pytest.mark.parametrize(
    ("args", "env"),
    [(("-w", "2"), {}), (("--workers=4",), {}), ((), {"GUNICORN_CMD_ARGS": "--workers 3"})],
)
def test_gunicorn_refuses_more_than_one_worker(args: tuple[str, ...], env: dict[str, str]) -> None:
    result = _gunicorn(*args, PORT=str(_free_port()), **env)  # it stops before listening
    assert result.returncode == 2
    assert "refusing to start with" in result.stderr
    assert "would split the books" in result.stderr


def test_example_env_lists_every_variable_with_its_default() -> None:
    lines = (REPO / "config" / "example.env").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    example = {name: value for name, value in pairs}
    assert sorted(example) == sorted(ALL_VARIABLES)
    assert load_settings(example) == Settings()


# --- ENGINE=ray ------------------------------------------------------------------------------


def test_ray_takes_its_workers_shards_and_head() -> None:
    settings = load_settings(
        {
            "ENGINE": "ray",
            "WORKERS": "8",
            "ACCOUNT_SHARDS": "2",
            "SYMBOL_SHARDS": "4",
            "RAY_ADDRESS": "10.0.0.5:6379",
        }
    )
    assert (
        settings.engine,
        settings.workers,
        settings.account_shards,
        settings.symbol_shards,
        settings.ray_address,
    ) == ("ray", 8, 2, 4, "10.0.0.5:6379")


def test_ray_defaults_to_a_worker_per_core_and_a_journal_of_its_own() -> None:
    settings = load_settings({"ENGINE": "ray"})
    assert settings.workers == (os.cpu_count() or 1)
    assert settings.database_path == "data/miniexchange-ray.db"
    assert settings.database_path != Settings().database_path  # one journal, one mode
    assert settings.ray_address is None


def test_embedded_reads_no_ray_address_and_takes_one_worker() -> None:
    settings = load_settings({"WORKERS": "1", "RAY_ADDRESS": "10.0.0.5:6379"})
    assert (settings.workers, settings.ray_address) == (1, None)


def test_ray_takes_api_keys() -> None:
    settings = load_settings({"ENGINE": "ray", "AUTH": "api_key", "ADMIN_TOKEN": "t" * 32})
    assert (settings.engine, settings.auth, settings.admin_token) == ("ray", "api_key", "t" * 32)


def test_gunicorn_with_ray_refuses_to_start_without_a_head() -> None:
    result = _gunicorn(ENGINE="ray", PORT=str(_free_port()))
    assert result.returncode == 2
    assert "ENGINE=ray needs RAY_ADDRESS" in result.stderr


# --- API keys (AUTH, ADMIN_TOKEN) -----------------------------------------------------------

TOKEN = "t" * 32


def test_auth_api_key_takes_an_admin_token_of_32_visible_characters() -> None:
    settings = load_settings({"AUTH": "api_key", "ADMIN_TOKEN": TOKEN})
    assert (settings.auth, settings.admin_token) == ("api_key", TOKEN)
    assert TOKEN not in repr(settings)
    assert settings.public_items()["admin_token"] == "<set>"


def test_with_auth_none_the_admin_token_is_not_read() -> None:
    assert load_settings({"ADMIN_TOKEN": "short"}).admin_token is None


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (
            "",
            "ADMIN_TOKEN: required with AUTH=api_key (expected at least 32 visible ASCII characters)",
        ),
        (
            "t" * 31,
            "ADMIN_TOKEN: invalid token of 31 characters (expected at least 32 visible ASCII characters)",
        ),
        (
            "t" * 31 + " ",
            "ADMIN_TOKEN: invalid token of 32 characters (expected at least 32 visible ASCII characters)",
        ),
        (
            "t" * 31 + "é",
            "ADMIN_TOKEN: invalid token of 32 characters (expected at least 32 visible ASCII characters)",
        ),
    ],
    ids=["missing", "too-short", "a-space", "not-ascii"],
)
def test_a_weak_admin_token_stops_the_start(token: str, message: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings({"AUTH": "api_key", "ADMIN_TOKEN": token})
    assert str(error.value) == message
    assert token.strip() == "" or token not in str(error.value)


def test_auth_is_none_or_api_key() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings({"AUTH": "basic"})
    assert str(error.value) == "AUTH: invalid value 'basic' (expected one of none, api_key)"
