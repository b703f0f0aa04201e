"""SymbolListing: the one owner of the listed symbols and of their limit (`MAX_SYMBOLS`).

A symbol is listed by a durable registration that names it in its holdings, or by an
accepted limit order (a market order never opens a book). Both are decided later than
the request is admitted, so a request that would list a symbol first takes a place for
it (`claim`: a registration in its account actor, a limit order in R1); the place
becomes the symbol's when the request succeeds (`list`) and is given back by whoever
refuses it (`release`). A place held by a request in flight counts like a listed symbol,
so two requests can never both take the last place; the one that loses is refused at
once (`symbol_limit_reached`), even if the other is refused later.

A symbol's actor (a thread) runs only for a symbol that holds a place (`occupy`, by
the registry); such a place stays taken for as long as the actor runs, so threads stay
bounded by the limit even when an order that started an actor is refused at acceptance.

Thread-safe: a short lock around counters, never held while anyone waits. `listed` is
the published set the HTTP layer reads without a hop (`in`, `copy()`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable


class SymbolListing:
    __slots__ = ("_lock", "_places", "limit", "listed")

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.listed: set[str] = set()
        # a symbol not listed -> how many hold its place: requests in flight, and its
        # actor once started (a place for good)
        self._places: dict[str, int] = {}
        self._lock = threading.Lock()

    def claim(self, symbols: Iterable[str]) -> tuple[str, ...] | None:
        """Places for those of `symbols` not listed yet: the ones claimed (maybe none),
        or None when they do not all fit (nothing claimed then: all or nothing)."""
        listed = self.listed
        symbols = tuple(symbols)
        for symbol in symbols:
            if symbol not in listed:
                break
        else:  # the usual case, without the lock: a listed symbol stays listed
            return ()
        with self._lock:
            places = self._places
            new = tuple(dict.fromkeys(s for s in symbols if s not in listed))
            needed = sum(1 for s in new if s not in places)
            if needed and len(listed) + len(places) + needed > self.limit:
                return None
            for symbol in new:
                places[symbol] = places.get(symbol, 0) + 1
            return new

    def has_place_for(self, symbol: str) -> bool:
        """Whether `symbol` is listed or could be now (a look, nothing claimed): for a
        request that cannot list it (a market order never creates a book)."""
        if symbol in self.listed:
            return True
        with self._lock:
            return (
                symbol in self.listed
                or symbol in self._places
                or len(self.listed) + len(self._places) < self.limit
            )

    def occupy(self, symbol: str) -> bool:
        """The registry starts `symbol`'s actor: it keeps a place until it is listed.
        False (nothing taken) when it holds none and none is free."""
        return self.claim((symbol,)) is not None

    def list(self, symbols: Iterable[str]) -> None:
        """`symbols` are listed (a request's success): their places are theirs for
        good, and the claims other requests hold on them are moot."""
        with self._lock:
            for symbol in symbols:
                if symbol not in self.listed:
                    self.listed.add(symbol)
                    self._places.pop(symbol, None)

    def release(self, claimed: Iterable[str]) -> None:
        """A request that claimed these places was refused: give them back.

        A listed symbol stays listed and its claims end with its listing, so whoever
        refuses an order may give back its symbol's place without knowing whether the
        order claimed one: if the symbol is still not listed, the order holds a place."""
        listed = self.listed
        unlisted = [symbol for symbol in claimed if symbol not in listed]
        if not unlisted:  # the usual case, without the lock
            return
        with self._lock:
            places = self._places
            for symbol in unlisted:
                held = places.get(symbol)
                if held is None:  # listed meanwhile
                    continue
                if held == 1:
                    del places[symbol]
                else:
                    places[symbol] = held - 1

    def taken(self) -> int:
        """Places taken: listed symbols and those held for requests in flight."""
        with self._lock:
            return len(self.listed) + len(self._places)
