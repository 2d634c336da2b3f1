"""Running send calls' transactions; on SQLite, many calls share one commit (group commit)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import Connection, Executable, Result
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from mailgate.config import Settings
from mailgate.core.send import Answer, SendCall, send
from mailgate.store.db import sync_sqlite_engine, write_lock
from mailgate.store.send_store import AsyncpgSendStore, DriverSendStore

T = TypeVar("T")
# Enough to amortise one fsync over many calls; small enough that one batch blocks the
# event loop only for a few milliseconds.
MAX_BATCH = 64


class _SyncAsConn:
    """A blocking connection behind the async `execute` that SendStore awaits."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect: Dialect = conn.dialect

    async def execute(self, statement: Executable, parameters: Any = None) -> Result[Any]:
        return self.conn.execute(statement, parameters)


def _run_now(coro: Coroutine[Any, Any, T]) -> T:
    """Finish a coroutine that never waits (its store runs blocking statements)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a send call waited inside a group commit")


@dataclass
class _Pending:
    call: SendCall
    now: datetime
    answer: asyncio.Future[Answer]


class Acceptor:
    """Accepts send calls: one transaction per call on PostgreSQL; batched on SQLite.

    SQLite has one writer and every commit of an accepted mail is an fsync; measured on
    this kind of machine, a transaction per call through aiosqlite managed ~140 calls/s.
    Here the calls waiting at a moment run back to back on the loop thread, each in its
    own savepoint, and share one commit; no call is answered before that commit. The
    commit waits for its fsync on a thread, so the loop reads the next batch meanwhile.
    """

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self._sync = sync_sqlite_engine(engine)
        self._pending: list[_Pending] = []
        self._flushing = False
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="mailgate-commit")

    def close(self) -> None:
        self._committer.shutdown()
        if self._sync is not None:
            self._sync.dispose()

    def _options(self) -> tuple[str, str | None, str]:
        mail = self.settings.mail
        return mail.charset, mail.transfer_encoding, self.settings.message_id_domain

    async def accept(self, call: SendCall, now: datetime) -> Answer:
        if self._sync is None:
            return await self._accept_on_postgresql(call, now)
        pending = _Pending(call, now, asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        return await pending.answer

    async def _accept_on_postgresql(self, call: SendCall, now: datetime) -> Answer:
        """One transaction, its statements straight on asyncpg (AsyncpgSendStore)."""
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            try:
                async with driver.transaction():
                    store = AsyncpgSendStore(conn, driver, *self._options())
                    return await send(call, store, self.settings, now)
            except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as error:
                # SQLAlchemy would have raised its own; the edge answers 503 for either.
                raw.invalidate()
                raise ConnectionError(f"PostgreSQL connection lost: {error}") from error

    async def _flush(self) -> None:
        try:
            while self._pending:
                # Let the calls already read by the event loop join this batch.
                await asyncio.sleep(0)
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                async with write_lock(self.engine):
                    answers = await self._commit(batch)
                for pending, result in answers:
                    if pending.answer.done():
                        continue
                    if isinstance(result, Exception):
                        pending.answer.set_exception(result)
                    else:
                        pending.answer.set_result(result)
        finally:
            self._flushing = False

    async def _commit(self, batch: list[_Pending]) -> list[tuple[_Pending, Answer | Exception]]:
        assert self._sync is not None
        answers: list[tuple[_Pending, Answer | Exception]] = []
        try:
            with self._sync.connect() as conn:
                transaction = conn.begin()
                driver = conn.connection.driver_connection
                assert driver is not None
                store = DriverSendStore(_SyncAsConn(conn), driver, *self._options())
                # Savepoints straight on the driver: SQLAlchemy's nested transactions cost more
                # than the call's own statements.
                for pending in batch:
                    driver.execute("SAVEPOINT call")
                    try:
                        answer = _run_now(send(pending.call, store, self.settings, pending.now))
                    except Exception as error:
                        driver.execute("ROLLBACK TO call")
                        answers.append((pending, error))
                    else:
                        answers.append((pending, answer))
                    driver.execute("RELEASE call")
                # The fsync waits in a thread, so the event loop reads the next calls meanwhile.
                await self._in_thread(transaction.commit)
        except Exception as error:
            answers = [(pending, error) for pending in batch]
        return answers

    async def _in_thread(self, work: Callable[[], None]) -> None:
        """Run `work` on the commit thread; a cancelled caller still waits for it to end."""
        done = asyncio.get_running_loop().run_in_executor(self._committer, work)
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            await done
            raise
