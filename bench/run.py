"""Run the benchmarks: `uv run python -m bench.run [--smoke] [--only B1,B2,…] [--out DIR]`.

Prints a table of ratios (each figure against a reference measured in the same run), writes
`<out>/<UTC timestamp>.json` and `<out>/<UTC timestamp>.md` (smoke: `smoke-<timestamp>.*`).
Exit status: 0 when the harness ran (missed targets included); 1 when a scenario broke.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import b1_api, b2_delivery, b4_large, b5_backlog, b6_postgres
from bench.context import SMOKE, Context, Sizes
from bench.httpload import have_wrk
from bench.procs import stop_all, tool
from bench.profiling import py_spy_command

RESULTS = Path(__file__).parent / "results"

# id → (run, rough seconds it needs at full size: skipped when the budget has less left)
SCENARIOS: dict[str, tuple[Callable[[Context], None], float]] = {
    "B1": (b1_api.run, 45),
    "B2": (b2_delivery.run_b2, 90),
    "B2w": (b2_delivery.run_b2w, 45),
    "B3": (b2_delivery.run_b3, 25),
    "B4": (b4_large.run, 25),
    "B5": (b5_backlog.run, 60),
    "B6": (b6_postgres.run, 70),
}


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average_at_start": os.getloadavg(),
    }


def tools(ctx: Context) -> dict[str, Any]:
    return {
        "wrk": tool("wrk"),
        "smtp-sink": tool("smtp-sink"),
        "smtp-source": tool("smtp-source"),
        "py-spy": " ".join(ctx.profiler) if ctx.profiler else None,
    }


def markdown(ctx: Context, report: dict[str, Any]) -> str:
    header = ["id", "figure", "value", "reference (same run)", "ratio", "target", "verdict"]
    lines = [
        f"# mailgate benchmarks — {ctx.stamp} ({'smoke' if ctx.smoke else 'full'})",
        "",
        f"Machine: {report['machine']['cpus']} CPUs, {report['machine']['cpu_model']}, "
        f"Python {report['machine']['python']}, load average at start "
        f"{', '.join(f'{x:.2f}' for x in report['machine']['load_average_at_start'])}. "
        f"Run took {report['seconds']:.0f} s.",
        "",
        "Tools: " + ", ".join(f"{k} = {v or 'absent'}" for k, v in report["tools"].items()),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in ctx.rows]
    b2 = ctx.details.get("B2")
    if b2:
        m = b2["mailgate"]
        lines += [
            "",
            "## Where B2's CPU goes",
            "",
            f"mailgate (`serve` with its in-process worker): {m['cpu_ms_per_mail']:.2f} ms CPU "
            f"per delivered mail (ingest + delivery); the sink ({b2['sink']}) "
            f"{m['sink_cpu_ms_per_mail']:.2f} ms; the aiosmtplib reference (a) "
            f"{b2['a_aiosmtplib']['cpu_ms_per_mail']:.2f} ms; the HTTP generator "
            f"{m['ingest']['generator_cpu_s']:.1f} s CPU over {m['ingest']['wall_s']:.1f} s of "
            f"ingest. SMTP sessions used: {m['sessions']} for {m['delivered']} mails.",
        ]
    if ctx.profiles:
        lines += ["", "## Profiles (py-spy, sampled; raw collapsed stacks in this folder)"]
        for name, prof in ctx.profiles.items():
            lines += ["", f"### {name} — `{prof['file']}`, {prof['samples']} samples", ""]
            lines.append("Top three costs (self time, by function):")
            lines.append("")
            for entry in prof["self"][:3]:
                lines.append(f"1. `{entry['function']}` — {100 * entry['share']:.1f}%")
            lines += ["", "Self time, top 12:", "", "| share | function |", "|---|---|"]
            lines += [f"| {100 * e['share']:.1f}% | `{e['function']}` |" for e in prof["self"]]
            lines += [
                "",
                "mailgate functions, inclusive time:",
                "",
                "| share | function |",
                "|---|---|",
            ]
            lines += [
                f"| {100 * e['share']:.1f}% | `{e['function']}` |"
                for e in prof["mailgate_inclusive"]
            ]
    elif not ctx.smoke:
        lines += ["", "## Profiles", "", "No profile: py-spy not available (see notes)."]
    if ctx.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in ctx.notes]
    if report["errors"]:
        lines += ["", "## Harness errors", ""]
        lines += [
            f"- {k}: `{v.splitlines()[-1] if v else ''}`" for k, v in report["errors"].items()
        ]
    return "\n".join(lines) + "\n"


def print_table(ctx: Context) -> None:
    header = ["id", "figure", "value", "reference", "ratio", "target", "verdict"]
    rows = [header] + [row.cells() for row in ctx.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    print()
    for r in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)))
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness")
    parser.add_argument("--only", help="comma-separated scenario ids, e.g. B1,B4")
    parser.add_argument("--out", type=Path, help=f"results folder [{RESULTS}]")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument(
        "--no-tools",
        action="store_true",
        help="ignore wrk/smtp-sink/smtp-source (Python fallbacks)",
    )
    args = parser.parse_args(argv)
    if args.no_tools:
        os.environ["MAILGATE_BENCH_NO_TOOLS"] = "1"

    wanted = list(SCENARIOS)
    if args.only:
        wanted = [x.strip() for x in args.only.split(",") if x.strip()]
        unknown = [x for x in wanted if x not in SCENARIOS]
        if unknown:
            parser.error(
                f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}"
            )
    sizes: Sizes = SMOKE if args.smoke else Sizes()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mailgate-bench-"))
    ctx = Context(args.smoke, sizes, work, out, ("smoke-" if args.smoke else "") + stamp)
    print(
        f"mailgate benchmarks ({'smoke' if args.smoke else 'full'}): {', '.join(wanted)}",
        flush=True,
    )
    if not args.smoke and not args.no_profile:
        ctx.profiler = py_spy_command()
        if ctx.profiler is None:
            ctx.note("py-spy not available (not on PATH, no uvx): profiles skipped")
    if not have_wrk():
        ctx.note("wrk not installed: HTTP load from the Python asyncio client (see its CPU/s)")
    if not tool("smtp-sink"):
        ctx.note("smtp-sink not installed: the Python sink (bench.pysink) counts the mails")

    errors: dict[str, str] = {}
    started = time.monotonic()

    def run_one(name: str) -> None:
        run, needs = SCENARIOS[name]
        if not ctx.smoke and ctx.remaining() < needs:
            ctx.note(f"{name} skipped: {ctx.remaining():.0f} s left of the time budget")
            return
        print(f"{name} …", flush=True)
        t0 = time.monotonic()
        try:
            run(ctx)
        except Exception:
            errors[name] = traceback.format_exc()
            print(f"{name} FAILED:\n{errors[name]}", file=sys.stderr, flush=True)
        finally:
            stop_all()
        ctx.details.setdefault("seconds", {})[name] = round(time.monotonic() - t0, 1)

    try:
        if ctx.smoke:
            # Smoke checks the harness, not the product: scenarios run three at a time (each
            # with its own processes) so the whole run stays under a minute on two cores.
            pool = ThreadPoolExecutor(max_workers=3)
            # Longest first, so no scenario starts when the budget is nearly spent.
            order = ["B2", "B2w", "B6", "B5", "B1", "B4", "B3"]
            ordered = sorted(wanted, key=lambda n: order.index(n) if n in order else 99)
            futures = {pool.submit(run_one, name): name for name in ordered}
            _, late = wait(futures, timeout=sizes.budget_seconds + 12)
            for future in late:
                errors[futures[future]] = "did not finish in time (hung?)\n"
            pool.shutdown(wait=not late, cancel_futures=True)
        else:
            for name in wanted:
                run_one(name)
    finally:
        stop_all(every_thread=True)
    seconds = time.monotonic() - started

    report: dict[str, Any] = {
        "stamp": ctx.stamp,
        "mode": "smoke" if args.smoke else "full",
        "seconds": seconds,
        "machine": machine(),
        "tools": tools(ctx),
        "sizes": ctx.sizes_dict(),
        "table": [row.__dict__ for row in ctx.rows],
        "details": ctx.details,
        "profiles": ctx.profiles,
        "notes": ctx.notes,
        "errors": errors,
    }
    json_path = out / f"{ctx.stamp}.json"
    md_path = out / f"{ctx.stamp}.md"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md_path.write_text(markdown(ctx, report))
    print_table(ctx)
    for note in ctx.notes:
        print(f"note: {note}")
    print(f"wrote {json_path} and {md_path} ({seconds:.0f} s)")
    if errors:
        print(f"harness errors in: {', '.join(errors)}; logs kept in {work}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # a hung scenario thread must not keep the process alive
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
