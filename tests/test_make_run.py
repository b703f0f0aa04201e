"""`make run` installs what serving needs and nothing more: the runtime dependencies,
without the dev extra (browser driver, fuzzer, linter) that `make test` adds."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dry_run(target: str) -> list[str]:
    """The commands `make <target>` would run on a fresh clone (every target remade).

    Run as a make of its own, not a sub-make of `make test` (which would add its
    "Entering directory" lines and pass its flags down)."""
    make = shutil.which("make")
    assert make is not None, "make is missing: apt-get install -y make"
    inherited = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
    env = {name: value for name, value in os.environ.items() if name not in inherited}
    done = subprocess.run(
        [make, "--no-print-directory", "-n", "-B", target],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def installs(commands: list[str]) -> list[str]:
    return [command for command in commands if "pip install" in command]


def test_make_run_installs_the_runtime_dependencies_only() -> None:
    commands = dry_run("run")
    assert installs(commands) == [".venv/bin/pip install -c constraints.txt -e ."]
    assert commands[-1] == "exec .venv/bin/gunicorn -c config/gunicorn.conf.py"


def test_make_test_installs_the_dev_and_ray_extras() -> None:
    """The Ray engine's tests start real Ray processes: the test install has Ray."""
    assert installs(dry_run("test")) == [".venv/bin/pip install -c constraints.txt -e '.[dev,ray]'"]


def test_make_run_ray_installs_the_runtime_and_ray_only_and_starts_the_cluster() -> None:
    commands = dry_run("run-ray")
    assert installs(commands) == [".venv/bin/pip install -c constraints.txt -e '.[ray]'"]
    assert commands[-1] == "exec .venv/bin/python -m miniexchange.cluster.serve"
