"""The README's "Testing an actor alone" example runs as written."""

from __future__ import annotations

import pykka

from tests.readme import code_block


def test_testing_an_actor_alone_example_runs() -> None:
    try:
        exec(compile(code_block("Testing an actor alone", "python"), "README.md", "exec"), {})
    finally:
        pykka.ActorRegistry.stop_all()
