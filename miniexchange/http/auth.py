"""API keys (`AUTH=api_key`): who sent a request, and what it may touch.

Each resource declares its `access`: public, the admin token, or a broker's key (the
admin token also passes). `Authentication` runs right after routing, once the method
is known to exist, so 404 and 405 come first and 401/403 before the body is read. A
broker's key then acts for that broker alone: a request naming another broker is
refused 403 after its fields are validated (`act_for`), and another broker's order or
subscription is answered 404 as if it did not exist (`may_see`). With `AUTH=none` the
middleware is not installed, no request has a principal, and every check passes.

Tokens: the admin token is compared with `hmac.compare_digest`; an API key is found by
its SHA-256 digest (the exchange keeps no key), so no comparison leaks a prefix.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Final, NamedTuple

import falcon.asgi

from miniexchange.model.errors import ExchangeError

PUBLIC: Final = "public"
ADMIN: Final = "admin"
BROKER: Final = "broker"


class Principal(NamedTuple):
    """Who a request acts as: a broker (by its key) or the admin (`broker_id` None)."""

    broker_id: str | None


THE_ADMIN: Final = Principal(None)


def unauthorized() -> ExchangeError:
    return ExchangeError("unauthorized", "A valid API key is required")


def admin_only() -> ExchangeError:
    return ExchangeError("forbidden", "This endpoint requires the admin token")


def cannot_act_for(broker_id: str) -> ExchangeError:
    return ExchangeError("forbidden", f"This API key cannot act for broker {broker_id}")


def principal_of(req: falcon.asgi.Request) -> Principal | None:
    """The request's principal; None with `AUTH=none` (or on a public endpoint)."""
    return getattr(req.context, "principal", None)


def owner_of(req: falcon.asgi.Request) -> str | None:
    """The broker a request is limited to; None: it may touch any broker's resources."""
    principal = principal_of(req)
    return None if principal is None else principal.broker_id


def may_see(req: falcon.asgi.Request, broker_id: str) -> bool:
    """Whether the request may touch a resource of `broker_id` (else: as if missing)."""
    owner = owner_of(req)
    return owner is None or owner == broker_id


def act_for(req: falcon.asgi.Request, broker_id: str) -> None:
    """403 unless the request may act for `broker_id` (checked after validation, before
    existence: another broker that does not exist is a 403 too)."""
    if not may_see(req, broker_id):
        raise cannot_act_for(broker_id)


def idempotency_scope(req: falcon.asgi.Request, endpoint: str) -> str:
    """An `Idempotency-Key` belongs to one endpoint and one principal: the broker (not
    its key, so a retry after a rotation still replays) or the admin."""
    principal = principal_of(req)
    if principal is None:
        return endpoint
    return f"{endpoint} as {principal.broker_id or 'admin'}"


class Authentication:
    """Falcon middleware for `AUTH=api_key`."""

    def __init__(
        self, admin_token: str, broker_with_key: Callable[[str], Awaitable[str | None]]
    ) -> None:
        """`broker_with_key`: the broker an API key belongs to (`Engine.broker_with_key`)."""
        self._admin = admin_token.encode()
        self._broker_with_key = broker_with_key

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        params: dict[str, Any],
    ) -> None:
        if resource is None or req.method not in resource.methods:
            return  # an unknown route (404) or method (405) is answered first
        if resource.access == PUBLIC:
            return
        principal = await self._principal(req.get_header("Authorization"))
        if principal is None:
            raise unauthorized()
        if resource.access == ADMIN and principal.broker_id is not None:
            raise admin_only()
        req.context.principal = principal

    async def _principal(self, header: str | None) -> Principal | None:
        scheme, _, token = (header or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        if hmac.compare_digest(token.encode(), self._admin):
            return THE_ADMIN
        broker_id = await self._broker_with_key(token)
        return None if broker_id is None else Principal(broker_id)
