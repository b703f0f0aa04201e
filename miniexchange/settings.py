"""Environment variables -> one frozen `Settings` object (the README's "Configuration").

The environment is read once, at start. An unset or empty variable takes its default;
anything else that does not parse stops the process with a one-line `SettingsError`
naming the variable and the accepted form (no silent fallback). Durations are kept as
integer microseconds so that no float ever rounds a configured time.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Final, Literal, TypeVar, cast, get_args

__all__ = [
    "DURATION_FORM",
    "DatabaseSync",
    "EngineName",
    "LogFormat",
    "LogLevel",
    "Settings",
    "SettingsError",
    "format_duration",
    "load_settings",
    "parse_duration",
    "to_seconds",
]

LogLevel = Literal["debug", "info", "warn", "error"]
DatabaseSync = Literal["full", "normal"]
LogFormat = Literal["json", "text"]
Auth = Literal["none", "api_key"]
EngineName = Literal["embedded", "ray"]

US_PER_MS: Final = 1_000
US_PER_S: Final = 1_000_000
US_PER_M: Final = 60 * US_PER_S
US_PER_H: Final = 60 * US_PER_M

_UNIT_US: Final[dict[str, int]] = {"ms": US_PER_MS, "s": US_PER_S, "m": US_PER_M, "h": US_PER_H}
# ASCII digits only ("\d" would accept other scripts' digits); "ms" before "m" and "s".
_PART: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION: Final = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+")

#: The accepted form of a duration, as every duration error message states it.
DURATION_FORM: Final = "expected e.g. 500ms, 1s, 5m, 1h30m; must be > 0"

_LOG_LEVEL_NUMBERS: Final[dict[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


class SettingsError(ValueError):
    """A variable has an unusable value; `str(error)` is the one line to print before exiting."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


def parse_duration(text: str) -> int:
    """Parse `1h30m`, `1.5s`, `500ms`... into integer microseconds, exactly (no float).

    Raises ValueError unless the text is one or more `<number><unit>` parts (units ms,
    s, m, h), the total is greater than zero and a whole number of microseconds.
    """
    if not _DURATION.fullmatch(text):
        raise ValueError(f"invalid duration {text!r} ({DURATION_FORM})")
    total = sum(
        (Fraction(number) * _UNIT_US[unit] for number, unit in _PART.findall(text)),
        Fraction(0),
    )
    if total <= 0:
        raise ValueError(f"invalid duration {text!r} (must be > 0)")
    if total.denominator != 1:
        raise ValueError(f"invalid duration {text!r} (finer than one microsecond)")
    return int(total)


def format_duration(us: int) -> str:
    """Write microseconds compactly with units h, m, s, ms, zero units left out (`5m`, `1h30m`).

    `parse_duration(format_duration(us)) == us` for every positive `us`; a part below a
    millisecond is written as a decimal fraction of `ms` (`1.5ms`).
    """
    if us < 0:
        raise ValueError(f"negative duration: {us} us")
    if us == 0:
        return "0s"
    hours, rest = divmod(us, US_PER_H)
    minutes, rest = divmod(rest, US_PER_M)
    seconds, rest = divmod(rest, US_PER_S)
    millis, micros = divmod(rest, US_PER_MS)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")) if n]
    if micros:
        parts.append(f"{millis}.{micros:03d}".rstrip("0") + "ms")
    elif millis:
        parts.append(f"{millis}ms")
    return "".join(parts)


