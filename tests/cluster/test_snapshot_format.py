"""Shard snapshots through bytes (`cluster.snapshot_format`), as a restarted shard reads
the file the sequencer wrote: the checks of `test_shards_snapshot` with every snapshot
encoded and decoded at the cut, and anything malformed refused whole."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import hypothesis
import orjson
import pykka
import pytest
from hypothesis import strategies as st

from miniexchange.actors.messages import Issued
from miniexchange.cluster.batches import BatchFormatError, CancelOrder, IssueCredentials
from miniexchange.cluster.shard_snapshots import AccountSnapshot, SymbolSnapshot
from miniexchange.cluster.snapshot_format import (
    decode_account_snapshot,
    decode_symbol_snapshot,
    encode_account_snapshot,
    encode_symbol_snapshot,
)
from miniexchange.cluster.stamped import Batch
from miniexchange.model.commands import ASK, BID, LIMIT, RegisterBroker, SubmitOrder
from miniexchange.model.credentials import Credentials, api_key_digest
from miniexchange.model.errors import order_not_found
from miniexchange.model.events import ORDER_CANCELLED, TRADE_EXECUTED
from miniexchange.model.orders import Trade
from miniexchange.testing import ManualClock
from tests.cluster.shard_support import T0, Shards, Stamper, comparable
from tests.cluster.test_shards_embedded import (
    READ_AT,
    VWAP_WINDOW,
    Stream,
    streams,
)
from tests.cluster.test_shards_snapshot import (
    DOC,
    Cut,
    batches_and_a_cut,
    check_exact_scenario,
    check_rebuilt_shards,
    check_split_run,
    observe,
    run_with_cut,
    scenario,
)

_S = TypeVar("_S", AccountSnapshot, SymbolSnapshot)


def through_bytes(taken: Cut) -> Cut:
    """The cut's snapshots as a restart reads them: each encoded, then decoded; each
    decoded one encodes to the same bytes and holds the same values."""
    accounts = [
        round_trip(s, encode_account_snapshot, decode_account_snapshot) for s in taken.accounts
    ]
    symbols = [round_trip(s, encode_symbol_snapshot, decode_symbol_snapshot) for s in taken.symbols]
    return Cut(taken.n, accounts, symbols, taken.in_flight, taken.delivered)


def round_trip(snapshot: _S, encode: Callable[[_S], bytes], decode: Callable[[bytes], _S]) -> _S:
    """`snapshot` encoded, then decoded; the decoded one encodes to the same bytes and
    holds the same values."""
    document = encode(snapshot)
    decoded = decode(document)
    assert encode(decoded) == document
    assert values(decoded) == values(snapshot)
    return decoded


def values(snapshot: AccountSnapshot | SymbolSnapshot) -> tuple[Any, ...]:
    """A snapshot as values that compare: a refusal by its code and message, a VWAP
    window by its state (neither compares by value)."""
    if isinstance(snapshot, AccountSnapshot):
        return tuple(snapshot._replace(decided=decided(snapshot)))
    books = tuple(
        (
            book.symbol,
            book.orders,
            (
                book.window.window_us,
                book.window.held(),
                book.window.last_price,
                book.window.last_at,
            ),
            book.feed,
        )
        for book in snapshot.books
    )
    return tuple(snapshot._replace(books=books))


def decided(snapshot: AccountSnapshot) -> tuple[tuple[int, tuple[tuple[int, Any], ...]], ...]:
    """R1's answers in flight, a refusal by its code and message."""
    return tuple(
        (k, tuple((seq, comparable(answer)) for seq, answer in answers))
        for k, answers in snapshot.decided
    )


# -- runs split by a snapshot that went through bytes -----------------------------------------


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(
    streams(),
    st.lists(st.integers(1, 6), min_size=1, max_size=4),
    st.booleans(),
    st.integers(1, 2),
    st.data(),
)
def test_a_run_split_by_a_snapshot_read_from_bytes_ends_as_the_straight_run(
    stream: Stream, sizes: list[int], in_flight: bool, account_actors: int, data: st.DataObject
) -> None:
    batches, i = batches_and_a_cut(stream, sizes, in_flight, data)
    try:
        check_split_run(batches, i, account_actors, stored=through_bytes)
        check_rebuilt_shards(batches, i, through_bytes)
    finally:
        pykka.ActorRegistry.stop_all()


