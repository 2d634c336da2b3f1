"""B1: the compat route's req/s and p99 against the bare JSON endpoint of the same process."""

from __future__ import annotations

from typing import Any

import httpx

from bench.context import Context
from bench.httpload import LoadResult, load, mail_json, python_load
from bench.procs import Account, Mailgate, Workspace, provision, start_serve, wait_http
from bench.profiling import Recording, top_costs

BARE = "/_reference/bare"


def check_send(url: str, account: Account, body: bytes, timeout: float = 30) -> None:
    """One real call first: a benchmark of 4xx answers would be fast and worthless."""
    answer = httpx.post(
        url + account.send_path,
        content=body.replace(b"@@SEQ@@@", b"00000000"),
        headers={"content-type": "application/json"},
        timeout=timeout,
    )
    if answer.status_code != 200:
        raise RuntimeError(f"compat route answered {answer.status_code}: {answer.text}")
    bare = httpx.post(url + BARE, content=body, timeout=timeout)
    if bare.status_code != 200:
        raise RuntimeError(
            f"bare endpoint answered {bare.status_code}: is MAILGATE_REFERENCE_ENDPOINT honoured?"
        )


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def measure_pair(
    ctx: Context,
    proc: Mailgate,
    url: str,
    account: Account,
    label: str,
    seconds: float,
    connections: int,
) -> dict[str, Any]:
    body = mail_json(account.api_key, 2048)
    check_send(url, account, body, ctx.bound(30))
    port = port_of(url)
    # Warm up both routes (imports, connection pool, caches) outside the measurement.
    python_load(port, BARE, body, 4, 200, 0.5)
    python_load(port, account.send_path, body, 4, 200, 0.5)
    out: dict[str, Any] = {"body_bytes": len(body), "connections": connections}
    results: dict[str, LoadResult] = {}
    for name, path in (("bare", BARE), ("compat", account.send_path)):
        cpu0 = proc.cpu()
        result = load(port, path, body, connections, ctx.bound(seconds))
        cpu = proc.cpu() - cpu0
        results[name] = result
        out[name] = result.summary() | {
            "server_cpu_s": round(cpu, 3),
            "server_cpu_ms_per_request": round(1000 * cpu / max(result.ok, 1), 3),
        }
        print(
            f"  {label} {name}: {result.rps:,.0f} req/s, p99 {result.p99_ms:.1f} ms "
            f"({result.tool}, {result.ok} ok of {result.requests}, "
            f"generator {result.gen_cpu_share:.2f} CPU/s)",
            flush=True,
        )
        if result.ok < result.requests or result.errors:
            ctx.note(
                f"{label} {name}: {result.requests - result.ok} non-200 answers and "
                f"{result.errors} transport errors"
            )
    out["ratio"] = results["compat"].rps / results["bare"].rps if results["bare"].rps else 0.0
    return out


def profile_api(ctx: Context, proc: Mailgate, url: str, account: Account, name: str) -> None:
    if not ctx.profiler or ctx.sizes.profile_seconds <= 0:
        return
    seconds = ctx.sizes.profile_seconds
    output = ctx.results / f"{ctx.stamp}-{name}.pyspy.txt"
    recording = Recording(ctx.profiler, proc.pid, seconds, output).start()
    body = mail_json(account.api_key, 2048)
    load(port_of(url), account.send_path, body, ctx.sizes.b1_connections, seconds)
    recording.join()
    if recording.error:
        ctx.note(f"{name} profile failed: {recording.error}")
        return
    ctx.profiles[name] = {"file": output.name} | top_costs(output)


def run(ctx: Context) -> None:
    s = ctx.sizes
    ws = Workspace.sqlite(ctx.work, "b1")
    account = provision(ws.database_url)
    proc, url = start_serve(ws, "b1-serve", worker=False)
    wait_http(url + "/healthz", proc, max(20.0, ctx.bound(60)))
    pair = measure_pair(ctx, proc, url, account, "B1", s.b1_seconds, s.b1_connections)
    ctx.details["B1"] = pair
    bare, compat = pair["bare"], pair["compat"]
    ctx.row(
        "B1",
        "compat req/s",
        compat["req_per_s"],
        f"bare {bare['req_per_s']:,.0f} req/s",
        pair["ratio"],
        "≥ 0.50",
        pair["ratio"] >= 0.5,
    )
    ctx.row(
        "B1",
        "compat p99 ms",
        compat["p99_ms"],
        f"bare p99 {bare['p99_ms']:.1f} ms",
        None,
        "≤ 50 ms",
        compat["p99_ms"] <= 50,
    )
    ctx.row(
        "B1",
        "generator CPU/s on bare",
        bare["generator_cpu_per_wall_s"],
        f"{bare['tool']}, {s.b1_connections} connections",
        None,
        f"< {1.0 if bare['tool'] != 'wrk' else 2.0:.1f} (not the limit)",
        None,
    )
    profile_api(ctx, proc, url, account, "B1")
