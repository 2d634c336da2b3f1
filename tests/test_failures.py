"""Failure handling: what a relay's answer means for the mail, decided in one place."""

from __future__ import annotations

from datetime import datetime

import aiosmtplib
import pytest
from aiosmtplib import SMTPResponse

from mailgate.delivery.failures import classify, partly_refused, plan_next, retry_delay
from mailgate.delivery.transport import Outcome

NOW = datetime(2026, 1, 1, 12, 0, 0)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (aiosmtplib.SMTPResponseException(451, "4.3.0 Try later"), "deferred"),
        (aiosmtplib.SMTPResponseException(421, "4.7.0 Closing"), "deferred"),
        (aiosmtplib.SMTPResponseException(550, "5.7.1 Relaying denied"), "failed"),
        (aiosmtplib.SMTPDataError(554, "5.6.0 Message rejected"), "failed"),
        (aiosmtplib.SMTPServerDisconnected("gone"), "deferred"),
        (aiosmtplib.SMTPConnectError("refused"), "deferred"),
        (aiosmtplib.SMTPTimeoutError("slow"), "deferred"),
        (ConnectionRefusedError(111, "Connection refused"), "deferred"),
        (TimeoutError(), "deferred"),
    ],
)
def test_classify(error: BaseException, status: str) -> None:
    assert classify(error).status == status


def test_classify_keeps_the_relays_reply() -> None:
    outcome = classify(aiosmtplib.SMTPResponseException(550, "5.1.1 No such user"))
    assert outcome.detail == "550 5.1.1 No such user"


def test_all_recipients_refused_retries_only_the_temporary_ones() -> None:
    error = aiosmtplib.SMTPRecipientsRefused(
        [
            aiosmtplib.SMTPRecipientRefused(550, "5.1.1 unknown", "gone@example.com"),
            aiosmtplib.SMTPRecipientRefused(452, "4.2.2 mailbox full", "full@example.com"),
        ]
    )
    outcome = classify(error)
    assert outcome.status == "deferred"
    assert outcome.retry_recipients == ("full@example.com",)
    assert "<gone@example.com>: 550 5.1.1 unknown" in (outcome.detail or "")


def test_all_recipients_refused_for_good_fails() -> None:
    error = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(550, "5.1.1 unknown", "gone@example.com")]
    )
    assert classify(error).status == "failed"


def test_partly_refused_is_sent_with_retry_for_4xx() -> None:
    outcome = partly_refused(
        "250 queued",
        {"a@x.com": SMTPResponse(450, "busy"), "b@x.com": SMTPResponse(550, "unknown")},
    )
    assert outcome.status == "sent"
    assert outcome.retry_recipients == ("a@x.com",)
    assert outcome.detail == "250 queued; refused: <a@x.com>: 450 busy; <b@x.com>: 550 unknown"


def plan(outcome: Outcome, attempt: int = 1, max_attempts: int = 18):  # type: ignore[no-untyped-def]
    return plan_next(outcome, attempt, NOW, 300, 1.3, max_attempts)


def test_plan_sent_and_failed_are_final() -> None:
    assert plan(Outcome("sent", "250 ok")).status == "sent"
    failed = plan(Outcome("failed", "550 no"))
    assert (failed.status, failed.events, failed.next_attempt_at) == (
        "failed",
        (("failed", "550 no"),),
        None,
    )


def test_plan_deferred_waits_per_the_schedule() -> None:
    first = plan(Outcome("deferred", "451 later"), attempt=1)
    assert first.status == "deferred"
    assert first.next_attempt_at is not None
    assert 270 <= (first.next_attempt_at - NOW).total_seconds() <= 330
    fifth = plan(Outcome("deferred", "451 later"), attempt=5)
    assert fifth.next_attempt_at is not None
    assert (fifth.next_attempt_at - NOW).total_seconds() == pytest.approx(300 * 1.3**4, rel=0.11)


def test_plan_out_of_attempts_is_dead_not_dropped() -> None:
    dead = plan(Outcome("deferred", "451 later"), attempt=18)
    assert dead.status == "dead"
    assert dead.events == (("dead", "451 later"),)


def test_plan_partial_success_retries_remaining_recipients() -> None:
    result = plan(Outcome("sent", "250 ok; refused: <a@x.com>: 450 busy", ("a@x.com",)))
    assert result.status == "deferred"
    assert [event for event, _ in result.events] == ["sent", "deferred"]
    assert result.envelope_to == ("a@x.com",)


def test_default_schedule_spans_about_a_day() -> None:
    # 18 attempts means 17 waits: 300 s, 390 s, … about 24 hours in all.
    total = sum(300 * 1.3 ** (n - 1) for n in range(1, 18))
    assert 23 * 3600 < total < 25 * 3600
    assert 0.9 * 300 <= retry_delay(1, 300, 1.3) <= 1.1 * 300
