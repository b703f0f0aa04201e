"""Account and symbol shards without Ray: the pykka actors of the embedded mode, driven
batch by batch, phase by phase (docs/ray.md, "Batches: the cycle of one batch").

- `AccountShard.r1(batch)`: per command it decides, in `seq` order: registration,
  credentials and webhook subscriptions (answered at once), limit holds
  (`reserve_limit`, the `AccountActor`'s own code), cancels' lookup, market orders'
  budgets. Returns one `MatchPart` per symbol shard (empty if nothing).
- `SymbolShard.me(k, parts)`: every account shard's part of batch `k`, merged by
  `seq`, each command one message to its `SymbolActor`, which runs `model.engine` at
  the stamped time. Returns one `SettlePart` per account shard.
- `AccountShard.r2(k, parts)`: every symbol shard's part, applied sorted by (`seq`,
  sender): ledger changes (`Apply`), order states to the `ReadIndex`, events to the
  webhook dispatcher. Returns the answers of the commands it decided.

The actors run with stand-ins for what the embedded mode has in-process: a
`MemoryJournal` (the journal is the sequencer's), clocks and ids that give only the
stamped values, a listing whose places the sequencer claimed at the cut, and account
refs (`SymbolContext.accounts`) answered by the symbol shard's batch code: `Hold` from
the budget R1 sent, `Apply` collected into the part for R2. Each actor gets its
commands in `seq` order (one FIFO); ME sends limit orders and cancels on without waiting
for each (the actors of several symbols then run at once), and each step's effects are
recorded against its command by the step's `at`, which the sequencer made unique; what
reads the batch's effects so far (a tick, a market order, a shortfall) waits for them.
R1 sends each account actor its orders of the batch in one message (`InOrder`) and
reads the answers once they are all done: the actor decides each order's hold in
`seq` order, a shortfall's hold of what is available included (`ReserveLimit`), so the
parts are built from the answers in `seq` order, whatever the actors' timing; what
reads or asks an actor directly (a registration, an issue, a subscription) first waits
for what was sent before it.

**A market order's budget** (the race of docs/ray.md, "Open points", settled here): R1
*holds* the budget in the ledger (a bid: all the cash available, an ask: its quantity,
or what is available if less), so R1 of the next batch, which may run before R2 of this
one, cannot hold the same funds again. ME answers the `SymbolActor`'s `Hold` from that
budget (one per broker and symbol per batch, spent in `seq` order), and R2 releases
what the sweeps did not use, after the broker's last market order on that symbol in the
batch. **A limit order short of funds** while the broker holds something on its symbol
(the embedded `ExpireThenCheck`): R1 holds what is available, ME expires the symbol's
due orders and accepts it only if this batch's releases on that symbol to that broker,
not yet used, cover the shortfall; its `Held` then goes to R2 after those releases.
Both are exact on sequential traffic, and never let available cash or shares go
negative: R1 holds only what is available, and ME spends only what R1 held or R2
releases ahead of the spending.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, NamedTuple, cast

import pykka

from miniexchange.actors.accounts import (
    AccountActor,
    Published,
    Secrets,
    account_index,
    tell_changes,
)
from miniexchange.actors.base import Reply
from miniexchange.actors.clock import ClockActor
from miniexchange.actors.listeners import CountTrades, Step, StepListener
from miniexchange.actors.listing import SymbolListing
from miniexchange.actors.market_data import MarketData
from miniexchange.actors.messages import (
    Apply,
    Cancel,
    ExpireDue,
    Hold,
    HoldAvailable,
    InOrder,
    Issue,
    ListWebhooks,
    Notify,
    ReadBalance,
    ReadBook,
    ReadPrice,
    ReadQuote,
    Register,
    Reserved,
    ReserveLimit,
    Submit,
    Subscribe,
    Unsubscribe,
)
from miniexchange.actors.messages import Tick as Sweep
from miniexchange.actors.read_index import ReadIndex
from miniexchange.actors.symbol import SymbolActor, SymbolContext
from miniexchange.actors.webhooks import Deliver, Listening, WebhookDispatcherActor
from miniexchange.clock import Clock
from miniexchange.cluster.batches import (
    CancelOrder,
    IssueCredentials,
    SubscribeWebhooks,
    UnsubscribeWebhook,
)
from miniexchange.cluster.shard_snapshots import (
    AccountSnapshot,
    LedgerState,
    SymbolBook,
    SymbolSnapshot,
    read_attribute,
    set_attribute,
)
from miniexchange.cluster.stamped import Batch, Command, Stamped, Tick
from miniexchange.journal.store import MemoryJournal
from miniexchange.metrics import Metrics
from miniexchange.model.commands import BID, LIMIT, RegisterBroker, SubmitOrder
from miniexchange.model.credentials import Credentials
from miniexchange.model.engine import BookView, QuoteView
from miniexchange.model.errors import (
    ExchangeError,
    broker_not_found,
    insufficient_funds,
    not_cancellable,
    order_not_found,
)
from miniexchange.model.events import Event
from miniexchange.model.ledger import Balance, Held, Ledger, LedgerChange, Released
from miniexchange.model.orders import Order
from miniexchange.model.settlement import limit_hold
from miniexchange.model.subscriptions import Subscription, Subscriptions
from miniexchange.model.vwap import Price

# -- placement ------------------------------------------------------------------------


class Placement(NamedTuple):
    """Which shard owns what: the CRC-32 rule (`account_index`) of the embedded account
    actors, for brokers and for symbols, never Python's salted `hash`. The counts are
    fixed for a journal's life."""

    account_shards: int
    symbol_shards: int

    def account_shard(self, name: str) -> int:
        """A broker's account shard; also an order's, a webhook's or an API key's,
        which the sequencer draws so that it names its broker's shard."""
        return account_index(name, self.account_shards)

    def symbol_shard(self, symbol: str) -> int:
        return account_index(symbol, self.symbol_shards)

    def deciding_shard(self, command: Command) -> int:
        """The account shard that runs a command's R1 and answers it. A cancel and an
        unsubscription are routed by the id they name; a tick by shard 0, which hands
        it to every symbol shard."""
        if type(command) is CancelOrder:
            return self.account_shard(command.order_id)
        if type(command) is UnsubscribeWebhook:
            return self.account_shard(command.webhook_id)
        if type(command) is Tick:
            return 0
        return self.account_shard(command.broker_id)  # type: ignore[union-attr]


