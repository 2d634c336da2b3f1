"""B4: one 20 MB (decoded) attachment through the compat route.

Peak RSS growth of the API process (VmHWM after the call − VmRSS before, with the peak reset
through /proc/PID/clear_refs) and of a separate `mailgate worker` that delivers it, each
against the payload size; MB/s of the compat route against the bare endpoint receiving the
same bytes; a 31 MB body must get the contract's 413 and leave the server answering.
"""

from __future__ import annotations

import base64
import os
import statistics
import time
from typing import Any

import orjson

from bench.b1_api import BARE, check_send, port_of
from bench.context import Context
from bench.httpload import mail_json, one_request
from bench.procs import (
    Workspace,
    proc_status_kb,
    provision,
    reset_peak_rss,
    start_serve,
    start_worker,
    wait_http,
)
from bench.sinks import fast_sink


def settle(pid_cpu: Any, quiet: float = 0.4, timeout: float = 30) -> None:
    """Wait until a process stops using CPU (done importing and starting)."""
    deadline = time.monotonic() + timeout
    last = pid_cpu()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = pid_cpu()
        if now - last < 0.02:
            return
        last = now


def run(ctx: Context) -> None:
    s = ctx.sizes
    payload = os.urandom(s.b4_megabytes * 1024 * 1024)
    mb = len(payload) / 1e6
    encoded = base64.b64encode(payload).decode()
    attachment = [{"Name": "big.bin", "Base64": encoded, "ContentType": "application/octet-stream"}]
    sink = fast_sink()
    ws = Workspace.sqlite(ctx.work, "b4")
    account = provision(ws.database_url)
    body = mail_json(account.api_key, 200, "b4 big", attachment)
    api, url = start_serve(ws, "b4-serve", smtp_port=sink.port, worker=False)
    worker = start_worker(ws, "b4-worker", sink.port)
    wait_http(url + "/healthz", api, max(20.0, ctx.bound(60)))
    check_send(url, account, mail_json(account.api_key, 100), ctx.bound(30))
    sink.wait_for(1, ctx.bound(30))
    settle(worker.cpu, timeout=ctx.bound(30))
    settle(api.cpu, timeout=ctx.bound(30))
    port = port_of(url)

    worker_rss0 = proc_status_kb(worker.pid, "VmRSS")
    peak_reset = reset_peak_rss(worker.pid)
    compat_times: list[float] = []
    api_growth_kb = 0
    for i in range(s.b4_repeats):
        base = sink.snapshot()[0]
        reset_peak_rss(api.pid)
        rss0 = proc_status_kb(api.pid, "VmRSS")
        status, seconds, answer = one_request(port, account.send_path, body, ctx.bound(120))
        hwm = proc_status_kb(api.pid, "VmHWM")
        if status != 200:
            raise RuntimeError(f"B4 compat call {i} answered {status}: {answer[:300]!r}")
        compat_times.append(seconds)
        api_growth_kb = max(api_growth_kb, hwm - rss0)
        # One at a time: the worker's delivery must not overlap the next acceptance.
        if not sink.wait_for(base + 1, ctx.bound(120)):
            raise RuntimeError("B4: the big mail did not reach the sink in 120 s")
    worker_growth_kb = proc_status_kb(worker.pid, "VmHWM") - worker_rss0

    bare_times: list[float] = []
    for _ in range(s.b4_repeats):
        status, seconds, _ = one_request(port, BARE, body, ctx.bound(120))
        if status != 200:
            raise RuntimeError(f"B4 bare endpoint answered {status}")
        bare_times.append(seconds)

    # Over the limit: the contract's 413, and the server still serves.
    head = b'{"ApiVersion":1.1,"ApiKey":"' + account.api_key.encode() + b'","To":"r@example.com",'
    head += b'"Title":"too big","Body":"","Attachments":[{"Name":"x.bin","Base64":"'
    tail = b'","ContentType":"application/octet-stream"}]}'
    too_large = head + b"A" * (s.b4_too_large - len(head) - len(tail)) + tail
    status_413, seconds_413, answer_413 = one_request(
        port, account.send_path, too_large, ctx.bound(60)
    )
    try:
        code_413 = orjson.loads(answer_413).get("StatusCode")
    except orjson.JSONDecodeError:
        code_413 = None
    wait_http(url + "/healthz", api, timeout=10)
    check_send(url, account, mail_json(account.api_key, 100), ctx.bound(30))
    unharmed = api.alive()
    api.stop()
    worker.stop()
    sink.stop()

    compat_mbps = mb / statistics.median(compat_times)
    bare_mbps = mb / statistics.median(bare_times)
    api_ratio = api_growth_kb * 1024 / len(payload)
    worker_ratio = worker_growth_kb * 1024 / len(payload)
    ctx.details["B4"] = {
        "payload_bytes": len(payload),
        "body_bytes": len(body),
        "compat_seconds": [round(t, 3) for t in compat_times],
        "bare_seconds": [round(t, 3) for t in bare_times],
        "compat_mb_per_s": round(compat_mbps, 1),
        "bare_mb_per_s": round(bare_mbps, 1),
        "api_peak_rss_growth_mb": round(api_growth_kb / 1024, 1),
        "worker_peak_rss_growth_mb": round(worker_growth_kb / 1024, 1),
        "peak_reset_supported": peak_reset,
        "too_large": {
            "body_bytes": len(too_large),
            "http_status": status_413,
            "StatusCode": code_413,
            "seconds": round(seconds_413, 3),
            "server_answers_after": unharmed,
        },
    }
    print(
        f"  B4: compat {compat_mbps:.0f} MB/s vs bare {bare_mbps:.0f} MB/s; RSS growth "
        f"api {api_ratio:.1f}x worker {worker_ratio:.1f}x payload; 31 MB → {status_413}",
        flush=True,
    )
    if not peak_reset:
        ctx.note("B4: /proc/PID/clear_refs not writable; peak RSS is since process start")
    ctx.row(
        "B4",
        "API peak RSS growth / payload",
        api_ratio,
        f"payload {mb:.0f} MB",
        api_ratio,
        "≤ 3.0",
        api_ratio <= 3,
    )
    ctx.row(
        "B4",
        "worker peak RSS growth / payload",
        worker_ratio,
        f"payload {mb:.0f} MB",
        worker_ratio,
        "≤ 3.0",
        worker_ratio <= 3,
    )
    ctx.row(
        "B4",
        "compat MB/s",
        compat_mbps,
        f"bare {bare_mbps:,.0f} MB/s",
        compat_mbps / bare_mbps,
        "≥ 0.25",
        compat_mbps / bare_mbps >= 0.25,
    )
    ok_413 = status_413 == 413 and code_413 == 413 and unharmed
    ctx.row(
        "B4",
        "31 MB body",
        f"HTTP {status_413}",
        "contract: 413",
        None,
        "413, server answers",
        ok_413,
    )
