"""Property tests: random trading on several symbols keeps every rule of docs/design.md,
"Rules the engine keeps".

A hypothesis state machine drives the real engine step and ledgers through `Trading`
(wired as the actors wire them, without messages): limit and market bids and asks from three
brokers on two symbols, cancels of random orders (live, terminal or unknown), clock
advances (with an expiry sweep, or left to the next submission), and recoveries that rebuild a book with
`restore`. Each submission is checked against a brute-force reference (which orders it
must meet, at which prices, or which refusal), and after every step all seven
invariants are checked against the brute-force state kept here.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from miniexchange.model.book import Level, MatchResult, OrderBook
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, SubmitOrder
from miniexchange.model.errors import ExchangeError
from miniexchange.model.ledger import Balance, Ledger
from miniexchange.model.orders import (
    ACTIVE_STATUSES,
    CANCELLED,
    EXPIRED,
    FILLED,
    PARTIALLY_FILLED,
    PENDING,
    Order,
    Trade,
)
from miniexchange.testing import SequentialIds
from tests.model.support import Trading, at

SYMBOLS = ("AAPL", "GOOG")
BROKERS = ("alice", "bob", "carol")
START = at("09:00:00")
UNKNOWN = "ord-unknown"

brokers = st.sampled_from(BROKERS)
symbols = st.sampled_from((*SYMBOLS, SYMBOLS[0]))  # AAPL twice as busy
sides = st.sampled_from((BID, ASK))
prices = st.sampled_from((990, 995, 1000, 1005, 1010))  # cents: five levels around 10.00
quantities = st.one_of(st.sampled_from((1, 3, 12)), st.integers(1, 40))  # some sell out
# Lifetimes in µs; 0 is refused (`expires_at` must be later than now).
lifetimes = st.sampled_from(
    (600_000_000, 60_000_000, 600_000_000, 10_000_000, 3_000_000, 1_000_000, 1, 0)
)
holding_sizes = st.sampled_from((300, 100, 300, 12, 3, 0))  # small ones sell out
# Clock steps in µs; 0 keeps `created_at` ties for the order_id tie-break.
steps = st.sampled_from((1_000_000, 3_000_000, 250_000, 1, 0))


def priority(order: Order) -> tuple[int, int, str]:
    """The book key: best price first, then created_at, then order_id."""
    price: int = order.price  # type: ignore[assignment]
    return (-price if order.side == BID else price, order.created_at, order.order_id)


def reference_fills(resting: list[Order], command: SubmitOrder) -> list[tuple[str, int, int]]:
    """(resting order id, price, quantity) a pass must produce, by brute force."""
    opposite = sorted((o for o in resting if o.side != command.side), key=priority)
    left = command.quantity
    out = []
    for order in opposite:
        if not left:
            break
        price: int = order.price  # type: ignore[assignment]
        if command.type == LIMIT:
            limit_price: int = command.price  # type: ignore[assignment]
            if (limit_price < price) if command.side == BID else (limit_price > price):
                break
            if command.side == ASK:
                price = limit_price  # two limit orders trade at the seller's price
        quantity = min(left, order.remaining_quantity)
        out.append((order.order_id, price, quantity))
        left -= quantity
    return out


def reference_levels(resting: list[Order], side: str) -> list[Level]:
    totals: dict[int, list[int]] = {}
    for order in resting:
        if order.side == side:
            level = totals.setdefault(order.price, [0, 0])  # type: ignore[arg-type]
            level[0] += order.remaining_quantity
            level[1] += 1
    best_first = sorted(totals, reverse=side == BID)
    return [Level(price, *totals[price]) for price in best_first]


def reference_sweep(resting: list[Order], incoming_side: str, quantity: int) -> list[Level]:
    out = []
    opposite = ASK if incoming_side == BID else BID
    for level in reference_levels(resting, opposite):
        if not quantity:
            break
        take = min(quantity, level.quantity)
        out.append(Level(level.price, take, level.order_count))
        quantity -= take
    return out


class TradingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.exchange = Trading(SequentialIds())
        self.now = START
        self.orders: dict[str, Order] = {}  # every order ever created, latest state
        self.trades: dict[str, Trade] = {}
        self.initial_cash = 0
        self.seeded: Counter[str] = Counter()
        self.swept_at = dict.fromkeys(SYMBOLS, START)  # last expire_due(now) per symbol
        self.updated_at: dict[str, int] = {}

    @property
    def ledgers(self) -> dict[str, Ledger]:
        return self.exchange.ledgers

    # -- setup ----------------------------------------------------------------------------

    @initialize(
        cash=st.lists(
            st.sampled_from((1_000_000, 300_000, 1_000_000, 30_000, 0)), min_size=3, max_size=3
        ),
        holdings=st.lists(st.tuples(holding_sizes, holding_sizes), min_size=3, max_size=3),
    )
    def register(self, cash: list[int], holdings: list[tuple[int, int]]) -> None:
        for broker_id, amount, shares in zip(BROKERS, cash, holdings, strict=True):
            seed = dict(zip(SYMBOLS, shares, strict=True))
            ledger = self.exchange.register(broker_id, amount, seed, START)
            self.initial_cash += amount
            self.seeded.update(seed)
            self.updated_at[broker_id] = ledger.updated_at
        for symbol in SYMBOLS:
            self.exchange.state(symbol)

    # -- rules ----------------------------------------------------------------------------

    # Each submission first lets time pass without a sweep: the submission itself must
    # then expire what is due before it matches (none trades once due).

    @rule(
        broker=brokers,
        symbol=symbols,
        side=sides,
        price=prices,
        quantity=quantities,
        lifetime=lifetimes,
        step=steps,
    )
    def limit_order(
        self,
        broker: str,
        symbol: str,
        side: str,
        price: int,
        quantity: int,
        lifetime: int,
        step: int,
    ) -> None:
        self.now += step
        self._submit(self._limit(broker, symbol, side, price, quantity, lifetime))

    @rule(
        broker=brokers,
        symbol=symbols,
        side=sides,
        reach=st.sampled_from((0, 5, 10, -5)),
        quantity=quantities,
        lifetime=lifetimes,
        step=steps,
    )
    def crossing_limit_order(
        self,
        broker: str,
        symbol: str,
        side: str,
        reach: int,
        quantity: int,
        lifetime: int,
        step: int,
    ) -> None:
        """A limit order priced `reach` cents through the best opposite price, if any."""
        self.now += step
        opposite = self.exchange.books[symbol].best_price(ASK if side == BID else BID)
        if opposite is None:
            price = 1000
        else:
            price = max(1, opposite + reach if side == BID else opposite - reach)
        self._submit(self._limit(broker, symbol, side, price, quantity * 2, lifetime))

    @rule(
        broker=brokers,
        symbol=symbols,
        side=sides,
        price=prices,
        excess=st.sampled_from((0, 1)),
        lifetime=lifetimes,
        step=steps,
    )
    def all_in_limit_order(
        self,
        broker: str,
        symbol: str,
        side: str,
        price: int,
        excess: int,
        lifetime: int,
        step: int,
    ) -> None:
        """A limit order sized to the broker's available cash or shares, or one over:
        the funds check's boundary, where available and total differ (available decides)."""
        self.now += step
        self._expire(symbol)  # so that "available" is what the submission will see
        ledger = self.ledgers[broker]
        if side == BID:
            quantity = ledger.available_cash // price + excess
        else:
            quantity = ledger.available_shares(symbol) + excess
        quantity = max(quantity, 1)
        self._submit(self._limit(broker, symbol, side, price, quantity, lifetime))

    @rule(broker=brokers, symbol=symbols, side=sides, quantity=st.integers(1, 80), step=steps)
    def market_order(self, broker: str, symbol: str, side: str, quantity: int, step: int) -> None:
        self.now += step
        self._submit(SubmitOrder(MARKET, broker, "doc1", side, symbol, quantity))

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        """Cancel any order ever created (live or terminal), or an unknown id."""
        order_id = data.draw(st.sampled_from([*sorted(self.orders), UNKNOWN]), label="order_id")
        if order_id == UNKNOWN:
            for symbol in SYMBOLS:
                self._expire(symbol)  # a cancel expires the due orders first
                assert self.exchange.cancel(symbol, UNKNOWN, self.now) is None
            return
        symbol = self.orders[order_id].symbol
        self._expire(symbol)  # as the actor: due orders first
        before = self.orders[order_id]
        book = self.exchange.books[symbol]
        was_resting = book.get(order_id)

        cancelled = self.exchange.cancel(symbol, order_id, self.now)

        if was_resting is None:
            assert cancelled is None
            assert not before.is_active
            return
        assert cancelled is not None
        event("cancelled a resting order")
        assert was_resting == before
        assert cancelled.status == CANCELLED
        assert cancelled.cancelled_at == self.now and cancelled.expired_at is None
        assert cancelled.cancelled_quantity == before.remaining_quantity
        assert (cancelled.filled_quantity, cancelled.trades) == (
            before.filled_quantity,
            before.trades,
        )
        assert book.get(order_id) is None
        self.orders[order_id] = cancelled

    @rule(step=steps)
    def expiration_sweep(self, step: int) -> None:
        """Time passes, then the expiration process runs on every symbol."""
        self.now += step
        for symbol in SYMBOLS:
            self._expire(symbol)

    @rule(symbol=symbols, data=st.data())
    def recover(self, symbol: str, data: st.DataObject) -> None:
        """Rebuild a book from its resting orders, restored in any order (the key is total)."""
        book = self.exchange.books[symbol]
        resting = data.draw(st.permutations(book.resting_orders()), label="restore order")
        rebuilt = OrderBook(symbol)
        for order in resting:
            rebuilt.restore(order)
        self.exchange.states[symbol].book = rebuilt

    # -- steps ----------------------------------------------------------------------------

    def _limit(
        self, broker: str, symbol: str, side: str, price: int, quantity: int, lifetime: int
    ) -> SubmitOrder:
        expires_at = self.now + lifetime
        return SubmitOrder(LIMIT, broker, "doc1", side, symbol, quantity, price, expires_at)

    def _expire(self, symbol: str) -> None:
        resting = self.exchange.books[symbol].resting_orders()
        due = sorted(
            (o for o in resting if o.expires_at <= self.now),  # type: ignore[operator]
            key=lambda o: (o.expires_at, o.order_id),
        )
        expired = self.exchange.expire(symbol, self.now)
        assert [o.order_id for o in expired] == [o.order_id for o in due]  # expires_at order
        if expired:
            event("expired some")
        for order in expired:
            before = self.orders[order.order_id]
            assert order.status == EXPIRED
            assert order.expired_at == order.expires_at and order.cancelled_at is None
            assert order.cancelled_quantity == before.remaining_quantity
            assert order.trades == before.trades
            self.orders[order.order_id] = order
        self.swept_at[symbol] = self.now

    def _expected_refusal(self, command: SubmitOrder, resting: list[Order]) -> str | None:
        """The refusal the submission must get (funds against available amounts), from
        brute-force figures.

        A limit order's funds are checked by R1 before the symbol actor sees it; an
        `expires_at` not after now is refused by the HTTP layer before either, so the
        engine's own check only meets orders whose time passed in flight, after R1 held
        their funds (and then gives the hold back)."""
        lacking = self._lacking_funds(command, resting)
        if command.type == LIMIT and command.expires_at <= self.now:  # type: ignore[operator]
            return lacking or "validation_error"
        opposite = [o for o in resting if o.side != command.side]
        if command.type == MARKET and not opposite:
            return "no_liquidity"
        return lacking

    def _lacking_funds(self, command: SubmitOrder, resting: list[Order]) -> str | None:
        balance = self.ledgers[command.broker_id].balance()
        if command.side == BID:
            if command.type == LIMIT:
                needed = command.price * command.quantity  # type: ignore[operator]
            else:
                sweep = reference_sweep(resting, BID, command.quantity)
                needed = sum(level.price * level.quantity for level in sweep)
            available = balance.cash_balance - balance.reserved_cash
            return None if available >= needed else "insufficient_balance"
        held = {h.symbol: h.quantity - h.reserved_quantity for h in balance.holdings}
        return None if held.get(command.symbol, 0) >= command.quantity else "insufficient_holdings"

    def _snapshot(self) -> tuple[object, ...]:
        return (
            tuple(ledger.balance() for ledger in self.ledgers.values()),
            tuple(
                sorted(book.resting_orders(), key=priority) for book in self.exchange.books.values()
            ),
        )

    def _submit(self, command: SubmitOrder) -> None:
        symbol = command.symbol
        self._expire(symbol)
        resting = self.exchange.books[symbol].resting_orders()
        expected_refusal = self._expected_refusal(command, resting)
        expected = reference_fills(resting, command)
        before = self._snapshot()
        balances_before = {b: ledger.balance() for b, ledger in self.ledgers.items()}

        try:
            result = self.exchange.submit(command, self.now)
        except ExchangeError as refusal:
            assert refusal.code == expected_refusal, (refusal.code, expected_refusal)
            assert self._snapshot() == before  # a refused order leaves no trace
            event(f"refused: {refusal.code}")
            return
        assert expected_refusal is None, expected_refusal
        self._check_pass(command, result, expected, balances_before)
        event(f"{command.type} {result.order.status}, {min(len(result.fills), 3)}+ fills")
        if command.type == MARKET and command.side == BID:
            # The hold was the simulated sweep cost; the fills cost exactly that,
            # so the buyer's reservation is back where it was.
            sweep = reference_sweep(resting, BID, command.quantity)
            assert result.order.filled_value == sum(lv.price * lv.quantity for lv in sweep)
            buyer = command.broker_id
            assert self.ledgers[buyer].reserved_cash == balances_before[buyer].reserved_cash

    def _check_pass(
        self,
        command: SubmitOrder,
        result: MatchResult,
        expected: list[tuple[str, int, int]],
        balances_before: dict[str, Balance],
    ) -> None:
        order = result.order
        assert order.order_id not in self.orders
        assert order.created_at == self.now
        got = [(f.resting.order_id, f.trade.price, f.trade.quantity) for f in result.fills]
        assert got == expected
        filled = sum(quantity for _, _, quantity in expected)
        assert order.filled_quantity == filled
        left = command.quantity - filled
        if command.type == MARKET:
            assert result.fills, "an accepted market order always trades"
            assert order.status == (FILLED if not left else CANCELLED)
            assert (order.remaining_quantity, order.cancelled_quantity) == (0, left)
            assert self.exchange.books[command.symbol].get(order.order_id) is None
        else:
            status = FILLED if not left else PARTIALLY_FILLED if filled else PENDING
            assert order.status == status
            assert (order.remaining_quantity, order.cancelled_quantity) == (left, 0)
            on_book = self.exchange.books[command.symbol].get(order.order_id)
            assert on_book == (order if left else None)

        cash_delta: Counter[str] = Counter()
        share_delta: Counter[str] = Counter()
        for fill in result.fills:
            trade = fill.trade
            bid, ask = fill.bid, fill.ask
            # Two limits trade at the ask's price, a market order at the resting one's.
            if bid.type == LIMIT and ask.type == LIMIT:
                assert trade.price == ask.price and bid.price >= ask.price  # type: ignore[operator]
            elif bid.type == MARKET:
                assert trade.price == ask.price
            else:
                assert trade.price == bid.price
            assert trade.executed_at == self.now >= fill.resting.created_at
            # No trade involves an order at or past its expires_at.
            assert fill.resting.expires_at > trade.executed_at  # type: ignore[operator]
            assert (trade.bid_order_id, trade.ask_order_id) == (bid.order_id, ask.order_id)
            assert (trade.bid_broker_id, trade.ask_broker_id) == (bid.broker_id, ask.broker_id)
            assert trade.trade_id not in self.trades
            self.trades[trade.trade_id] = trade
            self.orders[fill.resting.order_id] = fill.resting
            value = trade.price * trade.quantity
            cash_delta[trade.bid_broker_id] -= value
            cash_delta[trade.ask_broker_id] += value
            share_delta[trade.bid_broker_id] += trade.quantity
            share_delta[trade.ask_broker_id] -= trade.quantity
        self.orders[order.order_id] = order

        for broker_id, ledger in self.ledgers.items():
            before = balances_before[broker_id]
            after = ledger.balance()
            assert after.cash_balance - before.cash_balance == cash_delta[broker_id]
            held_before = {h.symbol: h.quantity for h in before.holdings}
            held_after = {h.symbol: h.quantity for h in after.holdings}
            assert (
                held_after.get(command.symbol, 0) - held_before.get(command.symbol, 0)
                == share_delta[broker_id]
            )
            if command.symbol in held_before and command.symbol not in held_after:
                event("a broker sold out a symbol")

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def invariants_of_3_8(self) -> None:
        books = self.exchange.books
        resting_by_symbol = {s: book.resting_orders() for s, book in books.items()}
        all_resting = [o for orders in resting_by_symbol.values() for o in orders]

        # 1. No crossed book.
        for book in books.values():
            best_bid, best_ask = book.best_price(BID), book.best_price(ASK)
            assert best_bid is None or best_ask is None or best_bid < best_ask

        # 2. Quantity conservation (and a consistent record) for every order ever created.
        for order in self.orders.values():
            assert order.quantity == (
                order.filled_quantity + order.remaining_quantity + order.cancelled_quantity
            )
            assert order.filled_quantity == sum(t.quantity for t in order.trades)
            assert order.filled_value == sum(t.price * t.quantity for t in order.trades)
            for trade in order.trades:
                assert self.trades[trade.trade_id] == trade
                own_id = trade.bid_order_id if order.side == BID else trade.ask_order_id
                assert own_id == order.order_id
            if order.is_active:
                assert order.type == LIMIT and order.remaining_quantity > 0
                assert order.status == (PARTIALLY_FILLED if order.filled_quantity else PENDING)
                assert order.cancelled_quantity == 0
            else:
                assert order.remaining_quantity == 0
                if order.status == FILLED:
                    assert order.cancelled_quantity == 0
                else:
                    assert order.status in (CANCELLED, EXPIRED) and order.cancelled_quantity > 0
                if order.status == EXPIRED:
                    assert order.type == LIMIT and order.expired_at == order.expires_at
                if order.type == MARKET:
                    assert order.price is None and order.expires_at is None
                    assert order.status in (FILLED, CANCELLED) and order.trades
        for trade in self.trades.values():  # both orders list every trade
            assert trade in self.orders[trade.bid_order_id].trades
            assert trade in self.orders[trade.ask_order_id].trades

        # The books hold exactly the active orders, in their latest state.
        active = {o.order_id: o for o in self.orders.values() if o.status in ACTIVE_STATUSES}
        assert {o.order_id: o for o in all_resting} == active
        for symbol, orders in resting_by_symbol.items():
            assert all(o.symbol == symbol for o in orders)
            assert len(books[symbol]) == len(orders)

        # 3. Cash conservation.
        balances = {b: ledger.balance() for b, ledger in self.ledgers.items()}
        assert sum(b.cash_balance for b in balances.values()) == self.initial_cash

        # 4. Holdings conservation, per symbol.
        held: Counter[str] = Counter()
        for balance in balances.values():
            held.update({h.symbol: h.quantity for h in balance.holdings})
        assert {s: q for s, q in held.items() if q} == {s: q for s, q in self.seeded.items() if q}

        # 5. Reservation consistency.
        reserved_cash: Counter[str] = Counter()
        reserved_shares: defaultdict[str, Counter[str]] = defaultdict(Counter)
        for order in active.values():
            if order.side == BID:
                reserved_cash[order.broker_id] += order.price * order.remaining_quantity  # type: ignore[operator]
            else:
                reserved_shares[order.broker_id][order.symbol] += order.remaining_quantity
        for broker_id, balance in balances.items():
            assert balance.reserved_cash == reserved_cash[broker_id]
            listed = {h.symbol: h.reserved_quantity for h in balance.holdings}
            expected = {s: q for s, q in reserved_shares[broker_id].items() if q}
            assert {s: q for s, q in listed.items() if q} == expected
            assert self.ledgers[broker_id].reserved_shares == expected
            # Consequences: nothing available is ever negative.
            assert balance.available_cash >= 0
            assert all(h.available_quantity >= 0 and h.quantity > 0 for h in balance.holdings)
            assert [h.symbol for h in balance.holdings] == sorted(
                h.symbol for h in balance.holdings
            )
            assert balance.updated_at >= self.updated_at[broker_id]  # monotonic
            self.updated_at[broker_id] = balance.updated_at

        # 6. No stale orders once expire_due(now) ran for the symbol.
        for symbol, orders in resting_by_symbol.items():
            for order in orders:
                assert order.is_active and order.type == LIMIT
                assert order.expires_at > self.swept_at[symbol]  # type: ignore[operator]
            expiries = [o.expires_at for o in orders]
            assert books[symbol].next_expiry() == (min(expiries) if expiries else None)  # type: ignore[type-var]

        # 7. Deterministic total order: unique keys on each side, unique ids overall. (That
        # the book follows the key order is checked pass by pass against `reference_fills`,
        # also after `recover` restored a book in a random order.)
        for orders in resting_by_symbol.values():
            for side in (BID, ASK):
                keys = [priority(o) for o in orders if o.side == side]
                assert len(set(keys)) == len(keys)
        issued = list(self.orders) + list(self.trades)
        assert len(set(issued)) == len(issued)

        # Reads agree with brute force: levels, best prices, sweeps.
        for book in books.values():
            orders = resting_by_symbol[book.symbol]
            for side in (BID, ASK):
                levels = reference_levels(orders, side)
                assert book.levels(side, 50) == levels
                assert book.levels(side, 2) == levels[:2]
                assert book.best_price(side) == (levels[0].price if levels else None)
                assert book.side_count(side) == sum(1 for o in orders if o.side == side)
                assert book.has_liquidity_for(BID if side == ASK else ASK) == bool(levels)
                total = sum(level.quantity for level in levels)
                incoming = BID if side == ASK else ASK
                for quantity in {1, total // 2 + 1, total, total + 7}:
                    assert book.sweep(incoming, quantity) == reference_sweep(
                        orders, incoming, quantity
                    )


TradingMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=(HealthCheck.too_slow,),
)
TestTrading = TradingMachine.TestCase
