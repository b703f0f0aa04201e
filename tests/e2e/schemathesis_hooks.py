"""Hooks of the `schemathesis run` that `test_schemathesis.py` starts (`SCHEMATHESIS_HOOKS`).

The test seeds the server and passes what it made in the environment variable
`SEEDS_VARIABLE` (the JSON of a `tests.seeded_generation.Seeds`); the shared generation
hooks mix those resources into the generated requests. Importing this module registers
its hooks for every schema of the process: only schemathesis' command loads it.

Webhooks: the server delivers to every subscribed URL, so a subscription must never name
anything but the test's local receiver. Before each call, a `url` that the document
accepts (its pattern and length) is replaced by one of the receiver's; a `url` it does
not accept is sent as generated (the server refuses it, and schemathesis checks that it
does). After each call, a subscription the answer shows at any other URL is deleted at
once and fails the run.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from typing import Any

import requests
import schemathesis
import yaml

import miniexchange.http
from miniexchange.http.docs import OPENAPI_FILE
from tests.seeded_generation import GENERATION_HOOKS, SEEDS, SEEDS_VARIABLE, Seeds

SEEDS.replace(Seeds(**json.loads(os.environ[SEEDS_VARIABLE])))
for _hook in GENERATION_HOOKS:
    schemathesis.hook(_hook)


def _documented_url() -> tuple[re.Pattern[str], int]:
    """The pattern and the length limit of a subscription's `url` in the document."""
    path = os.path.join(os.path.dirname(miniexchange.http.__file__), OPENAPI_FILE)
    with open(path, encoding="utf-8") as file:
        document = yaml.safe_load(file)
    url = document["components"]["schemas"]["WebhookRequest"]["properties"]["url"]
    return re.compile(url["pattern"]), url["maxLength"]


URL_PATTERN, URL_MAX_LENGTH = _documented_url()
IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,255}")


def _acceptable(url: Any) -> bool:
    return isinstance(url, str) and len(url) <= URL_MAX_LENGTH and bool(URL_PATTERN.search(url))


def _digest(value: Any) -> int:
    return zlib.crc32(json.dumps(value, sort_keys=True, default=repr).encode())


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """A subscription URL the server would take becomes one of the receiver's (which one
    depends on the generated URL, so that a later subscription may change it).

    A well-formed `Idempotency-Key` gets the digest of the body appended: generation
    repeats a few keys (the document's example, `0`) with many bodies, and each repeat
    would be a 422 before any field is checked. A key and the same body still replay.
    """
    if case.method != "POST":
        return
    key = case.headers.get("Idempotency-Key") if case.headers else None
    if isinstance(key, str) and IDEMPOTENCY_KEY.fullmatch(key):
        case.headers["Idempotency-Key"] = f"{key[:200]}.{_digest(case.body)}"
    if case.path != "/webhooks" or not isinstance(case.body, dict):
        return
    url = case.body.get("url")
    if _acceptable(url):
        urls = SEEDS.webhook_urls
        case.body = {**case.body, "url": urls[zlib.crc32(url.encode()) % len(urls)]}


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    if case.method != "POST" or case.path != "/webhooks" or response.status_code >= 300:
        return
    strays = [w for w in response.json()["webhooks"] if w["url"] not in SEEDS.webhook_urls]
    for webhook in strays:
        requests.delete(f"{SEEDS.server}/webhooks/{webhook['webhook_id']}", timeout=30)
    assert not strays, f"subscribed beyond the local receiver: {strays}"
