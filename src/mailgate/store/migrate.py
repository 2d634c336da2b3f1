"""Schema migrations with Alembic, run on an async engine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from mailgate.store.db import reader

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions (a test keeps the two in step). Knowing it lets
# every command skip importing Alembic, a second of start-up, when the schema is current.
HEAD_REVISION = "0001"
# Any constant works; it only has to be the same in every mailgate process.
_PG_MIGRATION_LOCK = 7_424_751_001


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def current_revision(engine: AsyncEngine) -> str | None:
    try:
        async with reader(engine).connect() as conn:
            result = await conn.execute(text("SELECT version_num FROM alembic_version"))
            return result.scalar_one_or_none()
    except DBAPIError:
        return None  # no alembic_version table yet


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to `revision`; safe when several processes start at once."""
    if revision == "head" and await current_revision(engine) == HEAD_REVISION:
        return

    def run(connection: Connection) -> None:
        from alembic import command

        if connection.dialect.name == "postgresql":
            # Many API and worker processes may start together: one migrates, the others wait.
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        command.upgrade(alembic_config(connection), revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)
