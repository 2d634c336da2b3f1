"""The one small interface every transport implements, and its outcome."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from mailgate.mail.compose import Pieces

OutcomeStatus = Literal["sent", "captured", "deferred", "failed"]
# A message whole, or as compose_parts gives it (sent as it is encoded).
MessageData = bytes | Pieces


def pieces(data: MessageData) -> Pieces:
    return Pieces((data,)) if isinstance(data, bytes) else data


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt achieved; `detail` is the relay's reply or the error, for the history."""

    status: OutcomeStatus
    detail: str | None = None
    # Recipients the relay refused with 4xx: the next attempt goes to these alone.
    retry_recipients: tuple[str, ...] = ()


class Transport(Protocol):
    async def deliver(
        self, envelope_from: str, recipients: list[str], data: MessageData
    ) -> Outcome: ...

    async def close(self) -> None: ...


class CaptureTransport:
    """Delivers nowhere: the mail stays in the outbox as `captured` (no relay configured)."""

    async def deliver(
        self, envelope_from: str, recipients: list[str], data: MessageData
    ) -> Outcome:
        size = pieces(data).size
        return Outcome("captured", f"captured {size} bytes for {len(recipients)} recipients")

    async def close(self) -> None:
        return None
