"""B2, B2w, B3: from the first HTTP request to the last mail accepted by the sink.

B2  10,000 10 KB mails to a fast sink, against (a) aiosmtplib pushing pre-built messages over
    the same number of pooled connections, (b) `smtp-source -d` with as many sessions (the C
    ceiling, reported only) and (c) mailgate forced to one new connection per mail, one at a
    time (what Pleasanter does).
B2w the same with 2,000 mails to a relay that answers every command after 20 ms, against (c).
B3  accept → relay-accepted latency when mails arrive at half of B2's rate.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from bench.b1_api import check_send, port_of
from bench.context import Context
from bench.httpload import mail_json, percentile, python_load
from bench.procs import (
    Account,
    Mailgate,
    Proc,
    Workspace,
    provision,
    start_serve,
    tool,
    wait_http,
)
from bench.profiling import Recording, top_costs
from bench.sinks import PythonSink, Sink, fast_sink, smtp_source

ONE_AT_A_TIME = {
    "MAILGATE_SMTP_MAX_MAILS_PER_CONNECTION": "1",
    "MAILGATE_DELIVERY_CONCURRENCY": "1",
}


def pool_env(ctx: Context) -> dict[str, str]:
    return {"MAILGATE_DELIVERY_CONCURRENCY": str(ctx.sizes.pool)}


def mailgate_run(
    ctx: Context,
    sink: Sink,
    url: str,
    account: Account,
    mails: int,
    body_size: int,
    connections: int,
    timeout: float,
    procs: list[Proc],
    title: str = "bench @@SEQ@@@",
) -> dict[str, Any]:
    """POST `mails` sends (at most `timeout` s), then wait for the sink to count them all."""
    base, base_sessions, _ = sink.snapshot()
    cpu0 = {p.name: p.cpu() for p in procs}
    sink_cpu0 = sink.cpu()
    template = mail_json(account.api_key, body_size, title)
    timeout = ctx.bound(timeout)
    started = time.monotonic()
    load = python_load(port_of(url), account.send_path, template, connections, mails, timeout)
    left = max(1.0, timeout - (time.monotonic() - started))
    complete = sink.wait_for(base + load.ok, left)
    messages, sessions, last_at = sink.snapshot()
    delivered = messages - base
    end = last_at if complete else time.time()
    elapsed = end - load.first_send
    cpu = {name: p.cpu() - cpu0[name] for name, p in ((p.name, p) for p in procs)}
    total_cpu = sum(cpu.values())
    return {
        "mails": mails,
        "accepted": load.ok,
        "delivered": delivered,
        "complete": complete,
        "seconds": round(elapsed, 3),
        "mails_per_s": round(delivered / elapsed, 1) if elapsed > 0 else 0.0,
        "sessions": sessions - base_sessions,
        "ingest": load.summary(),
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "cpu_ms_per_mail": round(1000 * total_cpu / max(delivered, 1), 3),
        "sink_cpu_ms_per_mail": round(1000 * (sink.cpu() - sink_cpu0) / max(delivered, 1), 3),
    }


def start_pair(
    ctx: Context, tag: str, sink_port: int
) -> tuple[tuple[Mailgate, str, Account], tuple[Mailgate, str, Account]]:
    """A pooled `serve` and a one-connection-per-mail `serve` (reference c), each on its own
    database and provisioned, both answering /healthz."""
    started = []
    for name, env in ((tag, pool_env(ctx)), (tag + "c", ONE_AT_A_TIME)):
        ws = Workspace.sqlite(ctx.work, name)
        account = provision(ws.database_url)
        proc, url = start_serve(ws, f"{name}-serve", smtp_port=sink_port, **env)
        started.append((proc, url, account))
    for proc, url, _ in started:
        wait_http(url + "/healthz", proc, max(20.0, ctx.bound(60)))
    return started[0], started[1]


def reference_a(ctx: Context, sink: Sink, mails: int, size: int) -> dict[str, Any]:
    base = sink.snapshot()[0]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.smtpref",
            "--port",
            str(sink.port),
            "--count",
            str(mails),
            "--connections",
            str(ctx.sizes.pool),
            "--size",
            str(size),
            "--seconds",
            str(ctx.bound(ctx.sizes.b2_timeout)),
        ],
        capture_output=True,
        text=True,
        timeout=ctx.sizes.b2_timeout + 60,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    sink.wait_for(base + result["sent"], ctx.bound(10))
    result["delivered"] = sink.snapshot()[0] - base
    result["mails_per_s"] = round(result["sent"] / result["seconds"], 1)
    result["cpu_ms_per_mail"] = round(1000 * result["cpu_s"] / max(result["sent"], 1), 3)
    return result


def reference_b(ctx: Context, sink: Sink, mails: int, size: int) -> dict[str, Any] | None:
    if tool("smtp-source") is None:
        ctx.note("smtp-source not installed (Debian package postfix): reference (b) skipped")
        return None
    base = sink.snapshot()[0]
    seconds = smtp_source(sink.port, ctx.sizes.pool, mails, size, ctx.bound(ctx.sizes.b2_timeout))
    sink.wait_for(base + mails, ctx.bound(10))
    delivered = sink.snapshot()[0] - base
    return {
        "sent": mails,
        "delivered": delivered,
        "seconds": round(seconds, 3),
        "mails_per_s": round(mails / seconds, 1),
    }


def one_connection_check(ctx: Context, label: str, result: dict[str, Any]) -> None:
    if result["delivered"] and result["sessions"] < 0.9 * result["delivered"]:
        ctx.note(
            f"{label}: {result['sessions']} SMTP sessions for {result['delivered']} mails: "
            "MAILGATE_SMTP_MAX_MAILS_PER_CONNECTION=1 is not honoured (yet), so (c) reused "
            "connections and is faster than the one-connection-per-mail path it stands for"
        )


def run_b2(ctx: Context) -> None:
    s = ctx.sizes
    sink = fast_sink()
    if sink.kind != "smtp-sink":
        ctx.note("smtp-sink not installed: B2 uses the Python sink (bench.pysink), itself a limit")
    (main, url, account), (slow, url_c, account_c) = start_pair(ctx, "b2", sink.port)
    for u, acc in ((url, account), (url_c, account_c)):
        check_send(u, acc, mail_json(acc.api_key, 100), ctx.bound(30))
    sink.wait_for(2, ctx.bound(30))
    sink.wait_quiet()

    ref_b = reference_b(ctx, sink, s.b2_mails, s.b2_body)
    ref_a = reference_a(ctx, sink, s.b2_mails, s.b2_body)
    print(f"  B2 (a) aiosmtplib: {ref_a['mails_per_s']:,.0f} mails/s", flush=True)
    if ref_b:
        print(f"  B2 (b) smtp-source: {ref_b['mails_per_s']:,.0f} mails/s", flush=True)
    result = mailgate_run(
        ctx, sink, url, account, s.b2_mails, s.b2_body, s.b2_connections, s.b2_timeout, [main]
    )
    print(
        f"  B2 mailgate: {result['mails_per_s']:,.0f} mails/s "
        f"({result['delivered']}/{result['accepted']} in {result['seconds']:.1f} s, "
        f"{result['sessions']} sessions, {result['cpu_ms_per_mail']:.2f} ms CPU/mail)",
        flush=True,
    )
    result_c = mailgate_run(
        ctx, sink, url_c, account_c, s.b2c_mails, s.b2_body, s.b2_connections, s.b2c_seconds, [slow]
    )
    print(f"  B2 (c) one connection per mail: {result_c['mails_per_s']:,.0f} mails/s", flush=True)
    one_connection_check(ctx, "B2 (c)", result_c)
    slow.stop()
    ctx.details["B2"] = {
        "sink": sink.kind,
        "pool": s.pool,
        "mailgate": result,
        "a_aiosmtplib": ref_a,
        "b_smtp_source": ref_b,
        "c_one_connection_per_mail": result_c,
    }
    if not result["complete"]:
        ctx.note(f"B2: only {result['delivered']} of {result['accepted']} mails arrived in time")
    rate = result["mails_per_s"]
    ctx.row(
        "B2",
        "mails/s vs (a)",
        rate,
        f"(a) aiosmtplib {ref_a['mails_per_s']:,.0f}/s",
        rate / ref_a["mails_per_s"],
        "≥ 0.50",
        rate / ref_a["mails_per_s"] >= 0.5,
    )
    ctx.row(
        "B2",
        "mails/s vs (c)",
        rate,
        f"(c) 1 conn/mail {result_c['mails_per_s']:,.0f}/s",
        rate / max(result_c["mails_per_s"], 1e-9),
        "≥ 2.0",
        rate / max(result_c["mails_per_s"], 1e-9) >= 2,
    )
    if ref_b:
        ctx.row(
            "B2",
            "mails/s vs (b)",
            rate,
            f"(b) smtp-source {ref_b['mails_per_s']:,.0f}/s",
            rate / ref_b["mails_per_s"],
            "report",
            None,
        )
    ctx.row(
        "B2",
        "CPU ms per mail",
        result["cpu_ms_per_mail"],
        f"(a) {ref_a['cpu_ms_per_mail']:.2f} ms/mail",
        None,
        "report",
        None,
    )
    profile_delivery(ctx, sink, main, url, account)
    main.stop()
    sink.stop()


def profile_delivery(ctx: Context, sink: Sink, proc: Mailgate, url: str, account: Account) -> None:
    s = ctx.sizes
    if not ctx.profiler or s.profile_mails <= 0:
        return
    output = ctx.results / f"{ctx.stamp}-B2.pyspy.txt"
    # Long enough to cover ingest and delivery of the profiled batch.
    seconds = max(
        s.profile_seconds,
        2 + s.profile_mails / max(ctx.details["B2"]["mailgate"]["mails_per_s"], 1),
    )
    seconds = min(seconds, 40)
    recording = Recording(ctx.profiler, proc.pid, seconds, output).start()
    time.sleep(0.3)
    mailgate_run(
        ctx, sink, url, account, s.profile_mails, s.b2_body, s.b2_connections, seconds, [proc]
    )
    recording.join()
    if recording.error:
        ctx.note(f"B2 profile failed: {recording.error}")
        return
    ctx.profiles["B2"] = {"file": output.name, "seconds": round(seconds, 1)} | top_costs(output)


def run_b2w(ctx: Context) -> None:
    s = ctx.sizes
    sink = PythonSink(delay=s.b2w_delay).start()
    (main, url, account), (slow, url_c, account_c) = start_pair(ctx, "b2w", sink.port)
    result = mailgate_run(
        ctx, sink, url, account, s.b2w_mails, s.b2_body, s.b2_connections, s.b2w_timeout, [main]
    )
    print(f"  B2w mailgate: {result['mails_per_s']:,.0f} mails/s", flush=True)
    main.stop()
    result_c = mailgate_run(
        ctx,
        sink,
        url_c,
        account_c,
        s.b2wc_mails,
        s.b2_body,
        s.b2_connections,
        s.b2wc_seconds,
        [slow],
    )
    print(f"  B2w (c): {result_c['mails_per_s']:,.1f} mails/s", flush=True)
    one_connection_check(ctx, "B2w (c)", result_c)
    slow.stop()
    sink.stop()
    ctx.details["B2w"] = {
        "delay_s": s.b2w_delay,
        "sink": "pysink (delays the greeting and every reply)",
        "mailgate": result,
        "c_one_connection_per_mail": result_c,
    }
    ratio = result["mails_per_s"] / max(result_c["mails_per_s"], 1e-9)
    ctx.row(
        "B2w",
        "mails/s, 20 ms relay",
        result["mails_per_s"],
        f"(c) 1 conn/mail {result_c['mails_per_s']:,.1f}/s",
        ratio,
        "≥ 20",
        ratio >= 20,
    )


def run_b3(ctx: Context) -> None:
    s = ctx.sizes
    b2 = ctx.details.get("B2", {}).get("mailgate")
    rate = 0.5 * b2["mails_per_s"] if b2 else 0.0
    if rate < 1:
        rate = s.b3_default_rate
        ctx.note(f"B3: no B2 rate from this invocation; using {rate:.0f} mails/s")
    count = max(10, int(rate * s.b3_seconds))
    sink = PythonSink(record=True).start()
    ws = Workspace.sqlite(ctx.work, "b3")
    account = provision(ws.database_url)
    proc, url = start_serve(ws, "b3-serve", smtp_port=sink.port, **pool_env(ctx))
    wait_http(url + "/healthz", proc, max(20.0, ctx.bound(60)))
    template = mail_json(account.api_key, s.b2_body, "b3 @@SEQ@@@")
    load = python_load(
        port_of(url),
        account.send_path,
        template,
        s.b2_connections,
        count,
        ctx.bound(s.b3_seconds + 10),
        rate=rate,
    )
    sink.wait_for(load.ok, ctx.bound(30))
    proc.stop()
    sink.stop()
    latencies = sorted(
        sink.arrivals[f"b3 {i:08d}"] - at
        for i, at in load.accepted_at.items()
        if f"b3 {i:08d}" in sink.arrivals
    )
    missing = load.ok - len(latencies)
    p50 = percentile(latencies, 50) * 1000
    p99 = percentile(latencies, 99) * 1000
    ctx.details["B3"] = {
        "rate_per_s": round(rate, 1),
        "sent": load.requests,
        "accepted": load.ok,
        "measured": len(latencies),
        "missing": missing,
        "p50_ms": round(p50, 2),
        "p90_ms": round(percentile(latencies, 90) * 1000, 2),
        "p99_ms": round(p99, 2),
        "max_ms": round((latencies[-1] if latencies else float("nan")) * 1000, 2),
        "ingest": load.summary(),
    }
    print(
        f"  B3 at {rate:.0f}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms, {missing} missing", flush=True
    )
    if missing:
        ctx.note(f"B3: {missing} accepted mails did not reach the sink within 30 s")
    ctx.row(
        "B3",
        "accept→relay p50 ms",
        p50,
        f"at {rate:,.0f} mails/s (½ B2)",
        None,
        "≤ 100 ms",
        p50 <= 100,
    )
    ctx.row(
        "B3",
        "accept→relay p99 ms",
        p99,
        f"at {rate:,.0f} mails/s (½ B2)",
        None,
        "≤ 1000 ms",
        p99 <= 1000,
    )
