"""Causal durability (contract): a 2xx, and a webhook about a fact, wait until the fact is
committed, and also until every fact theirs rests on is committed.

The case: broker X sells AAA and, with the proceeds, bids on BBB. The AAA trade's commit
is withheld (`WithholdingJournal`: as if the process died before that commit), so on a
correct exchange nothing resting on it (the proceeds) is visible to the BBB bid, which is
refused (409 insufficient_balance). If the exchange lets the BBB bid spend uncommitted
proceeds and answers 201, a crash right then leaves X, after recovery, owing cash it never
received: available cash below zero.

The exchange runs in a child process, driven only through the public HTTP API (the
in-process app, `AppClient`), so this test does not depend on the actors' internals. The
child is SIGKILLed as soon as it has the BBB answer; the parent then rebuilds the state
from the SQLite file alone and checks the invariants on it.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from miniexchange.actors.exchange import Exchange
from miniexchange.actors.seam import EmbeddedEngine
from miniexchange.http.app import create_app
from miniexchange.journal import facts as kinds
from miniexchange.journal.facts import Fact, decode
from miniexchange.journal.recovery import Recovered, recover
from miniexchange.journal.store import SqliteJournal
from miniexchange.model.commands import BID
from miniexchange.settings import load_settings
from miniexchange.testing import FakeDeliveries, ManualClock, SequentialIds, WithholdingJournal
from tests.conftest import START, AppClient
from tests.http.helpers import limit, register

ROOT = Path(__file__).resolve().parents[2]
REPORT = "causal-report "
"""The prefix of the child's report lines on its stdout (anything else there is ignored)."""

WAIT_S = 60.0
"""How long the child may take to start and reach the withheld commit; never a speed bound."""
ANSWER_WAIT_S = 60.0
"""How long the BBB answer may take once the AAA commit is withheld."""

START_CASH = {"X": 0, "Y": 1_000_00}  # cents
START_HOLDINGS = {"X": {"AAA": 10}, "Y": {}}
PRICE = 10  # 10.00 per share: X sells 1 AAA to Y, then bids for 1 BBB with the proceeds


def trade_on_aaa(facts: Sequence[Fact]) -> bool:
    """The append of the step that executed a trade on AAA (X's ask meeting Y's bid)."""
    return any(
        kind == kinds.TRADE_EXECUTED and decode(body)["symbol"] == "AAA" for kind, body in facts
    )


# -- the child: the exchange, driven over HTTP --------------------------------------------


def run_child(path: str) -> None:
    """The exchange in this process, on `path`, with the AAA trade's commit withheld.

    Reports each step as a line on stdout; after the BBB answer it waits to be killed
    (or for its stdin to close, should the parent die first)."""

    def report(event: str, **details: Any) -> None:
        sys.stdout.write(REPORT + json.dumps({"event": event, **details}) + "\n")
        sys.stdout.flush()

    clock = ManualClock.at(START)
    journal = WithholdingJournal(SqliteJournal(path), withhold=trade_on_aaa)
    exchange = Exchange(
        clock, SequentialIds(), FakeDeliveries(), journal=journal, expiration_interval_s=None
    )
    client = AppClient(create_app(load_settings({}), clock=clock, engine=EmbeddedEngine(exchange)))
    for broker_id, cash in START_CASH.items():
        register(client, broker_id, cash / 100, **START_HOLDINGS[broker_id])
    resting = limit(client, "Y", "bid", PRICE, 1, symbol="AAA")
    report("y_bid", status=resting.status_code, body=brief(resting.json))

    def sell() -> None:  # its answer waits for the withheld commit: maybe forever
        try:
            sold = limit(client, "X", "ask", PRICE, 1, symbol="AAA")
        except Exception as error:  # the client's own bound on a request
            report("x_ask", error=repr(error))
        else:
            report("x_ask", status=sold.status_code, body=brief(sold.json))

    threading.Thread(target=sell, name="x-ask", daemon=True).start()
    if not journal.withheld.wait(WAIT_S):
        report("not_withheld")
        return
    report("withheld", facts=[kind for kind, _ in journal.withheld_facts])
    funded = limit(client, "X", "bid", PRICE, 1, symbol="BBB")
    report("bbb", status=funded.status_code, body=funded.json)
    sys.stdin.read()  # until killed


# -- the parent ---------------------------------------------------------------------------