# -- the parts between the phases -------------------------------------------------------

RESERVED = "reserved"  # a limit order whose whole reservation R1 holds
SHORTFALL = "shortfall"  # a limit order of which R1 holds what was available
BUDGET = "budget"  # a market order with what R1 holds as its budget
NOTHING = "nothing"  # a cancel of an active order, a tick


class ToMatch(NamedTuple):
    """One command for ME, as R1 left it."""

    stamped: Stamped
    funds: str  # one of the kinds above
    symbol: str = ""  # the symbol whose actor runs it (a cancel's: its order's); "" a tick
    cash: int = 0  # what R1 holds for it
    quantity: int = 0


class MatchPart(NamedTuple):
    """R1 → ME: one account shard's commands of batch `k` for one symbol shard."""

    k: int
    sender: int  # the account shard
    commands: tuple[ToMatch, ...]


class OrderState(NamedTuple):
    """An order as a step left it; `new`: accepted by that step (listed under its broker)."""

    order: Order
    new: bool


class Effects(NamedTuple):
    """What one command's steps on one symbol shard did that concerns one account shard's
    brokers, in the order it happened."""

    seq: int
    changes: tuple[LedgerChange, ...]
    orders: tuple[OrderState, ...]
    events: tuple[Event, ...]


Answer = tuple[int, Any]
"""(`seq`, the command's answer: a value, or the `ExchangeError` refusing it)."""


class SettlePart(NamedTuple):
    """ME → R2: one symbol shard's effects of batch `k` for one account shard, and the
    answers of the commands that account shard decided."""

    k: int
    sender: int  # the symbol shard
    effects: tuple[Effects, ...]
    answers: tuple[Answer, ...]


class PhaseOrderError(RuntimeError):
    """A phase asked out of its order: running it would make a state no replay of the
    journal could rebuild."""


# -- stand-ins for what is in-process in the embedded mode ----------------------------------


class StampedClock:
    """The account side's clock: the time stamped on the command being handled (set by
    the shard before each), never the wall's."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = 0

    def now(self) -> int:
        return self.at

    def not_before(self, floor_us: int) -> None:
        pass


class Unstamped:
    """The id factory of a shard: every id comes stamped, so drawing one is a bug."""

    def order_id(self) -> str:
        raise RuntimeError("a shard draws no order id: the sequencer stamps it")

    def trade_id(self) -> str:
        raise RuntimeError("a shard draws no trade id: they derive from the trade seed")

    def webhook_id(self) -> str:
        raise RuntimeError("a shard draws no webhook id: the sequencer stamps them")


class UnstampedSecrets(Secrets):
    """The credentials maker of a shard: an issue comes with the ones the sequencer
    stamped (`Stamped.secrets`), so drawing one is a bug, as for ids."""

    def api_key(self) -> str:
        raise RuntimeError("a shard draws no API key: the sequencer stamps it")

    def webhook_secret(self) -> str:
        raise RuntimeError("a shard draws no webhook secret: the sequencer stamps it")


class ClaimedAtTheCut(SymbolListing):
    """The listing as a shard sees it: the sequencer claims the places (and refuses
    `symbol_limit_reached`) at the cut, so a claim here always succeeds and takes
    nothing; `listed` is what this shard has seen listed."""

    def claim(self, symbols: Iterable[str]) -> tuple[str, ...] | None:
        return ()

    def release(self, claimed: Iterable[str]) -> None:
        pass


def _no_symbol_actor(symbol: str) -> pykka.ActorRef[Any]:
    """R1's symbol refs (`AccountActor.symbols`): an account shard's actors answer R1 to
    the shard (`ReserveLimit`) and forward nothing, so asking for one is a bug."""
    raise RuntimeError(f"an account shard's actor forwarded an order on {symbol}")


class _Queued:
    """R1's messages to the account actors not yet sent, each actor's in `seq` order:
    sent in one hand-off per actor (`InOrder`), and waited for, before anything that
    must see their effects and at the end of R1."""

    __slots__ = ("messages",)

    def __init__(self) -> None:
        self.messages: dict[pykka.ActorRef[Any], list[object]] = {}

    def send(self, actor: pykka.ActorRef[Any], message: object) -> None:
        queued = self.messages.get(actor)
        if queued is None:
            queued = self.messages[actor] = []
        queued.append(message)

    def wait(self) -> None:
        """Send what is queued and wait until every actor has handled it."""
        if not self.messages:
            return
        sent = [
            actor.ask(InOrder(tuple(messages)), block=False)
            for actor, messages in self.messages.items()
        ]
        self.messages.clear()
        _wait_all(sent)


class _Answered(NamedTuple):
    """A command of R1 whose outcome an account actor answers once `_Queued` is done:
    `outcome(stamped, answer)` turns the answer into what `_r1` returns."""

    replies: list[Any]
    outcome: Callable[[Stamped, Any], Any]


class _Elsewhere:
    """What the clock actor tells a due symbol: nothing; the shard sends the `ExpireDue`s
    itself, one at a time, so that each step's effects are recorded against the tick."""

    def tell(self, message: object) -> None:
        pass