@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(
    streams(), st.lists(st.integers(1, 6), min_size=1, max_size=4), st.booleans(), st.data()
)
def test_shards_started_from_decoded_snapshots_read_as_those_from_the_values(
    stream: Stream, sizes: list[int], in_flight: bool, data: st.DataObject
) -> None:
    batches, i = batches_and_a_cut(stream, sizes, in_flight, data)
    try:
        original = Shards(2, 2, ManualClock(READ_AT), VWAP_WINDOW, account_actors=2)
        _, taken = run_with_cut(original, batches, i)
        decoded = through_bytes(taken)
        from_values = Shards(
            2, 2, ManualClock(READ_AT), VWAP_WINDOW, 2, snapshots=(taken.accounts, taken.symbols)
        )
        from_bytes = Shards(
            2,
            2,
            ManualClock(READ_AT),
            VWAP_WINDOW,
            2,
            snapshots=(decoded.accounts, decoded.symbols),
        )
        assert observe(from_bytes) == observe(from_values)
    finally:
        pykka.ActorRegistry.stop_all()


def test_the_exact_scenario_through_bytes() -> None:
    check_exact_scenario(through_bytes)


UNKNOWN_ORDER = "ord-00000000-0000-4000-8000-000000000000"  # its id names account shard 1


def credentials_run() -> list[Batch]:
    """Credentials issued before the cut and, in flight at it (batch 3; the cut is after
    R2 of 2), R1's answers to another issue and to a cancel of an order nobody placed."""
    stamper = Stamper(account_shards=2)
    first = stamper.batch(
        [
            stamper.stamp(RegisterBroker("seller", 0, (("AAPL", 10),))),
            stamper.stamp(RegisterBroker("buyer", 10_000, ())),
        ]
    )
    second = stamper.batch(
        [
            stamper.stamp(IssueCredentials("buyer", True, True)),
            stamper.stamp(SubmitOrder(LIMIT, "seller", DOC, ASK, "AAPL", 5, 101, T0 + 10**9)),
        ]
    )
    third = stamper.batch(
        [
            stamper.stamp(IssueCredentials("seller", True, False)),
            stamper.stamp(CancelOrder(UNKNOWN_ORDER)),
            stamper.stamp(SubmitOrder(LIMIT, "buyer", DOC, BID, "AAPL", 3, 101, T0 + 10**9)),
        ],
        after=1,
    )
    fourth = stamper.batch(
        [stamper.stamp(IssueCredentials("buyer", True, False))],
        after=2,
    )
    return [first, second, third, fourth]


def test_credentials_and_answers_in_flight_through_bytes() -> None:
    batches = credentials_run()
    try:
        taken = check_split_run(batches, 3, account_actors=1, stored=through_bytes)
        check_rebuilt_shards(batches, 3, through_bytes)
        seller, buyer = taken.accounts
        assert buyer.credentials == (
            ("buyer", Credentials(api_key_digest("mx_stamped_3"), "whsec_stamped_3")),
        )
        # R1 of batch 3 issued the seller's before the cut; its answer waits for R2
        assert seller.credentials == (("seller", Credentials(api_key_digest("mx_stamped_5"))),)
        assert decided(seller) == ((3, ((5, Issued("seller", "mx_stamped_5", None)),)),)
        assert decided(buyer) == ((3, ((6, comparable(order_not_found(UNKNOWN_ORDER))),)),)
    finally:
        pykka.ActorRegistry.stop_all()


# -- refusals ----------------------------------------------------------------------------------


@functools.cache
def scenario_bytes() -> tuple[bytes, bytes]:
    """The scenario's buyer shard and AAPL's shard at the cut, encoded."""
    _, batches = scenario()
    try:
        shards = Shards(2, 2, ManualClock(READ_AT), VWAP_WINDOW, account_actors=1)
        _, taken = run_with_cut(shards, batches, 3)
    finally:
        pykka.ActorRegistry.stop_all()
    return encode_account_snapshot(taken.accounts[1]), encode_symbol_snapshot(taken.symbols[0])


def scenario_documents() -> tuple[dict[str, Any], dict[str, Any]]:
    """The scenario's snapshots as new objects to read or spoil."""
    account, symbol = scenario_bytes()
    return orjson.loads(account), orjson.loads(symbol)


def test_the_documents_are_flat_arrays_of_integers_and_strings() -> None:
    account, symbol = scenario_documents()
    assert (account["format"], account["part"], account["r1_done"], account["r2_done"]) == (
        2,
        "account_snapshot",
        3,
        2,
    )
    ((buyer),) = account["ledgers"]
    assert buyer[:2] == ["buyer", 9_600] and buyer[5:] == [9_600, [["AAPL", 9_600]], []]
    ((k, ((seq, kind, *_),)),) = account["decided"]
    assert (k, seq, kind) == (3, 9, "upserted")
    assert [s[2] for s in account["subscriptions"]] == [TRADE_EXECUTED, ORDER_CANCELLED]
    (aapl,) = symbol["books"]
    name, orders, window, feed = aapl
    assert name == "AAPL" and len(orders) == 4
    at = Stamper(account_shards=2).at
    assert window == [VWAP_WINDOW, 100, at(8), [[at(5), 400, 4], [at(8), 200, 2]]]
    tape, volume, candles, book_version = feed
    assert [Trade(*trade).quantity for trade in tape] == [4, 2]
    assert volume == 6 and book_version == 4  # one step per order
    assert [interval for interval, _ in candles] == ["1s", "1m", "5m", "1h", "1d"]


