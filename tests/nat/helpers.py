"""Small helpers shared by the namespace tests and the NAT benchmark."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from nat.topology import missing_requirements

MISSING = missing_requirements()
needs_netns = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def finish(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """Wait (bounded) for a netns_peer.py process and parse its one JSON line.

    On timeout the process is killed and the result says so, so a hang shows up as a failed
    assertion with the process's stderr rather than as a stuck test run.
    """
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=5)
        return {"ok": False, "error": "HANG", "stderr": err[-2000:], "stdout": out[-2000:]}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        return {"ok": False, "error": "NO-OUTPUT", "rc": proc.returncode, "stderr": err[-2000:]}
    result: dict[str, Any] = json.loads(lines[-1])
    result["stderr"] = err[-2000:]
    return result
