"""Running the `mailgate` command line as a user does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def mailgate(
    *args: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "mailgate", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"mailgate {' '.join(args)} failed: {result.stderr}")
    return result


def mailgate_json(*args: str, env: dict[str, str]) -> Any:
    """The one JSON document the command prints with --json."""
    return json.loads(mailgate(*args, "--json", env=env).stdout)
