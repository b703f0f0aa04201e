"""The README and the design pages: the "Testing an actor alone" example runs as
written, and every relative link names a file of the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pykka

from tests.readme import README, code_block

ROOT = README.parent
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)|<(?:img|a)\s[^>]*(?:src|href)=\"([^\"]+)\"")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$", re.MULTILINE)


def test_testing_an_actor_alone_example_runs() -> None:
    try:
        exec(compile(code_block("Testing an actor alone", "python"), "README.md", "exec"), {})
    finally:
        pykka.ActorRegistry.stop_all()


def documents() -> list[Path]:
    """The README and every page of the repository's own docs/."""
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(heading) for heading in HEADING.findall(page.read_text())}


def relative_links(document: Path) -> list[str]:
    """Every link target of `document` that is not a URL (fenced code left out)."""
    text = re.sub(r"```.*?```", "", document.read_text(), flags=re.DOTALL)
    targets = [inline or html for inline, html in LINK.findall(text)]
    return [target for target in targets if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def broken_links(document: Path, root: Path = ROOT) -> list[str]:
    """The relative links of `document` that name no file inside `root`, or an anchor
    that no heading of the page it names makes."""
    broken = []
    for target in relative_links(document):
        path, _, anchor = target.partition("#")
        file = (document.parent / path).resolve() if path else document
        missing = not file.is_relative_to(root) or not file.exists()
        if missing or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    return broken


def test_every_relative_link_of_the_readme_and_docs_names_a_file_of_the_repository() -> None:
    names = [document.relative_to(ROOT).as_posix() for document in documents()]
    assert "docs/design.md" in names
    assert all(relative_links(document) for document in documents())
    broken = {
        name: links
        for name, document in zip(names, documents(), strict=True)
        if (links := broken_links(document))
    }
    assert broken == {}


def test_the_link_check_catches_a_missing_file_an_outside_path_and_a_bad_anchor(
    tmp_path: Path,
) -> None:
    root = tmp_path / "repository"
    (root / "docs").mkdir(parents=True)
    (root / "README.md").write_text("# Title\n")
    page = root / "docs" / "page.md"
    page.write_text(
        "# Layers\n\n[a](missing.md) [b](../../outside/notes.md) [c](#no-such-heading)\n"
        "[d](#layers) [e](../README.md#title) [f](../README.md#other) [g](https://example.com)\n"
        "```\n[h](inside-a-code-block.md)\n```\n"
    )
    (tmp_path / "outside").mkdir(parents=True)
    (tmp_path / "outside" / "notes.md").write_text("# Notes\n")
    assert broken_links(page, root.resolve()) == [
        "missing.md",
        "../../outside/notes.md",
        "#no-such-heading",
        "../README.md#other",
    ]


def test_how_it_is_built_points_at_the_design_page() -> None:
    section = README.read_text().split("\n## How it is built\n", 1)[1].split("\n## ", 1)[0]
    assert "(docs/design.md)" in section
    headings = HEADING.findall((ROOT / "docs" / "design.md").read_text())
    for part in ("Layers", "Actors and their messages", "The order path", "Durability"):
        assert part in headings
    assert "Process model" in headings


def test_no_file_cites_sections_of_a_document_outside_the_repository() -> None:
    """A comment states the rule it implements (or points into docs/): whoever picks the
    project up has only the repository, so a section number of another document helps
    nobody."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    citing = []
    for name in filter(None, tracked):
        path = ROOT / name.decode()
        if path.is_file() and "\u00a7".encode() in path.read_bytes():
            citing.append(name.decode())
    assert citing == []
