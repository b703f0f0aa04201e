"""The documents to and between the shards (`cluster.parts`): every batch and part real
shards send reads back exactly, generated values too, and anything else is refused."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import hypothesis
import orjson
import pykka
import pytest
from hypothesis import given
from hypothesis import strategies as st

from miniexchange.actors.messages import Issued
from miniexchange.cluster.batches import (
    BatchFormatError,
    CancelOrder,
    IssueCredentials,
    SubscribeWebhooks,
    UnsubscribeWebhook,
)
from miniexchange.cluster.parts import (
    ShardFailure,
    decode_answers,
    decode_batch,
    decode_match_part,
    decode_settle_part,
    encode_answers,
    encode_batch,
    encode_match_part,
    encode_settle_part,
)
from miniexchange.cluster.shards import (
    BUDGET,
    NOTHING,
    RESERVED,
    SHORTFALL,
    Effects,
    MatchPart,
    OrderState,
    SettlePart,
    ToMatch,
)
from miniexchange.cluster.stamped import Batch, Stamped, Tick
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, RegisterBroker, SubmitOrder
from miniexchange.model.errors import ExchangeError, broker_not_found
from miniexchange.model.events import ORDER_CANCELLED, TRADE_EXECUTED, OrderClosed, TradeExecuted
from miniexchange.model.ledger import (
    Accepted,
    Balance,
    Held,
    Holding,
    Released,
    Settled,
    SettlementLeg,
)
from miniexchange.model.orders import CANCELLED, EXPIRED, Order, Trade, TradeLog, new_order
from miniexchange.model.subscriptions import Subscription, Upserted
from miniexchange.testing import ManualClock
from tests.cluster.shard_support import Outboxes, Shards, Stamper
from tests.cluster.test_shards_embedded import READ_AT, VWAP_WINDOW, Stream, cut, stamped_stream
from tests.cluster.test_shards_embedded import streams as command_streams


def typed(value: Any) -> Any:
    """A value as nested (type name, contents): equal only if every value in it has the
    same type too (a NamedTuple equals a plain tuple), a refusal by its code and message
    (exceptions compare by identity)."""
    if isinstance(value, ExchangeError):
        return ("ExchangeError", value.code, value.message)
    if isinstance(value, BaseException):
        return (type(value).__name__, str(value))
    if isinstance(value, TradeLog | tuple | list):
        return (type(value).__name__, tuple(typed(item) for item in value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (
            type(value).__name__,
            tuple(typed(getattr(value, f.name)) for f in dataclasses.fields(value)),
        )
    return (type(value).__name__, value)


def check_match_part(part: MatchPart) -> None:
    document = encode_match_part(part)
    decoded = decode_match_part(document)
    assert decoded == part
    assert typed(decoded) == typed(part)
    assert encode_match_part(decoded) == document


def check_settle_part(part: SettlePart) -> None:
    """As the others, but its refusals compare by code and message (`typed`) only."""
    document = encode_settle_part(part)
    decoded = decode_settle_part(document)
    assert typed(decoded) == typed(part)
    assert encode_settle_part(decoded) == document


def check_batch(batch: Batch) -> None:
    document = encode_batch(batch)
    decoded = decode_batch(document)
    assert decoded == batch
    assert typed(decoded) == typed(batch)
    assert encode_batch(decoded) == document


def check_sent(batches: list[Batch], sent: Outboxes) -> None:
    for batch in batches:
        check_batch(batch)
        for parts in sent.match[batch.k]:
            for match in parts:
                check_match_part(match)
        for settles in sent.settle[batch.k]:
            for settle in settles:
                check_settle_part(settle)


# -- parts real shards send -----------------------------------------------------------

DOC = "12345678900"


@pytest.fixture
def shards() -> Iterator[Shards]:
    started = Shards(2, 2, ManualClock(READ_AT), VWAP_WINDOW, account_actors=2)
    yield started
    started.stop()
    pykka.ActorRegistry.stop_all()


def limit(broker: str, side: str, price: int, quantity: int, expires: int) -> SubmitOrder:
    return SubmitOrder(LIMIT, broker, DOC, side, "AAPL", quantity, price, expires)


def market(broker: str, side: str, quantity: int) -> SubmitOrder:
    return SubmitOrder(MARKET, broker, DOC, side, "AAPL", quantity)


def scenario() -> list[Batch]:
    """Every kind of command, funds, change, event and answer; the last batch is cut
    while the one before is in flight."""
    stamper = Stamper(account_shards=2)
    stamp, at = stamper.stamp, stamper.at
    registrations = [
        stamp(RegisterBroker("seller", 0, (("AAPL", 10), ("MSFT", 2)))),
        stamp(RegisterBroker("buyer", 1_000, ())),
        stamp(RegisterBroker("buyer", 5, ())),  # already registered: refused
        stamp(IssueCredentials("buyer", True, True)),
    ]
    subscribe = stamp(SubscribeWebhooks("buyer", "https://h/x", (TRADE_EXECUTED, ORDER_CANCELLED)))
    first = stamper.batch([*registrations, subscribe])
    due = stamp(limit("seller", ASK, 100, 4, at(10)))  # seq 6
    rest = stamp(limit("seller", ASK, 101, 6, at(100)))
    resting = stamper.batch([due, rest])
    sweep = stamper.batch([stamp(market("buyer", BID, 2), "req-buy")])  # a budget, a fill
    in_flight = stamper.batch(
        [
            stamp(market("nobody", ASK, 1)),  # seq 9: no ledger, refused in R1
            stamp(limit("seller", ASK, 99, 2, at(100))),  # seq 10, short: `due` expires
            stamp(CancelOrder(rest.order_id or ""), "req-cancel"),
            stamp(CancelOrder("ord-unknown")),
            stamp(UnsubscribeWebhook(subscribe.webhook_ids[0], "buyer")),
            stamp(SubmitOrder(MARKET, "buyer", DOC, BID, "MSFT", 1)),  # ME: no liquidity
            stamp(Tick()),
        ],
        after=2,
    )
    return [first, resting, sweep, in_flight]


def test_every_part_of_real_shards_reads_back_exactly(shards: Shards) -> None:
    batches = scenario()
    sent = shards.drive(batches)
    check_sent(batches, sent)
    # the scenario reached every kind the format has
    match = [part for k in sent.match for parts in sent.match[k] for part in parts]
    settle = [part for k in sent.settle for parts in sent.settle[k] for part in parts]
    commands = [command for part in match for command in part.commands]
    effects = [effect for part in settle for effect in part.effects]
    assert {c.funds for c in commands} == {RESERVED, SHORTFALL, BUDGET, NOTHING}
    assert {type(c.stamped.command) for c in commands} == {SubmitOrder, CancelOrder, Tick}
    assert {type(c) for e in effects for c in e.changes} == {Accepted, Settled, Released, Held}
    assert {s.new for e in effects for s in e.orders} == {True, False}
    assert {e.event for f in effects for e in f.events} == {
        "trade.executed",
        "order.cancelled",
        "order.expired",
    }
    assert {type(value) for part in settle for _, value in part.answers} == {Order, ExchangeError}
    # R1's own answers go back to the sequencer with R2's, in no part: every kind, in one
    assert {type(value) for value in sent.answers.values()} == {
        Balance,
        Issued,
        Upserted,
        Order,
        ExchangeError,
        type(None),
    }
    check_settle_part(SettlePart(5, 1, (), tuple(sorted(sent.answers.items()))))


@hypothesis.settings(max_examples=15, deadline=None)
@given(command_streams(), st.lists(st.integers(1, 6), min_size=1, max_size=4), st.booleans())
def test_the_parts_of_generated_streams_read_back_exactly(
    stream: Stream, sizes: list[int], in_flight: bool
) -> None:
    batches = cut(stamped_stream(stream), sizes, in_flight)
    shards = Shards(2, 2, ManualClock(READ_AT), VWAP_WINDOW, account_actors=2)
    try:
        check_sent(batches, shards.drive(batches))
    finally:
        shards.stop()
        pykka.ActorRegistry.stop_all()


# -- generated values -------------------------------------------------------------------

# Any 64-bit integer (what orjson writes): far past every value validation lets through.
integers = st.integers(min_value=-(2**63), max_value=2**64 - 1)
optional_integers = st.none() | integers
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # no lone surrogates
optional_texts = st.none() | texts
sides = st.sampled_from((BID, ASK))

submissions = st.one_of(
    st.builds(
        SubmitOrder,
        type=st.just(LIMIT),
        broker_id=texts,
        document_number=texts,
        side=sides,
        symbol=texts,
        quantity=integers,
        price=integers,
        expires_at=integers,
    ),
    st.builds(
        SubmitOrder,
        type=st.just(MARKET),
        broker_id=texts,
        document_number=texts,
        side=sides,
        symbol=texts,
        quantity=integers,
        price=st.none(),
        expires_at=st.none(),
    ),
)
write_commands = st.one_of(
    submissions,
    st.builds(CancelOrder, order_id=texts),
    st.builds(
        RegisterBroker,
        broker_id=texts,
        initial_cash=integers,
        holdings=st.lists(st.tuples(texts, integers), max_size=3).map(tuple),
    ),
    st.builds(
        IssueCredentials, broker_id=texts, api_key=st.booleans(), webhook_secret=st.booleans()
    ),
    st.builds(
        SubscribeWebhooks,
        broker_id=texts,
        url=texts,
        events=st.lists(texts, max_size=3).map(tuple),
    ),
    st.builds(UnsubscribeWebhook, webhook_id=texts, owner=optional_texts),
)
stamped_commands = st.builds(
    Stamped,
    seq=integers,
    at=integers,
    command=write_commands | st.just(Tick()),
    request_id=optional_texts,
    order_id=optional_texts,
    trade_seed=optional_integers,
    webhook_ids=st.lists(texts, max_size=3).map(tuple),
    secrets=st.none() | st.tuples(texts, texts),
)
batches = st.builds(
    Batch, k=integers, after=integers, commands=st.lists(stamped_commands, max_size=4).map(tuple)
)
match_parts = st.builds(
    MatchPart,
    k=integers,
    sender=integers,
    commands=st.lists(
        st.builds(
            ToMatch,
            stamped=stamped_commands,
            funds=st.sampled_from((RESERVED, SHORTFALL, BUDGET, NOTHING)),
            symbol=texts,
            cash=integers,
            quantity=integers,
        ),
        max_size=4,
    ).map(tuple),
)

trades = st.builds(
    Trade,
    trade_id=texts,
    symbol=texts,
    price=integers,
    quantity=integers,
    executed_at=integers,
    bid_order_id=texts,
    ask_order_id=texts,
    bid_broker_id=texts,
    ask_broker_id=texts,
)


@st.composite
def orders(draw: st.DrawFn) -> Order:
    """An order as the engine makes them: accepted, filled by some trades, maybe closed."""
    order = new_order(draw(submissions), draw(texts), draw(integers))
    for trade in draw(st.lists(trades, max_size=3)):
        order = order.filled(trade)
    closed = draw(st.sampled_from((None, CANCELLED, EXPIRED)))
    if closed is not None:
        order = order.closed(closed, draw(optional_integers), draw(optional_integers))
    return order


changes = st.one_of(
    st.builds(Accepted, broker_id=texts, at=integers),
    st.builds(
        Settled,
        broker_id=texts,
        symbol=texts,
        legs=st.lists(
            st.builds(
                SettlementLeg, side=sides, quantity=integers, value=integers, release=integers
            ),
            max_size=3,
        ).map(tuple),
        at=integers,
    ),
    st.builds(
        Released,
        broker_id=texts,
        symbol=texts,
        cash=integers,
        quantity=integers,
        at=optional_integers,
    ),
    st.builds(Held, broker_id=texts, symbol=texts, cash=integers, quantity=integers),
)
events = st.one_of(
    st.builds(TradeExecuted, trade=trades, order=orders(), request_id=optional_texts),
    st.builds(OrderClosed, order=orders(), request_id=optional_texts),
)
subscriptions = st.builds(
    Subscription,
    webhook_id=texts,
    broker_id=texts,
    event=texts,
    url=texts,
    created_at=integers,
    updated_at=integers,
)
answer_values = st.one_of(
    orders(),
    st.builds(ExchangeError, code=texts, message=texts),
    st.none(),
    st.builds(
        Balance,
        broker_id=texts,
        cash_balance=integers,
        reserved_cash=integers,
        holdings=st.lists(
            st.builds(Holding, symbol=texts, quantity=integers, reserved_quantity=integers),
            max_size=3,
        ).map(tuple),
        created_at=integers,
        updated_at=integers,
    ),
    st.builds(Issued, broker_id=texts, api_key=optional_texts, webhook_secret=optional_texts),
    st.builds(
        Upserted,
        created=st.booleans(),
        subscriptions=st.lists(subscriptions, max_size=3).map(tuple),
        changed=st.lists(subscriptions, max_size=3).map(tuple),
    ),
)
settle_parts = st.builds(
    SettlePart,
    k=integers,
    sender=integers,
    effects=st.lists(
        st.builds(
            Effects,
            seq=integers,
            changes=st.lists(changes, max_size=3).map(tuple),
            orders=st.lists(
                st.builds(OrderState, order=orders(), new=st.booleans()), max_size=2
            ).map(tuple),
            events=st.lists(events, max_size=2).map(tuple),
        ),
        max_size=3,
    ).map(tuple),
    answers=st.lists(st.tuples(integers, answer_values), max_size=4).map(tuple),
)


@given(batches)
def test_a_generated_batch_reads_back_exactly(batch: Batch) -> None:
    check_batch(batch)


@given(match_parts)
def test_a_generated_match_part_reads_back_exactly(part: MatchPart) -> None:
    check_match_part(part)


@given(settle_parts)
def test_a_generated_settle_part_reads_back_exactly(part: SettlePart) -> None:
    check_settle_part(part)


def test_an_actors_failure_travels_as_its_text() -> None:
    """An answer that is neither a value nor a refusal is a bug in a shard's actor: its
    request fails, and the batch still goes on."""
    part = SettlePart(3, 0, (), ((7, RuntimeError("boom")), (8, broker_not_found("b1"))))
    (seq, failure), (_, refusal) = decode_settle_part(encode_settle_part(part)).answers
    assert (seq, type(failure), str(failure)) == (7, ShardFailure, "RuntimeError: boom")
    assert (type(refusal), refusal.code, refusal.message) == (
        ExchangeError,
        "broker_not_found",
        "Broker b1 does not exist",
    )


# -- the documents, and what is refused ----------------------------------------------------

AT = 1_771_318_800_000_000
LATER = AT + 3_600_000_000
TRADE = Trade("trd-1", "AAPL", 100, 2, AT + 1, "ord-b", "ord-a", "buyer", "seller")
ASKED = new_order(SubmitOrder(LIMIT, "seller", DOC, ASK, "AAPL", 5, 100, LATER), "ord-a", AT)
BID_7 = SubmitOrder(LIMIT, "buyer", DOC, BID, "AAPL", 2, 101, LATER)
STAMPED = Stamped(7, AT + 1, BID_7, "req-7", "ord-b", 7)
BATCH = Batch(3, 2, (STAMPED, Stamped(8, AT + 2, Tick())))
MATCH = MatchPart(3, 1, (ToMatch(STAMPED, RESERVED, "AAPL", 202, 0),))
SETTLE = SettlePart(
    3,
    0,
    (
        Effects(
            7,
            (Settled("seller", "AAPL", (SettlementLeg(ASK, 2, 200, 0),), AT + 1),),
            (OrderState(ASKED.filled(TRADE), False),),
            (TradeExecuted(TRADE, ASKED.filled(TRADE), "req-7"),),
        ),
    ),
    ((9, ExchangeError("order_not_found", "Order ord-x does not exist")),),
)
ORDER_A = ["ord-a", "limit", "seller", DOC, "ask", "AAPL", 100, 5, LATER, AT, "partially_filled"]
TRADE_1 = ["trd-1", "AAPL", 100, 2, AT + 1, "ord-b", "ord-a", "buyer", "seller"]
TICK_8 = [8, AT + 2, None, None, None, [], None, "tick"]
STAMPED_7 = [7, AT + 1, "req-7", "ord-b", 7, [], None, "order", "limit", "buyer", DOC, "bid"]


def test_the_documents_are_flat_arrays_led_by_their_kinds() -> None:
    assert orjson.loads(encode_batch(BATCH)) == {
        "format": 2,
        "part": "batch",
        "k": 3,
        "after": 2,
        "commands": [
            [*STAMPED_7, "AAPL", 2, 101, LATER],
            TICK_8,
        ],
    }
    assert orjson.loads(encode_match_part(MATCH)) == {
        "format": 2,
        "part": "match",
        "k": 3,
        "sender": 1,
        "commands": [["reserved", "AAPL", 202, 0, *STAMPED_7, "AAPL", 2, 101, LATER]],
    }
    assert orjson.loads(encode_settle_part(SETTLE)) == {
        "format": 2,
        "part": "settle",
        "k": 3,
        "sender": 0,
        "trades": [TRADE_1],  # each once, named by index
        "orders": [[*ORDER_A, None, None, [0]], [*ORDER_A, None, None, [0]]],
        "effects": [
            [
                7,
                [["settled", "seller", "AAPL", [["ask", 2, 200, 0]], AT + 1]],
                [[False, 0]],
                [["trade", 0, 1, "req-7"]],
            ]
        ],
        "answers": [[9, "refused", "order_not_found", "Order ord-x does not exist"]],
    }
    check_batch(BATCH)
    check_match_part(MATCH)
    check_settle_part(SETTLE)


DROP = object()


def altered(document: bytes, path: tuple[str | int, ...], value: object) -> bytes:
    """The document with the value at `path` replaced (or dropped: `DROP`)."""
    loaded = orjson.loads(document)
    *parents, last = path
    container = loaded
    for step in parents:
        container = container[step]
    if value is DROP:
        del container[last]
    else:
        container[last] = value
    return orjson.dumps(loaded)


BATCHED, MATCHED, SETTLED = (
    encode_batch(BATCH),
    encode_match_part(MATCH),
    encode_settle_part(SETTLE),
)
EFFECT = ("effects", 0)
ORDER = ("orders", 0)  # the first order of the part's table


@pytest.mark.parametrize(
    ("decode", "raw", "message"),
    [
        (decode_batch, b"{", "a batch part is not JSON"),
        (decode_batch, b"[]", "a batch part is not an object"),
        (decode_batch, altered(BATCHED, ("format",), 1), "a batch part of format 1; this code"),
        (decode_batch, altered(BATCHED, ("format",), DROP), "a batch part of format None"),
        (decode_match_part, BATCHED, "a 'batch' part where a match part was expected"),
        (decode_settle_part, MATCHED, "a 'match' part where a settle part was expected"),
        (decode_batch, altered(BATCHED, ("after",), DROP), "a batch part without 'after'"),
        (decode_batch, altered(BATCHED, ("k",), 3.0), "expected an integer, got 3.0"),
        (decode_batch, altered(BATCHED, ("commands",), {}), "expected an array, got {}"),
        (decode_batch, altered(BATCHED, ("commands", 0, 1), 1.5), "expected an integer, got 1.5"),
        (
            decode_batch,
            altered(BATCHED, ("commands", 0, 14), 101.0),
            "expected an integer, got 101",
        ),
        (decode_batch, altered(BATCHED, ("commands", 0, 4), True), "expected an integer, got True"),
        (decode_batch, altered(BATCHED, ("commands", 0, 6), ["k"]), "stamped secrets is not an"),
        (decode_batch, altered(BATCHED, ("commands", 0, 7), "trade"), "unknown write kind 'trade'"),
        (
            decode_batch,
            altered(BATCHED, ("commands", 1), [8, AT, None]),
            "a stamped command is not",
        ),
        (decode_batch, altered(BATCHED, ("commands", 1), [*TICK_8, 1]), "a tick with fields: [1]"),
        (decode_batch, altered(BATCHED, ("commands", 0, 15), DROP), "a write of kind 'order' with"),
        (decode_match_part, altered(MATCHED, ("commands", 0, 0), "loan"), "unknown funds kind"),
        (decode_match_part, altered(MATCHED, ("commands", 0, 2), 2.02), "expected an integer"),
        (decode_match_part, altered(MATCHED, ("sender",), "1"), "expected an integer, got '1'"),
        (decode_match_part, MATCHED.replace(b",202,", b",2" + b"0" * 24 + b","), "expected an int"),
        (decode_settle_part, altered(SETTLED, (*EFFECT, 3), DROP), "a command's effects is not"),
        (decode_settle_part, altered(SETTLED, (*EFFECT, 1, 0, 0), "paid"), "unknown change kind"),
        (decode_settle_part, altered(SETTLED, (*EFFECT, 1, 0, 4), DROP), "a ledger change of kind"),
        (
            decode_settle_part,
            altered(SETTLED, (*EFFECT, 1, 0, 3, 0, 2), 2e2),
            "expected an integer",
        ),
        (decode_settle_part, altered(SETTLED, (*ORDER, 6), 100.0), "expected an integer"),
        (decode_settle_part, altered(SETTLED, (*ORDER, 10), "filled"), "an order that its"),
        (decode_settle_part, altered(SETTLED, ("trades", 0), TRADE_1[:8]), "a trade is not"),
        (decode_settle_part, altered(SETTLED, (*ORDER, 13, 0), 1), "no trade 1 in a table of 1"),
        (decode_settle_part, altered(SETTLED, (*ORDER, 12), DROP), "an order is not an array"),
        (decode_settle_part, altered(SETTLED, (*EFFECT, 2, 0, 1), 2), "no order 2 in a table"),
        (decode_settle_part, altered(SETTLED, (*EFFECT, 3, 0, 2), -1), "no order -1 in a table"),
        (decode_settle_part, altered(SETTLED, (*EFFECT, 3, 0, 1), 0.0), "no trade 0.0 in a"),
        (
            decode_settle_part,
            altered(SETTLED, (*EFFECT, 3, 0), ["trade", 0, 1]),
            "an event of kind 'trade' with wrong fields",
        ),
        (
            decode_settle_part,
            altered(SETTLED, ("orders",), DROP),
            "a settle part without 'orders'",
        ),
        (decode_settle_part, altered(SETTLED, (*EFFECT, 2, 0, 0), 0), "expected true or false"),
        (decode_settle_part, altered(SETTLED, (*EFFECT, 3, 0, 0), "paid"), "unknown event kind"),
        (
            decode_settle_part,
            altered(SETTLED, ("answers", 0, 1), "order_id"),
            "unknown answer kind",
        ),
        (decode_settle_part, altered(SETTLED, ("answers", 0, 0), True), "expected an integer"),
        (
            decode_settle_part,
            altered(SETTLED, ("answers", 0, 3), DROP),
            "an answer of kind 'refused'",
        ),
        (
            decode_settle_part,
            altered(SETTLED, ("answers",), DROP),
            "a settle part without 'answers'",
        ),
    ],
)
def test_anything_else_is_refused_whole(decode: Any, raw: bytes, message: str) -> None:
    with pytest.raises(BatchFormatError) as refused:
        decode(raw)
    assert str(refused.value).startswith(message), str(refused.value)


def test_an_account_shards_answers_read_back_for_the_sequencer(shards: Shards) -> None:
    sent = shards.drive(scenario())
    answers = sorted(sent.answers.items())
    document = encode_answers(7, 1, answers)
    k, sender, decoded = decode_answers(document)
    assert (k, sender, typed(decoded)) == (7, 1, typed(answers))
    assert encode_answers(k, sender, decoded) == document
    with pytest.raises(BatchFormatError):
        decode_answers(encode_batch(Batch(1, 0, ())))  # a document of another kind
