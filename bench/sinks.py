"""SMTP sinks that count at the finish line: postfix's `smtp-sink`, or `bench.pysink`.

Both are child processes whose stdout a reader thread parses into counts of sessions and
messages with arrival times, so "accepted by the sink" is measured at the sink itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

from bench.procs import HOST, Proc, free_port, tool

_COUNTERS = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")


class Sink:
    kind = "sink"

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: Proc | None = None
        self.lock = threading.Lock()
        self.messages = 0
        self.sessions = 0
        self.last_at = 0.0  # time.time() of the latest message
        self.samples: list[tuple[float, int]] = []  # (time, messages so far)
        self.arrivals: dict[str, float] = {}  # subject → time (pysink --record only)
        self._ready = threading.Event()

    # the reader thread fills the counters
    def _reader(self, fd: int) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _start(self, argv: list[str], name: str) -> Sink:
        self.proc = Proc(name, argv, stdout=subprocess.PIPE)
        self.proc.start()
        assert self.proc.popen is not None and self.proc.popen.stdout is not None
        fd = self.proc.popen.stdout.fileno()
        threading.Thread(target=self._reader, args=(fd,), daemon=True).start()
        self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 15.0) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if not self.proc.alive():
                raise RuntimeError(f"{self.proc.name} exited with {self.proc.popen.returncode}")  # type: ignore[union-attr]
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"sink on port {self.port} did not start")

    def snapshot(self) -> tuple[int, int, float]:
        with self.lock:
            return self.messages, self.sessions, self.last_at

    def wait_for(self, messages: int, timeout: float) -> bool:
        """Block until the sink has counted `messages` in total (True) or `timeout` passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.messages >= messages:
                return True
            if self.proc is not None and not self.proc.alive():
                raise RuntimeError(f"{self.proc.name} died")
            time.sleep(0.01)
        return self.messages >= messages

    def wait_quiet(self, quiet: float = 0.5, timeout: float = 10.0) -> None:
        """Wait until no message arrived for `quiet` seconds (stragglers of a previous step)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if time.time() - max(self.last_at, 0) >= quiet:
                return
            time.sleep(0.05)

    def rate_between(self, start_count: int, end_count: int) -> float:
        """Messages per second from the arrival of message #start_count to #end_count."""
        with self.lock:
            inside = [(t, c) for t, c in self.samples if start_count <= c <= end_count]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return float("nan")
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def cpu(self) -> float:
        return self.proc.cpu() if self.proc else float("nan")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class PostfixSink(Sink):
    """`smtp-sink -c`: its running counters (`sess=… quit=… mesg=…`) are parsed as they come."""

    kind = "smtp-sink"

    def start(self) -> PostfixSink:
        binary = tool("smtp-sink")
        if binary is None:
            raise RuntimeError("smtp-sink is not installed")
        argv = [binary, "-c"]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]  # smtp-sink refuses to keep root privileges
        argv += [f"{HOST}:{self.port}", "1024"]
        self._start(argv, "smtp-sink")
        return self

    def _reader(self, fd: int) -> None:
        tail = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            now = time.time()
            data = tail + chunk
            found = list(_COUNTERS.finditer(data))
            if found:
                last = found[-1]
                tail = data[last.end() :]
                sess, mesg = int(last.group(1)), int(last.group(3))
                with self.lock:
                    self.sessions = sess
                    if mesg > self.messages:
                        self.messages = mesg
                        self.last_at = now
                        self.samples.append((now, mesg))
            else:
                tail = data[-64:]


class PythonSink(Sink):
    """`python -m bench.pysink`: optional per-reply delay and per-Subject arrival times."""

    kind = "pysink"

    def __init__(self, delay: float = 0.0, record: bool = False) -> None:
        super().__init__()
        self.delay = delay
        self.record = record

    def start(self) -> PythonSink:
        argv = [sys.executable, "-m", "bench.pysink", "--port", str(self.port)]
        if self.delay:
            argv += ["--delay", str(self.delay)]
        if self.record:
            argv.append("--record")
        self._start(argv, "pysink")
        return self

    def _reader(self, fd: int) -> None:
        with os.fdopen(fd, "rb", closefd=False) as stream:
            for raw in stream:
                parts = raw.decode("ascii", "replace").rstrip("\n").split(" ", 2)
                if parts[0] == "S":
                    with self.lock:
                        self.sessions += 1
                elif parts[0] == "M":
                    at = float(parts[1])
                    with self.lock:
                        self.messages += 1
                        self.last_at = max(self.last_at, at)
                        self.samples.append((at, self.messages))
                        if len(parts) > 2 and parts[2]:
                            self.arrivals[parts[2]] = at


def fast_sink() -> Sink:
    """The throughput sink: postfix's smtp-sink when installed, else the Python one."""
    if tool("smtp-sink"):
        return PostfixSink().start()
    return PythonSink().start()


def smtp_source(port: int, sessions: int, messages: int, size: int, timeout: float) -> float:
    """`smtp-source -d` (connections reused): seconds to push `messages` of `size` bytes."""
    binary = tool("smtp-source")
    if binary is None:
        raise RuntimeError("smtp-source is not installed")
    argv = [
        binary,
        "-d",
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-l",
        str(size),
        "-f",
        "bench@example.com",
        "-t",
        "rcpt@example.com",
        f"{HOST}:{port}",
    ]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, timeout=timeout, capture_output=True)
    return time.perf_counter() - t0
