"""Drift-triggered retraining: the pure rule deciding whether a monitoring run starts a retraining run.

Off unless configured (no schedule named: fail closed, like the gate); due only when the
drift check said so. The caller (``components/trigger_retraining``) starts the run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to start the retraining run now, and why (one line, recorded either way)."""

    start: bool
    reason: str


def decide_retraining(retraining_due: bool, schedule: str) -> RetrainDecision:
    """Start a retraining run only when drift says it is due and a retraining schedule is configured.

    Args:
        retraining_due: the drift check's verdict (``detect_drift``'s output).
        schedule: name of the recurring retraining run to start early; "" means automatic
            retraining is off.
    """
    if not retraining_due:
        return RetrainDecision(False, "no drift beyond the thresholds: retraining is not due")
    if not schedule.strip():
        return RetrainDecision(False, "retraining is due, but automatic retraining is off (no retraining schedule named)")
    return RetrainDecision(True, f"retraining is due: starting a run of the recurring run '{schedule}' now")
