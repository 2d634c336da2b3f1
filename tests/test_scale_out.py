"""Several API and worker processes on one database: quota, exactly-once, same schema."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from mailgate.store.db import create_engine
from tests.conftest import Seeded
from tests.support import databases
from tests.support.cli import mailgate
from tests.support.relay import Relay
from tests.support.servers import MailgateProcess, ServeProcess

postgres_only = pytest.mark.skipif(
    databases.ENGINE != "postgres",
    reason="scale-out across processes is run on PostgreSQL (MAILGATE_TEST_DB=postgres)",
)


@pytest.fixture
def processes() -> Iterator[list[MailgateProcess]]:
    started: list[MailgateProcess] = []
    yield started
    for process in started:
        process.stop()


def env_for(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    return {
        "MAILGATE_DATA_DIR": str(tmp_path / "data"),
        "MAILGATE_DATABASE_URL": database_url,
        "MAILGATE_SMTP_HOST": "",
        **extra,
    }


def api(
    env: dict[str, str], log: Path, processes: list[MailgateProcess], *extra: str
) -> ServeProcess:
    server = ServeProcess(env, log, ["--no-worker", "--no-bootstrap", *extra])
    processes.append(server)
    return server.start()


async def fire(
    urls: list[str], payloads: list[dict[str, str]], parallel: int
) -> list[httpx.Response]:
    """Send every payload once, spread over the URLs, `parallel` at a time."""
    gate = asyncio.Semaphore(parallel)
    async with httpx.AsyncClient(timeout=60) as client:

        async def one(i: int) -> httpx.Response:
            async with gate:
                return await client.post(urls[i % len(urls)], json=payloads[i])

        return await asyncio.gather(*(one(i) for i in range(len(payloads))))


async def test_quota_is_exact_across_api_processes(
    engine: AsyncEngine,
    seeded: Seeded,
    database_url: str,
    tmp_path: Path,
    processes: list[MailgateProcess],
) -> None:
    env = env_for(tmp_path, database_url, MAILGATE_LIMIT_PER_SITE="50")
    first = api(env, tmp_path / "api1.log", processes, "--workers", "2")
    second = api(env, tmp_path / "api2.log", processes)
    path = f"/api/items/{seeded.record_id}/OutgoingMails/Send"
    payload = {"ApiKey": seeded.api_key, "To": "a@example.com", "Title": "quota"}
    responses = await fire([first.url + path, second.url + path], [payload] * 200, parallel=40)
    codes = Counter(r.status_code for r in responses)
    assert codes == {200: 50, 429: 150}
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.json()["Message"] == (
        f"The API limit (50 Requests/Day) that can be used on the site with ID {seeded.site_id}"
        " has been exceeded."
    )
    remaining = sorted(r.json()["LimitRemaining"] for r in responses if r.status_code == 200)
    assert remaining == list(range(50))


async def run_shared_queue(
    seeded: Seeded,
    database_url: str,
    tmp_path: Path,
    processes: list[MailgateProcess],
    relay: Relay,
    total: int,
    kill_one: bool,
) -> int:
    """Two API and three worker processes; returns the duplicates the relay saw."""
    env = env_for(
        tmp_path,
        database_url,
        MAILGATE_SMTP_HOST="127.0.0.1",
        MAILGATE_SMTP_PORT=str(relay.port),
        MAILGATE_LEASE_SECONDS="3",
    )
    apis = [api(env, tmp_path / f"api{i}.log", processes) for i in range(2)]
    workers = []
    for i in range(3):
        worker = MailgateProcess(["worker"], env, tmp_path / f"worker{i}.log").start()
        processes.append(worker)
        workers.append(worker)
    path = f"/api/items/{seeded.record_id}/OutgoingMails/Send"
    payloads = [
        {"ApiKey": seeded.api_key, "To": f"u{i}@example.com", "Title": f"mail {i}"}
        for i in range(total)
    ]
    sending = asyncio.create_task(fire([a.url + path for a in apis], payloads, parallel=32))
    if kill_one:
        while len(relay.received) < total // 4:
            await asyncio.sleep(0.05)
        workers[0].kill()
    responses = await sending
    assert all(r.status_code == 200 for r in responses)
    await asyncio.to_thread(relay.wait_for_distinct, total, 180)
    await asyncio.sleep(1.5)  # a late duplicate would arrive now
    for worker in workers[1:] if kill_one else workers:
        assert worker.terminate() == 0
    subjects = Counter(r.message()["Subject"] for r in relay.received)
    assert set(subjects) == {f"mail {i}" for i in range(total)}
    return sum(subjects.values()) - len(subjects)


@postgres_only
async def test_two_apis_three_workers_deliver_each_mail_once(
    seeded: Seeded,
    database_url: str,
    tmp_path: Path,
    processes: list[MailgateProcess],
    relay: Relay,
) -> None:
    duplicates = await run_shared_queue(
        seeded, database_url, tmp_path, processes, relay, 5000, kill_one=False
    )
    assert duplicates == 0


@postgres_only
async def test_worker_killed_mid_run_loses_nothing(
    seeded: Seeded,
    database_url: str,
    tmp_path: Path,
    processes: list[MailgateProcess],
    relay: Relay,
) -> None:
    duplicates = await run_shared_queue(
        seeded, database_url, tmp_path, processes, relay, 5000, kill_one=True
    )
    print(f"one of three workers SIGKILLed mid-run of 5000: {duplicates} duplicates")
    # Only mails the killed worker had delivered but not yet recorded can repeat (never more
    # than its concurrency, 16); the bound is 0.1% of the run.
    assert duplicates <= 5000 // 1000


def schema_of(url: str) -> dict[str, object]:
    """Tables, columns, keys and indexes as SQLAlchemy's inspector sees them."""

    async def read() -> dict[str, object]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:

                def describe(sync_conn: object) -> dict[str, object]:
                    inspector = inspect(sync_conn)
                    found: dict[str, object] = {}
                    for table in sorted(inspector.get_table_names()):
                        found[table] = {
                            "columns": [
                                (c["name"], c["nullable"]) for c in inspector.get_columns(table)
                            ],
                            "pk": inspector.get_pk_constraint(table)["constrained_columns"],
                            "fks": sorted(
                                (tuple(f["constrained_columns"]), f["referred_table"])
                                for f in inspector.get_foreign_keys(table)
                            ),
                            # PostgreSQL also lists a unique constraint's own index.
                            "indexes": sorted(
                                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                                for i in inspector.get_indexes(table)
                                if "duplicates_constraint" not in i
                            ),
                            "unique": sorted(
                                (u["name"], tuple(u["column_names"]))
                                for u in inspector.get_unique_constraints(table)
                            ),
                        }
                    return found

                return await conn.run_sync(describe)
        finally:
            await engine.dispose()

    return asyncio.run(read())


@postgres_only
def test_db_upgrade_gives_the_same_schema_on_both_engines(tmp_path: Path) -> None:
    pg_url = asyncio.run(databases.create_postgres_database())
    try:
        sqlite_url = f"sqlite:///{tmp_path}/fresh.db"
        for url in (pg_url, sqlite_url):
            mailgate("db", "upgrade", env={"MAILGATE_DATABASE_URL": url,
                                           "MAILGATE_DATA_DIR": str(tmp_path)})  # fmt: skip
        on_postgres, on_sqlite = schema_of(pg_url), schema_of(sqlite_url)
        assert "outgoing_mails" in on_postgres
        assert on_postgres == on_sqlite
    finally:
        asyncio.run(databases.drop_postgres_database(pg_url))
