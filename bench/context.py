"""What every scenario shares: sizes (full or smoke), the run's folders, results and notes."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sizes:
    b1_seconds: float = 15
    b1_connections: int = 50
    b2_mails: int = 10_000
    b2_body: int = 10_240
    b2_connections: int = 50  # HTTP clients feeding mailgate in B2
    pool: int = 16  # SMTP connections: mailgate's concurrency, (a)'s and (b)'s sessions
    b2_timeout: float = 150  # bound on waiting for the sink to count all mails
    b2c_mails: int = 1_500  # (c) is slow: a bounded sample, compared by rate
    b2c_seconds: float = 30
    b2w_mails: int = 2_000
    b2w_delay: float = 0.020
    b2w_timeout: float = 90
    b2wc_mails: int = 200
    b2wc_seconds: float = 25
    b3_seconds: float = 15
    b3_default_rate: float = 100  # when B2 did not run in this invocation
    b4_megabytes: int = 20
    b4_repeats: int = 3
    b4_too_large: int = 31_000_000
    b5_big: int = 200_000
    b5_small: int = 10_000
    b5_deliver: int = 4_000
    b5_seconds: float = 30
    b6_b1_seconds: float = 10
    b6_mails: int = 10_000
    b6_drain: int = 6_000  # mails queued through HTTP, then drained by 1 and by 2 workers
    profile_seconds: float = 8
    profile_mails: int = 3_000
    budget_seconds: float = 570  # the whole run stays under 10 minutes


SMOKE = Sizes(
    b1_seconds=1.0,
    b1_connections=8,
    b2_mails=40,
    b2_connections=8,
    pool=4,
    b2_timeout=12,
    b2c_mails=8,
    b2c_seconds=8,
    b2w_mails=20,
    b2w_timeout=10,
    b2wc_mails=4,
    b2wc_seconds=6,
    b3_seconds=1.5,
    b3_default_rate=20,
    b4_megabytes=2,
    b4_repeats=1,
    b5_big=1_000,
    b5_small=200,
    b5_deliver=40,
    b5_seconds=10,
    b6_b1_seconds=1.0,
    b6_mails=30,
    b6_drain=30,
    profile_seconds=0,
    profile_mails=0,
    budget_seconds=42,
)


@dataclass
class Row:
    id: str
    figure: str
    value: float | str
    reference: str
    ratio: float | None
    target: str
    met: bool | None  # None: reported only, or not measurable

    def cells(self) -> list[str]:
        def num(x: float | str | None) -> str:
            if x is None:
                return "—"
            if isinstance(x, str):
                return x
            if math.isnan(x):
                return "n/a"
            return f"{x:,.2f}" if abs(x) < 100 else f"{x:,.0f}"

        verdict = {True: "met", False: "MISSED", None: "report"}[self.met]
        return [
            self.id,
            self.figure,
            num(self.value),
            self.reference,
            num(self.ratio),
            self.target,
            verdict,
        ]


@dataclass
class Context:
    smoke: bool
    sizes: Sizes
    work: Path  # temp folder for data dirs and logs
    results: Path  # where profiles and reports go
    stamp: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    profiles: dict[str, Any] = field(default_factory=dict)
    profiler: list[str] | None = None
    started: float = field(default_factory=time.monotonic)

    def row(self, *args: Any) -> None:
        self.rows.append(Row(*args))

    def note(self, text: str) -> None:
        print(f"  note: {text}", flush=True)
        self.notes.append(text)

    def bound(self, seconds: float) -> float:
        """`seconds`, cut to what is left of the run's time budget (at least half a second)."""
        return max(0.5, min(seconds, self.remaining()))

    def remaining(self) -> float:
        return self.sizes.budget_seconds - (time.monotonic() - self.started)

    def sizes_dict(self) -> dict[str, Any]:
        return asdict(self.sizes)
