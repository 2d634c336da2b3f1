"""Accepting send calls: group commit on SQLite, one transaction per call on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import sqlalchemy
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import StaticPool

from mailgate.config import Settings
from mailgate.core.recipients import Recipients
from mailgate.core.request import SendRequest
from mailgate.core.send import AcceptedMail, Answer, SendCall
from mailgate.core.sender import Senders
from mailgate.mail.addresses import Mailbox
from mailgate.store.acceptor import Acceptor, _run_now, _SyncAsConn
from mailgate.store.schema import mail_events, outgoing_mails
from mailgate.store.send_store import DriverSendStore, SendStore
from tests.conftest import Seeded


def call(seeded: Seeded, title: str) -> SendCall:
    body = orjson.dumps({"ApiKey": seeded.api_key, "To": "a@example.com", "Title": title})
    return SendCall.read("items", str(seeded.record_id), body, "application/json")


async def accept_all(acceptor: Acceptor, calls: list[SendCall]) -> list[Answer | BaseException]:
    """Accept the calls at once, so that on SQLite they share one group commit."""
    now = datetime.now(UTC)
    return await asyncio.gather(*(acceptor.accept(c, now) for c in calls), return_exceptions=True)


async def titles_and_events(engine: AsyncEngine) -> tuple[list[str], int]:
    async with engine.connect() as conn:
        titles = (await conn.execute(select(outgoing_mails.c.title))).scalars().all()
        events = (await conn.execute(select(mail_events.c.id))).scalars().all()
    return sorted(titles), len(events)


async def test_calls_sharing_a_commit_are_each_answered_and_stored(
    engine: AsyncEngine, seeded: Seeded, make_settings: Callable[..., Settings]
) -> None:
    acceptor = Acceptor(engine, make_settings())
    try:
        answers = await accept_all(acceptor, [call(seeded, f"m{i:02}") for i in range(20)])
    finally:
        acceptor.close()
    assert all(isinstance(a, Answer) and a.status == 200 for a in answers), answers
    assert await titles_and_events(engine) == ([f"m{i:02}" for i in range(20)], 20)


async def test_a_call_failing_after_its_insert_is_rolled_back_alone(
    engine: AsyncEngine,
    seeded: Seeded,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    enqueue = SendStore.enqueue

    async def enqueue_then_fail(self: SendStore, mail: AcceptedMail) -> int:
        mail_id = await enqueue(self, mail)
        if mail.request.title == "boom":
            raise RuntimeError("after the insert")
        return mail_id

    monkeypatch.setattr(SendStore, "enqueue", enqueue_then_fail)
    acceptor = Acceptor(engine, make_settings())
    try:
        answers = await accept_all(acceptor, [call(seeded, t) for t in ("a", "boom", "b")])
    finally:
        acceptor.close()
    assert isinstance(answers[1], RuntimeError)
    assert [a.status for a in (answers[0], answers[2]) if isinstance(a, Answer)] == [200, 200]
    assert await titles_and_events(engine) == (["a", "b"], 2)


def test_driver_inserts_store_exactly_what_sqlalchemy_stores(tmp_path: Path) -> None:
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path}/same.db", poolclass=StaticPool)
    outgoing_mails.metadata.create_all(engine)
    box = Mailbox("Taro", "taro@example.com")
    request = SendRequest("", "a@example.com", "", "", "t", "body", ())
    accepted = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    mail = AcceptedMail(
        "items", 2, 1, 1, request, Senders(box, box), Recipients((box,), (), ()), accepted
    )
    with engine.begin() as conn:
        options = ("utf-8", None, "example.com")
        _run_now(SendStore(_SyncAsConn(conn), *options).enqueue(mail))  # type: ignore[arg-type]
        driver = conn.connection.driver_connection
        assert driver is not None
        _run_now(DriverSendStore(_SyncAsConn(conn), driver, *options).enqueue(mail))
    varying = {"id", "message_id", "updated_at", "mail_id", "at"}
    with engine.connect() as conn:
        for table in ("outgoing_mails", "mail_events"):
            result = conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY id")
            keep = [i for i, name in enumerate(result.keys()) if name not in varying]
            via_sqlalchemy, via_driver = ([row[i] for i in keep] for row in result.all())
            assert via_sqlalchemy == via_driver
    engine.dispose()
