"""Claims read mails back whole; only a worker still holding a lease records an outcome."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mailgate.core.recipients import Recipients
from mailgate.core.request import SendRequest
from mailgate.core.send import AcceptedMail
from mailgate.core.sender import Senders
from mailgate.mail.addresses import Mailbox
from mailgate.mail.compose import Attachment
from mailgate.store.db import reader
from mailgate.store.outbox import Finished, Outbox, load_message
from mailgate.store.schema import mail_events, outgoing_mails
from mailgate.store.send_store import SendStore
from tests.support.fill import SENDER, enqueue_mails


async def rows(engine: AsyncEngine) -> dict[int, tuple[str, str | None, list[str]]]:
    """Per mail: status, sent_at, and the events recorded for it."""
    async with reader(engine).connect() as conn:
        mails = (
            await conn.execute(
                select(outgoing_mails.c.id, outgoing_mails.c.status, outgoing_mails.c.sent_at)
            )
        ).all()
        events = (
            await conn.execute(
                select(mail_events.c.mail_id, mail_events.c.event).order_by(mail_events.c.id)
            )
        ).all()
    return {
        m.id: (m.status, m.sent_at, [e.event for e in events if e.mail_id == m.id]) for m in mails
    }


def sent(mail_id: int) -> Finished:
    return Finished(mail_id, 1, "sent", [("sent", "250 ok")])


async def test_outcomes_of_mails_whose_lease_was_taken_over_are_not_recorded(
    engine: AsyncEngine,
) -> None:
    outbox = Outbox(engine)
    try:
        await enqueue_mails(engine, 4)
        claimed = [m.id for m in await outbox.claim("me", 10, 60)]
        assert len(claimed) == 4
        kept, taken = claimed[:2], claimed[2:]
        # Another worker took these over after our lease expired.
        async with engine.begin() as conn:
            await conn.execute(
                update(outgoing_mails)
                .where(outgoing_mails.c.id.in_(taken))
                .values(locked_by="someone else")
            )
        assert await outbox.finish("me", [sent(kept[0]), sent(taken[0])]) == [taken[0]]
        second = [sent(kept[1]), sent(taken[1])]
        lost = outbox.finish_now("me", second)
        if lost is None:  # PostgreSQL records only through the async path
            lost = await outbox.finish("me", second)
        assert lost == [taken[1]]
        after = await rows(engine)
    finally:
        outbox.close()
    for mail_id in kept:
        status, sent_at, events = after[mail_id]
        assert (status, events) == ("sent", ["queued", "sent"])
        assert sent_at is not None
    for mail_id in taken:
        assert after[mail_id] == ("queued", None, ["queued"])


async def test_claimed_mails_are_read_back_exactly_as_accepted(engine: AsyncEngine) -> None:
    files = (
        Attachment("見積書.pdf", "application/pdf", bytes(range(256)) * 3),
        Attachment("b.txt", "text/plain", b""),
    )
    accepted_at = datetime(2026, 11, 25, 9, 30, 15, 123456, tzinfo=UTC)
    async with engine.begin() as conn:
        store = SendStore(conn, "iso-2022-jp", None, "test.example")
        ids = [
            await store.enqueue(
                AcceptedMail(
                    reference="items",
                    record_id=7,
                    site_id=1,
                    user_id=1,
                    request=SendRequest("", "", "", "", f"件名 {i}", "本文\n", files[:i]),
                    senders=Senders(SENDER, SENDER),
                    recipients=Recipients(
                        (Mailbox("山田", f"to{i}@example.com"),),
                        (Mailbox("", "cc@example.com"),),
                        (Mailbox("", "bcc@example.com"),),
                    ),
                    accepted_at=accepted_at,
                )
            )
            for i in range(3)
        ]
    outbox = Outbox(engine)
    try:
        claimed = await outbox.claim("me", 10, 60)
    finally:
        outbox.close()
    assert [m.id for m in claimed] == ids
    async with reader(engine).connect() as conn:
        for i, mail in enumerate(claimed):
            assert mail.message == await load_message(conn, mail.id)
            assert mail.message.attachments == files[:i]
            assert mail.message.date == accepted_at
            assert mail.created_at == accepted_at.replace(tzinfo=None)
            assert (mail.attempts, mail.envelope_from) == (0, SENDER.address)
            assert mail.envelope_to == [f"to{i}@example.com", "cc@example.com", "bcc@example.com"]
