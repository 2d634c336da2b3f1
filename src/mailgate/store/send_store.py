"""The send rules' reads and writes, all inside one transaction per call."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any

import orjson
from sqlalchemy import Table, and_, bindparam, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from mailgate.core.send import AcceptedMail, Caller
from mailgate.mail.addresses import Mailbox
from mailgate.mail.compose import new_message_id
from mailgate.store.db import utcnow
from mailgate.store.driver import driver_insert, driver_statement
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
# The caller in one statement: one row per mail address of the key's user (in order), each
# with the site of the call's item and the user's send-mail right on it (NULL when none).
_CALLER = (
    select(
        users.c.id,
        users.c.name,
        users.c.language,
        api_keys.c.key_hash,
        user_addresses.c.address,
        items.c.site_id,
        site_permissions.c.can_send_mail,
    )
    .select_from(api_keys)
    .join(users, users.c.id == api_keys.c.user_id)
    .outerjoin(user_addresses, user_addresses.c.user_id == users.c.id)
    .outerjoin(items, items.c.id == bindparam("item_id"))
    .outerjoin(
        site_permissions,
        and_(
            site_permissions.c.site_id == items.c.site_id, site_permissions.c.user_id == users.c.id
        ),
    )
    .where(
        api_keys.c.key_hash == bindparam("digest"),
        api_keys.c.revoked_at.is_(None),
        users.c.disabled.is_(False),
    )
    .order_by(user_addresses.c.position)
)
_USER_NAME = select(users.c.name).where(
    users.c.id == bindparam("user_id"), users.c.disabled.is_(False)
)
_ADDRESSES = (
    select(user_addresses.c.address)
    .where(user_addresses.c.user_id == bindparam("user_id"))
    .order_by(user_addresses.c.position)
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
        self._callers: dict[tuple[str, int], Caller | None] = {}

    async def caller(self, api_key: str, item_id: int) -> Caller | None:
        # Within one transaction the directory cannot change under us, so calls of a group
        # commit with the same key and item share one lookup.
        key = (api_key, item_id)
        if key not in self._callers:
            self._callers[key] = await self._find_caller(api_key, item_id)
        return self._callers[key]

    async def _find_caller(self, api_key: str, item_id: int) -> Caller | None:
        digest = hash_key(api_key)
        rows = await self._rows(_CALLER, {"digest": digest, "item_id": item_id})
        if not rows or not same_hash(rows[0]["key_hash"], digest):
            return None
        first = rows[0]
        return Caller(
            id=first["id"],
            name=first["name"],
            language=first["language"],
            addresses=tuple(row["address"] for row in rows if row["address"] is not None),
            site_id=first["site_id"],
            can_send_mail=bool(first["can_send_mail"]),
        )

    async def user_for_token(self, user_id: int) -> tuple[str, tuple[str, ...]] | None:
        names = await self._rows(_USER_NAME, {"user_id": user_id})
        if not names:
            return None
        addresses = await self._rows(_ADDRESSES, {"user_id": user_id})
        return names[0]["name"], tuple(row["address"] for row in addresses)

    async def take_quota(self, site_id: int, day: str, limit: int) -> int | None:
        stmt = _QUOTA[self.conn.dialect.name]
        rows = await self._rows(stmt, {"site_id": site_id, "day": day, "limit": limit})
        used: int | None = rows[0]["count"] if rows else None
        return used if used is None or used <= limit else None

    async def _rows(self, statement: Any, params: dict[str, Any]) -> Sequence[Mapping[Any, Any]]:
        return (await self.conn.execute(statement, params)).mappings().all()

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
        mail_id = await self._insert_mail(row)
        if request.attachments:
            await self._insert_attachments(
                [
                    {
                        "mail_id": mail_id,
                        "position": index,
                        "name": a.name,
                        "content_type": a.content_type,
                        "data": a.data,
                    }
                    for index, a in enumerate(request.attachments)
                ]
            )
        event = {"mail_id": mail_id, "at": now, "event": "queued", "attempt": 0, "detail": None}
        await self._insert_event(event)
        return mail_id

    async def _insert_mail(self, row: dict[str, Any]) -> int:
        return int((await self.conn.execute(_INSERT_MAIL, row)).scalar_one())

    async def _insert_event(self, event: dict[str, Any]) -> None:
        await self.conn.execute(_INSERT_EVENT, event)

    async def _insert_attachments(self, rows: list[dict[str, Any]]) -> None:
        await self.conn.execute(insert(mail_attachments), rows)


class DriverSendStore(SendStore):
    """A SendStore whose two inserts per mail go straight to a blocking SQLite driver.

    For SQLite's group commit: SQLAlchemy's work around each insert cost twice the insert.
    """

    def __init__(
        self,
        conn: Any,
        driver: sqlite3.Connection,
        charset: str,
        transfer_encoding: str | None,
        message_id_domain: str,
    ) -> None:
        super().__init__(conn, charset, transfer_encoding, message_id_domain)
        self.driver = driver

    async def _insert_mail(self, row: dict[str, Any]) -> int:
        return self._insert(outgoing_mails, row)

    async def _insert_event(self, event: dict[str, Any]) -> None:
        self._insert(mail_events, event)

    def _insert(self, table: Table, row: dict[str, Any]) -> int:
        statement = driver_insert(table, tuple(row), self.conn.dialect)
        rowid = self.driver.execute(statement.sql, statement.values(row)).lastrowid
        assert rowid is not None
        return rowid


class AsyncpgSendStore(SendStore):
    """A SendStore whose statements go straight to asyncpg, in the caller's transaction.

    Measured on PostgreSQL (B6), SQLAlchemy's async layer cost more CPU per statement than
    asyncpg itself; the statements are the same Core ones, compiled once.
    """

    def __init__(
        self,
        conn: Any,
        driver: Any,
        charset: str,
        transfer_encoding: str | None,
        message_id_domain: str,
    ) -> None:
        super().__init__(conn, charset, transfer_encoding, message_id_domain)
        self.driver = driver  # an asyncpg.Connection

    async def _rows(self, statement: Any, params: dict[str, Any]) -> Sequence[Mapping[Any, Any]]:
        compiled = driver_statement(statement, self.conn.dialect)
        rows: Sequence[Mapping[Any, Any]] = await self.driver.fetch(
            compiled.sql, *compiled.values(params)
        )
        return rows

    async def _insert_mail(self, row: dict[str, Any]) -> int:
        compiled = driver_insert(outgoing_mails, tuple(row), self.conn.dialect)
        return int(await self.driver.fetchval(compiled.sql, *compiled.values(row)))

    async def _insert_event(self, event: dict[str, Any]) -> None:
        compiled = driver_insert(mail_events, tuple(event), self.conn.dialect)
        await self.driver.execute(compiled.sql, *compiled.values(event))

    async def _insert_attachments(self, rows: list[dict[str, Any]]) -> None:
        compiled = driver_insert(mail_attachments, tuple(rows[0]), self.conn.dialect)
        await self.driver.executemany(compiled.sql, [compiled.values(row) for row in rows])