def to_seconds(us: int) -> float:
    """Microseconds as float seconds, for APIs that take seconds (timers, socket timeouts)."""
    return us / US_PER_S


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the README's table, parsed and validated; durations in microseconds."""

    port: int = 8080
    log_level: LogLevel = "info"
    expiration_interval_us: int = 1 * US_PER_S
    webhook_timeout_us: int = 5 * US_PER_S
    vwap_window_us: int = 5 * US_PER_M
    read_timeout_us: int = 5 * US_PER_S
    write_timeout_us: int = 10 * US_PER_S
    idle_timeout_us: int = 60 * US_PER_S
    shutdown_timeout_us: int = 10 * US_PER_S
    #: PEM file of extra CAs for webhook deliveries; None: the system trust store only.
    webhook_ca_bundle: str | None = None
    webhook_allow_private: bool = False
    #: HMAC key of `X-Signature`; None: deliveries are not signed. Never logged.
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_queue_limit: int = 10_000
    database_path: str = "data/miniexchange.db"
    database_sync: DatabaseSync = "full"
    idempotency_ttl_us: int = 24 * US_PER_H
    log_format: LogFormat = "json"
    #: How many account actors share the brokers' ledgers (a broker never moves).
    account_actors: int = 2
    #: `none`: every endpoint open; `api_key`: bearer tokens, ownership checked.
    auth: Auth = "none"
    #: The operator's bearer token with `AUTH=api_key` (read only then). Never logged.
    admin_token: str | None = field(default=None, repr=False)
    #: Connections served at once; past it a new one gets 503 `overloaded` and is closed.
    max_connections: int = 1000
    #: Event streams served at once, counted within `max_connections`.
    max_streams: int = 100
    #: Symbols listed at most; one more -> 409 `symbol_limit_reached`.
    max_symbols: int = 10_000
    #: Stored `Idempotency-Key`s at most; past it the oldest are forgotten first.
    idempotency_max_keys: int = 1_000_000
    #: Longest time between two state snapshots while facts arrive.
    snapshot_interval_us: int = 5 * US_PER_M
    #: `embedded`: the whole exchange in one process; `ray`: across processes, on Ray.
    engine: EngineName = "embedded"
    #: gunicorn workers of this machine: 1 when embedded; with `ray`, the cores by default.
    workers: int = 1
    #: With `ray`: the processes the brokers' accounts are split over (fixed for a journal).
    account_shards: int = 1
    #: With `ray`: the processes the symbols' books are split over (fixed for a journal).
    symbol_shards: int = 1
    #: With `ray`: the head to join (`host:port`); None: `make run-ray` starts a local one.
    ray_address: str | None = None

    @property
    def log_level_number(self) -> int:
        """The `logging` level of LOG_LEVEL (`warn` is `logging.WARNING`)."""
        return _LOG_LEVEL_NUMBERS[self.log_level]

    @property
    def journal_enabled(self) -> bool:
        """False when DATABASE_PATH is `:memory:` (no persistence: a restart starts empty)."""
        return self.database_path != ":memory:"

    def public_items(self) -> dict[str, object]:
        """Every setting for the `startup` log event, secrets shown as `"<set>"`.

        Keys are the lower-cased variable names; durations as a variable writes them (`1h30m`).
        """
        return {
            "port": self.port,
            "log_level": self.log_level,
            "expiration_interval": format_duration(self.expiration_interval_us),
            "webhook_timeout": format_duration(self.webhook_timeout_us),
            "vwap_window": format_duration(self.vwap_window_us),
            "read_timeout": format_duration(self.read_timeout_us),
            "write_timeout": format_duration(self.write_timeout_us),
            "idle_timeout": format_duration(self.idle_timeout_us),
            "shutdown_timeout": format_duration(self.shutdown_timeout_us),
            "webhook_ca_bundle": self.webhook_ca_bundle,
            "webhook_allow_private": self.webhook_allow_private,
            "webhook_secret": "<set>" if self.webhook_secret else None,
            "webhook_queue_limit": self.webhook_queue_limit,
            "database_path": self.database_path,
            "database_sync": self.database_sync,
            "idempotency_ttl": format_duration(self.idempotency_ttl_us),
            "log_format": self.log_format,
            "account_actors": self.account_actors,
            "auth": self.auth,
            "admin_token": "<set>" if self.admin_token else None,
            "max_connections": self.max_connections,
            "max_streams": self.max_streams,
            "max_symbols": self.max_symbols,
            "idempotency_max_keys": self.idempotency_max_keys,
            "snapshot_interval": format_duration(self.snapshot_interval_us),
            "engine": self.engine,
            "workers": self.workers,
            "account_shards": self.account_shards,
            "symbol_shards": self.symbol_shards,
            "ray_address": self.ray_address,
        }


_T = TypeVar("_T")
_S = TypeVar("_S", bound=str)

_LOG_LEVELS: Final[tuple[LogLevel, ...]] = get_args(LogLevel)
_DATABASE_SYNCS: Final[tuple[DatabaseSync, ...]] = get_args(DatabaseSync)
_LOG_FORMATS: Final[tuple[LogFormat, ...]] = get_args(LogFormat)
_AUTHS: Final[tuple[Auth, ...]] = get_args(Auth)
_ENGINES: Final[tuple[EngineName, ...]] = get_args(EngineName)
RAY_DATABASE_PATH: Final = "data/miniexchange-ray.db"
"""DATABASE_PATH's default with ENGINE=ray: a journal belongs to one mode, so the two
modes' defaults never name the same file."""
_ADMIN_TOKEN_FORM: Final = "expected at least 32 visible ASCII characters"


