"""The outbox after acceptance: claims with leases, delivery outcomes, history queries."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections import namedtuple
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Text,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from mailgate.mail.addresses import Mailbox
from mailgate.mail.compose import Attachment, Message
from mailgate.store.db import (
    checkpoint,
    reader,
    sync_sqlite_engine,
    utcnow,
    write_lock,
    write_lock_held,
)
from mailgate.store.driver import driver_insert, driver_statement
from mailgate.store.schema import mail_attachments, mail_events, outgoing_mails

T = TypeVar("T")

# Statuses whose mails wait for a (next) attempt.
PENDING = ("queued", "deferred")
RETRYABLE = ("failed", "dead")
DONE = ("sent", "captured")


@dataclass(frozen=True, slots=True)
class ClaimedMail:
    """A leased mail with everything needed to send it, read in the claim's transaction."""

    id: int
    attempts: int
    envelope_from: str
    envelope_to: list[str]
    created_at: datetime
    message: Message


def _mailboxes(text: str) -> list[Mailbox]:
    return [Mailbox(name=name, address=address) for name, address in orjson.loads(text)]


_MESSAGE_COLUMNS = (
    outgoing_mails.c.id,
    outgoing_mails.c.message_id,
    outgoing_mails.c.header_from,
    outgoing_mails.c.header_to,
    outgoing_mails.c.header_cc,
    outgoing_mails.c.title,
    outgoing_mails.c.body,
    outgoing_mails.c.charset,
    outgoing_mails.c.transfer_encoding,
    outgoing_mails.c.created_at,
)


def _message(row: Any, attachments: Sequence[Attachment]) -> Message:
    return Message(
        message_id=row.message_id,
        date=row.created_at.replace(tzinfo=UTC),
        sender=_mailboxes(row.header_from)[0],
        to=_mailboxes(row.header_to),
        cc=_mailboxes(row.header_cc),
        subject=row.title,
        body=row.body,
        attachments=tuple(attachments),
        charset=row.charset,
        transfer_encoding=row.transfer_encoding,
    )


_FILE_COLUMNS = (
    mail_attachments.c.mail_id,
    mail_attachments.c.name,
    mail_attachments.c.content_type,
    mail_attachments.c.data,
)


def _attachments(conn: Connection, mail_ids: Sequence[int]) -> dict[int, list[Attachment]]:
    rows = conn.execute(
        select(*_FILE_COLUMNS)
        .where(mail_attachments.c.mail_id.in_(mail_ids))
        .order_by(mail_attachments.c.mail_id, mail_attachments.c.position)
    )
    return _files_by_mail(rows)


def _files_by_mail(rows: Iterable[Sequence[Any]]) -> dict[int, list[Attachment]]:
    """Rows of `_FILE_COLUMNS`, in order, as each mail's attachments."""
    found: dict[int, list[Attachment]] = {}
    for mail_id, name, content_type, data in rows:
        found.setdefault(mail_id, []).append(Attachment(name, content_type, data))
    return found


_CLAIM_COLUMNS = (
    *_MESSAGE_COLUMNS,
    outgoing_mails.c.attempts,
    outgoing_mails.c.envelope_from,
    outgoing_mails.c.envelope_to,
)


def _claimed(conn: Connection, rows: Sequence[Any]) -> list[ClaimedMail]:
    files = _attachments(conn, [r.id for r in rows]) if rows else {}
    return _claimed_mails(rows, files)


def _claimed_mails(rows: Sequence[Any], files: dict[int, list[Attachment]]) -> list[ClaimedMail]:
    return [
        ClaimedMail(
            r.id,
            r.attempts,
            r.envelope_from,
            orjson.loads(r.envelope_to),
            r.created_at,
            _message(r, files.get(r.id, ())),
        )
        for r in sorted(rows, key=lambda r: r.id)
    ]


_ClaimRow = namedtuple("_ClaimRow", [column.key for column in _CLAIM_COLUMNS])  # type: ignore[misc]
_CREATED_AT = _ClaimRow._fields.index("created_at")


