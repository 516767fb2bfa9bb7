"""The mediator-log reader of the namespace tests (no namespace needed): lines that arrive
together must all be seen, in order, across calls (the root cause of a flaky NAT test)."""

from __future__ import annotations

import subprocess
import sys

from nat.helpers import stop, wait_for_log

_TWO_LINES_AT_ONCE = (
    "import sys, time\n"
    'sys.stderr.write(\'{"event": "challenged"}\\n{"event": "registered"}\\n'
    '{"event": "pai\')\n'
    "sys.stderr.flush()\n"
    "time.sleep(0.3)\n"
    "sys.stderr.write('red\"}\\n')\n"
    "sys.stderr.flush()\n"
    "time.sleep(30)\n"
)


def test_lines_that_arrive_together_are_all_seen() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _TWO_LINES_AT_ONCE], stderr=subprocess.PIPE, text=True
    )
    try:
        # all three writes of the first burst are in the pipe before the first read
        assert wait_for_log(proc, "challenged", 10.0) == {"event": "challenged"}
        # the second line came in the same read: it must not wait for more pipe data
        assert wait_for_log(proc, "registered", 0.1) == {"event": "registered"}
        # a line split across two writes is joined
        assert wait_for_log(proc, "paired", 10.0) == {"event": "paired"}
        assert wait_for_log(proc, "introduced", 0.2) is None
    finally:
        stop(proc)
