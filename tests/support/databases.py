"""The database a test runs on: a fresh SQLite file, or a PostgreSQL database per session."""

from __future__ import annotations

import os
import secrets

import asyncpg
from sqlalchemy.engine import make_url

ENGINE = os.environ.get("MAILGATE_TEST_DB", "sqlite")
POSTGRES_ADMIN_URL = os.environ.get(
    "MAILGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_postgres_database() -> str:
    """Create a uniquely named database; returns its URL."""
    name = f"mailgate_test_{os.getpid()}_{secrets.token_hex(3)}"
    conn = await asyncpg.connect(_dsn(POSTGRES_ADMIN_URL), timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    conn = await asyncpg.connect(_dsn(POSTGRES_ADMIN_URL), timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