@functools.cache
def _claim_reads(dialect: Dialect) -> tuple[str, str, Callable[[Any], Any]]:
    """SQL reading claimed mails and their files (IN lists appended), and the time parser."""
    mails = select(*_CLAIM_COLUMNS).compile(dialect=dialect)
    files = select(*_FILE_COLUMNS).compile(dialect=dialect)
    parse_time = DateTime().dialect_impl(dialect).result_processor(dialect, None)
    assert parse_time is not None
    return str(mails), str(files), parse_time


async def _read_claimed(engine: AsyncEngine, ids: Sequence[int]) -> list[ClaimedMail]:
    """SQLite: the leased mails' content, read by the reader's thread straight on its driver.

    SQLAlchemy's statement and row handling cost more than the reads (B2's profile); the
    columns are the same as `_claimed` reads, and created_at is parsed by SQLAlchemy's own
    DATETIME processor, so both paths give equal mails.
    """
    mails_sql, files_sql, parse_time = _claim_reads(engine.dialect)
    marks = ", ".join("?" * len(ids))
    async with reader(engine).connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        mails = await driver.execute_fetchall(
            f"{mails_sql} WHERE outgoing_mails.id IN ({marks})", list(ids)
        )
        found = await driver.execute_fetchall(
            f"{files_sql} WHERE mail_attachments.mail_id IN ({marks})"
            " ORDER BY mail_attachments.mail_id, mail_attachments.position",
            list(ids),
        )
    files = _files_by_mail(found)
    rows = []
    for values in mails:
        row = list(values)
        row[_CREATED_AT] = parse_time(row[_CREATED_AT])
        rows.append(_ClaimRow(*row))
    return _claimed_mails(rows, files)


@dataclass(frozen=True, slots=True)
class Finished:
    """One attempt's result: the mail's new status and the events that explain it."""

    mail_id: int
    attempt: int
    status: str
    events: Sequence[tuple[str, str | None]]
    next_attempt_at: datetime | None = None
    envelope_to: Sequence[str] | None = None  # only some recipients remain


_FINISH = (
    update(outgoing_mails)
    .where(
        outgoing_mails.c.id == bindparam("b_id"),
        outgoing_mails.c.locked_by == bindparam("b_worker"),
    )
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempt"),
        locked_by=None,
        locked_until=None,
        next_attempt_at=bindparam("b_next"),
        last_error=bindparam("b_error"),
        updated_at=bindparam("b_now"),
        sent_at=func.coalesce(outgoing_mails.c.sent_at, bindparam("b_sent", type_=DateTime)),
        envelope_to=func.coalesce(
            bindparam("b_envelope", type_=Text), outgoing_mails.c.envelope_to
        ),
    )
)


def _finish_params(result: Finished, now: datetime, worker: str) -> dict[str, Any]:
    done = any(event in DONE for event, _ in result.events)
    return {
        "b_id": result.mail_id,
        "b_worker": worker,
        "b_status": result.status,
        "b_attempt": result.attempt,
        "b_next": result.next_attempt_at,
        "b_error": None if result.status in DONE else result.events[-1][1],
        "b_now": now,
        "b_sent": now if done else None,
        "b_envelope": (
            None if result.envelope_to is None else orjson.dumps(list(result.envelope_to)).decode()
        ),
    }


