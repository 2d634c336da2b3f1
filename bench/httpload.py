"""HTTP load: `wrk` with a Lua script when installed, else a bounded asyncio HTTP/1.1 client.

The Python client keeps connections alive, sends pre-built request bytes (a fixed-width
sequence number may be patched into each body), parses only the status line and
Content-Length, and reports its own CPU time next to the wall time, so a reader can see
whether the generator, not the server, was the limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import string
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import HOST, tool

SEQ = b"@@SEQ@@@"  # 8 bytes, replaced by an 8-digit sequence number: Content-Length stays fixed


def text_of(size: int, seed: int = 1) -> str:
    """Plain ASCII prose-like text of `size` characters in 72-column lines."""
    rnd = random.Random(seed)
    words = ["".join(rnd.choices(string.ascii_lowercase, k=rnd.randint(2, 9))) for _ in range(400)]
    out: list[str] = []
    line = ""
    total = 0
    while total < size:
        word = rnd.choice(words)
        if len(line) + len(word) + 1 > 72:
            out.append(line)
            total += len(line) + 2
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "\r\n".join(out)[:size]


def mail_json(
    api_key: str,
    body_size: int,
    title: str = "bench @@SEQ@@@",
    attachments: list[dict[str, str]] | None = None,
) -> bytes:
    """A Pleasanter send-call body; `title` may hold SEQ for a per-request number."""
    doc: dict[str, Any] = {
        "ApiVersion": 1.1,
        "ApiKey": api_key,
        "To": "rcpt@example.com",
        "Cc": "",
        "Bcc": "",
        "Title": title,
        "Body": text_of(body_size),
    }
    if attachments:
        doc["Attachments"] = attachments
    return json.dumps(doc).encode()


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


@dataclass
class LoadResult:
    tool: str
    requests: int = 0
    ok: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    wall: float = 0.0
    gen_cpu: float = 0.0
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    first_send: float = 0.0  # time.time() of the first request
    accepted_at: dict[int, float] = field(default_factory=dict)  # seq → time.time() of its 200

    @property
    def rps(self) -> float:
        return self.ok / self.wall if self.wall else 0.0

    @property
    def gen_cpu_share(self) -> float:
        """Generator CPU seconds per wall second (1.0 = one core saturated)."""
        return self.gen_cpu / self.wall if self.wall else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "requests": self.requests,
            "ok": self.ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
            "wall_s": round(self.wall, 3),
            "req_per_s": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p90_ms": round(self.p90_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "max_ms": round(self.max_ms, 2),
            "generator_cpu_s": round(self.gen_cpu, 3),
            "generator_cpu_per_wall_s": round(self.gen_cpu_share, 3),
        }


# ---------------------------------------------------------------------------------------------
# the Python client


class _Shared:
    def __init__(self) -> None:
        self.next = 0


def _request_head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    length = 0
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.find(b"\r\n", at + 2)
        length = int(lower[at + 17 : end])
    body = await reader.readexactly(length) if length else b""
    close = b"\r\nconnection: close" in lower
    return status, close, body


async def _client(
    port: int,
    path: str,
    template: bytes,
    shared: _Shared,
    count: int,
    deadline: float,
    t0: float,
    rate: float | None,
    result: LoadResult,
    latencies: list[float],
) -> None:
    head = _request_head(path, len(template))
    seq_at = template.find(SEQ)
    reader = writer = None
    try:
        while True:
            i = shared.next
            if i >= count or time.perf_counter() >= deadline:
                return
            shared.next += 1
            if rate:
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
            body = template
            if seq_at >= 0:
                body = template[:seq_at] + b"%08d" % i + template[seq_at + 8 :]
            start = time.perf_counter()
            if not result.first_send:
                result.first_send = time.time()
            try:
                writer.write(head + body)
                assert reader is not None
                status, close, _ = await asyncio.wait_for(
                    _read_response(reader), min(30.0, max(1.0, deadline + 5 - start))
                )
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                result.errors += 1
                writer.close()
                reader = writer = None
                continue
            latencies.append(time.perf_counter() - start)
            result.requests += 1
            result.statuses[status] += 1
            if status == 200:
                result.ok += 1
                result.accepted_at[i] = time.time()
            if close:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def _load(
    port: int,
    path: str,
    template: bytes,
    connections: int,
    count: int,
    duration: float,
    rate: float | None,
) -> LoadResult:
    result = LoadResult("python-asyncio")
    shared = _Shared()
    latencies: list[float] = []
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(
        *(
            _client(port, path, template, shared, count, t0 + duration, t0, rate, result, latencies)
            for _ in range(connections)
        )
    )
    result.wall = time.perf_counter() - t0
    result.gen_cpu = time.process_time() - cpu0
    latencies.sort()
    result.p50_ms = percentile(latencies, 50) * 1000
    result.p90_ms = percentile(latencies, 90) * 1000
    result.p99_ms = percentile(latencies, 99) * 1000
    result.max_ms = (latencies[-1] if latencies else float("nan")) * 1000
    return result


def python_load(
    port: int,
    path: str,
    template: bytes,
    connections: int,
    count: int,
    duration: float,
    rate: float | None = None,
) -> LoadResult:
    """At most `count` requests and at most `duration` seconds (open loop when `rate` is set)."""
    return asyncio.run(_load(port, path, template, connections, count, duration, rate))


# ---------------------------------------------------------------------------------------------
# wrk

_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("%(body)s", "rb"))
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"status_errors":%%d,"connect_errors":%%d,' ..
    '"read_errors":%%d,"write_errors":%%d,"timeouts":%%d,"p50_us":%%d,"p90_us":%%d,' ..
    '"p99_us":%%d,"max_us":%%d}\\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def have_wrk() -> bool:
    return tool("wrk") is not None


def wrk_load(
    port: int, path: str, body: bytes, connections: int, duration: float, threads: int = 2
) -> LoadResult:
    """`wrk` for `duration` seconds; non-2xx answers are counted as status errors."""
    wrk = tool("wrk")
    assert wrk is not None
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(body.replace(SEQ, b"00000000"))
        script = Path(tmp) / "post.lua"
        script.write_text(_LUA % {"body": body_file})
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        first = time.time()
        done = subprocess.run(
            [
                wrk,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(duration))}s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                f"http://{HOST}:{port}{path}",
            ],
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=False,
        )
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    data = json.loads(line[8:])
    result = LoadResult("wrk")
    duration_s = data["duration_us"] / 1e6
    errors = data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"]
    result.requests = data["requests"]
    result.ok = data["requests"] - data["status_errors"]
    result.statuses[200] = result.ok
    if data["status_errors"]:
        result.statuses[0] = data["status_errors"]  # wrk does not say which status
    result.errors = errors
    result.wall = duration_s or wall
    result.gen_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    result.p50_ms = data["p50_us"] / 1000
    result.p90_ms = data["p90_us"] / 1000
    result.p99_ms = data["p99_us"] / 1000
    result.max_ms = data["max_us"] / 1000
    result.first_send = first
    return result


def load(
    port: int,
    path: str,
    body: bytes,
    connections: int,
    duration: float,
    count: int = 10**9,
    prefer_wrk: bool = True,
) -> LoadResult:
    """Closed-loop load for a duration: wrk when installed, else the Python client."""
    if prefer_wrk and have_wrk():
        return wrk_load(port, path, body, connections, duration)
    return python_load(port, path, body, connections, count, duration)


# ---------------------------------------------------------------------------------------------
# one big request


async def _one_big(port: int, path: str, body: bytes, timeout: float) -> tuple[int, float, bytes]:
    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
    t0 = time.perf_counter()

    async def send() -> None:
        try:
            writer.write(_request_head(path, len(body)))
            view = memoryview(body)
            for at in range(0, len(body), 1 << 20):
                writer.write(view[at : at + (1 << 20)])
                await writer.drain()
        except OSError:
            pass  # the server may answer (413) and close before reading it all

    sender = asyncio.create_task(send())
    try:
        status, _, answer = await asyncio.wait_for(_read_response(reader), timeout)
        elapsed = time.perf_counter() - t0
    finally:
        sender.cancel()
        writer.close()
    return status, elapsed, answer


def one_request(
    port: int, path: str, body: bytes, timeout: float = 120
) -> tuple[int, float, bytes]:
    """POST one (large) body on a fresh connection: (status, seconds, answer body)."""
    return asyncio.run(_one_big(port, path, body, timeout))


def cpu_count() -> int:
    return os.cpu_count() or 1
