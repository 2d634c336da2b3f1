"""The outbox after acceptance: claims with leases, delivery outcomes, history queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailgate.mail.addresses import Mailbox
from mailgate.mail.compose import Attachment, Message
from mailgate.store.db import utcnow
from mailgate.store.schema import mail_attachments, mail_events, outgoing_mails

# Statuses whose mails wait for a (next) attempt.
PENDING = ("queued", "deferred")
RETRYABLE = ("failed", "dead")
DONE = ("sent", "captured")


@dataclass(frozen=True, slots=True)
class ClaimedMail:
    id: int
    attempts: int
    envelope_from: str
    envelope_to: list[str]
    created_at: datetime


def _mailboxes(text: str) -> list[Mailbox]:
    return [Mailbox(name=name, address=address) for name, address in orjson.loads(text)]


class Outbox:
    """Delivery-side operations on the outgoing_mails table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def claim(self, worker: str, limit: int, lease: float) -> list[ClaimedMail]:
        """Lease up to `limit` due mails to `worker`; a lease expiring makes the mail due again."""
        now = utcnow()
        until = now + timedelta(seconds=lease)
        due = (
            select(outgoing_mails.c.id)
            .where(
                outgoing_mails.c.status.in_(PENDING),
                outgoing_mails.c.next_attempt_at <= now,
            )
            .order_by(outgoing_mails.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        # Pushing next_attempt_at to the lease's end hides the mail from other claims until
        # then, so the due index never has to skip over mails in flight.
        stmt = (
            update(outgoing_mails)
            .where(outgoing_mails.c.id.in_(due.scalar_subquery()))
            .values(locked_by=worker, locked_until=until, next_attempt_at=until, updated_at=now)
            .returning(
                outgoing_mails.c.id,
                outgoing_mails.c.attempts,
                outgoing_mails.c.envelope_from,
                outgoing_mails.c.envelope_to,
                outgoing_mails.c.created_at,
            )
        )
        async with self.engine.begin() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            ClaimedMail(
                r.id, r.attempts, r.envelope_from, orjson.loads(r.envelope_to), r.created_at
            )
            for r in rows
        ]

    async def message(self, mail_id: int) -> Message:
        """The message exactly as fixed at acceptance."""
        async with self.engine.connect() as conn:
            return await load_message(conn, mail_id)

    async def finish(
        self,
        mail_id: int,
        worker: str,
        status: str,
        events: Sequence[tuple[str, str | None]],
        next_attempt_at: datetime | None = None,
        envelope_to: Sequence[str] | None = None,
    ) -> bool:
        """Record an attempt's outcome; False when the lease was lost to another worker."""
        now = utcnow()
        values: dict[str, Any] = {
            "status": status,
            "attempts": outgoing_mails.c.attempts + 1,
            "locked_by": None,
            "locked_until": None,
            "next_attempt_at": next_attempt_at,
            "last_error": None if status in DONE else events[-1][1],
            "updated_at": now,
        }
        if any(event == "sent" or event == "captured" for event, _ in events):
            values["sent_at"] = func.coalesce(outgoing_mails.c.sent_at, now)
        if envelope_to is not None:
            values["envelope_to"] = orjson.dumps(list(envelope_to)).decode()
        async with self.engine.begin() as conn:
            attempt = (
                await conn.execute(
                    update(outgoing_mails)
                    .where(outgoing_mails.c.id == mail_id, outgoing_mails.c.locked_by == worker)
                    .values(**values)
                    .returning(outgoing_mails.c.attempts)
                )
            ).scalar_one_or_none()
            if attempt is None:
                return False
            await conn.execute(
                insert(mail_events),
                [
                    {"mail_id": mail_id, "at": now, "event": e, "attempt": attempt, "detail": d}
                    for e, d in events
                ],
            )
        return True

    async def extend(self, worker: str, mail_ids: Sequence[int], lease: float) -> None:
        """Renew the lease on mails still in flight, so a slow delivery is not taken over."""
        now = utcnow()
        until = now + timedelta(seconds=lease)
        async with self.engine.begin() as conn:
            await conn.execute(
                update(outgoing_mails)
                .where(outgoing_mails.c.id.in_(mail_ids), outgoing_mails.c.locked_by == worker)
                .values(locked_until=until, next_attempt_at=until, updated_at=now)
            )

    async def release(self, mail_id: int, worker: str) -> None:
        """Give an unfinished mail back without counting an attempt (graceful stop)."""
        now = utcnow()
        async with self.engine.begin() as conn:
            await conn.execute(
                update(outgoing_mails)
                .where(outgoing_mails.c.id == mail_id, outgoing_mails.c.locked_by == worker)
                .values(locked_by=None, locked_until=None, next_attempt_at=now, updated_at=now)
            )


async def queue_stats(engine: AsyncEngine) -> tuple[dict[str, int], datetime | None]:
    """Mails by status, and when the oldest mail that is due now became due."""
    now = utcnow()
    async with engine.connect() as conn:
        counts = (
            await conn.execute(
                select(outgoing_mails.c.status, func.count()).group_by(outgoing_mails.c.status)
            )
        ).tuples()
        oldest: datetime | None = (
            await conn.execute(
                select(func.min(outgoing_mails.c.next_attempt_at)).where(
                    outgoing_mails.c.status.in_(PENDING), outgoing_mails.c.next_attempt_at <= now
                )
            )
        ).scalar_one_or_none()
        return {status: count for status, count in counts}, oldest


async def load_message(conn: AsyncConnection, mail_id: int) -> Message:
    row = (await conn.execute(select(outgoing_mails).where(outgoing_mails.c.id == mail_id))).one()
    files = await conn.execute(
        select(mail_attachments.c.name, mail_attachments.c.content_type, mail_attachments.c.data)
        .where(mail_attachments.c.mail_id == mail_id)
        .order_by(mail_attachments.c.position)
    )
    return Message(
        message_id=row.message_id,
        date=row.created_at.replace(tzinfo=UTC),
        sender=_mailboxes(row.header_from)[0],
        to=_mailboxes(row.header_to),
        cc=_mailboxes(row.header_cc),
        subject=row.title,
        body=row.body,
        attachments=tuple(Attachment(f.name, f.content_type, f.data) for f in files),
        charset=row.charset,
        transfer_encoding=row.transfer_encoding,
    )


async def requeue(engine: AsyncEngine, mail_id: int) -> tuple[bool, str | None]:
    """Put a failed or dead mail back in the queue now: (requeued?, status now or None)."""
    now = utcnow()
    async with engine.begin() as conn:
        requeued = (
            await conn.execute(
                update(outgoing_mails)
                .where(outgoing_mails.c.id == mail_id, outgoing_mails.c.status.in_(RETRYABLE))
                .values(
                    status="queued",
                    next_attempt_at=now,
                    locked_by=None,
                    locked_until=None,
                    updated_at=now,
                )
                .returning(outgoing_mails.c.status)
            )
        ).scalar_one_or_none()
        if requeued is not None:
            await conn.execute(
                insert(mail_events).values(mail_id=mail_id, at=now, event="retried", attempt=0)
            )
            return True, requeued
        current = (
            await conn.execute(
                select(outgoing_mails.c.status).where(outgoing_mails.c.id == mail_id)
            )
        ).scalar_one_or_none()
        return False, current
