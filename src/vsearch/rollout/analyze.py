"""``vsearch rollout analyze``: the A/B result of a release, and what to do next.

Reads the plan (``rollout.yaml``) and the service's evidence (`vsearch.rollout.events`):

* per arm: users, impressions, CTR (impressions with a click on one of their results / answered
  impressions), add-to-cart rate, error rate (HTTP 5xx / all requests), p99 latency (ms);
* the CTR difference treatment - control, absolute and relative, with a 95% CI from a
  bootstrap over *users* (the randomisation unit: a user's impressions are not independent);
* every guardrail of the plan (`judge_guardrail`), judged only with ``min_samples``;
* `recommend`: a pure rule, like the gate's, from the plan's ramp and the evidence to one of
  ``hold`` / ``ramp`` / ``promote`` / ``rollback``, with the reason in one sentence:

  1. a breached guardrail -> rollback;
  2. a guardrail without enough samples, or the current step held less than its
     ``min_duration_hours`` -> hold;
  3. before the last step -> ramp;
  4. at the last step: CTR lift CI above 0 -> promote; CI below 0 -> rollback; else hold.

Writes ``analysis.json`` (what `vsearch release ramp | promote` require) and ``analysis.html``
(a self-contained page a reviewer reads). Exit status 0; the recommendation is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ANALYSIS_FILE = "analysis.json"
ANALYSIS_HTML = "analysis.html"
ACTIONS = ("hold", "ramp", "promote", "rollback")


@dataclass(frozen=True)
class ArmStats:
    """One arm's evidence. Rates are in [0, 1]; latency in milliseconds."""

    arm: str
    users: int
    requests: int  # every logged /search, failed ones included
    impressions: int  # answered (HTTP 200)
    clicked: int  # answered impressions with at least one valid click
    carted: int
    errors: int  # HTTP 5xx
    ctr: float | None
    add_to_cart_rate: float | None
    error_rate: float | None
    p99_latency_ms: float | None

    def value(self, metric: str) -> float | None:
        return getattr(self, metric)

    def samples(self, metric: str) -> int:
        return self.requests if metric == "error_rate" else self.impressions


@dataclass(frozen=True)
class Lift:
    """Treatment - control CTR: ``diff`` (absolute) and ``relative`` (diff / control), 95% CIs."""

    diff: float | None
    diff_ci: tuple[float, float] | None
    relative: float | None
    relative_ci: tuple[float, float] | None


def _per_user(impressions: list[dict], clicks: list[dict], arm: str) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Per-user (impressions, clicked, carted) counts of one arm, plus the arm's raw tallies."""
    by_request = {i["request_id"]: i for i in impressions if i.get("arm") == arm}
    clicked, carted = set(), set()
    for c in clicks:
        imp = by_request.get(c.get("request_id"))
        if imp is None or imp.get("status") != 200 or c.get("product_id") not in (imp.get("results") or []):
            continue  # a click on something this impression did not show is not evidence
        (carted if c.get("type") == "add_to_cart" else clicked).add(c["request_id"])
    users: dict[str, list[int]] = {}
    requests = errors = 0
    latencies = []
    for rid, imp in by_request.items():
        requests += 1
        status = int(imp.get("status", 0))
        if status >= 500:
            errors += 1
        if status != 200:
            continue
        latencies.append(float(imp.get("latency_ms", 0.0)))
        row = users.setdefault(str(imp.get("user_id") or ""), [0, 0, 0])
        row[0] += 1
        row[1] += rid in clicked
        row[2] += rid in carted
    counts = np.asarray(list(users.values()), dtype=np.int64).reshape(-1, 3)
    tallies = {"requests": requests, "errors": errors, "latencies": latencies, "users": len(users)}
    return tallies, counts[:, 0], counts[:, 1], counts[:, 2]


def arm_stats(impressions: list[dict], clicks: list[dict], arm: str) -> tuple[ArmStats, np.ndarray, np.ndarray]:
    """`ArmStats` of ``arm`` and its per-user (impressions, clicked impressions) arrays."""
    t, imp, clk, cart = _per_user(impressions, clicks, arm)
    n = int(imp.sum())
    stats = ArmStats(
        arm=arm, users=t["users"], requests=t["requests"], impressions=n, clicked=int(clk.sum()), carted=int(cart.sum()),
        errors=t["errors"],
        ctr=float(clk.sum() / n) if n else None,
        add_to_cart_rate=float(cart.sum() / n) if n else None,
        error_rate=t["errors"] / t["requests"] if t["requests"] else None,
        p99_latency_ms=float(np.percentile(t["latencies"], 99)) if t["latencies"] else None,
    )
    return stats, imp, clk


