"""Freed attachment-sized buffers go back to the OS instead of staying in the heap."""

from __future__ import annotations

import subprocess
import sys

import pytest

_PROBE = """
import sys
from mailgate.memory import return_big_blocks_to_the_os

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024

if sys.argv[1] == "pinned":
    assert return_big_blocks_to_the_os()
for size in (30, 20, 20):
    # After the first big block is freed, glibc would serve the next ones from the heap.
    block = bytearray(size * 1024 * 1024)
    del block
print(rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; glibc only")
def test_big_blocks_are_returned_after_use() -> None:
    def rss_after(mode: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True
        )
        return int(done.stdout)

    pinned, default = rss_after("pinned"), rss_after("default")
    assert default - pinned >= 15, (pinned, default)
