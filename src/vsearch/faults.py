"""Test-only fault injection: ``VSEARCH_FAULT=<stage>[@<n>]`` makes the process SIGKILL itself.

Crash-safety tests run a command with the variable set, let it die at a named stage exactly
as a node loss or an OOM kill would (no ``finally``, no ``atexit``, buffers lost), then check
what a rerun of the same command leaves behind. Nothing in production sets the variable;
unset, :func:`fault_point` costs one environment lookup.

Stages are named where they are called (``grep -rn fault_point src``); backfill's are listed
in ``docs/indexing.md``.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "VSEARCH_FAULT"
_hits: dict[str, int] = {}
_lock = threading.Lock()


def fault_point(stage: str) -> None:
    """SIGKILL this process here if ``VSEARCH_FAULT`` names ``stage`` (test-only).

    ``VSEARCH_FAULT=write`` kills the first time ``write`` is reached, ``write@3`` the third
    time (a stage inside a loop). Safe to call from any thread: the whole process dies.
    """
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, nth = spec.partition("@")
    if name != stage:
        return
    with _lock:
        _hits[stage] = _hits.get(stage, 0) + 1
        reached = _hits[stage] >= int(nth or 1)
    if reached:
        os.kill(os.getpid(), signal.SIGKILL)
