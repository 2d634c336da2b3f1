"""API keys: generated once, stored only as a hash, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_api_key() -> str:
    # 128 hex characters, the same shape as Pleasanter's keys.
    return secrets.token_hex(64)


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8", errors="surrogatepass")).hexdigest()


def same_hash(stored: str, candidate: str) -> bool:
    return hmac.compare_digest(stored.encode(), candidate.encode())
