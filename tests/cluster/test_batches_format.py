"""The worker → sequencer part: one orjson document, read back exactly."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from miniexchange.cluster.batches import (
    BatchFormatError,
    CancelOrder,
    IssueCredentials,
    Part,
    SubscribeWebhooks,
    UnsubscribeWebhook,
    Write,
    decode_part,
    encode_part,
)
from miniexchange.model.commands import ASK, BID, LIMIT, MARKET, RegisterBroker, SubmitOrder

# Any 64-bit integer: far past every value validation lets through, and where a float
# would already have lost cents.
integers = st.integers(min_value=-(2**63), max_value=2**64 - 1)
texts = st.text(st.characters(exclude_categories=("Cs",)))  # JSON has no lone surrogates
optional_texts = st.none() | texts

limit_orders = st.builds(
    SubmitOrder,
    type=st.just(LIMIT),
    broker_id=texts,
    document_number=texts,
    side=st.sampled_from((BID, ASK)),
    symbol=texts,
    quantity=integers,
    price=integers,
    expires_at=integers,
)
market_orders = st.builds(
    SubmitOrder,
    type=st.just(MARKET),
    broker_id=texts,
    document_number=texts,
    side=st.sampled_from((BID, ASK)),
    symbol=texts,
    quantity=integers,
    price=st.none(),  # named: left out, builds would draw them from the type hints,
    expires_at=st.none(),  # unbounded integers
)
registrations = st.builds(
    RegisterBroker,
    broker_id=texts,
    initial_cash=integers,
    holdings=st.lists(st.tuples(texts, integers)).map(tuple),
)
commands = st.one_of(
    limit_orders,
    market_orders,
    st.builds(CancelOrder, texts),
    registrations,
    st.builds(IssueCredentials, texts, st.booleans(), st.booleans()),
    st.builds(SubscribeWebhooks, texts, texts, st.lists(texts).map(tuple)),
    st.builds(UnsubscribeWebhook, texts, optional_texts),
)
writes = st.builds(Write, integers, commands, optional_texts, st.none() | st.tuples(texts, texts))
parts = st.builds(Part, texts, st.lists(writes).map(tuple))


@given(parts)
def test_a_part_reads_back_equal_to_what_was_written(part: Part) -> None:
    decoded = decode_part(encode_part(part))
    assert decoded == part
    # NamedTuples compare equal to plain tuples: check that the types came back too
    assert [type(write.command) for write in decoded.writes] == [
        type(write.command) for write in part.writes
    ]


@given(parts)
def test_encoding_is_deterministic(part: Part) -> None:
    """Read and written again, a part gives the same bytes: nothing is lost, added or
    reordered on the way."""
    assert encode_part(decode_part(encode_part(part))) == encode_part(part)


def test_the_document_is_small_and_flat() -> None:
    part = Part(
        "w-1",
        (
            Write(
                7,
                SubmitOrder(LIMIT, "b1", "111", BID, "AAPL", 100, 14_800, 10**15),
                "req-a",
                ("/orders", "k-7"),
            ),
            Write(8, SubmitOrder(MARKET, "b1", "111", ASK, "AAPL", 5)),
            Write(9, CancelOrder("ord-1")),
            Write(10, RegisterBroker("b2", 100_000_00, (("AAPL", 500), ("MSFT", 3)))),
            Write(11, IssueCredentials("b2", True, False)),
            Write(12, SubscribeWebhooks("b2", "https://h/x", ("trade.executed",))),
            Write(13, UnsubscribeWebhook("wh-1", "b2")),
        ),
    )
    assert orjson.loads(encode_part(part)) == {
        "format": 2,
        "worker": "w-1",
        "writes": [
            [
                7,
                "req-a",
                ["/orders", "k-7"],
                "order",
                "limit",
                "b1",
                "111",
                "bid",
                "AAPL",
                100,
                14800,
                10**15,
            ],
            [8, None, None, "order", "market", "b1", "111", "ask", "AAPL", 5, None, None],
            [9, None, None, "cancel", "ord-1"],
            [10, None, None, "register", "b2", 10000000, [["AAPL", 500], ["MSFT", 3]]],
            [11, None, None, "issue", "b2", True, False],
            [12, None, None, "subscribe", "b2", "https://h/x", ["trade.executed"]],
            [13, None, None, "unsubscribe", "wh-1", "b2"],
        ],
    }
    assert decode_part(encode_part(part)) == part


def document(*writes: list[object], format: object = 2) -> bytes:
    return orjson.dumps({"format": format, "worker": "w-1", "writes": list(writes)})


ORDER = ["order", "limit", "b1", "111", "bid", "AAPL", 100, 14800, 10**15]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "a batch part is not JSON"),
        (b"[]", "a batch part is not an object"),
        (document(format=1), "a batch part of format 1; this code reads format 2"),
        (document(format=None), "a batch part of format None; this code reads format 2"),
        (b'{"format": 2, "worker": "w-1"}', "a batch part's writes are not an array"),
        (document([1, None, None, "trade", "x"]), "unknown write kind 'trade'"),
        (document([1, None, None]), "a write is not [number, request_id, key, kind, ...]"),
        (document([1, None, ["/orders"], "cancel", "o"]), "an Idempotency-Key is not"),
        (document([1, None, None, *ORDER[:-1]]), "a write of kind 'order' with wrong fields"),
        (document([1.0, None, None, *ORDER]), "expected an integer, got 1.0"),
        (document([1, None, None, *ORDER[:7], 148.0, 10**15]), "expected an integer, got 148.0"),
        (
            document([1, None, None, *ORDER[:6], True, 14800, 10**15]),
            "expected an integer, got True",
        ),
        (document([1, None, None, "cancel", 5]), "expected a string, got 5"),
        (document([1, None, None, "issue", "b1", 1, False]), "expected true or false, got 1"),
        (document([1, None, None, "register", "b1", 0, [["AAPL"]]]), "expected [symbol, quantity]"),
        (document([1, None, None, "subscribe", "b1", "u", "trade.executed"]), "expected an array"),
    ],
)
def test_anything_else_is_refused_whole(raw: bytes, message: str) -> None:
    with pytest.raises(BatchFormatError) as refused:
        decode_part(raw)
    assert str(refused.value).startswith(message)
