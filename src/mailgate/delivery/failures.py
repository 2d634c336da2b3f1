"""Failure handling in one place: what an error means, and when to try again."""

from __future__ import annotations

import random
import ssl
from datetime import datetime, timedelta

import aiosmtplib

from mailgate.delivery.transport import Outcome


def classify(error: BaseException) -> Outcome:
    """5xx replies fail the mail for good; everything else (4xx, network, timeouts) is retried."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        replies = [f"<{r.recipient}>: {r.code} {r.message}" for r in error.recipients]
        permanent = all(500 <= r.code < 600 for r in error.recipients)
        return Outcome("failed" if permanent else "deferred", "; ".join(replies))
    if isinstance(error, aiosmtplib.SMTPResponseException):
        if 500 <= error.code < 600:
            return Outcome("failed", f"{error.code} {error.message}")
        return Outcome("deferred", f"{error.code} {error.message}")
    if isinstance(error, ssl.SSLCertVerificationError):
        return Outcome("deferred", f"TLS certificate verification failed: {error.verify_message}")
    if isinstance(error, aiosmtplib.SMTPException | OSError | TimeoutError):
        return Outcome("deferred", f"{type(error).__name__}: {error}")
    return Outcome("deferred", f"unexpected error: {type(error).__name__}")


def retry_delay(attempt: int, base: float, factor: float) -> float:
    """Seconds before attempt `attempt + 1`: base × factor^(attempt-1), with ±10% jitter."""
    # Jitter spreads retries so a relay coming back is not hit by the whole queue at once.
    return base * factor ** max(attempt - 1, 0) * random.uniform(0.9, 1.1)


def next_attempt(now: datetime, attempt: int, base: float, factor: float) -> datetime:
    return now + timedelta(seconds=retry_delay(attempt, base, factor))
