"""Sampling profiles of a running mailgate process with py-spy, and their top costs.

py-spy is used from PATH, else through `uvx --from py-spy py-spy` (PyPI ships it as a
wheel with the binary); when neither works the profile is skipped with a note.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any


def py_spy_command() -> list[str] | None:
    found = shutil.which("py-spy")
    if found:
        return [found]
    uvx = [shutil.which("uvx") or ""] if shutil.which("uvx") else None
    if uvx is None and shutil.which("uv"):
        uvx = [str(shutil.which("uv")), "tool", "run"]
    if uvx:
        try:
            done = subprocess.run(
                [*uvx, "--from", "py-spy", "py-spy", "--version"],
                capture_output=True,
                timeout=120,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None
        if done.returncode == 0:
            return [*uvx, "--from", "py-spy", "py-spy"]
    return None


class Recording:
    """`py-spy record --format raw` of one PID for a fixed time, in a background thread."""

    def __init__(self, command: list[str], pid: int, seconds: float, output: Path) -> None:
        self.output = output
        self.error: str | None = None
        self.argv = [
            *command,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            "200",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(output),
        ]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.seconds = seconds

    def _run(self) -> None:
        try:
            done = subprocess.run(
                self.argv, capture_output=True, text=True, timeout=self.seconds + 60, check=False
            )
            if done.returncode != 0 or not self.output.exists():
                self.error = (done.stderr or done.stdout).strip()[-500:]
        except subprocess.TimeoutExpired:
            self.error = "py-spy timed out"

    def start(self) -> Recording:
        self.thread.start()
        return self

    def join(self) -> None:
        self.thread.join(self.seconds + 90)


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/module.py:123)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def top_costs(raw: Path, limit: int = 12) -> dict[str, Any]:
    """Self time by function, and inclusive time by mailgate function, from collapsed stacks."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        self_time[frames[-1]] += count
        for name in set(frames):
            if "mailgate/" in name or "(mailgate" in name:
                inclusive[name] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "share": round(count / total, 4), "samples": count}
            for name, count in counter.most_common(limit)
        ]

    return {"samples": total, "self": share(self_time), "mailgate_inclusive": share(inclusive)}
