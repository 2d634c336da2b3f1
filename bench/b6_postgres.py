"""B6: B2 and B1 on PostgreSQL, and how delivery scales from 1 to 2 `mailgate worker` processes.

A database is created for the run and dropped after it (trust auth on 127.0.0.1:5432, user
postgres, or MAILGATE_BENCH_POSTGRES_URL). One `serve --no-worker` process takes the calls.
Worker scaling is measured on a queue filled first (through HTTP, no worker running): fed
live by one API process, delivery would only ever be as fast as that process accepts.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from bench.b1_api import check_send, measure_pair, port_of
from bench.b2_delivery import mailgate_run
from bench.context import Context
from bench.httpload import mail_json, python_load
from bench.procs import Account, Workspace, provision, start_serve, start_worker, wait_http
from bench.sinks import Sink, fast_sink

ADMIN_URL = os.environ.get(
    "MAILGATE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(_dsn(ADMIN_URL), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def postgres_reachable() -> str | None:
    try:
        asyncio.run(_admin("SELECT 1"))
        return None
    except Exception as error:  # any failure means: not here
        return f"{type(error).__name__}: {error}"


def drain(
    ctx: Context,
    ws: Workspace,
    sink: Sink,
    url: str,
    account: Account,
    workers: int,
    env: dict[str, str],
) -> dict[str, Any]:
    """Queue `b6_drain` mails with no worker running, then time `workers` workers emptying it."""
    s = ctx.sizes
    template = mail_json(account.api_key, s.b2_body, "drain @@SEQ@@@")
    fill = python_load(port_of(url), account.send_path, template, s.b2_connections,
                       s.b6_drain, ctx.bound(s.b2_timeout))  # fmt: skip
    base = sink.snapshot()[0]
    started = time.time()
    procs = [start_worker(ws, f"b6-drain{workers}-{i}", sink.port, **env) for i in range(workers)]
    try:
        complete = sink.wait_for(base + fill.ok, ctx.bound(s.b2_timeout))
        delivered = sink.snapshot()[0] - base
        # The steady rate, from 10% delivered on: process start-up is not delivery.
        rate = sink.rate_between(base + max(1, delivered // 10), base + delivered)
        if rate != rate and delivered:  # too few samples (smoke sizes)
            rate = delivered / max(1e-3, sink.snapshot()[2] - started)
        cpu = sum(p.cpu() for p in procs)
    finally:
        for proc in procs:
            proc.stop()
    sink.wait_quiet(quiet=1.0)
    return {
        "workers": workers,
        "queued": fill.ok,
        "accept_req_per_s": round(fill.rps, 1),
        "delivered": delivered,
        "complete": complete,
        "mails_per_s": round(rate, 1),
        "workers_cpu_ms_per_mail": round(1000 * cpu / max(delivered, 1), 3),
    }


def run(ctx: Context) -> None:
    s = ctx.sizes
    problem = postgres_reachable()
    if problem:
        ctx.note(f"B6 skipped: PostgreSQL not reachable at {ADMIN_URL} ({problem})")
        return
    name = f"mailgate_bench_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url_db = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    root = Path(tempfile.mkdtemp(prefix="b6-", dir=ctx.work))
    ws = Workspace(root, url_db)
    sink = fast_sink()
    procs = []
    try:
        account = provision(url_db)
        env = {"MAILGATE_DELIVERY_CONCURRENCY": str(s.pool)}
        api, url = start_serve(ws, "b6-serve", smtp_port=sink.port, worker=False, **env)
        first = start_worker(ws, "b6-worker-1", sink.port, **env)
        procs = [api, first]
        wait_http(url + "/healthz", api, max(20.0, ctx.bound(60)))
        check_send(url, account, mail_json(account.api_key, 100), ctx.bound(30))
        sink.wait_for(1, ctx.bound(30))
        one = mailgate_run(
            ctx, sink, url, account, s.b6_mails, s.b2_body, s.b2_connections, s.b2_timeout, procs
        )
        print(f"  B6 PostgreSQL B2, 1 worker: {one['mails_per_s']:,.0f} mails/s", flush=True)
        first.stop()
        sink.wait_quiet(quiet=1.0)
        drains = {}
        for count in (1, 2):
            drains[count] = drain(ctx, ws, sink, url, account, count, env)
            print(
                f"  B6 PostgreSQL, queue of {s.b6_drain:,} drained by {count} worker(s): "
                f"{drains[count]['mails_per_s']:,.0f} mails/s",
                flush=True,
            )
        pair = measure_pair(ctx, api, url, account, "B6", s.b6_b1_seconds, s.b1_connections)
        api.stop()
    finally:
        for proc in procs:
            proc.stop()
        sink.stop()
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    ctx.details["B6"] = {"b2_one_worker": one, "drain": drains, "b1": pair}
    sqlite_b2 = ctx.details.get("B2", {}).get("mailgate", {}).get("mails_per_s")
    sqlite_b1 = ctx.details.get("B1", {}).get("compat", {}).get("req_per_s")
    compat = pair["compat"]["req_per_s"]
    ctx.row(
        "B6",
        "PG compat req/s vs bare",
        compat,
        f"PG bare {pair['bare']['req_per_s']:,.0f}",
        pair["ratio"],
        "report",
        None,
    )
    ctx.row(
        "B6",
        "PG compat req/s vs SQLite",
        compat,
        f"SQLite B1 {sqlite_b1:,.0f} req/s" if sqlite_b1 is not None else "B1 not run",
        compat / sqlite_b1 if sqlite_b1 else None,
        "report",
        None,
    )
    ctx.row("B6", "PG compat p99 ms", pair["compat"]["p99_ms"], "—", None, "report", None)
    ctx.row(
        "B6",
        "PG B2, 1 worker",
        one["mails_per_s"],
        f"SQLite B2 {sqlite_b2:,.0f}/s" if sqlite_b2 is not None else "B2 not run",
        one["mails_per_s"] / sqlite_b2 if sqlite_b2 else None,
        "report",
        None,
    )
    single, double = drains[1]["mails_per_s"], drains[2]["mails_per_s"]
    ratio = double / single if single else float("nan")
    ctx.row(
        "B6",
        "PG drain, 2 workers",
        double,
        f"1 worker {single:,.0f}/s",
        ratio,
        "≥ 1.6",
        ratio >= 1.6,
    )
