"""Every error leaves the exchange as `{"error": code, "message": text}`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import falcon
import falcon.asgi
import orjson

from miniexchange.actors.seam import EngineStopped
from miniexchange.model.errors import ExchangeError

log = logging.getLogger("miniexchange.http")

STATUS_OF_CODE: dict[str, int] = {
    "invalid_request": 400,
    "validation_error": 400,
    "not_found": 404,
    "broker_not_found": 404,
    "order_not_found": 404,
    "symbol_not_found": 404,
    "webhook_not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "broker_already_exists": 409,
    "insufficient_balance": 409,
    "insufficient_holdings": 409,
    "no_liquidity": 409,
    "order_not_cancellable": 409,
    "symbol_limit_reached": 409,
    "idempotency_key_in_progress": 409,
    "payload_too_large": 413,
    "unauthorized": 401,
    "forbidden": 403,
    "idempotency_key_reused": 422,
    "internal_error": 500,
    "journal_unavailable": 503,
    "symbol_unavailable": 503,
    "unavailable": 503,
    "headers_too_large": 431,
    "overloaded": 503,
}

MAX_HEADER_BYTES = 16_384
"""A request's header section, request line included, at most (`http.protocol`)."""
HEADERS_TOO_LARGE_MESSAGE = f"Request headers must not exceed {MAX_HEADER_BYTES} bytes"
OVERLOADED_MESSAGE = "The exchange is at its connection limit; retry later"


def overloaded() -> ExchangeError:
    """Past MAX_CONNECTIONS (answered by `http.protocol`) or MAX_STREAMS (`http.stream_hub`)."""
    return ExchangeError("overloaded", OVERLOADED_MESSAGE)


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": code, "message": message})


def render_refusal(refusal: ExchangeError) -> tuple[int, bytes]:
    """A refusal's status and body, exactly as the error handler sends them (so a
    stored `Idempotency-Key` answer replays byte for byte)."""
    return STATUS_OF_CODE[refusal.code], error_body(refusal.code, refusal.message)


def answer_or_refusal(
    render_answer: Callable[[Any], tuple[int, bytes]],
) -> Callable[[Any], tuple[int, bytes]]:
    """Render an endpoint's outcome: its answer, or the refusal it raised."""

    def render(outcome: Any) -> tuple[int, bytes]:
        if isinstance(outcome, ExchangeError):
            return render_refusal(outcome)
        return render_answer(outcome)

    return render


def render_error(resp: falcon.asgi.Response, code: str, message: str) -> None:
    resp.status = STATUS_OF_CODE[code]
    resp.content_type = "application/json"
    resp.data = error_body(code, message)


async def handle_exchange_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, error: ExchangeError, params: dict
) -> None:
    render_error(resp, error.code, error.message)
    code = error.code
    if code == "unauthorized":
        resp.set_header("WWW-Authenticate", "Bearer")
    elif code == "request_timeout":
        resp.set_header("Connection", "close")  # the body's rest never reaches a request
    elif code == "overloaded":
        resp.set_header("Retry-After", "1")
        resp.set_header("Connection", "close")


async def handle_http_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, error: falcon.HTTPError, params: dict
) -> None:
    """Falcon's own refusals (no route, wrong method, bad framing) in the contract's shape."""
    if isinstance(error, falcon.HTTPMethodNotAllowed):
        render_error(
            resp, "method_not_allowed", f"Method {req.method} is not allowed on {req.path}"
        )
        # Falcon lists every responder, ours for HEAD and OPTIONS (which refuse) included.
        allowed = (error.headers or {}).get("Allow", "").split(", ")
        resp.set_header("Allow", ", ".join(sorted(set(allowed) - {"HEAD", "OPTIONS", ""})))
    elif error.status_code == 404:
        render_error(resp, "not_found", f"No route matches {req.method} {req.path}")
    elif error.status_code == 413:
        render_error(resp, "payload_too_large", "Request body must not exceed 1048576 bytes")
    else:
        resp.status = error.status_code
        resp.content_type = "application/json"
        resp.data = error_body("invalid_request", error.title or "Bad request")


async def handle_engine_stopped(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, error: Exception, params: dict
) -> None:
    render_error(resp, "unavailable", "The exchange is shutting down; retry later")


async def handle_unexpected(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, error: Exception, params: dict
) -> None:
    log.error("unhandled error on %s %s", req.method, req.path, exc_info=error)
    render_error(resp, "internal_error", "An internal error occurred")


def install_error_handlers(app: falcon.asgi.App) -> None:
    # Falcon picks the most specific handler for an exception's class.
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(EngineStopped, handle_engine_stopped)
    app.add_error_handler(ExchangeError, handle_exchange_error)