class _Discarded:
    """A symbol shard's read index: the orders go to the account shards (R2) instead."""

    def publish(self, order: Order) -> None:
        pass

    def publish_new(self, order: Order) -> None:
        pass


class _Recorded:
    """What the steps of the command being matched did, in order."""

    __slots__ = ("changes", "events", "orders")

    def __init__(self) -> None:
        self.changes: list[LedgerChange] = []
        self.orders: list[OrderState] = []
        self.events: list[Event] = []


class _Settlement(StepListener):
    """The account refs and a step listener of a symbol shard's actors: `Hold` answered
    from the batch's budgets, `Apply` and each durable step recorded against the command
    whose step it is. Called on the symbol actors' threads, several at once when the
    shard has sent several symbols' actors their commands (a step's `at` names its
    command: stamped times are unique)."""

    def __init__(self) -> None:
        self.by_at: dict[int, _Recorded] = {}  # each command of the batch, by its `at`
        self.budgets: dict[tuple[str, str], list[int]] = {}  # (broker, symbol) -> cash, shares
        self.freed: dict[tuple[str, str], list[int]] = {}  # released this batch, not yet used
        self._applied = threading.local()  # a step's `Apply`, until the step is heard

    def ask(self, message: Hold) -> bool:
        budget = self.budgets.get((message.broker_id, message.symbol))
        if budget is None:  # R1 found no ledger: as the account actor's `Hold` refuses
            raise broker_not_found(message.broker_id)
        if message.cash > budget[0] or message.quantity > budget[1]:
            return False
        budget[0] -= message.cash
        budget[1] -= message.quantity
        return True

    def tell(self, message: object) -> None:
        if type(message) is not Apply:
            raise TypeError(f"a symbol shard's actor told its account {message!r}")
        changes = message.changes
        applied = self._applied
        if getattr(applied, "changes", None) is None:
            applied.changes = []
        applied.changes.extend(changes)  # the step's, heard next on this thread
        for change in changes:
            if type(change) is Released:
                freed = self.freed.setdefault((change.broker_id, change.symbol), [0, 0])
                freed[0] += change.cash
                freed[1] += change.quantity

    def on_step(self, step: Step) -> None:
        """After the step's `Apply`, if any, on the same thread (`SymbolActor._finish`)."""
        outcome = step.outcome
        current = self.by_at[outcome.at]
        applied = getattr(self._applied, "changes", None)
        if applied:
            current.changes.extend(applied)
            applied.clear()
        current.orders.extend(OrderState(order, False) for order in outcome.changed)
        if outcome.accepted is not None:
            current.orders.append(OrderState(outcome.accepted, True))
        current.events.extend(outcome.events)


def _asked(actor: pykka.ActorRef[Any], message: Callable[[Reply], object]) -> Any:
    """Send one message whose handler replies before it returns (no persistence here),
    wait for it, and return what it replied."""
    replies: list[Any] = []
    actor.ask(message(replies.append))
    (reply,) = replies
    return reply


def _submission(stamped: Stamped, reply: Reply) -> Submit:
    """A stamped order as its symbol actor takes it: at its time, with its ids."""
    return Submit(
        cast(SubmitOrder, stamped.command),
        reply,
        None,
        stamped.request_id,
        stamped.at,
        stamped.order_id,
        stamped.trade_seed,
    )


def _wait_all(sent: list[pykka.Future[Any]]) -> None:
    """Wait until every message told is handled (each replies before it returns)."""
    for future in sent:
        future.get()
    sent.clear()


def _ignore(value: object) -> None:
    pass


def _refused(answer: Any) -> ExchangeError | None:
    """An account actor's R1 answer that refuses its order (counted by the actor); a
    bug the actor caught, any other exception, is raised: it is not an answer."""
    if isinstance(answer, ExchangeError):
        return answer
    if isinstance(answer, BaseException):
        raise answer
    return None


def _reserved(stamped: Stamped, reservation: Any) -> Any:
    """A limit order as its account actor's R1 left it: on to ME, or refused."""
    if (refusal := _refused(reservation)) is not None:
        return refusal
    symbol = cast(SubmitOrder, stamped.command).symbol
    funds = SHORTFALL if reservation.short else RESERVED
    return ToMatch(stamped, funds, symbol, reservation.cash, reservation.quantity)


