"""Failure handling in one place: what an error means, and when to try again."""

from __future__ import annotations

import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import aiosmtplib

from mailgate.delivery.transport import Outcome


class _Reply(Protocol):
    """A relay's reply to one recipient (aiosmtplib's SMTPResponse or SMTPRecipientRefused)."""

    @property
    def code(self) -> int: ...
    @property
    def message(self) -> str: ...


def classify(error: BaseException) -> Outcome:
    """5xx replies fail the mail for good; everything else (4xx, network, timeouts) is retried."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        replies = {r.recipient: r for r in error.recipients}
        temporary = _temporary(replies)
        detail = _refusals(replies)
        return Outcome("deferred", detail, temporary) if temporary else Outcome("failed", detail)
    if isinstance(error, aiosmtplib.SMTPResponseException):
        if 500 <= error.code < 600:
            return Outcome("failed", f"{error.code} {error.message}")
        return Outcome("deferred", f"{error.code} {error.message}")
    if isinstance(error, ssl.SSLCertVerificationError):
        return Outcome("deferred", f"TLS certificate verification failed: {error.verify_message}")
    if isinstance(error, aiosmtplib.SMTPException | OSError | TimeoutError):
        return Outcome("deferred", f"{type(error).__name__}: {error}")
    return Outcome("deferred", f"unexpected error: {type(error).__name__}")


def partly_refused(reply: str, refused: Mapping[str, _Reply]) -> Outcome:
    """The relay took the message for some recipients: 4xx refusals are retried alone."""
    if not refused:
        return Outcome("sent", reply)
    return Outcome("sent", f"{reply}; refused: {_refusals(refused)}", _temporary(refused))


def _temporary(refused: Mapping[str, _Reply]) -> tuple[str, ...]:
    return tuple(rcpt for rcpt, reply in refused.items() if not 500 <= reply.code < 600)


def _refusals(refused: Mapping[str, _Reply]) -> str:
    return "; ".join(f"<{rcpt}>: {reply.code} {reply.message}" for rcpt, reply in refused.items())


@dataclass(frozen=True, slots=True)
class Plan:
    """What to record after an attempt: the mail's new status and the events that explain it."""

    status: str
    events: tuple[tuple[str, str | None], ...]
    next_attempt_at: datetime | None = None
    envelope_to: tuple[str, ...] | None = None  # set when only some recipients remain


def plan_next(
    outcome: Outcome, attempt: int, now: datetime, base: float, factor: float, max_attempts: int
) -> Plan:
    """Turn one attempt's outcome into the next state: done, retry later, or dead."""
    events: list[tuple[str, str | None]] = []
    retry_detail = outcome.detail
    if outcome.status == "sent" and outcome.retry_recipients:
        events.append(("sent", outcome.detail))
        retry_detail = "retrying " + ", ".join(f"<{r}>" for r in outcome.retry_recipients)
    elif outcome.status != "deferred":
        return Plan(outcome.status, ((outcome.status, outcome.detail),))
    remaining = outcome.retry_recipients or None
    if attempt >= max_attempts:
        events.append(("dead", retry_detail))
        return Plan("dead", tuple(events), envelope_to=remaining)
    events.append(("deferred", retry_detail))
    return Plan(
        "deferred", tuple(events), next_attempt(now, attempt, base, factor), envelope_to=remaining
    )


def retry_delay(attempt: int, base: float, factor: float) -> float:
    """Seconds before attempt `attempt + 1`: base × factor^(attempt-1), with ±10% jitter."""
    # Jitter spreads retries so a relay coming back is not hit by the whole queue at once.
    return base * factor ** max(attempt - 1, 0) * random.uniform(0.9, 1.1)


def next_attempt(now: datetime, attempt: int, base: float, factor: float) -> datetime:
    return now + timedelta(seconds=retry_delay(attempt, base, factor))
