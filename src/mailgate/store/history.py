"""Reading outgoing mails and their events: the per-record history and delivery status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailgate.store.schema import mail_events, outgoing_mails

_m = outgoing_mails.c


def _iso(value: datetime | None) -> str | None:
    return value.replace(tzinfo=UTC).isoformat() if value else None


def _summary(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "record_id": row.record_id,
        "status": row.status,
        "from": row.from_addr,
        "to": row.to_addrs,
        "cc": row.cc_addrs,
        "bcc": row.bcc_addrs,
        "title": row.title,
        "created_at": _iso(row.created_at),
        "sent_at": _iso(row.sent_at),
        "attempts": row.attempts,
        "last_error": row.last_error,
    }


_SUMMARY_COLUMNS = (
    _m.id,
    _m.record_id,
    _m.status,
    _m.from_addr,
    _m.to_addrs,
    _m.cc_addrs,
    _m.bcc_addrs,
    _m.title,
    _m.created_at,
    _m.sent_at,
    _m.attempts,
    _m.last_error,
)


async def list_mails(
    conn: AsyncConnection, record_id: int | None, status: str | None, limit: int
) -> list[dict[str, Any]]:
    """Newest first."""
    query = select(*_SUMMARY_COLUMNS).order_by(_m.id.desc()).limit(limit)
    if record_id is not None:
        query = query.where(_m.record_id == record_id)
    if status is not None:
        query = query.where(_m.status == status)
    return [_summary(row) for row in await conn.execute(query)]


async def show_mail(conn: AsyncConnection, mail_id: int) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            select(
                *_SUMMARY_COLUMNS, _m.reference_type, _m.body, _m.message_id, _m.next_attempt_at
            ).where(_m.id == mail_id)
        )
    ).first()
    if row is None:
        return None
    events = await conn.execute(
        select(mail_events.c.at, mail_events.c.event, mail_events.c.attempt, mail_events.c.detail)
        .where(mail_events.c.mail_id == mail_id)
        .order_by(mail_events.c.id)
    )
    return {
        **_summary(row),
        "reference": row.reference_type,
        "body": row.body,
        "message_id": row.message_id,
        "next_attempt_at": _iso(row.next_attempt_at),
        "events": [
            {"at": _iso(e.at), "event": e.event, "attempt": e.attempt, "detail": e.detail}
            for e in events
        ],
    }
