"""The streams' news a symbol shard keeps: each trade once, in order, to each poll."""

from __future__ import annotations

import threading

from miniexchange.actors.listeners import Step
from miniexchange.cluster.news import JOINING, News, Update
from miniexchange.model.engine import Outcome
from miniexchange.model.orders import Trade

T0 = 1_000_000


def trade(n: int, at: int) -> Trade:
    return Trade(f"trd-{n}", "AAPL", 100 + n, 1, at, "ord-b", "ord-a", "buyer", "seller")


def step(*trades: Trade, symbol: str = "AAPL") -> Step:
    outcome = Outcome(trades[0].executed_at if trades else T0)
    outcome.trades = list(trades)
    return Step(symbol, outcome, None, None, None)


def test_a_joining_worker_hears_the_trades_since_it_joined_then_each_step_once() -> None:
    news = News()
    news.on_step(step(trade(1, T0)))
    news.on_step(step())  # a step without trades: the book moved
    news.on_step(step(trade(2, T0 + 10), trade(3, T0 + 10)))
    assert news.since({"AAPL": (JOINING, T0 + 5), "MSFT": (JOINING, T0)}, 0) == {
        "AAPL": Update(3, [trade(2, T0 + 10), trade(3, T0 + 10)], False),
        "MSFT": Update(0, [], False),  # no step yet: the count to start from
    }
    assert news.since({"AAPL": (3, T0 + 5), "MSFT": (0, T0)}, 0) == {}
    news.on_step(step())
    news.on_step(step(trade(4, T0 + 20)))
    assert news.since({"AAPL": (3, T0 + 5)}, 0) == {"AAPL": Update(5, [trade(4, T0 + 20)], False)}
    assert news.since({"AAPL": (4, T0 + 5)}, 0) == {"AAPL": Update(5, [trade(4, T0 + 20)], False)}


def test_trades_that_fell_out_of_the_backlog_are_reported_lost() -> None:
    news = News(backlog=2)
    for n in range(1, 4):
        news.on_step(step(trade(n, T0 + n)))
    assert news.since({"AAPL": (1, T0)}, 0) == {
        "AAPL": Update(3, [trade(2, T0 + 2), trade(3, T0 + 3)], False)
    }
    assert news.since({"AAPL": (0, T0)}, 0) == {
        "AAPL": Update(3, [trade(2, T0 + 2), trade(3, T0 + 3)], True)
    }


def test_a_poll_waits_for_the_next_step_and_ends_empty_when_none_comes() -> None:
    news = News()
    assert news.since({"AAPL": (0, T0)}, 0.05) == {}
    answered: list[dict[str, Update]] = []
    poll = threading.Thread(target=lambda: answered.append(news.since({"AAPL": (0, T0)}, 60)))
    poll.start()
    news.on_step(step(symbol="MSFT"))  # another symbol: the poll goes on waiting
    news.on_step(step(trade(1, T0)))
    poll.join(timeout=60)
    assert answered == [{"AAPL": Update(1, [trade(1, T0)], False)}]


def test_a_rebuilt_shard_counting_its_steps_again_tells_a_worker_only_what_is_new() -> None:
    """A shard rebuilt by a replay of the journal runs its steps again: a worker that
    had seen 2 hears nothing while the count climbs back, then only step 3."""
    news = News()
    news.on_step(step(trade(1, T0)))
    news.on_step(step(trade(2, T0 + 1)))
    news.forget_steps()
    assert news.since({"AAPL": (2, T0)}, 0) == {}  # none counted yet
    news.on_step(step(trade(1, T0)))  # the replay
    assert news.since({"AAPL": (2, T0)}, 0) == {}  # 1 of the 2 it had seen
    news.on_step(step(trade(2, T0 + 1)))
    assert news.since({"AAPL": (2, T0)}, 0) == {}
    news.on_step(step(trade(3, T0 + 2)))  # new
    assert news.since({"AAPL": (2, T0)}, 0) == {"AAPL": Update(3, [trade(3, T0 + 2)], False)}


def test_a_shard_started_from_a_snapshot_counts_on_from_the_snapshots_steps() -> None:
    """Started from a snapshot taken after 2 steps, the shard replays only step 3: a
    worker that had seen 2 hears step 3 alone; one that had seen 1 hears it too, and
    that trades it missed are lost (the snapshot keeps the count, not the trades)."""
    news = News()
    news.on_step(step(trade(1, T0)))
    news.on_step(step(trade(2, T0 + 1)))
    counted = news.steps()
    assert counted == {"AAPL": 2}
    news.forget_steps(counted)
    assert news.since({"AAPL": (2, T0)}, 0) == {}
    news.on_step(step(trade(3, T0 + 2)))  # the first batch after the snapshot
    assert news.since({"AAPL": (2, T0), "MSFT": (0, T0)}, 0) == {
        "AAPL": Update(3, [trade(3, T0 + 2)], False)
    }
    assert news.since({"AAPL": (1, T0)}, 0) == {"AAPL": Update(3, [trade(3, T0 + 2)], True)}
