"""A refusal keeps its code and message wherever it travels."""

from __future__ import annotations

import pickle

from miniexchange.model.errors import ExchangeError, insufficient_funds


def test_a_refusal_pickles_with_its_code_and_message() -> None:
    """A shard process returns refusals to the workers pickled (Ray's return values)."""
    refusal = insufficient_funds("alice", "bid", "AAPL")
    copy = pickle.loads(pickle.dumps(refusal))
    assert type(copy) is ExchangeError
    assert (copy.code, copy.message, str(copy)) == (refusal.code, refusal.message, str(refusal))
