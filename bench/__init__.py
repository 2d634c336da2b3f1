"""mailgate benchmarks: every figure is a ratio to a reference measured in the same run.

Entry point: `uv run python -m bench.run [--smoke] [--only B1,B2,…]` (see docs/performance.md).
"""