_PG_FINISH = text(
    """
    WITH v AS (
        SELECT * FROM unnest(
            CAST(:ids AS BIGINT[]), CAST(:statuses AS VARCHAR[]), CAST(:attempts AS INTEGER[]),
            CAST(:nexts AS TIMESTAMP[]), CAST(:errors AS TEXT[]), CAST(:sents AS TIMESTAMP[]),
            CAST(:envelopes AS TEXT[])
        ) AS v(id, status, attempt, next_at, error, sent, envelope)
    ), done AS (
        UPDATE outgoing_mails AS m SET
            status = v.status, attempts = v.attempt, locked_by = NULL, locked_until = NULL,
            next_attempt_at = v.next_at, last_error = v.error, updated_at = :now,
            sent_at = COALESCE(m.sent_at, v.sent), envelope_to = COALESCE(v.envelope, m.envelope_to)
        FROM v
        WHERE m.id = v.id AND m.locked_by = :worker
        RETURNING m.id
    ), events AS (
        INSERT INTO mail_events (mail_id, at, event, attempt, detail)
        SELECT e.mail_id, :now, e.event, e.attempt, e.detail
        FROM unnest(
            CAST(:e_ids AS BIGINT[]), CAST(:e_events AS VARCHAR[]),
            CAST(:e_attempts AS INTEGER[]), CAST(:e_details AS TEXT[])
        ) WITH ORDINALITY AS e(mail_id, event, attempt, detail, position)
        WHERE e.mail_id IN (SELECT id FROM done)
        ORDER BY e.position
    )
    SELECT id FROM done
    """
)


def _pg_finish_params(results: Sequence[Finished], worker: str) -> dict[str, Any]:
    """`_finish_params` as one array per column, for `_PG_FINISH`."""
    now = utcnow()
    rows = [_finish_params(r, now, worker) for r in results]
    events = [(r.mail_id, e, r.attempt, d) for r in results for e, d in r.events]
    return {
        "now": now,
        "worker": worker,
        "ids": [row["b_id"] for row in rows],
        "statuses": [row["b_status"] for row in rows],
        "attempts": [row["b_attempt"] for row in rows],
        "nexts": [row["b_next"] for row in rows],
        "errors": [row["b_error"] for row in rows],
        "sents": [row["b_sent"] for row in rows],
        "envelopes": [row["b_envelope"] for row in rows],
        "e_ids": [event[0] for event in events],
        "e_events": [event[1] for event in events],
        "e_attempts": [event[2] for event in events],
        "e_details": [event[3] for event in events],
    }


def _finish(
    driver: sqlite3.Connection, dialect: Dialect, worker: str, results: Sequence[Finished]
) -> list[int]:
    """Record outcomes on SQLite's driver, inside the caller's transaction."""
    now = utcnow()
    ids = [result.mail_id for result in results]
    finish = driver_statement(_FINISH, dialect)
    # One statement in the usual case: every lease still ours. Only when some update
    # missed do we look up which, to keep their events out of the history.
    updated = driver.executemany(
        finish.sql, [finish.values(_finish_params(r, now, worker)) for r in results]
    )
    owned = set(ids)
    if updated.rowcount != len(results):
        marks = ", ".join("?" * len(ids))
        stored_now = DateTime().dialect_impl(dialect).bind_processor(dialect)
        rows = driver.execute(
            f"SELECT id FROM outgoing_mails WHERE id IN ({marks}) "
            "AND updated_at = ? AND locked_by IS NULL",
            [*ids, now if stored_now is None else stored_now(now)],
        )
        owned = {row[0] for row in rows}
    events = [
        {"mail_id": r.mail_id, "at": now, "event": e, "attempt": r.attempt, "detail": d}
        for r in results
        if r.mail_id in owned
        for e, d in r.events
    ]
    if events:
        add = driver_insert(mail_events, tuple(events[0]), dialect)
        driver.executemany(add.sql, [add.values(event) for event in events])
    return [mail_id for mail_id in ids if mail_id not in owned]


# Built once (SQLAlchemy caches its compiled form): building it per claim cost more CPU than
# running it. Pushing next_attempt_at to the lease's end hides the mail from other claims
# until then, so the due index never has to skip over mails in flight.
_DUE = (
    select(outgoing_mails.c.id)
    .where(
        outgoing_mails.c.status.in_(PENDING),
        outgoing_mails.c.next_attempt_at <= bindparam("b_now"),
    )
    .order_by(outgoing_mails.c.next_attempt_at)
    .limit(bindparam("b_limit"))
    .with_for_update(skip_locked=True)
)
_LEASE = (
    update(outgoing_mails)
    .where(outgoing_mails.c.id.in_(_DUE.scalar_subquery()))
    .values(
        locked_by=bindparam("b_worker"),
        locked_until=bindparam("b_until"),
        next_attempt_at=bindparam("b_until"),
        updated_at=bindparam("b_now"),
    )
)
_LEASE_AND_READ = _LEASE.returning(*_CLAIM_COLUMNS)
_LEASE_IDS = _LEASE.returning(outgoing_mails.c.id)


