"""Filling the outbox through the real enqueue path, without HTTP, for large delivery runs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from mailgate.core.recipients import Recipients
from mailgate.core.request import SendRequest
from mailgate.core.send import AcceptedMail
from mailgate.core.sender import Senders
from mailgate.mail.addresses import Mailbox
from mailgate.store.send_store import SendStore

SENDER = Mailbox("Sender", "sender@example.com")


async def enqueue_mails(
    engine: AsyncEngine,
    count: int,
    recipient: Callable[[int], str] = lambda i: f"user{i}@example.com",
    batch: int = 500,
) -> list[int]:
    """Accept `count` mails titled "mail {i}" to `recipient(i)`; returns their ids."""
    ids: list[int] = []
    for start in range(0, count, batch):
        async with engine.begin() as conn:
            store = SendStore(conn, "utf-8", None, "test.example")
            for i in range(start, min(start + batch, count)):
                to = recipient(i)
                request = SendRequest("", to, "", "", f"mail {i}", f"body {i}\n" * 20, ())
                ids.append(
                    await store.enqueue(
                        AcceptedMail(
                            reference="items",
                            record_id=1,
                            site_id=1,
                            user_id=1,
                            request=request,
                            senders=Senders(SENDER, SENDER),
                            recipients=Recipients((Mailbox("", to),), (), ()),
                            accepted_at=datetime.now(UTC),
                        )
                    )
                )
    return ids
