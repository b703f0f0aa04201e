"""The README's API walkthrough, pasted in order against the real server, says what it
claims to say."""

from __future__ import annotations

import json
import shutil
import subprocess

from tests.e2e.conftest import Server
from tests.readme import code_block


def test_walkthrough_runs_against_the_real_server(server: Server) -> None:
    assert shutil.which("curl"), "the walkthrough needs curl: apt-get install -y curl"
    walkthrough = code_block("API walkthrough", "sh")
    # one response a line (curl prints none after a body)
    script = "curl() { command curl -w '\\n' \"$@\"; }\n" + walkthrough.replace(
        "BASE=http://127.0.0.1:8080", f"BASE={server.url}"
    )
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines[0] == {"status": "ok"}
    errors = [line for line in lines if set(line) == {"error", "message"}]
    assert errors == [
        {
            "error": "no_liquidity",
            "message": "No matching orders available for market order on MSFT",
        },
        {"error": "order_not_found", "message": "Order ord-nonexistent does not exist"},
    ]
    orders = [line for line in lines if "order_id" in line and "trades" in line]
    bid, sweep = orders[2], orders[3]
    assert (bid["status"], bid["average_price"], bid["trades"][0]["price"]) == (
        "filled", 148.0, 148.0,
    )  # fmt: skip
    assert (sweep["status"], sweep["average_price"]) == ("filled", 148.4)
    assert orders[-1]["status"] == "cancelled"
    price = next(line for line in lines if "current_price" in line)
    assert price["trades_in_window"] == 3
    candles = next(line for line in lines if "candles" in line)
    assert (candles["symbol"], candles["interval"]) == ("AAPL", "1m")
    assert sum(c["trades"] for c in candles["candles"]) == 3  # 100 @ 148, then the sweep
    assert sum(c["volume"] for c in candles["candles"]) == 350
