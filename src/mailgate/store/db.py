"""Engine creation for SQLite (WAL, the embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import weakref
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import Engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool


def utcnow() -> datetime:
    """Naive UTC now: every timestamp in the database is naive UTC, the same on both engines."""
    return datetime.now(UTC).replace(tzinfo=None)


def async_url(database_url: str) -> URL:
    """Map a user-facing URL (`sqlite:///…`, `postgresql://…`) to its async driver."""
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    if backend == "postgresql":
        return url.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database URL scheme: {url.drivername!r}")


_READONLY = "mailgate_readonly"


def reader(engine: AsyncEngine) -> AsyncEngine:
    """The same engine for read-only work: on SQLite it reads a snapshot without the write lock."""
    return engine.execution_options(**{_READONLY: True})


_write_locks: dict[tuple[str, int], asyncio.Lock] = {}


def _sqlite_write_lock(engine: AsyncEngine) -> asyncio.Lock:
    key = (str(engine.url.database), id(asyncio.get_running_loop()))
    lock = _write_locks.get(key)
    if lock is None:
        lock = _write_locks[key] = asyncio.Lock()
    return lock


def write_lock(engine: AsyncEngine) -> contextlib.AbstractAsyncContextManager[object]:
    """Serialise this process's SQLite writers in asyncio rather than in SQLite itself.

    SQLite's busy handler sleeps up to 100 ms between tries, so letting many pooled
    connections race for the one write lock adds latency spikes; waiting here does not.
    """
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    return _sqlite_write_lock(engine)


def write_lock_held(engine: AsyncEngine) -> bool:
    """Whether a writer of this event loop holds the SQLite lock (a blocking write would wait)."""
    return engine.dialect.name == "sqlite" and _sqlite_write_lock(engine).locked()


def create_engine(
    database_url: str, pool_size: int = 10, durable_commits: bool = True
) -> AsyncEngine:
    """Create the async engine; on SQLite set WAL, durability and write-lock behaviour.

    `durable_commits=False` is for delivery outcomes: a commit lost to a power failure only
    means a mail is sent again, never lost, and the faster commit narrows the window in which
    a killed worker has delivered a mail without recording it (the source of duplicates).
    """
    url = async_url(database_url)
    kwargs: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size
        if durable_commits:
            kwargs["pool_pre_ping"] = True
        else:
            # No ping round trip before each outcome batch: a connection PostgreSQL dropped
            # fails that batch, the pool replaces it, and the worker tries the batch again.
            kwargs["connect_args"] = {"server_settings": {"synchronous_commit": "off"}}
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        _configure_sqlite(engine, "FULL" if durable_commits else "NORMAL")
    return engine


def sync_sqlite_engine(engine: AsyncEngine, checkpoints: bool = True) -> Engine | None:
    """For an async SQLite engine, a blocking engine on the same file (None for PostgreSQL).

    `checkpoints=False` leaves moving the WAL into the database to `checkpoint`: a commit
    that happens to checkpoint blocks its thread for an fsync (measured: 15–30 ms).
    """
    if engine.dialect.name != "sqlite":
        return None
    url = engine.url.set(drivername="sqlite+pysqlite")
    sync = sqlalchemy.create_engine(url, connect_args={"timeout": 30}, poolclass=StaticPool)
    _configure_sqlite_events(sync, _synchronous.get(engine.sync_engine, "FULL"))
    if not checkpoints:

        @event.listens_for(sync, "connect")
        def no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

    return sync


def checkpoint(database: str) -> None:
    """Copy the SQLite WAL into the database file without blocking writers (blocking call)."""
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as conn:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


# The durability each SQLite engine was made with, so its blocking twin gets the same.
_synchronous: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def _configure_sqlite(engine: AsyncEngine, synchronous: str) -> None:
    _synchronous[engine.sync_engine] = synchronous
    _configure_sqlite_events(engine.sync_engine, synchronous)


def _configure_sqlite_events(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: an accepted mail survives power loss, not just a process crash. NORMAL (in
        # WAL mode) still survives any crash of the process itself.
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        # Writers take the write lock up front: a deferred transaction that later writes can fail
        # with SQLITE_BUSY at once instead of waiting. Readers (see `reader`) must not take it.
        readonly = conn.get_execution_options().get(_READONLY, False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")