def _budgeted(stamped: Stamped, held: Any) -> ToMatch | ExchangeError:
    """A market order as its account actor's R1 left it: on to ME with its budget, or
    refused (broker_not_found)."""
    if (refusal := _refused(held)) is not None:
        return refusal
    return ToMatch(stamped, BUDGET, cast(SubmitOrder, stamped.command).symbol, *held)


# -- account shards ----------------------------------------------------------------------


class AccountShard:
    """The brokers of `placement.account_shard(broker) == index`: their `AccountActor`s
    (`account_actors` of them, brokers spread by the same CRC-32), their orders'
    `ReadIndex` (by id and per broker) and their webhook dispatcher."""

    def __init__(
        self,
        index: int,
        placement: Placement,
        deliver: Deliver,
        account_actors: int = 1,
        metrics: Metrics | None = None,
    ) -> None:
        """`deliver`: where webhook deliveries go (a delivery pool's `submit`)."""
        self.index = index
        self.placement = placement
        self.clock = StampedClock()
        self.metrics = metrics if metrics is not None else Metrics()
        self.read_index = ReadIndex()
        self.registered: set[str] = set()
        self.published = Published()
        self.listing = ClaimedAtTheCut()
        self._queued = _Queued()
        self._actors = [
            AccountActor.start(
                self.clock,
                MemoryJournal(),
                _no_symbol_actor,
                self.registered,
                self.listing,
                self.metrics,
                published=self.published,
                secrets=UnstampedSecrets(),
            )
            for _ in range(account_actors)
        ]
        self._listening = Listening()
        self._dispatcher = WebhookDispatcherActor.start(
            self.clock,
            Unstamped(),
            deliver,
            MemoryJournal(),
            (),
            self._listening,
            self.published.webhook_secrets,
        )
        self._r1_done = 0  # the last batch whose R1 ran
        self._r2_done = 0
        self._r2_allowed = 0  # the last batch whose R2 the sequencer let run (`allow_r2`)
        self._decided: dict[int, list[Answer]] = {}  # R1's answers, given with R2's
        self.replayed_through = 0
        """The batches up to it are a replay of the journal: their webhook events were
        delivered when they first ran (or lost with the process), and are not again."""

    def account_actor(self, broker_id: str) -> pykka.ActorRef[Any]:
        """The actor of `broker_id`'s ledger: the CRC-32 over shards times actors keeps
        this shard's brokers spread over its actors (crc % (A * n) // A)."""
        count = len(self._actors)
        return self._actors[
            account_index(broker_id, self.placement.account_shards * count)
            // (self.placement.account_shards)
        ]

    def stop(self) -> None:
        for actor in self._actors:
            actor.stop()
        self._dispatcher.stop()

    # -- R1 --------------------------------------------------------------------------

    def r1(self, batch: Batch) -> list[MatchPart]:
        """R1 of `batch` (whose commands other shards decide are skipped): one part per
        symbol shard. Runs right after R2 of `batch.after`, as the cut recorded."""
        if batch.k != self._r1_done + 1 or batch.after != self._r2_done:
            raise PhaseOrderError(
                f"R1 of batch {batch.k} after R2 of {batch.after}: this account shard ran "
                f"R1 of {self._r1_done} and R2 of {self._r2_done}"
            )
        outgoing: list[list[ToMatch]] = [[] for _ in range(self.placement.symbol_shards)]
        decided: list[Answer] = []
        results: list[tuple[Stamped, Any]] = []
        for stamped in sorted(batch.commands, key=lambda command: command.seq):
            if self.placement.deciding_shard(stamped.command) != self.index:
                continue
            self.clock.at = stamped.at
            results.append((stamped, self._r1(stamped)))
        self._queued.wait()
        for stamped, result in results:
            if type(result) is _Answered:
                (answer,) = result.replies
                result = result.outcome(stamped, answer)
            if type(result) is not ToMatch:
                decided.append((stamped.seq, result))
            elif type(stamped.command) is Tick:  # every symbol shard sweeps its symbols
                for part in outgoing:
                    part.append(result)
            else:
                outgoing[self.placement.symbol_shard(result.symbol)].append(result)
        self._decided[batch.k] = decided
        self._r1_done = batch.k
        self._r2_allowed = batch.k - 1  # R2 of the batch before may follow this R1
        return [MatchPart(batch.k, self.index, tuple(commands)) for commands in outgoing]

    def _r1(self, stamped: Stamped) -> Any:
        """A command's R1: what goes on to ME (`ToMatch`), its answer, or (`_Answered`)
        the message queued to its account actor that decides which."""
        command = stamped.command
        kind = type(command)
        if kind is SubmitOrder:
            if command.type == LIMIT:  # type: ignore[union-attr]
                return self._limit(stamped, cast(SubmitOrder, command))
            return self._market(stamped, cast(SubmitOrder, command))
        if kind is CancelOrder:
            order_id = cast(CancelOrder, command).order_id
            order = self.read_index.get(order_id)
            if order is None:
                return order_not_found(order_id)
            if not order.is_active:  # a terminal state never changes: no symbol shard
                return not_cancellable(order.order_id, order.status)
            return ToMatch(stamped, NOTHING, order.symbol)
        if kind is Tick:
            return ToMatch(stamped, NOTHING)
        self._queued.wait()  # what follows asks an actor, or reads what one changes
        if kind is RegisterBroker:
            registration = cast(RegisterBroker, command)
            return _asked(
                self.account_actor(registration.broker_id),
                lambda reply: Register(registration, reply, at=stamped.at),
            )
        if kind is IssueCredentials:
            issue = cast(IssueCredentials, command)
            return _asked(
                self.account_actor(issue.broker_id),
                lambda reply: Issue(
                    issue.broker_id, issue.api_key, issue.webhook_secret, reply, stamped.secrets
                ),
            )
        if kind is SubscribeWebhooks:
            subscribe = cast(SubscribeWebhooks, command)
            if subscribe.broker_id not in self.registered:  # the dispatcher does not know
                return broker_not_found(subscribe.broker_id)
            return _asked(
                self._dispatcher,
                lambda reply: Subscribe(
                    subscribe.broker_id,
                    subscribe.url,
                    subscribe.events,
                    reply,
                    at=stamped.at,
                    webhook_ids=stamped.webhook_ids,
                ),
            )
        if kind is UnsubscribeWebhook:
            unsubscribe = cast(UnsubscribeWebhook, command)
            return _asked(
                self._dispatcher,
                lambda reply: Unsubscribe(unsubscribe.webhook_id, reply, unsubscribe.owner),
            )
        raise TypeError(f"not a command: {command!r}")

    def _limit(self, stamped: Stamped, command: SubmitOrder) -> _Answered:
        """The account actor's own R1 (`reserve_limit`); when it would expire the
        symbol's due orders first, the actor holds what is available and ME decides."""
        replies: list[Any] = []
        self._queued.send(
            self.account_actor(command.broker_id), ReserveLimit(command, replies.append)
        )
        return _Answered(replies, _reserved)

    def _market(self, stamped: Stamped, command: SubmitOrder) -> _Answered:
        """A market order's budget: a bid's whole available cash (its sweep's cost is
        known only in ME), an ask's quantity or what is available if less; held now. A
        broker without a ledger is refused here, before any book is looked at, as the
        HTTP layer's own check refuses it first in the embedded mode."""
        replies: list[Any] = []
        most = None if command.side == BID else command.quantity
        self._queued.send(
            self.account_actor(command.broker_id), HoldAvailable(command, most, replies.append)
        )
        return _Answered(replies, _budgeted)

    # -- R2 --------------------------------------------------------------------------

    def allow_r2(self, k: int) -> None:
        """The sequencer's word that R2 of batch `k`, the last whose R1 ran, may run
        before any other R1: no batch was cut behind `k`, and the next will say
        `after = k`. Without it R2 of `k` waits for R1 of `k + 1` (which comes first
        then): a shard that settled `k` on its own, before the sequencer saw `k` settled
        everywhere and cut `k + 1` with `after = k - 1`, would have run its phases in an
        order the journal does not record."""
        if k != self._r1_done:
            raise PhaseOrderError(
                f"R2 of batch {k} allowed: this account shard ran R1 of {self._r1_done}"
            )
        self._r2_allowed = k

    @property
    def settled_through(self) -> int:
        """The last batch whose R2 ran here: a batch's R1 waits until it is `after`."""
        return self._r2_done

    @property
    def matched_through(self) -> int:
        """The last batch whose R1 ran here: the next R1 is of the batch after it."""
        return self._r1_done

    def may_settle(self, k: int) -> bool:
        """Whether R2 of `k` may run now (its parts aside): the next R2, allowed."""
        return k == self._r2_done + 1 and k <= self._r2_allowed

    def r2(self, k: int, parts: Sequence[SettlePart]) -> list[Answer]:
        """R2 of batch `k` from every symbol shard's part: the changes, order states and
        events applied in (`seq`, sender) order, whatever order the parts came in; then
        the answers of the commands this shard decided, by `seq`."""
        if not self.may_settle(k):
            raise PhaseOrderError(
                f"R2 of batch {k}: this account shard ran R1 of {self._r1_done} and R2 of "
                f"{self._r2_done}, and may settle batches up to {self._r2_allowed}"
            )
        _check_parts(k, parts, self.placement.symbol_shards)
        index, listening = self.read_index, self._listening
        effects = sorted(
            ((effect.seq, part.sender, effect) for part in parts for effect in part.effects),
            key=lambda entry: entry[:2],
        )
        for _, _, effect in effects:
            if effect.changes:
                tell_changes(self.account_actor, effect.changes)
            for state in effect.orders:
                if state.new:
                    index.publish_new(state.order)
                else:
                    index.publish(state.order)
            if effect.events and k > self.replayed_through and listening.any_of(effect.events):
                self._dispatcher.tell(Notify(effect.events))
        for actor in self._actors:  # every change applied before the answers leave
            actor.ask(ReadBalance("", _ignore))
        answers = self._decided.pop(k)
        answers.extend(answer for part in parts for answer in part.answers)
        answers.sort(key=lambda answer: answer[0])
        self._r2_done = k
        return answers

    # -- reads -------------------------------------------------------------------------

    def order(self, order_id: str) -> Order | None:
        return self.read_index.get(order_id)

    def broker_orders(
        self, broker_id: str, status: str | None, start: int, limit: int
    ) -> tuple[list[Order], int]:
        return self.read_index.page(broker_id, status, start, limit)

    def balance(self, broker_id: str) -> Balance:
        """The broker's balance (raises broker_not_found)."""
        answer = _asked(self.account_actor(broker_id), lambda reply: ReadBalance(broker_id, reply))
        if isinstance(answer, ExchangeError):
            raise answer
        return cast(Balance, answer)

    def webhooks(self, broker_id: str) -> list[Subscription]:
        return cast(
            list[Subscription],
            _asked(self._dispatcher, lambda reply: ListWebhooks(broker_id, reply)),
        )

    # -- snapshots (`cluster.shard_snapshots`: why the actors are read by message) ----------

    def snapshot(self) -> AccountSnapshot:
        """The shard's state between two phases (after an R2; R1 of the next batch may
        have run): what `from_snapshot` starts an equal shard from."""
        ledgers: list[LedgerState] = []
        credentials: list[tuple[str, Credentials]] = []
        for actor in self._actors:
            ledgers.extend(map(LedgerState.of, read_attribute(actor, "ledgers").values()))
            credentials.extend(read_attribute(actor, "credentials").items())
        subscriptions = tuple(
            subscription
            for broker_id in sorted(self._listening.brokers)
            for subscription in self.webhooks(broker_id)
        )
        return AccountSnapshot(
            self.index,
            *self.placement,
            self._r1_done,
            self._r2_done,
            self._r2_allowed,
            tuple((k, tuple(answers)) for k, answers in sorted(self._decided.items())),
            tuple(ledgers),
            tuple(credentials),
            subscriptions,
            tuple(self.read_index.orders.values()),
            tuple(sorted(self.listing.listed)),
        )

    @classmethod
    def from_snapshot(
        cls,
        snapshot: AccountSnapshot,
        deliver: Deliver,
        account_actors: int = 1,
        metrics: Metrics | None = None,
    ) -> AccountShard:
        """A shard in the state of `snapshot`, ready for the phase after it; its brokers
        spread over `account_actors` actors (any number: they are placed again)."""
        placement = Placement(snapshot.account_shards, snapshot.symbol_shards)
        shard = cls(snapshot.index, placement, deliver, account_actors, metrics)
        shard._restore(snapshot)
        return shard

    def _restore(self, snapshot: AccountSnapshot) -> None:
        """Before any command: each actor gets its brokers' ledgers and credentials."""
        actors = self._actors
        ledgers: list[dict[str, Ledger]] = [{} for _ in actors]
        credentials: list[dict[str, Credentials]] = [{} for _ in actors]
        for state in snapshot.ledgers:
            ledgers[actors.index(self.account_actor(state.broker_id))][state.broker_id] = (
                state.ledger()
            )
            self.registered.add(state.broker_id)
        for broker_id, held in snapshot.credentials:
            credentials[actors.index(self.account_actor(broker_id))][broker_id] = held
            self.published.replace(broker_id, Credentials(), held)
        for actor, share, held_by in zip(actors, ledgers, credentials, strict=True):
            set_attribute(actor, "ledgers", share)
            set_attribute(actor, "credentials", held_by)
        subscriptions = Subscriptions(snapshot.subscriptions)
        set_attribute(self._dispatcher, "subscriptions", subscriptions)
        self._listening.brokers = subscriptions.brokers()
        for order in snapshot.orders:
            self.read_index.publish_new(order)
        self.listing.list(snapshot.listed)
        self._r1_done = snapshot.r1_done
        self._r2_done = snapshot.r2_done
        self._r2_allowed = snapshot.r2_allowed
        self._decided = {k: list(answers) for k, answers in snapshot.decided}


