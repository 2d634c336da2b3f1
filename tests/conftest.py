"""Fixtures that start real things: databases, SMTP relays and mailgate servers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mailgate.config import Settings, load_settings
from mailgate.store import directory
from mailgate.store.db import create_engine
from mailgate.store.migrate import upgrade
from mailgate.store.schema import metadata
from tests.support import databases
from tests.support.relay import Relay


def pytest_report_header() -> str:
    return f"mailgate test database engine: {databases.ENGINE}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """One PostgreSQL database for the session when MAILGATE_TEST_DB=postgres."""
    if databases.ENGINE != "postgres":
        yield None
        return
    try:
        url = asyncio.run(databases.create_postgres_database())
    except (OSError, Exception) as error:
        message = f"PostgreSQL unreachable at {databases.POSTGRES_ADMIN_URL}: {error}"
        if os.environ.get("CI") == "true":
            pytest.exit(message, returncode=3)
        pytest.skip(message)
    yield url
    asyncio.run(databases.drop_postgres_database(url))


@pytest.fixture
def database_url(tmp_path: Path, postgres_url: str | None) -> str:
    if postgres_url is None:
        return f"sqlite:///{tmp_path}/mailgate.db"

    async def reset() -> None:
        engine = create_engine(postgres_url)
        try:
            await upgrade(engine)
            names = ", ".join(t.name for t in metadata.sorted_tables)
            async with engine.begin() as conn:
                await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        finally:
            await engine.dispose()

    asyncio.run(reset())
    return postgres_url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url)
    await upgrade(eng)
    yield eng
    await eng.dispose()


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str) -> Callable[..., Settings]:
    """Settings as a user would set them: through MAILGATE_* variables."""

    def make(**env: str) -> Settings:
        environ = {"MAILGATE_DATABASE_URL": database_url, **env}
        return load_settings(None, tmp_path / "data", environ)

    return make


@pytest.fixture
def relay() -> Iterator[Relay]:
    with Relay() as running:
        yield running


@dataclass(frozen=True)
class Seeded:
    site_id: int
    record_id: int
    login: str
    api_key: str


async def seed_user(
    engine: AsyncEngine,
    login: str = "alice",
    name: str = "Alice",
    mails: tuple[str, ...] = ("alice@example.com",),
    language: str | None = None,
    send_mail: bool = True,
    site_id: int | None = None,
) -> Seeded:
    """A site with one record, and a user with a key who may (or may not) send mail there."""
    async with engine.begin() as conn:
        if site_id is None:
            site_id = await directory.add_site(conn, "Site")
        record_id = await directory.add_record(conn, site_id, "Record")
        await directory.add_user(conn, login, name, list(mails), language)
        await directory.grant(conn, site_id, login, read=True, send_mail=send_mail)
        key = await directory.create_key(conn, login)
    return Seeded(site_id, record_id, login, key)


@pytest.fixture
async def seeded(engine: AsyncEngine) -> Seeded:
    return await seed_user(engine)