def ctr_lift(control: tuple[np.ndarray, np.ndarray], treatment: tuple[np.ndarray, np.ndarray], *,
             n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> Lift:
    """CTR difference with a percentile bootstrap over users, each arm resampled independently.

    Args:
        control, treatment: per-user (impressions (U,), clicked impressions (U,)) arrays.
    Returns:
        `Lift` (None fields when an arm has no impressions).
    """
    (ci, cc), (ti, tc) = control, treatment
    if ci.sum() == 0 or ti.sum() == 0:
        return Lift(None, None, None, None)
    c_ctr, t_ctr = cc.sum() / ci.sum(), tc.sum() / ti.sum()
    rng = np.random.default_rng(seed)
    diffs, rels = [], []
    for start in range(0, n_boot, 200):
        b = min(200, n_boot - start)

        def resample(imp: np.ndarray, clk: np.ndarray) -> np.ndarray:
            idx = rng.integers(0, len(imp), size=(b, len(imp)))
            return clk[idx].sum(axis=1) / np.maximum(imp[idx].sum(axis=1), 1)

        c_b, t_b = resample(ci, cc), resample(ti, tc)
        diffs.append(t_b - c_b)
        rels.append(np.where(c_b > 0, (t_b - c_b) / np.where(c_b > 0, c_b, 1), np.nan))
    d, r = np.concatenate(diffs), np.concatenate(rels)
    q = (100 * alpha / 2, 100 * (1 - alpha / 2))
    r = r[np.isfinite(r)]
    diff_ci = tuple(float(x) for x in np.percentile(d, q))
    rel_ci = tuple(float(x) for x in np.percentile(r, q)) if len(r) else None
    relative = float((t_ctr - c_ctr) / c_ctr) if c_ctr > 0 else None
    return Lift(float(t_ctr - c_ctr), diff_ci, relative, rel_ci)


def judge_guardrail(guardrail, control: ArmStats, treatment: ArmStats) -> dict:
    """One guardrail of the plan: ``status`` is ``pass``, ``breach`` or ``insufficient``.

    ``max_relative_regression`` r: breach when the treatment is worse than the control by
    more than the fraction r (in the guardrail's direction); ``max_absolute`` b: breach when
    the treatment's value crosses b. Judged on point estimates, once both arms have
    ``min_samples`` (requests for error_rate, answered impressions otherwise).
    """
    metric, higher = guardrail.metric, guardrail.direction == "higher_is_better"
    c, t = control.value(metric), treatment.value(metric)
    n = min(control.samples(metric), treatment.samples(metric))
    out = {"metric": metric, "direction": guardrail.direction, "control": c, "treatment": t, "samples": n,
           "min_samples": guardrail.min_samples, "max_relative_regression": guardrail.max_relative_regression,
           "max_absolute": guardrail.max_absolute}
    if n < guardrail.min_samples or c is None or t is None:
        return out | {"status": "insufficient", "detail": f"{metric}: {n} of {guardrail.min_samples} samples per arm"}
    reasons = []
    if guardrail.max_relative_regression is not None:
        worse = (c - t) if higher else (t - c)
        rel = worse / abs(c) if c else (math.inf if worse > 0 else 0.0)
        out["relative_regression"] = rel
        if rel > guardrail.max_relative_regression:
            reasons.append(f"treatment {t:.4g} is {rel:.1%} worse than control {c:.4g} (limit {guardrail.max_relative_regression:.0%})")
    if guardrail.max_absolute is not None:
        crossed = t < guardrail.max_absolute if higher else t > guardrail.max_absolute
        if crossed:
            reasons.append(f"treatment {t:.4g} {'below' if higher else 'above'} the bound {guardrail.max_absolute:g}")
    if reasons:
        return out | {"status": "breach", "detail": f"{metric}: " + "; ".join(reasons)}
    return out | {"status": "pass", "detail": f"{metric}: control {c:.4g}, treatment {t:.4g}: within limits"}


def recommend(step: int, n_steps: int, held_hours: float, min_hours: float, guardrails: Sequence[dict], lift: Lift,
              treatment_percent: float) -> tuple[str, str]:
    """The next release step by the plan's rules (pure; see the module docstring).

    Args:
        step: index of the current ramp step (0-based); ``n_steps``: how many the plan has.
        held_hours: how long the current share has been served; ``min_hours``: the step's minimum.
        guardrails: `judge_guardrail` results.
        lift: the CTR lift with its CI.
        treatment_percent: the share in force (0: the treatment is stopped).
    Returns:
        (action, one-sentence reason); action in `ACTIONS`.
    """
    if treatment_percent <= 0:
        return "hold", "The treatment gets no traffic (stopped or rolled back): nothing to decide."
    breached = [g for g in guardrails if g["status"] == "breach"]
    if breached:
        return "rollback", "Roll back: guardrail breached: " + "; ".join(g["detail"] for g in breached) + "."
    short = [g for g in guardrails if g["status"] == "insufficient"]
    if short:
        return "hold", "Hold: not enough samples yet for " + ", ".join(g["detail"] for g in short) + "."
    if held_hours < min_hours:
        return "hold", f"Hold: step {step + 1} ({treatment_percent:g}%) held {held_hours:.2f} h of its {min_hours:g} h."
    if step < n_steps - 1:
        return "ramp", f"Ramp: every guardrail holds and step {step + 1} ({treatment_percent:g}%) served its {min_hours:g} h."
    if lift.diff_ci is None:
        return "hold", "Hold: no CTR estimate for both arms yet."
    lo, hi = lift.diff_ci
    if lo > 0:
        return "promote", f"Promote: at the last step the CTR lift {lift.diff:+.4f} has its 95% CI [{lo:+.4f}, {hi:+.4f}] above 0."
    if hi < 0:
        return "rollback", f"Roll back: at the last step the CTR change {lift.diff:+.4f} has its 95% CI [{lo:+.4f}, {hi:+.4f}] below 0."
    return "hold", f"Hold: at the last step the CTR lift {lift.diff:+.4f} is not significant (95% CI [{lo:+.4f}, {hi:+.4f}])."


def current_step(rollout) -> int | None:
    """Index of the ramp step whose share is in force (None when the share is 0 or off-plan)."""
    shares = [s.treatment_percent for s in rollout.traffic.ramp]
    share = rollout.traffic.treatment_percent
    return shares.index(share) if share in shares else None


def analyze(rollout, impressions: list[dict], clicks: list[dict], *, now: float | None = None, n_boot: int = 2000) -> dict:
    """The analysis dict of ``analysis.json`` (see the module docstring)."""
    impressions = [i for i in impressions if i.get("experiment_id") == rollout.experiment_id]
    control, c_imp, c_clk = arm_stats(impressions, clicks, "control")
    treatment, t_imp, t_clk = arm_stats(impressions, clicks, "treatment")
    lift = ctr_lift((c_imp, c_clk), (t_imp, t_clk), n_boot=n_boot)
    guardrails = [judge_guardrail(g, control, treatment) for g in rollout.guardrails]
    share = rollout.traffic.treatment_percent
    step = current_step(rollout)
    at_share = [float(i["ts"]) for i in impressions if i.get("treatment_percent") == share]
    now = time.time() if now is None else now
    held = (now - min(at_share)) / 3600 if at_share else 0.0
    min_hours = rollout.traffic.ramp[step].min_duration_hours if step is not None else math.inf
    action, reason = recommend(step if step is not None else 0, len(rollout.traffic.ramp), held, min_hours, guardrails, lift, share)
    return {
        "experiment_id": rollout.experiment_id,
        "analyzed_at": now,
        "treatment_percent": share,
        "step": None if step is None else step + 1,
        "steps": len(rollout.traffic.ramp),
        "held_hours": held,
        "min_duration_hours": None if step is None else min_hours,
        "arms": {"control": asdict(control), "treatment": asdict(treatment)},
        "models": {"control": rollout.control.model.version, "treatment": rollout.treatment.model.version},
        "ctr_lift": asdict(lift),
        "guardrails": guardrails,
        "recommendation": action,
        "reason": reason,
    }


def _html(result: dict) -> str:
    from vsearch.html_page import escape as _e
    from vsearch.html_page import head

    def fmt(v, pct=False):
        if v is None:
            return "-"
        return f"{v:.2%}" if pct else f"{v:.4g}"

    arms = result["arms"]
    rows = "".join(
        f"<tr><th>{_e(name)} ({_e(result['models'][name])})</th><td>{a['users']}</td><td>{a['impressions']}</td>"
        f"<td>{fmt(a['ctr'], True)}</td><td>{fmt(a['add_to_cart_rate'], True)}</td><td>{fmt(a['error_rate'], True)}</td>"
        f"<td>{fmt(a['p99_latency_ms'])}</td></tr>" for name, a in arms.items())
    lift = result["ctr_lift"]
    ci = lift["diff_ci"]
    lift_line = ("no CTR estimate yet" if lift["diff"] is None else
                 f"CTR treatment - control: {lift['diff']:+.4f} (95% CI {ci[0]:+.4f} to {ci[1]:+.4f})"
                 + (f", relative {lift['relative']:+.1%}" if lift["relative"] is not None else ""))
    guard = "".join(f'<tr class="check {"pass" if g["status"] == "pass" else "fail" if g["status"] == "breach" else "skip"}">'
                    f"<td>{_e(g['status'])}</td><td>{_e(g['detail'])}</td></tr>" for g in result["guardrails"])
    step = f"step {result['step']} of {result['steps']}" if result["step"] else "no ramp step in force"
    return head(f"A/B analysis {result['experiment_id']}") + f"""
<header><h1>A/B analysis: {_e(result['recommendation'].upper())}</h1>
<p class="subtitle">{_e(result['reason'])}</p>
<p class="meta">experiment {_e(result['experiment_id'])}; treatment share {result['treatment_percent']:g}% ({step}),
held {result['held_hours']:.2f} h</p></header>
<h2>Arms</h2><div class="card"><table class="metrics"><thead><tr><th>arm</th><th>users</th><th>impressions</th><th>CTR</th>
<th>add-to-cart</th><th>error rate</th><th>p99 latency (ms)</th></tr></thead><tbody>{rows}</tbody></table>
<p>{_e(lift_line)}. Bootstrap over users (each arm resampled independently).</p></div>
<h2>Guardrails</h2><div class="card"><table class="metrics"><tbody>{guard}</tbody></table></div>
</main></body></html>
"""


def write_analysis(result: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Publish analysis.json + analysis.html together (staging folder + rename)."""
    from vsearch import artifacts

    out = Path(out_dir)
    with artifacts.staged(out) as staging:
        (staging / ANALYSIS_FILE).write_text(json.dumps(result, indent=2))
        (staging / ANALYSIS_HTML).write_text(_html(result))
    return {"json": out / ANALYSIS_FILE, "html": out / ANALYSIS_HTML}


def read_analysis(path: str | os.PathLike) -> dict:
    """An analysis.json (file or folder); DataError if missing or malformed."""
    from vsearch.schema import DataError

    path = Path(path)
    path = path / ANALYSIS_FILE if path.is_dir() else path
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(path, "analysis file is missing or not JSON", detail=type(err).__name__) from err
    if not isinstance(result, dict) or result.get("recommendation") not in ACTIONS:
        raise DataError(path, "not an analysis (run `vsearch rollout analyze`)")
    return result


def main(argv: list[str] | None = None) -> int:
    """``vsearch rollout analyze --rollout rollout.yaml [--events DIR] --out DIR``."""
    from vsearch.rollout.events import read_events
    from vsearch.rollout.schema import load_rollout

    parser = argparse.ArgumentParser(prog="vsearch rollout analyze", description="A/B result and next step of a release.")
    parser.add_argument("--rollout", required=True, help="the plan (rollout.yaml) the service served")
    parser.add_argument("--events", help="the service's events folder (default: events/ next to the rollout file)")
    parser.add_argument("--out", required=True, help="folder for analysis.json and analysis.html")
    parser.add_argument("--n-boot", type=int, default=2000)
    args = parser.parse_args(argv)
    rollout = load_rollout(args.rollout)
    events = Path(args.events) if args.events else Path(args.rollout).parent / "events"
    impressions, clicks = read_events(events)
    result = analyze(rollout, impressions, clicks, n_boot=args.n_boot)
    paths = write_analysis(result, args.out)
    arms = result["arms"]
    for name in ("control", "treatment"):
        a = arms[name]
        print(f"{name:<9} users {a['users']:>6}  impressions {a['impressions']:>7}  CTR {a['ctr'] if a['ctr'] is None else round(a['ctr'], 4)}")
    print(f"recommendation: {result['recommendation']} - {result['reason']}")
    print(f"report: {paths['html']}")
    return 0
