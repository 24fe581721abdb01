"""The gate's configuration and its pure decision rule (no I/O), as in TFX's Evaluator.

`decide` is a pure function over numbers: the candidate's metric values, and for each
comparison (baseline, champion) the paired difference with its bootstrap CI. It returns a
`Decision` with every check, its numbers and a reason a human can read. `GateConfig` holds
the thresholds (``configs/gate.yaml``, read by `vsearch.evaluation.gate.load_gate_config`);
`vsearch.evaluation.gate` gathers the numbers and writes the blessing.

The rule fails closed: no thresholds configured -> not blessed; a metric that is missing or
not finite fails its check; with no champion yet the champion checks are skipped (the reason
says so) and the decision rests on the value and baseline thresholds, and if none are
configured it is not blessed either.

Check semantics (``improvement`` is oriented so that positive = better, whatever the
metric's direction: ``candidate - reference`` for higher-is-better metrics,
``reference - candidate`` for lower-is-better ones):

* ``min_improvement: m`` passes iff ``statistic > m`` (strictly: "beats by more than m");
* ``max_regression: r`` passes iff ``statistic >= -r`` ("is not worse by more than r");
* ``statistic`` is the mean improvement, or with ``ci: true`` the lower bound of the
  paired bootstrap CI of the improvement (so the candidate must beat the reference with
  the whole CI above the margin); with ``relative: true`` it is divided by ``|reference|``.
* value checks (``against: value``) bound the candidate's own value: ``min``/``max``; with
  ``ci: true`` the pessimistic end of its CI is used.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vsearch.config import ConfigError
from vsearch.evaluation.metrics import METRIC_DIRECTIONS

AGAINST = ("baseline", "champion", "value")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Check:
    """One configured threshold.

    Attributes:
        metric: a metric of ``metrics.json`` (``recall@1`` ...).
        against: ``baseline`` (the image-only model of the same evaluation), ``champion``
            (the current champion, on the same queries) or ``value`` (the candidate alone).
        min_improvement: comparison must beat the reference by more than this.
        max_regression: comparison may be worse than the reference by at most this (>= 0).
        relative: margins are fractions of ``|reference|`` instead of metric units.
        ci: judge on the CI bound (paired bootstrap CI of the difference for comparisons,
            the candidate's own CI for value checks) instead of the mean.
        min, max: bounds of a value check, in metric units.
        direction: ``higher`` or ``lower``; default from `METRIC_DIRECTIONS`.
    """

    metric: str
    against: str
    min_improvement: float | None = None
    max_regression: float | None = None
    relative: bool = False
    ci: bool = False
    min: float | None = None
    max: float | None = None
    direction: str | None = None

    @property
    def name(self) -> str:
        if self.against == "value":
            bounds = [f">= {self.min:g}" if self.min is not None else "", f"<= {self.max:g}" if self.max is not None else ""]
            return f"{self.metric} {' and '.join(b for b in bounds if b)}" + (" (CI bound)" if self.ci else "")
        unit = "%" if self.relative else ""
        scale = 100.0 if self.relative else 1.0
        if self.min_improvement is not None:
            rule = f"beats {self.against} by > {self.min_improvement * scale:g}{unit}"
        else:
            rule = f"not worse than {self.against} by > {self.max_regression * scale:g}{unit}"
        return f"{self.metric} {rule}" + (" (CI lower bound)" if self.ci else " (mean)")

    def oriented_direction(self) -> str:
        return self.direction or METRIC_DIRECTIONS.get(self.metric, "")


# With no champion yet, the candidate would go live on mean differences alone; by default it
# must beat the baseline on the primary metric with the whole CI of the gain above 0.
DEFAULT_WITHOUT_CHAMPION = (Check(metric="recall@1", against="baseline", min_improvement=0.0, ci=True),)


@dataclass(frozen=True)
class GateConfig:
    """The gate's thresholds and bootstrap settings (``configs/gate.yaml``).

    ``without_champion`` checks apply only while there is no champion (first deployment):
    by default a significant recall@1 gain over the baseline (CI lower bound above 0).
    """

    checks: tuple[Check, ...] = ()
    baseline: str = "image_only"
    n_boot: int = 1000
    seed: int = 0
    alpha: float = 0.05
    without_champion: tuple[Check, ...] = DEFAULT_WITHOUT_CHAMPION


def validate_check(check: Check, where: str = "check") -> None:
    """Reject a check that cannot be judged unambiguously (ConfigError)."""
    if not isinstance(check.metric, str) or not check.metric:
        raise ConfigError(f"{where}: 'metric' must be a non-empty string")
    if check.against not in AGAINST:
        raise ConfigError(f"{where}: 'against' must be one of {list(AGAINST)}, got {check.against!r}")
    if check.oriented_direction() not in ("higher", "lower"):
        raise ConfigError(f"{where}: metric {check.metric!r} has no known direction; set direction: higher|lower")
    for key in ("min_improvement", "max_regression", "min", "max"):
        value = getattr(check, key)
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{where}: {key} must be finite")
    if check.against == "value":
        if check.min is None and check.max is None:
            raise ConfigError(f"{where}: a value check needs 'min' and/or 'max'")
        if check.min_improvement is not None or check.max_regression is not None or check.relative:
            raise ConfigError(f"{where}: a value check takes min/max only")
    else:
        if (check.min_improvement is None) == (check.max_regression is None):
            raise ConfigError(f"{where}: a {check.against} check needs exactly one of min_improvement / max_regression")
        if check.max_regression is not None and check.max_regression < 0:
            raise ConfigError(f"{where}: max_regression must be >= 0 (use min_improvement to demand a gain)")
        if check.min is not None or check.max is not None:
            raise ConfigError(f"{where}: min/max belong to value checks")


def validate_gate_config(cfg: GateConfig, where: str = "gate config") -> GateConfig:
    """Reject ill-formed checks and statistics settings (ConfigError); returns ``cfg``."""
    for key in ("checks", "without_champion"):
        for i, check in enumerate(getattr(cfg, key)):
            validate_check(check, f"{where}.{key}[{i}]")
    if any(c.against == "champion" for c in cfg.without_champion):
        raise ConfigError(f"{where}.without_champion: these checks run when there is no champion; use baseline or value")
    if cfg.n_boot < 100 or not 0 < cfg.alpha < 1:
        raise ConfigError(f"{where}: need n_boot >= 100 and 0 < alpha < 1")
    return cfg


# --------------------------------------------------------------------------- the pure rule


@dataclass(frozen=True)
class Comparison:
    """Evidence for one metric of a paired comparison, in the metric's own units.

    Attributes:
        candidate: candidate mean over the shared queries.
        reference: reference (baseline or champion) mean over the same queries.
        diff: mean of the per-query differences candidate - reference.
        diff_lo, diff_hi: bootstrap CI of that difference (None when not computed).
    """

    candidate: float
    reference: float
    diff: float
    diff_lo: float | None = None
    diff_hi: float | None = None


@dataclass(frozen=True)
class Value:
    """The candidate's own value of a metric and its CI (None when not available)."""

    value: float
    lo: float | None = None
    hi: float | None = None


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``status`` is ``pass``, ``fail`` or ``skipped``."""

    name: str
    metric: str
    against: str
    direction: str
    status: str
    statistic: float | None
    threshold: float | None
    detail: str
    candidate: float | None = None
    reference: float | None = None
    diff: float | None = None
    diff_ci: tuple[float, float] | None = None
    relative: bool = False
    ci: bool = False

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass(frozen=True)
class Decision:
    blessed: bool
    checks: tuple[CheckResult, ...]
    reason: str
    has_champion: bool

    def to_dict(self) -> dict:
        return {
            "blessed": self.blessed,
            "reason": self.reason,
            "has_champion": self.has_champion,
            "checks": [
                {**dataclasses.asdict(c), "diff_ci": list(c.diff_ci) if c.diff_ci else None, "passed": c.passed}
                for c in self.checks
            ],
        }


def _finite(*values: float | None) -> bool:
    return all(v is not None and isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _judge_value(check: Check, direction: str, evidence: Value | None) -> CheckResult:
    base = dict(name=check.name, metric=check.metric, against="value", direction=direction, ci=check.ci)
    if evidence is None or not _finite(evidence.value):
        return CheckResult(**base, status="fail", statistic=None, threshold=None, detail="metric missing or not finite: fail closed")
    reasons, ok, stat, threshold = [], True, evidence.value, None
    for bound, limit in (("min", check.min), ("max", check.max)):
        if limit is None:
            continue
        value = evidence.value
        if check.ci:
            if not _finite(evidence.lo, evidence.hi) or not (evidence.lo <= evidence.value <= evidence.hi):
                return CheckResult(**base, status="fail", statistic=None, threshold=limit, candidate=evidence.value,
                                   detail="CI missing or inconsistent: fail closed")
            value = evidence.lo if bound == "min" else evidence.hi
        good = value >= limit if bound == "min" else value <= limit
        ok = ok and good
        stat, threshold = value, limit
        reasons.append(f"{'CI bound ' if check.ci else ''}{value:.4f} {'>=' if bound == 'min' else '<='} {limit:g}: {'yes' if good else 'no'}")
    return CheckResult(**base, status="pass" if ok else "fail", statistic=stat, threshold=threshold,
                       candidate=evidence.value, detail="; ".join(reasons))


def _judge_comparison(check: Check, direction: str, evidence: Comparison | None) -> CheckResult:
    sign = 1.0 if direction == "higher" else -1.0
    threshold = check.min_improvement if check.min_improvement is not None else -float(check.max_regression)
    base = dict(name=check.name, metric=check.metric, against=check.against, direction=direction,
                relative=check.relative, ci=check.ci, threshold=threshold)
    if evidence is None or not _finite(evidence.candidate, evidence.reference, evidence.diff):
        return CheckResult(**base, status="fail", statistic=None, detail="metric missing or not finite: fail closed")
    ev = evidence
    diff_ci = (ev.diff_lo, ev.diff_hi) if _finite(ev.diff_lo, ev.diff_hi) else None
    numbers = dict(candidate=ev.candidate, reference=ev.reference, diff=ev.diff, diff_ci=diff_ci)
    improvement = sign * ev.diff  # positive = better
    if check.ci:
        if diff_ci is None or not (ev.diff_lo <= ev.diff <= ev.diff_hi):
            return CheckResult(**base, **numbers, status="fail", statistic=None, detail="CI of the difference missing or inconsistent: fail closed")
        # The pessimistic end of the CI, oriented: the lower bound of the improvement.
        improvement = min(sign * ev.diff_lo, sign * ev.diff_hi)
    statistic = improvement
    if check.relative:
        if ev.reference == 0:
            return CheckResult(**base, **numbers, status="fail", statistic=None, detail="reference is 0: relative margin undefined, fail closed")
        statistic = improvement / abs(ev.reference)
    ok = statistic > threshold if check.min_improvement is not None else statistic >= threshold
    what = ("CI lower bound of " if check.ci else "") + ("relative " if check.relative else "") + "improvement"
    op = ">" if check.min_improvement is not None else ">="
    detail = (f"{check.metric}: candidate {ev.candidate:.4f} vs {check.against} {ev.reference:.4f} "
              f"({'higher' if direction == 'higher' else 'lower'} is better); {what} {statistic:+.4f} {op} {threshold:+g}: "
              f"{'yes' if ok else 'no'}")
    return CheckResult(**base, **numbers, status="pass" if ok else "fail", statistic=statistic, detail=detail)


def decide(
    checks: Sequence[Check],
    candidate: Mapping[str, Value],
    baseline: Mapping[str, Comparison] | None,
    champion: Mapping[str, Comparison] | None,
    without_champion: Sequence[Check] = (),
) -> Decision:
    """Bless or reject: the pure decision rule.

    Args:
        checks: configured thresholds; none -> not blessed (fail closed).
        candidate: {metric: `Value`} of the candidate.
        baseline: {metric: `Comparison`} candidate vs baseline on the same queries; None
            when no baseline is available (baseline checks then fail).
        champion: {metric: `Comparison`} candidate vs champion on the same queries; None
            when there is no champion yet (champion checks are skipped and said so, and the
            ``without_champion`` checks run in addition).
        without_champion: checks that apply only when there is no champion (first
            deployment), e.g. a significant gain over the baseline.

    Returns:
        `Decision`: blessed iff at least one check ran and every check that ran passed; its
        ``reason`` is one sentence saying why.
    """
    results: list[CheckResult] = []
    extra = tuple(without_champion) if champion is None and checks else ()
    for check in (*checks, *extra):
        validate_check(check)
        direction = check.oriented_direction()
        if check.against == "value":
            results.append(_judge_value(check, direction, candidate.get(check.metric)))
        elif check.against == "champion" and champion is None:
            results.append(CheckResult(check.name, check.metric, "champion", direction, "skipped", None, None,
                                       "no champion yet: nothing to compare with"))
        else:
            evidence = (baseline if check.against == "baseline" else champion) or {}
            results.append(_judge_comparison(check, direction, evidence.get(check.metric)))

    ran = [r for r in results if r.status != "skipped"]
    failed = [r for r in ran if not r.passed]
    blessed = bool(ran) and not failed
    return Decision(blessed=blessed, checks=tuple(results), reason=_one_sentence(checks, ran, failed, champion is None),
                    has_champion=champion is not None)


def _evidence(r: CheckResult) -> str:
    """The numbers behind one check, short: 'recall@1 +0.031 [+0.012, +0.050] vs baseline'."""
    if r.diff is not None:
        ci = f" [{r.diff_ci[0]:+.3f}, {r.diff_ci[1]:+.3f}]" if r.diff_ci else ""
        return f"{r.metric} {r.diff:+.3f}{ci} vs {r.against}"
    if r.candidate is not None:
        return f"{r.metric} {r.candidate:.3f}"
    return f"{r.metric} (no finite value)"


def _one_sentence(checks: Sequence[Check], ran: list[CheckResult], failed: list[CheckResult], no_champion: bool) -> str:
    """Why, in one sentence a reviewer reads first (the checks table has the rest)."""
    first = " (first deployment: no champion yet, champion checks skipped)" if no_champion else ""
    if not checks:
        return "NOT BLESSED: no thresholds configured, and the gate fails closed."
    if not ran:
        return f"NOT BLESSED{first}: no check could run, and the gate fails closed."
    if failed:
        names = "; ".join(f"{r.name} ({_evidence(r)})" for r in failed[:3]) + ("; ..." if len(failed) > 3 else "")
        return f"NOT BLESSED{first}: {len(failed)} of {len(ran)} checks failed: {names}."
    key = next((r for r in ran if r.ci and r.against != "value"), ran[0])
    every = f"all {len(ran)} checks passed" if len(ran) > 1 else "its one check passed"
    return f"BLESSED{first}: {every}, including {key.name} ({_evidence(key)})."