# -- symbol shards -----------------------------------------------------------------------


class SymbolShard:
    """The symbols of `placement.symbol_shard(symbol) == index`: one `SymbolActor` each
    (started on its first command), their `MarketData` feeds, and the `ClockActor`'s
    heap of their next expiries."""

    def __init__(
        self,
        index: int,
        placement: Placement,
        clock: Clock,
        vwap_window_us: int = 300_000_000,
        metrics: Metrics | None = None,
        listeners: Sequence[StepListener] = (),
    ) -> None:
        """`clock` serves the reads only (a book leaves out what is due by now): every
        write runs at its stamped time. `listeners` hear every durable step too (the
        streams' news)."""
        self.index = index
        self.placement = placement
        self.clock = clock
        self.metrics = metrics if metrics is not None else Metrics()
        self.market_data = MarketData()
        self._settlement = _Settlement()
        self._actors: dict[str, pykka.ActorRef[Any]] = {}
        elsewhere = _Elsewhere()
        self.clock_actor = ClockActor.start(
            clock, lambda symbol: cast(Any, elsewhere) if symbol in self._actors else None
        )
        settlement = self._settlement
        self._context = SymbolContext(
            clock=clock,
            ids=Unstamped(),
            read_index=cast(ReadIndex, _Discarded()),
            accounts=lambda broker_id: cast(pykka.ActorRef[Any], settlement),
            vwap_window_us=vwap_window_us,
            journal=MemoryJournal(),
            clock_actor=self.clock_actor,
            listeners=(self.market_data, CountTrades(self.metrics), settlement, *listeners),
            listing=ClaimedAtTheCut(),
            metrics=self.metrics,
        )
        self._me_done = 0

    def stop(self) -> None:
        self.clock_actor.stop()
        for actor in list(self._actors.values()):
            actor.stop()

    @property
    def matched_through(self) -> int:
        """The last batch whose ME ran here: the next ME is of the batch after it."""
        return self._me_done

    def _actor(self, symbol: str) -> pykka.ActorRef[Any]:
        actor = self._actors.get(symbol)
        if actor is None:
            actor = self._actors[symbol] = SymbolActor.start(symbol, self._context)
        return actor

    # -- ME --------------------------------------------------------------------------

    def me(self, k: int, parts: Sequence[MatchPart]) -> list[SettlePart]:
        """ME of batch `k` from every account shard's part: the commands merged by `seq`,
        each in its symbol actor's FIFO in that order. A limit order R1 holds for and a
        cancel are sent on without waiting (they need nothing of the batch but their
        place in the FIFO); a tick, a market order and a limit order short of funds wait
        until everything sent before them is done, since they read what it did or
        release what it left. One part per account shard."""
        if k != self._me_done + 1:
            raise PhaseOrderError(f"ME of batch {k}: this symbol shard ran ME of {self._me_done}")
        placement = self.placement
        _check_parts(k, parts, placement.account_shards)
        commands = sorted(
            (command for part in parts for command in part.commands),
            key=lambda command: command.stamped.seq,
        )
        settlement = self._settlement
        last_market: dict[tuple[str, str], int] = {}
        for command in commands:
            if command.funds == BUDGET:
                submitted = cast(SubmitOrder, command.stamped.command)
                last_market[(submitted.broker_id, command.symbol)] = command.stamped.seq
        effects: list[list[Effects]] = [[] for _ in range(placement.account_shards)]
        answers: list[list[Answer]] = [[] for _ in range(placement.account_shards)]
        matched: list[tuple[ToMatch, _Recorded, list[Any]]] = []
        sent: list[pykka.Future[Any]] = []  # commands told and not yet done
        for command in commands:
            recorded = settlement.by_at[command.stamped.at] = _Recorded()
            replies: list[Any] = []
            if command.funds == RESERVED or type(command.stamped.command) is CancelOrder:
                # nothing here waits on it: sent on, its actor keeps the order (one FIFO)
                sent.append(
                    self._actor(command.symbol).ask(
                        self._message(command, replies.append), block=False
                    )
                )
            else:  # it needs the effects of what came before, or sends what follows
                _wait_all(sent)
                replies.append(self._match(command, last_market))
            matched.append((command, recorded, replies))
        _wait_all(sent)
        for command, recorded, replies in matched:
            seq = command.stamped.seq
            (answer,) = replies
            if answer is not _UNANSWERED:
                answers[placement.deciding_shard(command.stamped.command)].append((seq, answer))
            for shard, entry in enumerate(self._split(seq, recorded)):
                if entry is not None:
                    effects[shard].append(entry)
        settlement.budgets.clear()
        settlement.freed.clear()
        settlement.by_at.clear()
        self._me_done = k
        return [
            SettlePart(k, self.index, tuple(effects[shard]), tuple(answers[shard]))
            for shard in range(placement.account_shards)
        ]

    def _match(self, command: ToMatch, last_market: dict[tuple[str, str], int]) -> Any:
        """Run one command through its symbol's actor; its answer (or none, a tick's)."""
        stamped = command.stamped
        at = stamped.at
        if type(stamped.command) is Tick:
            for symbol in self.clock_actor.ask(Sweep(at)):
                self._actors[symbol].ask(ExpireDue(at))
            return _UNANSWERED
        actor = self._actor(command.symbol)
        submitted = cast(SubmitOrder, stamped.command)
        recorded = self._settlement.by_at[at]  # what this thread adds, in its place
        submit = partial(_submission, stamped)
        if command.funds == SHORTFALL:
            actor.ask(ExpireDue(at))  # the embedded `ExpireThenCheck`'s step
            if self._cover_shortfall(command, submitted, recorded):
                return _asked(actor, lambda reply: Reserved(submit(reply)))
            if command.cash or command.quantity:
                recorded.changes.append(
                    Released(
                        submitted.broker_id, command.symbol, command.cash, command.quantity, None
                    )
                )
            self.metrics.count_order(submitted.type, submitted.side, "insufficient_funds")
            return insufficient_funds(submitted.broker_id, submitted.side, command.symbol)
        key = (submitted.broker_id, command.symbol)
        budgets = self._settlement.budgets
        if command.funds == BUDGET:
            budget = budgets.setdefault(key, [0, 0])
            budget[0] += command.cash
            budget[1] += command.quantity
        answer = _asked(actor, submit)  # the symbol actor's market path asks `Hold`
        if last_market.get(key) == stamped.seq:  # what the batch's sweeps did not use
            cash, quantity = budgets.pop(key)
            if cash or quantity:
                recorded.changes.append(
                    Released(submitted.broker_id, command.symbol, cash, quantity, None)
                )
        return answer

    @staticmethod
    def _message(command: ToMatch, reply: Reply) -> Reserved | Cancel:
        """A limit order whose funds R1 holds, or a cancel: what its actor is sent (it
        needs nothing of the batch but its place in the actor's FIFO)."""
        stamped = command.stamped
        if type(stamped.command) is CancelOrder:
            order_id = cast(CancelOrder, stamped.command).order_id
            return Cancel(order_id, reply, stamped.request_id, stamped.at)
        return Reserved(_submission(stamped, reply))

    def _cover_shortfall(
        self, command: ToMatch, submitted: SubmitOrder, recorded: _Recorded
    ) -> bool:
        """Whether this batch's releases on the symbol to the broker, not yet used, cover
        what R1 could not hold; if so they are used, and the hold recorded (`Held`)."""
        cash, quantity = limit_hold(submitted)
        short = (cash - command.cash, quantity - command.quantity)
        freed = self._settlement.freed.get((submitted.broker_id, command.symbol), [0, 0])
        if short[0] > freed[0] or short[1] > freed[1]:
            return False
        freed[0] -= short[0]
        freed[1] -= short[1]
        recorded.changes.append(Held(submitted.broker_id, command.symbol, *short))
        return True

    def _split(self, seq: int, recorded: _Recorded) -> list[Effects | None]:
        """One command's effects, each to the account shard of the broker it concerns."""
        placement = self.placement
        shards: list[_Recorded | None] = [None] * placement.account_shards

        def of(broker_id: str) -> _Recorded:
            shard = placement.account_shard(broker_id)
            mine = shards[shard]
            if mine is None:
                mine = shards[shard] = _Recorded()
            return mine

        for change in recorded.changes:
            of(change.broker_id).changes.append(change)
        for state in recorded.orders:
            of(state.order.broker_id).orders.append(state)
        for event in recorded.events:
            of(event.order.broker_id).events.append(event)
        return [
            None
            if mine is None
            else Effects(seq, tuple(mine.changes), tuple(mine.orders), tuple(mine.events))
            for mine in shards
        ]

    # -- reads (outside the sequenced stream: they expire nothing) ------------------------

    def has_book(self, symbol: str) -> bool:
        """Whether the symbol ever had a command here (a market order needs a book)."""
        return symbol in self._actors

    def book(self, symbol: str, depth: int) -> BookView:
        actor = self._actors.get(symbol)
        if actor is None:
            return BookView([], [], self.clock.now())
        return cast(BookView, _asked(actor, lambda reply: ReadBook(depth, reply, expire=False)))

    def quote(self, symbol: str, side: str, quantity: int) -> QuoteView:
        actor = self._actors.get(symbol)
        if actor is None:
            return QuoteView([], self.clock.now())
        return cast(
            QuoteView, _asked(actor, lambda reply: ReadQuote(side, quantity, reply, expire=False))
        )

    def price(self, symbol: str) -> Price:
        actor = self._actors.get(symbol)
        if actor is None:
            return Price(None, 0, None)
        return cast(Price, _asked(actor, lambda reply: ReadPrice(reply, expire=False)))

    # -- snapshots (`cluster.shard_snapshots`: why the actors are read by message) ----------

    def snapshot(self) -> SymbolSnapshot:
        """The shard's state after an ME: what `from_snapshot` starts an equal one from."""
        market_data = self.market_data
        books = tuple(
            SymbolBook.of(symbol, read_attribute(actor, "state"), market_data.get(symbol))
            for symbol, actor in self._actors.items()
        )
        return SymbolSnapshot(
            self.index,
            *self.placement,
            self._me_done,
            books,
            tuple(sorted(self._context.listing.listed)),
        )

    @classmethod
    def from_snapshot(
        cls,
        snapshot: SymbolSnapshot,
        clock: Clock,
        vwap_window_us: int = 300_000_000,
        metrics: Metrics | None = None,
        listeners: Sequence[StepListener] = (),
    ) -> SymbolShard:
        """A shard in the state of `snapshot`, ready for the ME after it; `clock` serves
        the reads only, as for a new shard."""
        placement = Placement(snapshot.account_shards, snapshot.symbol_shards)
        shard = cls(snapshot.index, placement, clock, vwap_window_us, metrics, listeners)
        shard._restore(snapshot)
        return shard

    def _restore(self, snapshot: SymbolSnapshot) -> None:
        """Each symbol's actor started on its restored state (as `Exchange.start` does),
        its feed published first; then each asked once, so that every one has told the
        clock actor its next expiry before the first tick asks for the due ones."""
        context = self._context
        for book in snapshot.books:
            state = book.state(context.vwap_window_us)
            if book.feed is not None:
                book.feed.restore(self.market_data.feed(book.symbol), state)
            self._actors[book.symbol] = SymbolActor.start(book.symbol, context, state)
        for actor in self._actors.values():
            _asked(actor, lambda reply: ReadPrice(reply, expire=False))
        context.listing.list(snapshot.listed)
        self._me_done = snapshot.me_done


_UNANSWERED = object()
"""A tick's answer: nobody waits for one."""


def _check_parts(k: int, parts: Sequence[Any], senders: int) -> None:
    """A phase runs with exactly one part of its batch from each sender."""
    got = sorted(part.sender for part in parts)
    if got != list(range(senders)) or any(part.k != k for part in parts):
        raise PhaseOrderError(
            f"batch {k} needs one part from each of {senders} senders, got "
            f"{[(part.k, part.sender) for part in parts]}"
        )
