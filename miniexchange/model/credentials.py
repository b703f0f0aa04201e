"""A broker's credentials: the digest of its API key and its webhook secret.

An API key is shown once, when it is issued, and only its SHA-256 digest is kept and
journaled, so neither memory nor the journal can give a key away; a request's key is
found by its digest, which also makes the comparison independent of where two keys
first differ. The webhook secret is kept as it is: deliveries are signed with it.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple


class Credentials(NamedTuple):
    api_key_digest: str | None = None
    webhook_secret: str | None = None


def api_key_digest(api_key: str) -> str:
    """The hex SHA-256 of a key's UTF-8 text: what is kept instead of the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()
