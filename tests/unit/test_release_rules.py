"""The release's pure rules: every lifecycle transition, and the A/B analysis on simulated users."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vsearch.release.lifecycle import AB, ACTIONS, IN_REVIEW, PROMOTED, ROLLED_BACK, IllegalTransition, ReleaseState, transition
from vsearch.rollout import analyze as A
from vsearch.rollout.schema import Guardrail

N_STEPS = 3
STATES = [None, ReleaseState(IN_REVIEW), ReleaseState(AB, 0), ReleaseState(AB, 1), ReleaseState(AB, 2),
          ReleaseState(PROMOTED, 2), ReleaseState(ROLLED_BACK, 1)]

# The whole table: (state, action) -> next state; anything absent is illegal.
LEGAL = {
    (None, "open"): ReleaseState(IN_REVIEW),
    (ReleaseState(IN_REVIEW), "approve"): ReleaseState(AB, 0),
    (ReleaseState(IN_REVIEW), "rollback"): ReleaseState(ROLLED_BACK, None),
    (ReleaseState(AB, 0), "ramp"): ReleaseState(AB, 1),
    (ReleaseState(AB, 1), "ramp"): ReleaseState(AB, 2),
    (ReleaseState(AB, 2), "promote"): ReleaseState(PROMOTED, 2),
    (ReleaseState(AB, 0), "rollback"): ReleaseState(ROLLED_BACK, 0),
    (ReleaseState(AB, 1), "rollback"): ReleaseState(ROLLED_BACK, 1),
    (ReleaseState(AB, 2), "rollback"): ReleaseState(ROLLED_BACK, 2),
    (ReleaseState(PROMOTED, 2), "rollback"): ReleaseState(ROLLED_BACK, 2),
}


@pytest.mark.parametrize("state,action", list(itertools.product(STATES, ACTIONS)))
def test_every_transition_is_legal_exactly_as_the_table_says(state, action):
    """Forced (the analysis' recommendation is not the question here): legality alone."""
    expected = LEGAL.get((state, action))
    if expected is None:
        with pytest.raises(IllegalTransition, match="release r1"):
            transition(state, action, release="r1", n_steps=N_STEPS, force=True)
    else:
        assert transition(state, action, release="r1", n_steps=N_STEPS, force=True) == expected


def test_ramp_and_promote_need_the_analysis_to_recommend_them_unless_forced():
    ab0, ab_last = ReleaseState(AB, 0), ReleaseState(AB, N_STEPS - 1)
    for rec in (None, "hold", "rollback", "promote"):
        with pytest.raises(IllegalTransition, match="recommends"):
            transition(ab0, "ramp", release="r", n_steps=N_STEPS, recommendation=rec)
    assert transition(ab0, "ramp", release="r", n_steps=N_STEPS, recommendation="ramp") == ReleaseState(AB, 1)
    with pytest.raises(IllegalTransition, match="recommends hold"):
        transition(ab_last, "promote", release="r", n_steps=N_STEPS, recommendation="hold")
    assert transition(ab_last, "promote", release="r", n_steps=N_STEPS, recommendation="promote").status == PROMOTED
    # The messages say what to do instead.
    with pytest.raises(IllegalTransition, match="approve"):
        transition(ReleaseState(IN_REVIEW), "promote", release="r", n_steps=N_STEPS, force=True)
    with pytest.raises(IllegalTransition, match="ramp to the last step"):
        transition(ab0, "promote", release="r", n_steps=N_STEPS, force=True)


# ---------------------------------------------------------------- the A/B analysis


def simulate(users: int, p_control: float, p_treatment: float, *, share: float = 50.0, err_treatment: float = 0.0,
             latency_treatment: float = 40.0, seed: int = 0, ts0: float = 0.0):
    """Impression + click logs of users with known click-through rates (3 searches each)."""
    rng = np.random.default_rng(seed)
    impressions, clicks = [], []
    for u in range(users):
        arm = "treatment" if rng.random() < share / 100 else "control"
        p = p_treatment if arm == "treatment" else p_control
        for j in range(3):
            rid = f"r{u}x{j}"
            failed = arm == "treatment" and rng.random() < err_treatment
            impressions.append({"ts": ts0 + u, "request_id": rid, "experiment_id": "exp", "arm": arm, "user_id": f"u{u}",
                                "status": 503 if failed else 200, "results": [] if failed else ["p1", "p2"],
                                "latency_ms": float(rng.normal(latency_treatment if arm == "treatment" else 40.0, 5)),
                                "treatment_percent": share})
            if not failed and rng.random() < p:
                clicks.append({"ts": ts0 + u + 0.5, "request_id": rid, "user_id": f"u{u}", "product_id": "p2", "type": "click"})
    return impressions, clicks


class Plan:
    """The fields of a RolloutConfig that `analyze` reads."""

    def __init__(self, share: float, ramp=(10, 25, 50), hours: float = 1.0, guardrails=None):
        from types import SimpleNamespace as NS

        self.experiment_id = "exp"
        self.traffic = NS(treatment_percent=share, ramp=[NS(treatment_percent=s, min_duration_hours=hours) for s in ramp])
        self.guardrails = guardrails or [
            Guardrail(metric="ctr", direction="higher_is_better", max_relative_regression=0.05, min_samples=1000),
            Guardrail(metric="error_rate", direction="lower_is_better", max_absolute=0.01, min_samples=1000),
            Guardrail(metric="p99_latency_ms", direction="lower_is_better", max_relative_regression=0.5, min_samples=1000),
        ]
        self.control = NS(model=NS(version="c1"))
        self.treatment = NS(model=NS(version="t1"))


def test_a_known_ctr_lift_is_detected_and_promoted_at_the_last_step():
    impressions, clicks = simulate(6000, 0.10, 0.13, share=50)
    result = A.analyze(Plan(50), impressions, clicks, now=6000 + 3 * 3600, n_boot=500)
    lift = result["ctr_lift"]
    assert lift["diff_ci"][0] > 0 and lift["diff_ci"][0] <= 0.03 <= lift["diff_ci"][1]  # covers the true +0.03
    assert result["recommendation"] == "promote" and "CI" in result["reason"]
    # The same evidence mid-ramp: ramp, not promote.
    assert A.analyze(Plan(25, ramp=(10, 25, 50)), [i | {"treatment_percent": 25} for i in impressions], clicks,
                     now=6000 + 3 * 3600, n_boot=200)["recommendation"] == "ramp"
    # No effect at the last step: hold (not significant), never promote.
    flat = A.analyze(Plan(50), *simulate(6000, 0.10, 0.10, seed=3), now=9e9, n_boot=300)  # (seed 1 is a chance 2.3-sigma gap: the 2.5% one-sided false-positive rate)
    assert flat["recommendation"] == "hold" and "not significant" in flat["reason"]


def test_a_guardrail_breach_rolls_back_and_names_the_guardrail():
    impressions, clicks = simulate(3000, 0.10, 0.13, share=50, err_treatment=0.03)
    result = A.analyze(Plan(25), [i | {"treatment_percent": 25} for i in impressions], clicks, now=9e9, n_boot=200)
    breached = [g for g in result["guardrails"] if g["status"] == "breach"]
    assert [g["metric"] for g in breached] == ["error_rate"] and result["recommendation"] == "rollback"
    assert "error_rate" in result["reason"]
    # A latency regression alone (treatment p99 ~2x) is caught too.
    slow = A.analyze(Plan(25), *[[i | {"treatment_percent": 25} for i in x] if k == 0 else x
                                 for k, x in enumerate(simulate(3000, 0.1, 0.1, latency_treatment=90))], now=9e9, n_boot=100)
    assert slow["recommendation"] == "rollback" and "p99_latency_ms" in slow["reason"]


def test_too_few_samples_or_too_short_a_step_holds():
    impressions, clicks = simulate(100, 0.10, 0.5, share=50)
    few = A.analyze(Plan(50), impressions, clicks, now=9e9, n_boot=100)
    assert few["recommendation"] == "hold" and "samples" in few["reason"]
    impressions, clicks = simulate(6000, 0.10, 0.13, share=50)
    early = A.analyze(Plan(50, hours=48), impressions, clicks, now=6000 + 3600, n_boot=100)
    assert early["recommendation"] == "hold" and "of its 48 h" in early["reason"]


def test_clicks_on_results_an_impression_did_not_show_are_not_evidence():
    imp = [{"ts": 0, "request_id": "a", "experiment_id": "exp", "arm": "control", "user_id": "u", "status": 200,
            "results": ["p1"], "latency_ms": 1.0, "treatment_percent": 10}]
    stats, _, _ = A.arm_stats(imp, [{"request_id": "a", "product_id": "p9", "type": "click"}], "control")
    assert stats.ctr == 0.0
    stats, _, _ = A.arm_stats(imp, [{"request_id": "a", "product_id": "p1", "type": "click"}], "control")
    assert stats.ctr == 1.0


def test_ctr_bootstrap_ci_matches_a_naive_resampling_reference():
    """The vectorised user bootstrap against a plain loop over resamples."""
    rng = np.random.default_rng(3)
    c = (rng.integers(1, 5, 80), None)
    c = (c[0], rng.binomial(c[0], 0.2))
    t = (rng.integers(1, 5, 90), None)
    t = (t[0], rng.binomial(t[0], 0.3))
    lift = A.ctr_lift(c, t, n_boot=400, seed=7)
    ref_rng = np.random.default_rng(7)
    diffs = []
    for _ in range(2):  # two chunks of 200, drawn in the same order as the implementation
        ci_ = ref_rng.integers(0, 80, size=(200, 80))
        ti_ = ref_rng.integers(0, 90, size=(200, 90))
        for b in range(200):
            diffs.append(t[1][ti_[b]].sum() / t[0][ti_[b]].sum() - c[1][ci_[b]].sum() / c[0][ci_[b]].sum())
    assert lift.diff_ci == pytest.approx(tuple(np.percentile(diffs, (2.5, 97.5))))
    assert lift.diff == pytest.approx(t[1].sum() / t[0].sum() - c[1].sum() / c[0].sum())
