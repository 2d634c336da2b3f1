"""Processes the benchmarks start: mailgate servers and workers, sinks, tools.

Every process is started here, remembered by PID, and stopped by PID (SIGTERM, then SIGKILL)
in a `finally`; nothing is ever stopped by name.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from mailgate.store import directory
from mailgate.store.db import create_engine
from mailgate.store.migrate import upgrade

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# Started processes per thread: the smoke run executes scenarios in parallel threads, and a
# scenario's `finally` must stop its own processes only.
_lock = threading.Lock()
_started: dict[int, list[Proc]] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def tool(name: str) -> str | None:
    """A Debian tool on PATH or in /usr/sbin (smtp-sink lives there), else None.

    MAILGATE_BENCH_NO_TOOLS=1 (`--no-tools`) hides them all, to exercise the Python fallbacks.
    """
    if os.environ.get("MAILGATE_BENCH_NO_TOOLS") == "1":
        return None
    found = shutil.which(name)
    if found:
        return found
    candidate = Path("/usr/sbin") / name
    return str(candidate) if candidate.exists() and os.access(candidate, os.X_OK) else None


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (not its children), from /proc/PID/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid: int, key: str) -> int:
    """A `kB` line of /proc/PID/status (VmRSS, VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0, own processes); False when not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Proc:
    """One child process, stopped by its PID."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        log: Path | None = None,
        stdout: int | IO[Any] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = {**os.environ, **(env or {})}
        self.log = log
        self.stdout = stdout
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        out: Any = self.stdout
        handle = None
        if out is None and self.log is not None:
            handle = open(self.log, "ab")  # noqa: SIM115 - closed right below
            out = handle
        try:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out if out is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT if handle is not None else None,
                stdin=subprocess.DEVNULL,
            )
        finally:
            if handle is not None:
                handle.close()
        with _lock:
            _started.setdefault(threading.get_ident(), []).append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def cpu(self) -> float:
        return proc_cpu(self.pid)

    def stop(self, timeout: float = 8.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        try:
            os.kill(self.pid, signal.SIGCONT)  # in case it was paused
            self.popen.send_signal(signal.SIGTERM)
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
        except ProcessLookupError:
            pass

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def tail(self, lines: int = 30) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def stop_all(every_thread: bool = False) -> None:
    """Stop the processes this thread (or, at the end, any thread) started, newest first."""
    with _lock:
        if every_thread:
            procs = [p for ps in _started.values() for p in ps]
            _started.clear()
        else:
            procs = _started.pop(threading.get_ident(), [])
    while procs:
        proc = procs.pop()
        try:
            proc.stop()
        except Exception as error:  # keep stopping the rest
            print(f"bench: could not stop {proc.name} (pid {proc.pid}): {error}", file=sys.stderr)


def wait_http(url: str, proc: Proc | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


# ---------------------------------------------------------------------------------------------
# mailgate


@dataclass
class Account:
    site_id: int
    record_id: int
    user_id: int
    api_key: str

    @property
    def send_path(self) -> str:
        return f"/api/items/{self.record_id}/OutgoingMails/Send"


@dataclass
class Workspace:
    """A temp data dir and database for one mailgate setup."""

    root: Path
    database_url: str

    @classmethod
    def sqlite(cls, parent: Path, name: str) -> Workspace:
        root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
        return cls(root, f"sqlite:///{root}/mailgate.db")

    def env(self, smtp_port: int | None = None, **extra: str) -> dict[str, str]:
        env = {
            "MAILGATE_DATA_DIR": str(self.root),
            "MAILGATE_DATABASE_URL": self.database_url,
            "MAILGATE_REFERENCE_ENDPOINT": "1",
            "MAILGATE_DELIVERY_CONCURRENCY": "16",
            # A refused or slow mail must not vanish into hours of backoff during a run.
            "MAILGATE_RETRY_BASE_DELAY": "1",
        }
        if smtp_port is not None:
            env |= {
                "MAILGATE_SMTP_HOST": HOST,
                "MAILGATE_SMTP_PORT": str(smtp_port),
                "MAILGATE_TRANSPORT": "smtp",
            }
        else:
            env["MAILGATE_TRANSPORT"] = "capture"
        env.update(extra)
        return env


async def _provision(database_url: str) -> Account:
    engine = create_engine(database_url, pool_size=2)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            site = await directory.add_site(conn, "Bench site")
            record = await directory.add_record(conn, site, "Bench record")
            user = await directory.add_user(
                conn, "bench", "Bench User", ["bench@example.com"], "en"
            )
            await directory.grant(conn, site, "bench", read=True, send_mail=True)
            key = await directory.create_key(conn, "bench")
        return Account(site, record, user, key)
    finally:
        await engine.dispose()


_provision_lock = threading.Lock()


def provision(database_url: str) -> Account:
    """Schema, a site, a record, a user allowed to send from it, and an API key."""
    # Alembic keeps global state: one migration at a time in this process (smoke uses threads).
    with _provision_lock:
        return asyncio.run(_provision(database_url))


class Mailgate(Proc):
    """`python -m mailgate serve|worker …` (the venv's interpreter, so the PID is mailgate's)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        super().__init__(name, [sys.executable, "-m", "mailgate", *args], env, log)


def start_serve(
    ws: Workspace,
    name: str,
    smtp_port: int | None = None,
    worker: bool = True,
    **extra_env: str,
) -> tuple[Mailgate, str]:
    port = free_port()
    args = ["serve", "--host", HOST, "--port", str(port), "--no-bootstrap"]
    if not worker:
        args.append("--no-worker")
    proc = Mailgate(name, args, ws.env(smtp_port, **extra_env), ws.root / f"{name}.log")
    return proc.start(), f"http://{HOST}:{port}"  # type: ignore[return-value]


def start_worker(ws: Workspace, name: str, smtp_port: int, **extra_env: str) -> Mailgate:
    proc = Mailgate(name, ["worker"], ws.env(smtp_port, **extra_env), ws.root / f"{name}.log")
    proc.start()
    return proc
