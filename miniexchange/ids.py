"""Identifier generation: `ord-`, `trd-`, `wh-` + a lowercase random (v4) UUID (§1.7)."""

from __future__ import annotations

import uuid
from typing import Protocol


class IdFactory(Protocol):
    def order_id(self) -> str: ...

    def trade_id(self) -> str: ...

    def webhook_id(self) -> str: ...


class RandomIds:
    """Production ids: random version-4 UUIDs, unguessable and unique in practice."""

    __slots__ = ()

    def order_id(self) -> str:
        return f"ord-{uuid.uuid4()}"

    def trade_id(self) -> str:
        return f"trd-{uuid.uuid4()}"

    def webhook_id(self) -> str:
        return f"wh-{uuid.uuid4()}"