def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """Read every setting from `environ` once; raise SettingsError on the first bad one."""

    def read(name: str, parse: Callable[[str, str], _T], default: _T) -> _T:
        raw = environ.get(name, "")
        return default if raw == "" else parse(name, raw)

    defaults = Settings()
    auth = read("AUTH", _choice(_AUTHS), defaults.auth)
    if auth == "api_key" and not environ.get("ADMIN_TOKEN"):
        raise SettingsError("ADMIN_TOKEN", f"required with AUTH=api_key ({_ADMIN_TOKEN_FORM})")
    engine = read("ENGINE", _choice(_ENGINES), defaults.engine)
    ray = engine == "ray"
    workers = read("WORKERS", _positive_int, (os.cpu_count() or 1) if ray else 1)
    if not ray and workers != 1:
        raise SettingsError(
            "WORKERS", "more than 1 needs ENGINE=ray (the embedded exchange is one process)"
        )
    return Settings(
        port=read("PORT", _port, defaults.port),
        log_level=read("LOG_LEVEL", _choice(_LOG_LEVELS), defaults.log_level),
        expiration_interval_us=read(
            "EXPIRATION_INTERVAL", _duration, defaults.expiration_interval_us
        ),
        webhook_timeout_us=read("WEBHOOK_TIMEOUT", _duration, defaults.webhook_timeout_us),
        vwap_window_us=read("VWAP_WINDOW", _duration, defaults.vwap_window_us),
        read_timeout_us=read("READ_TIMEOUT", _duration, defaults.read_timeout_us),
        write_timeout_us=read("WRITE_TIMEOUT", _duration, defaults.write_timeout_us),
        idle_timeout_us=read("IDLE_TIMEOUT", _duration, defaults.idle_timeout_us),
        shutdown_timeout_us=read("SHUTDOWN_TIMEOUT", _duration, defaults.shutdown_timeout_us),
        webhook_ca_bundle=read("WEBHOOK_CA_BUNDLE", _ca_bundle, defaults.webhook_ca_bundle),
        webhook_allow_private=read(
            "WEBHOOK_ALLOW_PRIVATE", _boolean, defaults.webhook_allow_private
        ),
        webhook_secret=read("WEBHOOK_SECRET", _text, defaults.webhook_secret),
        webhook_queue_limit=read(
            "WEBHOOK_QUEUE_LIMIT", _positive_int, defaults.webhook_queue_limit
        ),
        database_path=read(
            "DATABASE_PATH", _text, RAY_DATABASE_PATH if ray else defaults.database_path
        ),
        database_sync=read("DATABASE_SYNC", _choice(_DATABASE_SYNCS), defaults.database_sync),
        idempotency_ttl_us=read("IDEMPOTENCY_TTL", _duration, defaults.idempotency_ttl_us),
        log_format=read("LOG_FORMAT", _choice(_LOG_FORMATS), defaults.log_format),
        account_actors=read("ACCOUNT_ACTORS", _positive_int, defaults.account_actors),
        auth=auth,
        admin_token=read("ADMIN_TOKEN", _admin_token, None) if auth == "api_key" else None,
        max_connections=read("MAX_CONNECTIONS", _positive_int, defaults.max_connections),
        max_streams=read("MAX_STREAMS", _positive_int, defaults.max_streams),
        max_symbols=read("MAX_SYMBOLS", _positive_int, defaults.max_symbols),
        idempotency_max_keys=read(
            "IDEMPOTENCY_MAX_KEYS", _positive_int, defaults.idempotency_max_keys
        ),
        snapshot_interval_us=read("SNAPSHOT_INTERVAL", _duration, defaults.snapshot_interval_us),
        engine=engine,
        workers=workers,
        account_shards=read("ACCOUNT_SHARDS", _positive_int, defaults.account_shards),
        symbol_shards=read("SYMBOL_SHARDS", _positive_int, defaults.symbol_shards),
        ray_address=read("RAY_ADDRESS", _text, None) if ray else None,
    )


# Parsers: (variable name, non-empty raw value) -> value, or SettingsError. The value is
# shown with repr() so that the message stays on one line whatever the variable holds.


def _text(name: str, raw: str) -> str:
    return raw


def _duration(name: str, raw: str) -> int:
    try:
        return parse_duration(raw)
    except ValueError:
        raise SettingsError(name, f"invalid duration {raw!r} ({DURATION_FORM})") from None


def _port(name: str, raw: str) -> int:
    if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 65535:
        return int(raw)
    raise SettingsError(name, f"invalid port {raw!r} (expected an integer 1 to 65535)")


def _positive_int(name: str, raw: str) -> int:
    if raw.isascii() and raw.isdigit() and int(raw) > 0:
        return int(raw)
    raise SettingsError(name, f"invalid integer {raw!r} (expected a positive integer, e.g. 10000)")


def _boolean(name: str, raw: str) -> bool:
    if raw in ("true", "false"):
        return raw == "true"
    raise SettingsError(name, f"invalid boolean {raw!r} (expected true or false)")


def _choice(choices: tuple[_S, ...]) -> Callable[[str, str], _S]:
    def parse(name: str, raw: str) -> _S:
        if raw in choices:
            return cast(_S, raw)
        raise SettingsError(name, f"invalid value {raw!r} (expected one of {', '.join(choices)})")

    return parse


def _admin_token(name: str, raw: str) -> str:
    """At least 32 visible ASCII characters (no spaces): a guessable token would open
    every broker's account. The value itself is never repeated in the error."""
    if len(raw) >= 32 and all("!" <= char <= "~" for char in raw):
        return raw
    raise SettingsError(name, f"invalid token of {len(raw)} characters ({_ADMIN_TOKEN_FORM})")


def _ca_bundle(name: str, raw: str) -> str:
    """Load the file as the delivery code will, so a bad bundle stops the start, not a delivery."""
    try:
        ssl.create_default_context().load_verify_locations(cafile=raw)
    except (OSError, ValueError):  # ssl.SSLError is an OSError
        raise SettingsError(
            name, f"cannot load {raw!r} (expected empty or a readable PEM file of CA certificates)"
        ) from None
    return raw