ACCOUNT = decode_account_snapshot
SYMBOL = decode_symbol_snapshot


def spoil_account(change: Any) -> bytes:
    account, _ = scenario_documents()
    change(account)
    return orjson.dumps(account)


def spoil_symbol(change: Any) -> bytes:
    _, symbol = scenario_documents()
    change(symbol)
    return orjson.dumps(symbol)


def first_ledger(account: dict[str, Any]) -> list[Any]:
    ledger: list[Any] = account["ledgers"][0]
    return ledger


def aapl(symbol: dict[str, Any]) -> list[Any]:
    book: list[Any] = symbol["books"][0]
    return book


MALFORMED: list[tuple[Any, Any, str]] = [
    (ACCOUNT, lambda: b"{", "is not JSON"),
    (ACCOUNT, lambda: b"[1]", "is not an object"),
    (ACCOUNT, lambda: spoil_account(lambda d: d.update(format=1)), "format 1; this code"),
    (SYMBOL, lambda: spoil_symbol(lambda d: d.pop("format")), "format None"),
    (SYMBOL, lambda: spoil_account(lambda d: None), "'account_snapshot' part where a symbol"),
    (
        ACCOUNT,
        lambda: spoil_symbol(lambda d: None),
        "'symbol_snapshot' part where a account_snapshot",
    ),
    (ACCOUNT, lambda: spoil_account(lambda d: d.pop("ledgers")), "without 'ledgers'"),
    (SYMBOL, lambda: spoil_symbol(lambda d: d.pop("me_done")), "without 'me_done'"),
    (
        ACCOUNT,
        lambda: spoil_account(lambda d: first_ledger(d).__setitem__(1, 9_600.0)),
        "expected an integer, got 9600.0",
    ),
    (
        ACCOUNT,
        lambda: spoil_account(lambda d: first_ledger(d).__setitem__(5, True)),
        "expected an integer, got True",
    ),
    (
        ACCOUNT,
        lambda: spoil_account(lambda d: first_ledger(d)[6][0].__setitem__(1, 9_600.5)),
        "expected an integer, got 9600.5",
    ),
    (ACCOUNT, lambda: spoil_account(lambda d: first_ledger(d).pop()), "a ledger is not an array"),
    (
        ACCOUNT,
        lambda: spoil_account(lambda d: d["decided"][0][1][0].__setitem__(1, "bonus")),
        "unknown answer kind 'bonus'",
    ),
    (
        ACCOUNT,
        lambda: spoil_account(lambda d: d["subscriptions"][0].pop()),
        "a subscription is not an array of 6",
    ),
    (
        SYMBOL,
        lambda: spoil_symbol(lambda d: aapl(d)[2].__setitem__(1, 100.0)),
        "expected an integer, got 100.0",
    ),
    (
        SYMBOL,
        lambda: spoil_symbol(lambda d: aapl(d)[2][3][0].__setitem__(1, 400.0)),
        "expected an integer, got 400.0",
    ),
    (
        SYMBOL,
        lambda: spoil_symbol(lambda d: aapl(d)[3][0][0].__setitem__(2, 100.0)),
        "expected an integer, got 100.0",
    ),
    (
        SYMBOL,
        lambda: spoil_symbol(lambda d: aapl(d)[3][2][0].__setitem__(0, "2m")),
        "unknown candle interval '2m'",
    ),
    (
        SYMBOL,
        lambda: spoil_symbol(lambda d: aapl(d)[3][2][0][1][0].__setitem__(1, 100.0)),
        "expected an integer, got 100.0",
    ),
    (
        SYMBOL,
        lambda: spoil_symbol(lambda d: aapl(d)[1][0].__setitem__(10, "filled")),
        "an order that its fields do not make",
    ),
    (SYMBOL, lambda: spoil_symbol(lambda d: aapl(d).pop()), "a symbol's book is not an array"),
]


@pytest.mark.parametrize(("decode", "raw", "message"), MALFORMED)
def test_anything_malformed_is_refused_whole(decode: Any, raw: Any, message: str) -> None:
    with pytest.raises(BatchFormatError) as refused:
        decode(raw())
    assert message in str(refused.value)
