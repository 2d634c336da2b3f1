"""B5: claim + deliver rate with a deep backlog (200,000 due mails) against a shallow one (10,000).

The outbox is filled directly with SQLAlchemy Core inserts on mailgate's own schema (fast,
no HTTP), all due now; then one `mailgate worker` delivers to the sink, and the steady rate is
taken at the sink between 10% and 100% of a fixed number of delivered mails.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, insert

from bench.context import Context
from bench.httpload import text_of
from bench.procs import Account, Workspace, provision, start_worker
from bench.sinks import Sink, fast_sink
from mailgate.store.schema import outgoing_mails


def prefill(database_url: str, account: Account, count: int) -> float:
    """Insert `count` queued mails due in the past; returns the seconds it took."""
    started = time.perf_counter()
    now = datetime.now(UTC).replace(tzinfo=None)
    first_due = now - timedelta(hours=1)
    body = text_of(1000, seed=5)
    engine = create_engine(database_url)
    template = {
        "reference_type": "items",
        "record_id": account.record_id,
        "site_id": account.site_id,
        "user_id": account.user_id,
        "from_addr": "bench@example.com",
        "to_addrs": "rcpt@example.com",
        "cc_addrs": "",
        "bcc_addrs": "",
        "body": body,
        "header_from": json.dumps([["Bench User", "bench@example.com"]]),
        "header_to": json.dumps([["", "rcpt@example.com"]]),
        "header_cc": "[]",
        "envelope_from": "bench@example.com",
        "envelope_to": json.dumps(["rcpt@example.com"]),
        "charset": "utf-8",
        "transfer_encoding": None,
        "status": "queued",
        "attempts": 0,
        "created_at": first_due,
        "updated_at": now,
    }
    try:
        with engine.begin() as conn:
            batch = 5000
            for start in range(0, count, batch):
                rows = []
                for i in range(start, min(count, start + batch)):
                    due = first_due + timedelta(microseconds=i * 10)
                    rows.append(
                        template
                        | {
                            "title": f"b5 {i:08d}",
                            "message_id": f"<b5.{i}@bench.local>",
                            "next_attempt_at": due,
                        }
                    )
                conn.execute(insert(outgoing_mails), rows)
    finally:
        engine.dispose()
    return time.perf_counter() - started


def deliver_rate(ctx: Context, sink: Sink, waiting: int) -> dict[str, Any]:
    s = ctx.sizes
    ws = Workspace.sqlite(ctx.work, f"b5-{waiting}")
    account = provision(ws.database_url)
    fill_seconds = prefill(ws.database_url, account, waiting)
    base = sink.snapshot()[0]
    started = time.time()
    worker = start_worker(ws, f"b5-worker-{waiting}", sink.port)
    try:
        deliver = min(s.b5_deliver, waiting)
        complete = sink.wait_for(base + deliver, ctx.bound(s.b5_seconds))
        delivered = sink.snapshot()[0] - base
        rate = sink.rate_between(base + max(1, deliver // 10), base + delivered)
        if rate != rate and delivered:  # too few samples: count from the worker's start
            rate = delivered / max(1e-3, sink.snapshot()[2] - started)
        cpu = worker.cpu()
    finally:
        worker.stop()
    print(
        f"  B5 {waiting:,} waiting: {rate:,.0f} mails/s (filled in {fill_seconds:.1f} s)",
        flush=True,
    )
    return {
        "waiting": waiting,
        "fill_seconds": round(fill_seconds, 2),
        "delivered": delivered,
        "complete": complete,
        "mails_per_s": round(rate, 1),
        "worker_cpu_s": round(cpu, 2),
    }


def run(ctx: Context) -> None:
    s = ctx.sizes
    sink = fast_sink()
    try:
        small = deliver_rate(ctx, sink, s.b5_small)
        sink.wait_quiet()
        big = deliver_rate(ctx, sink, s.b5_big)
    finally:
        sink.stop()
    ctx.details["B5"] = {"sink": sink.kind, "small": small, "big": big}
    ratio = big["mails_per_s"] / small["mails_per_s"] if small["mails_per_s"] else float("nan")
    ctx.row(
        "B5",
        f"mails/s, {s.b5_big:,} waiting",
        big["mails_per_s"],
        f"{s.b5_small:,} waiting: {small['mails_per_s']:,.0f}/s",
        ratio,
        "≥ 0.80",
        ratio >= 0.8,
    )
