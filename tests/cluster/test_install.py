"""The `ray` extra is pinned once; `make test` installs it with the dev extra, `make run`
never (tests/test_make_run.py)."""

from __future__ import annotations

import tomllib

from tests.test_make_run import ROOT, dry_run, installs


def pins() -> dict[str, str]:
    """constraints.txt as name -> version (names as pip normalises them)."""
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pinned[name.lower().replace("_", "-")] = version
    return pinned


def test_the_ray_stamp_installs_the_dev_and_ray_extras() -> None:
    assert installs(dry_run(".venv/.installed-ray")) == [
        ".venv/bin/pip install -c constraints.txt -e '.[dev,ray]'"
    ]


def test_ray_is_pinned_alike_in_pyproject_and_constraints() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["ray"] == [f"ray=={pins()['ray']}"]
    assert all("ray" not in requirement for requirement in project["dependencies"])
    # what ray pulls in beyond the runtime and dev sets is pinned too
    assert {"filelock", "msgpack", "protobuf"} <= pins().keys()