class Child:
    """The child process and its report lines, read on a thread so waits are bounded."""

    def __init__(self, path: Path, stderr: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        code = f"import sys; from {__name__} import run_child; run_child(sys.argv[1])"
        self._stderr_path = stderr
        self._stderr = stderr.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(path)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.reports: list[dict[str, Any]] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, name="child-reports", daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            text = line.decode(errors="replace")
            if text.startswith(REPORT):
                self._lines.put(json.loads(text[len(REPORT) :]))
        self._lines.put(None)  # the child's stdout closed: it exited

    def wait_for(self, *events: str, timeout: float) -> dict[str, Any]:
        """The next report whose event is one of `events` (earlier ones are kept)."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"no {' or '.join(events)} report from the child within {timeout:.0f} s"
                    + self.story()
                ) from None
            if line is None:
                raise AssertionError(
                    f"the child exited before {' or '.join(events)}" + self.story()
                )
            self.reports.append(line)
            if line["event"] in events:
                return line

    def kill(self) -> None:
        """SIGKILL (a crash: nothing is flushed or closed), then reap."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._stderr.close()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()

    def story(self) -> str:
        tail = self._stderr_path.read_text(errors="replace")[-3000:]
        return f"\nchild reports: {self.reports}\nchild stderr (tail):\n{tail}"


def money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def brief(body: Any) -> Any:
    """An order's answer without its noise; a refusal as it is."""
    if isinstance(body, dict) and "order_id" in body:
        return {key: body[key] for key in ("order_id", "status", "price", "quantity")}
    return body


def violations(state: Recovered, answer: dict[str, Any]) -> list[str]:
    """Every broken invariant of the recovered state, in words."""
    found: list[str] = []
    ledgers = state.ledgers
    if sorted(ledgers) != sorted(START_CASH):
        return [f"recovered brokers {sorted(ledgers)}, registered {sorted(START_CASH)}"]
    reserved_cash: Counter[str] = Counter()
    reserved_shares: Counter[tuple[str, str]] = Counter()
    for order in state.orders.values():
        if order.is_active:
            if order.side == BID:
                reserved_cash[order.broker_id] += order.price * order.remaining_quantity  # type: ignore[operator]
            else:
                reserved_shares[order.broker_id, order.symbol] += order.remaining_quantity
    for broker_id, ledger in sorted(ledgers.items()):
        if ledger.available_cash < 0:
            found.append(
                f"broker {broker_id}: available cash {money(ledger.available_cash)} after "
                f"recovery (cash {money(ledger.cash)}, reserved {money(ledger.reserved_cash)})"
            )
        if ledger.reserved_cash != reserved_cash[broker_id]:
            found.append(
                f"broker {broker_id}: reserved cash {money(ledger.reserved_cash)}, but its "
                f"active bids hold {money(reserved_cash[broker_id])}"
            )
        for symbol in sorted({*ledger.holdings, *ledger.reserved_shares}):
            held, reserved = ledger.holdings.get(symbol, 0), ledger.reserved_shares.get(symbol, 0)
            if reserved > held:
                found.append(f"broker {broker_id}: {reserved} {symbol} reserved of {held} held")
        for symbol, reserved in sorted(ledger.reserved_shares.items()):
            if reserved != reserved_shares[broker_id, symbol]:
                found.append(
                    f"broker {broker_id}: {reserved} {symbol} reserved, but its active asks "
                    f"hold {reserved_shares[broker_id, symbol]}"
                )
    total = sum(ledger.cash for ledger in ledgers.values())
    if total != sum(START_CASH.values()):
        found.append(
            f"cash not conserved: {money(total)} in all, {money(sum(START_CASH.values()))} registered"
        )
    held_now: Counter[str] = Counter()
    held_first: Counter[str] = Counter()
    for broker_id, ledger in ledgers.items():
        held_now.update(ledger.holdings)
        held_first.update(START_HOLDINGS[broker_id])
    if +held_now != +held_first:
        found.append(f"holdings not conserved: {dict(held_now)}, registered {dict(held_first)}")
    if 200 <= answer["status"] < 300:
        order_id = answer["body"]["order_id"]
        recovered = state.orders.get(order_id)
        if recovered is None:
            found.append(f"the BBB bid {order_id} was answered {answer['status']} but is lost")
        elif (recovered.broker_id, recovered.symbol, recovered.side) != ("X", "BBB", BID):
            found.append(f"the BBB bid {order_id} recovered as {recovered}")
    return found


def test_a_bid_funded_by_an_uncommitted_sale_is_never_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    child = Child(path, tmp_path / "child.stderr")
    try:
        resting = child.wait_for("y_bid", timeout=WAIT_S)
        assert resting["status"] == 201, child.story()
        child.wait_for("withheld", "not_withheld", timeout=WAIT_S)
        assert child.reports[-1]["event"] == "withheld", (
            "the AAA trade was never appended to the journal" + child.story()
        )
        answer = child.wait_for("bbb", timeout=ANSWER_WAIT_S)
    finally:
        child.kill()  # at once: the AAA trade is still uncommitted

    journal = SqliteJournal(str(path))
    try:
        state = recover(journal.facts())
    finally:
        journal.close()
    broken = violations(state, answer)
    assert not broken, (
        f"X's BBB bid, fundable only by the uncommitted AAA sale, was answered "
        f"{answer['status']} {brief(answer['body'])}; after the crash and recovery:\n  "
        + "\n  ".join(broken)
    )
    # Without the AAA trade's commit, X has no cash to bid with: on a correct exchange the
    # BBB bid can only be refused (a 201 would rest on a fact that may never be committed).
    assert (answer["status"], answer["body"].get("error")) == (409, "insufficient_balance"), answer
