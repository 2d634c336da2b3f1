"""Administration of the directory: users, their addresses and keys, sites, records, rights."""

from __future__ import annotations

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailgate.store.db import utcnow
from mailgate.store.keys import hash_key, new_api_key
from mailgate.store.schema import (
    api_keys,
    items,
    records,
    site_permissions,
    sites,
    user_addresses,
    users,
)


class NotFound(LookupError):
    """A named user, site or record does not exist."""


async def user_id_by_login(conn: AsyncConnection, login: str) -> int:
    found = (
        await conn.execute(select(users.c.id).where(users.c.login == login))
    ).scalar_one_or_none()
    if found is None:
        raise NotFound(f"no user with login {login!r}")
    return int(found)


async def add_user(
    conn: AsyncConnection, login: str, name: str, mails: list[str], language: str | None
) -> int:
    user_id: int = (
        await conn.execute(
            insert(users)
            .values(login=login, name=name, language=language, disabled=False, created_at=utcnow())
            .returning(users.c.id)
        )
    ).scalar_one()
    if mails:
        await conn.execute(
            insert(user_addresses),
            [{"user_id": user_id, "address": m, "position": i} for i, m in enumerate(mails)],
        )
    return user_id


async def create_key(conn: AsyncConnection, login: str) -> str:
    """A new key for the user; only its hash is stored, so this is the one time it is seen."""
    user_id = await user_id_by_login(conn, login)
    key = new_api_key()
    await conn.execute(
        insert(api_keys).values(user_id=user_id, key_hash=hash_key(key), created_at=utcnow())
    )
    return key


async def revoke_keys(conn: AsyncConnection, login: str) -> int:
    user_id = await user_id_by_login(conn, login)
    result = await conn.execute(
        update(api_keys)
        .where(api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount)


async def add_site(conn: AsyncConnection, title: str) -> int:
    site_id: int = (
        await conn.execute(
            insert(items).values(kind="site", created_at=utcnow()).returning(items.c.id)
        )
    ).scalar_one()
    await conn.execute(update(items).where(items.c.id == site_id).values(site_id=site_id))
    await conn.execute(insert(sites).values(id=site_id, title=title))
    return site_id


async def add_record(conn: AsyncConnection, site_id: int, title: str) -> int:
    exists = (
        await conn.execute(select(sites.c.id).where(sites.c.id == site_id))
    ).scalar_one_or_none()
    if exists is None:
        raise NotFound(f"no site with id {site_id}")
    record_id: int = (
        await conn.execute(
            insert(items)
            .values(kind="record", site_id=site_id, created_at=utcnow())
            .returning(items.c.id)
        )
    ).scalar_one()
    await conn.execute(insert(records).values(id=record_id, site_id=site_id, title=title))
    return record_id


async def grant(
    conn: AsyncConnection, site_id: int, login: str, read: bool, send_mail: bool
) -> list[str]:
    """Add rights (never removes one); returns all rights the user now has on the site."""
    user_id = await user_id_by_login(conn, login)
    exists = (
        await conn.execute(select(sites.c.id).where(sites.c.id == site_id))
    ).scalar_one_or_none()
    if exists is None:
        raise NotFound(f"no site with id {site_id}")
    where = (site_permissions.c.site_id == site_id, site_permissions.c.user_id == user_id)
    row = (
        await conn.execute(
            select(site_permissions.c.can_read, site_permissions.c.can_send_mail).where(*where)
        )
    ).first()
    can_read = read or bool(row and row.can_read)
    can_send = send_mail or bool(row and row.can_send_mail)
    if row is None:
        await conn.execute(
            insert(site_permissions).values(
                site_id=site_id, user_id=user_id, can_read=can_read, can_send_mail=can_send
            )
        )
    else:
        await conn.execute(
            update(site_permissions).where(*where).values(can_read=can_read, can_send_mail=can_send)
        )
    return [name for name, has in (("read", can_read), ("send-mail", can_send)) if has]


async def is_empty(conn: AsyncConnection) -> bool:
    return (await conn.execute(select(func.count()).select_from(users))).scalar_one() == 0
