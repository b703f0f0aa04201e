"""`GET /static/{path}`: the page's files, exactly those, cacheable; anything else a 404.

The raw-path cases go through a real server (tests/e2e's fixture): only there does the
request line keep its percent-escapes (`..%2F`) the way a client sends them.
"""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AppClient
from tests.e2e.conftest import Server

STATIC = Path(__file__).resolve().parents[2] / "miniexchange" / "http" / "static"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "vendor-lightweight-charts"
LIBRARY = "vendor/lightweight-charts.standalone.production.js"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("market.js", "text/javascript; charset=utf-8"),
        ("market.css", "text/css; charset=utf-8"),
        (LIBRARY, "text/javascript; charset=utf-8"),
        ("vendor/LICENSE", "text/plain; charset=utf-8"),
    ],
)
def test_a_file_is_served_as_it_is(client: AppClient, path: str, content_type: str) -> None:
    result = client.get(f"/static/{path}")
    assert result.status_code == 200
    assert result.content == (STATIC / path).read_bytes()
    assert result.headers["content-type"] == content_type
    assert result.headers["cache-control"] == "public, max-age=86400"


@pytest.mark.parametrize(
    "path",
    [
        "/static/nope.js",
        "/static/index.html",  # the page is `/`, not a static file
        "/static/vendor/lightweight-charts.standalone.development.js",
        "/static/vendor",
        "/static/MARKET.JS",
        "/static/../pyproject.toml",
        "/static/vendor/../market.js",
        "/static/./market.js",
        "/static/",
        "/static",
    ],
)
def test_other_paths_are_not_found(client: AppClient, path: str) -> None:
    result = client.get(path)
    assert result.status_code == 404
    assert result.json == {"error": "not_found", "message": f"No route matches GET {path}"}


def test_other_methods_are_not_allowed(client: AppClient) -> None:
    for method in ("POST", "DELETE", "HEAD"):
        result = client.request(method, "/static/market.js")
        assert result.status_code == 405
        assert result.headers["allow"] == "GET"


def test_the_page_links_each_file_with_its_version(client: AppClient) -> None:
    page = client.get("/").text
    links = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
    assert len(links) == 3  # the stylesheet, the library, the page's script
    for link in links:
        path, version = link.removeprefix("/static/").split("?v=")
        data = (STATIC / path).read_bytes()
        assert version == hashlib.sha256(data).hexdigest()[:16]
        assert client.get(f"/static/{path}").content == data
    assert "<style>" not in page and "<script>\n" not in page  # nothing inlined any more
    assert "https://" not in page  # no CDN


def _raw_get(address: tuple[str, int], target: str) -> bytes:
    with socket.create_connection(address, timeout=10) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server({"DATABASE_PATH": ":memory:"}, tmp_path / "server.log")
    try:
        yield running
    finally:
        running.stop()


def test_escaped_spellings_are_not_found_on_a_real_server(server: Server) -> None:
    address = ("127.0.0.1", server.port)
    assert _raw_get(address, "/static/market.css").startswith(b"HTTP/1.1 200")
    for target in (
        "/static/vendor%2FLICENSE",
        "/static/..%2F..%2Fpyproject.toml",
        "/static/%2e%2e/pyproject.toml",
        "/static/market%2Ejs",
        "/static/../../pyproject.toml",
    ):
        answer = _raw_get(address, target)
        assert answer.startswith(b"HTTP/1.1 404"), (target, answer[:200])
        assert b'"error":"not_found"' in answer, target


def test_the_vendored_library_is_the_one_the_script_records() -> None:
    recorded = dict(re.findall(r'"(\w[\w.-]*)",\s*"([0-9a-f]{64})"', SCRIPT.read_text()))
    assert set(recorded) == {"lightweight-charts.standalone.production.js", "LICENSE"}
    for name, digest in recorded.items():
        assert hashlib.sha256((STATIC / "vendor" / name).read_bytes()).hexdigest() == digest
    assert re.search(r'^VERSION = "5\.0\.\d+"$', SCRIPT.read_text(), re.M)
