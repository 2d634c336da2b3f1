"""Recording outcomes: only a worker that still holds a mail's lease may write its result."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mailgate.store.db import reader
from mailgate.store.outbox import Finished, Outbox
from mailgate.store.schema import mail_events, outgoing_mails
from tests.support.fill import enqueue_mails


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
