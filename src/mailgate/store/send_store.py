"""The send rules' reads and writes, all inside one transaction per call."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import orjson
from sqlalchemy import bindparam, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from mailgate.core.send import AcceptedMail, ApiUser
from mailgate.mail.addresses import Mailbox
from mailgate.mail.compose import new_message_id
from mailgate.store.db import utcnow
from mailgate.store.keys import hash_key, same_hash
from mailgate.store.schema import (
    api_keys,
    api_usage,
    items,
    mail_attachments,
    mail_events,
    outgoing_mails,
    site_permissions,
    user_addresses,
    users,
)

# Built once: constructing and cache-keying these per call was a fifth of the API's CPU.
_USER_BY_KEY = (
    select(users.c.id, users.c.name, users.c.language, api_keys.c.key_hash)
    .join(api_keys, api_keys.c.user_id == users.c.id)
    .where(
        api_keys.c.key_hash == bindparam("digest"),
        api_keys.c.revoked_at.is_(None),
        users.c.disabled.is_(False),
    )
)
_USER_NAME = select(users.c.name).where(
    users.c.id == bindparam("user_id"), users.c.disabled.is_(False)
)
_ADDRESSES = (
    select(user_addresses.c.address)
    .where(user_addresses.c.user_id == bindparam("user_id"))
    .order_by(user_addresses.c.position)
)
_SITE_OF = select(items.c.site_id).where(items.c.id == bindparam("item_id"))
_CAN_SEND = select(site_permissions.c.can_send_mail).where(
    site_permissions.c.site_id == bindparam("site_id"),
    site_permissions.c.user_id == bindparam("user_id"),
)
_INSERT_MAIL = insert(outgoing_mails).returning(outgoing_mails.c.id)
_INSERT_EVENT = insert(mail_events)


def _quota_statement(dialect: Any) -> Any:
    # One statement: insert or increment only while under the limit. Both engines lock the
    # row for the rest of the transaction, so concurrent calls count exactly.
    stmt = dialect.insert(api_usage).values(
        site_id=bindparam("site_id"), day=bindparam("day"), count=1
    )
    return stmt.on_conflict_do_update(
        index_elements=[api_usage.c.site_id, api_usage.c.day],
        set_={"count": api_usage.c.count + 1},
        where=api_usage.c.count < bindparam("limit"),
    ).returning(api_usage.c.count)


_QUOTA = {"postgresql": _quota_statement(postgresql), "sqlite": _quota_statement(sqlite)}


def mailboxes_json(mailboxes: tuple[Mailbox, ...]) -> str:
    return orjson.dumps([[m.name, m.address] for m in mailboxes]).decode()


class SendStore:
    """`mailgate.core.send.SendStore` on one open transaction."""

    def __init__(
        self,
        conn: AsyncConnection,
        charset: str,
        transfer_encoding: str | None,
        message_id_domain: str,
    ) -> None:
        self.conn = conn
        self.charset = charset
        self.transfer_encoding = transfer_encoding
        self.message_id_domain = message_id_domain

    async def user_by_api_key(self, api_key: str) -> ApiUser | None:
        digest = hash_key(api_key)
        row = (await self.conn.execute(_USER_BY_KEY, {"digest": digest})).first()
        if row is None or not same_hash(row.key_hash, digest):
            return None
        return ApiUser(
            id=row.id,
            name=row.name,
            language=row.language,
            addresses=await self._addresses(row.id),
        )

    async def user_for_token(self, user_id: int) -> tuple[str, tuple[str, ...]] | None:
        name = (await self.conn.execute(_USER_NAME, {"user_id": user_id})).scalar_one_or_none()
        if name is None:
            return None
        return name, await self._addresses(user_id)

    async def _addresses(self, user_id: int) -> tuple[str, ...]:
        result = await self.conn.execute(_ADDRESSES, {"user_id": user_id})
        return tuple(result.scalars())

    async def site_of(self, item_id: int) -> int | None:
        result = await self.conn.execute(_SITE_OF, {"item_id": item_id})
        return result.scalar_one_or_none()

    async def can_send_mail(self, user_id: int, site_id: int) -> bool:
        result = await self.conn.execute(_CAN_SEND, {"site_id": site_id, "user_id": user_id})
        return bool(result.scalar_one_or_none())

    async def take_quota(self, site_id: int, day: str, limit: int) -> int | None:
        stmt = _QUOTA[self.conn.dialect.name]
        params = {"site_id": site_id, "day": day, "limit": limit}
        used = (await self.conn.execute(stmt, params)).scalar_one_or_none()
        return used if used is None or used <= limit else None

    async def enqueue(self, mail: AcceptedMail) -> int:
        now = utcnow()
        request = mail.request
        accepted_at = mail.accepted_at.astimezone(UTC).replace(tzinfo=None)
        row = {
            "reference_type": mail.reference,
            "record_id": mail.record_id,
            "site_id": mail.site_id,
            "user_id": mail.user_id,
            "from_addr": str(mail.senders.history),
            "to_addrs": request.to,
            "cc_addrs": request.cc,
            "bcc_addrs": request.bcc,
            "title": request.title,
            "body": request.body,
            "message_id": new_message_id(self.message_id_domain),
            "header_from": mailboxes_json((mail.senders.header,)),
            "header_to": mailboxes_json(mail.recipients.to),
            "header_cc": mailboxes_json(mail.recipients.cc),
            "envelope_from": mail.senders.header.address,
            "envelope_to": orjson.dumps(mail.recipients.envelope()).decode(),
            "charset": self.charset,
            "transfer_encoding": self.transfer_encoding,
            "created_at": accepted_at,
            "status": "queued",
            "attempts": 0,
            "next_attempt_at": accepted_at,
            "locked_by": None,
            "locked_until": None,
            "last_error": None,
            "sent_at": None,
            "updated_at": now,
        }
        mail_id: int = (await self.conn.execute(_INSERT_MAIL, row)).scalar_one()
        if request.attachments:
            await self.conn.execute(
                insert(mail_attachments),
                [
                    {
                        "mail_id": mail_id,
                        "position": index,
                        "name": a.name,
                        "content_type": a.content_type,
                        "data": a.data,
                    }
                    for index, a in enumerate(request.attachments)
                ],
            )
        event = {"mail_id": mail_id, "at": now, "event": "queued", "attempt": 0, "detail": None}
        await self.conn.execute(_INSERT_EVENT, event)
        return mail_id