class Outbox:
    """Delivery-side operations on the outgoing_mails table.

    On SQLite the worker's writes run synchronously on the event loop thread: each takes
    well under a millisecond there, while the same statements through aiosqlite's thread
    hop wait for the GIL behind the busy loop (measured: 25 ms a batch under load). The
    longer an outcome waits to be recorded, the more mails a crash sends twice.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sync: Engine | None = sync_sqlite_engine(engine, checkpoints=False)
        self._outcomes: Engine | None = None
        self._raw: PoolProxiedConnection | None = None

    async def _write(self, work: Callable[[Connection], T]) -> T:
        # The in-process lock matters doubly here: a blocking write must never wait on an
        # async writer of this same event loop, which could not finish while we block it.
        async with write_lock(self.engine):
            if self._sync is not None:
                with self._sync.begin() as conn:
                    return work(conn)
            async with self.engine.begin() as conn:
                return await conn.run_sync(work)

    async def claim(self, worker: str, limit: int, lease: float) -> list[ClaimedMail]:
        """Lease up to `limit` due mails to `worker`, with their content."""
        now = utcnow()
        params = {
            "b_now": now,
            "b_until": now + timedelta(seconds=lease),
            "b_limit": limit,
            "b_worker": worker,
        }
        if self._sync is None:
            # PostgreSQL: lease and read in one round trip; the loop is free meanwhile.
            return await self._write(
                lambda conn: _claimed(conn, conn.execute(_LEASE_AND_READ, params).all())
            )
        # SQLite: the blocking write only leases; the content is read by the reader's thread.
        # Replies that arrive meanwhile get recorded at once rather than after a long write.
        ids = await self._write(lambda conn: conn.execute(_LEASE_IDS, params).scalars().all())
        if not ids:
            return []
        return await _read_claimed(self.engine, ids)

    async def finish(self, worker: str, results: Sequence[Finished]) -> list[int]:
        """Record outcomes in one transaction (group commit); returns ids whose lease was lost."""
        if self._sync is not None:
            async with write_lock(self.engine):
                return self._finish_sqlite(worker, results)
        # PostgreSQL: one statement, so one round trip instead of four (BEGIN, UPDATE, INSERT,
        # COMMIT), each of which waits for the busy loop to read its answer; every one of
        # them widens the window in which a crash sends a delivered mail again.
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            owned = set(
                (await conn.execute(_PG_FINISH, _pg_finish_params(results, worker))).scalars()
            )
        return [result.mail_id for result in results if result.mail_id not in owned]

    def finish_now(self, worker: str, results: Sequence[Finished]) -> list[int] | None:
        """`finish` without yielding to the event loop, or None when that cannot be done.

        On SQLite, while no writer of this loop holds the lock, the outcome is committed in
        the same loop step that read the relay's reply: nothing else runs in between, so a
        crash finds almost no delivered-but-unrecorded mail to send twice.
        """
        if self._sync is None or write_lock_held(self.engine):
            return None
        return self._finish_sqlite(worker, results)

    def _finish_sqlite(self, worker: str, results: Sequence[Finished]) -> list[int]:
        driver = self._driver()
        # Straight on the driver: SQLAlchemy's checkout, begin, execute and commit cost three
        # times the statements (B2's profile), once for every delivered mail.
        driver.execute("BEGIN IMMEDIATE")
        try:
            lost = _finish(driver, self.engine.dialect, worker, results)
            driver.execute("COMMIT")
        except BaseException:
            driver.execute("ROLLBACK")
            raise
        return lost

    def _driver(self) -> sqlite3.Connection:
        """A connection of its own for outcomes, checked out once (with the engine's pragmas)."""
        if self._raw is None:
            self._outcomes = sync_sqlite_engine(self.engine, checkpoints=False)
            assert self._outcomes is not None
            self._raw = self._outcomes.raw_connection()
        driver = self._raw.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        return driver

    async def extend(self, worker: str, mail_ids: Sequence[int], lease: float) -> None:
        """Renew the lease on mails still in flight, so a slow delivery is not taken over."""
        now = utcnow()
        until = now + timedelta(seconds=lease)
        stmt = (
            update(outgoing_mails)
            .where(outgoing_mails.c.id.in_(mail_ids), outgoing_mails.c.locked_by == worker)
            .values(locked_until=until, next_attempt_at=until, updated_at=now)
        )
        await self._write(lambda conn: conn.execute(stmt))

    async def release(self, mail_id: int, worker: str) -> None:
        """Give an unfinished mail back without counting an attempt (graceful stop)."""
        now = utcnow()
        stmt = (
            update(outgoing_mails)
            .where(outgoing_mails.c.id == mail_id, outgoing_mails.c.locked_by == worker)
            .values(locked_by=None, locked_until=None, next_attempt_at=now, updated_at=now)
        )
        await self._write(lambda conn: conn.execute(stmt))

    async def checkpoint(self) -> None:
        """On SQLite, move the WAL into the database file in a thread, off the event loop."""
        if self._sync is None or not self.engine.url.database:
            return
        # Holding this process's write lock, no commit of ours lands meanwhile, so the
        # checkpoint catches up with the whole WAL and the next commit starts it over; under
        # steady writes it would otherwise never catch up and the WAL would only grow.
        # Outcomes that arrive meanwhile wait for the recorder; the loop keeps running.
        async with write_lock(self.engine):
            await asyncio.to_thread(checkpoint, self.engine.url.database)

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        if self._outcomes is not None:
            self._outcomes.dispose()
        if self._sync is not None:
            self._sync.dispose()


async def queue_stats(engine: AsyncEngine) -> tuple[dict[str, int], datetime | None]:
    """Mails by status, and when the oldest mail that is due now became due."""
    now = utcnow()
    async with reader(engine).connect() as conn:
        counts = (
            await conn.execute(
                select(outgoing_mails.c.status, func.count()).group_by(outgoing_mails.c.status)
            )
        ).all()
        oldest: datetime | None = (
            await conn.execute(
                select(func.min(outgoing_mails.c.next_attempt_at)).where(
                    outgoing_mails.c.status.in_(PENDING), outgoing_mails.c.next_attempt_at <= now
                )
            )
        ).scalar_one_or_none()
        return {status: count for status, count in counts}, oldest


async def load_message(conn: AsyncConnection, mail_id: int) -> Message:
    """The message exactly as fixed at acceptance (for `mails show --raw`)."""
    row = (
        await conn.execute(select(*_MESSAGE_COLUMNS).where(outgoing_mails.c.id == mail_id))
    ).one()
    files = await conn.run_sync(_attachments, [mail_id])
    return _message(row, files.get(mail_id, ()))


async def requeue(engine: AsyncEngine, mail_id: int) -> tuple[bool, str | None]:
    """Put a failed or dead mail back in the queue now: (requeued?, status now or None)."""
    now = utcnow()
    async with engine.begin() as conn:
        requeued = (
            await conn.execute(
                update(outgoing_mails)
                .where(outgoing_mails.c.id == mail_id, outgoing_mails.c.status.in_(RETRYABLE))
                .values(
                    status="queued",
                    # A manual retry starts a fresh schedule; the events keep the old attempts.
                    attempts=0,
                    next_attempt_at=now,
                    locked_by=None,
                    locked_until=None,
                    updated_at=now,
                )
                .returning(outgoing_mails.c.status)
            )
        ).scalar_one_or_none()
        if requeued is not None:
            await conn.execute(
                insert(mail_events).values(mail_id=mail_id, at=now, event="retried", attempt=0)
            )
            return True, requeued
        current = (
            await conn.execute(
                select(outgoing_mails.c.status).where(outgoing_mails.c.id == mail_id)
            )
        ).scalar_one_or_none()
        return False, current
