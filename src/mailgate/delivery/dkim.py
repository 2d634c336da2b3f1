"""DKIM signing of the final message bytes, per header From domain, with dkimpy."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import dkim

from mailgate.config import DkimKey, Settings, read_dkim_key

_SIGNED_HEADERS = (
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
)
_LINE_END = re.compile(rb"\r?\n")


@dataclass(frozen=True)
class _Key:
    domain: bytes
    selector: bytes
    pem: bytes


class DkimSigner:
    """Prepends a DKIM-Signature (rsa-sha256, relaxed/relaxed) for domains it has a key for."""

    def __init__(self, keys: Iterable[DkimKey]) -> None:
        self._keys = {
            key.domain.lower(): _Key(
                key.domain.lower().encode("ascii"),
                key.selector.encode("ascii"),
                read_dkim_key(key.key_file),
            )
            for key in keys
        }

    def sign(self, data: bytes, domain: str) -> bytes:
        """`data` with a signature by `domain`'s key on top, or unchanged without such a key."""
        key = self._keys.get(domain.lower())
        if key is None:
            return data
        header = dkim.sign(
            data,
            key.selector,
            key.domain,
            key.pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=_SIGNED_HEADERS,
            linesep=b"\r\n",
        )
        # Relays refuse bare LF, so make sure of CRLF whatever dkimpy folds with.
        return _LINE_END.sub(b"\r\n", header) + data


def build_signer(settings: Settings) -> DkimSigner | None:
    """A signer for the configured DKIM keys, or None when there are none."""
    return DkimSigner(settings.dkim) if settings.dkim else None
