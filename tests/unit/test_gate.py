"""The gate: the pure rule (hypothesis properties) and its I/O wrapper over evaluation folders."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vsearch.blessing import read_blessing
from vsearch.config import ConfigError
from vsearch.evaluation import gate as G
from vsearch.evaluation import gate_rule as R
from vsearch.evaluation.metrics import METRIC_DIRECTIONS, METRIC_KEYS

METRICS = list(METRIC_KEYS)

# ---------------------------------------------------------------- strategies

unit = st.floats(0.0, 1.0, allow_nan=False)
margin = st.floats(0.0, 0.2, allow_nan=False)


@st.composite
def comparisons(draw):
    """A consistent paired comparison: lo <= diff <= hi, diff = candidate - reference."""
    cand, ref = draw(unit), draw(unit)
    diff = cand - ref
    lo = diff - draw(st.floats(0.0, 0.3))
    hi = diff + draw(st.floats(0.0, 0.3))
    return R.Comparison(cand, ref, diff, lo, hi)


@st.composite
def checks(draw):
    metric = draw(st.sampled_from(METRICS))
    against = draw(st.sampled_from(R.AGAINST))
    if against == "value":
        lo, hi = draw(st.one_of(st.none(), unit)), draw(st.one_of(st.none(), unit))
        if lo is None and hi is None:
            lo = draw(unit)
        return R.Check(metric, "value", min=lo, max=hi, ci=draw(st.booleans()))
    if draw(st.booleans()):
        return R.Check(metric, against, min_improvement=draw(st.floats(-0.1, 0.2)), relative=draw(st.booleans()), ci=draw(st.booleans()))
    return R.Check(metric, against, max_regression=draw(margin), relative=draw(st.booleans()), ci=draw(st.booleans()))


@st.composite
def evidence(draw):
    champion = draw(st.one_of(st.none(), st.dictionaries(st.sampled_from(METRICS), comparisons())))
    baseline = draw(st.dictionaries(st.sampled_from(METRICS), comparisons()))
    values = {}
    for m in draw(st.lists(st.sampled_from(METRICS), unique=True)):
        v = draw(unit)
        values[m] = R.Value(v, max(0.0, v - draw(st.floats(0, 0.2))), min(1.0, v + draw(st.floats(0, 0.2))))
    return values, baseline, champion


def improvement(metric: str, comp: R.Comparison) -> float:
    return comp.diff if METRIC_DIRECTIONS[metric] == "higher" else -comp.diff


# ---------------------------------------------------------------- properties of the pure rule


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(checks(), max_size=6), evidence())
def test_blessed_iff_every_check_that_ran_passes_and_one_ran(cfg_checks, ev):
    values, baseline, champion = ev
    decision = R.decide(cfg_checks, values, baseline, champion)
    ran = [c for c in decision.checks if c.status != "skipped"]
    assert len(decision.checks) == len(cfg_checks)
    assert decision.blessed == (bool(ran) and all(c.passed for c in ran))
    assert decision.reason.startswith("BLESSED" if decision.blessed else "NOT BLESSED")
    skipped = [c for c in decision.checks if c.status == "skipped"]
    assert all(c.against == "champion" for c in skipped)
    assert bool(skipped) <= (champion is None)  # only champion checks, only without a champion
    if champion is None and cfg_checks:
        assert "no champion yet" in decision.reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(checks(), min_size=1, max_size=6), evidence())
def test_without_a_champion_blessing_needs_a_significant_gain_over_the_baseline(cfg_checks, ev):
    """Issue 19: with no champion, a mean gain is not enough: the CI lower bound must be above 0."""
    values, baseline, _ = ev
    decision = R.decide(cfg_checks, values, baseline, None, R.DEFAULT_WITHOUT_CHAMPION)
    comp = baseline.get("recall@1")
    if decision.blessed:
        assert comp is not None and min(comp.diff_lo, comp.diff_hi) > 0
    assert len(decision.checks) == len(cfg_checks) + 1
    # One sentence: a single full stop, at the end.
    assert decision.reason.endswith(".") and decision.reason.count(". ") == 0
    # With a champion the first-deployment checks do not run.
    with_champ = R.decide(cfg_checks, values, baseline, {}, R.DEFAULT_WITHOUT_CHAMPION)
    assert len(with_champ.checks) == len(cfg_checks)


def test_mean_gain_that_is_not_significant_does_not_bless_a_first_deployment():
    """The tiny demo blessed at recall@1 +0.008 with a CI across 0; now it is refused, saying why."""
    comp = R.Comparison(0.108, 0.100, 0.008, -0.02, 0.035)
    mean_only = [R.Check("recall@1", "baseline", min_improvement=0.0)]
    old = R.decide(mean_only, {}, {"recall@1": comp}, None, ())
    new = R.decide(mean_only, {}, {"recall@1": comp}, None, R.DEFAULT_WITHOUT_CHAMPION)
    assert old.blessed and not new.blessed
    assert "CI lower bound" in new.reason and "-0.020" in new.reason
    assert G.load_gate_config("gate").without_champion == R.DEFAULT_WITHOUT_CHAMPION


def _gate_file(folder, raw: dict | str, name: str = "gate_test.yaml"):
    """A gate YAML file holding ``raw`` (a mapping, or the file's text)."""
    path = folder / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def test_without_champion_checks_are_configurable_and_never_against_a_champion(tmp_path):
    assert G.load_gate_config(_gate_file(tmp_path, {"without_champion": []})).without_champion == ()
    with pytest.raises(ConfigError, match="without_champion"):
        G.load_gate_config(_gate_file(tmp_path, {"without_champion": [{"metric": "mrr", "against": "champion", "max_regression": 0.1}]}))


def test_an_empty_key_in_a_gate_file_takes_its_default(tmp_path):
    """``checks:`` with nothing after it is YAML null: the default, not a TypeError."""
    cfg = G.load_gate_config(_gate_file(tmp_path, "checks:\nwithout_champion:\nn_boot:\n"))
    assert (cfg.checks, cfg.without_champion, cfg.n_boot) == ((), R.DEFAULT_WITHOUT_CHAMPION, R.GateConfig().n_boot)
    cfg = G.load_gate_config("gate", ["without_champion=null"])
    assert cfg.without_champion == R.DEFAULT_WITHOUT_CHAMPION


def test_a_gate_file_without_a_yaml_suffix_is_read_as_a_file(tmp_path, monkeypatch):
    _gate_file(tmp_path, {"n_boot": 300}, name="mygate")
    monkeypatch.chdir(tmp_path)
    assert G.load_gate_config("mygate").n_boot == 300
    with pytest.raises(ConfigError, match="unknown config preset 'nogate'"):
        G.load_gate_config("nogate")


@settings(max_examples=300, deadline=None)
@given(st.lists(checks(), max_size=6), evidence(), st.sampled_from(METRICS), comparisons(), st.booleans(), st.booleans())
def test_never_blesses_a_candidate_worse_than_the_champion_on_a_guarded_metric(cfg_checks, ev, metric, comp, ci, relative):
    values, baseline, champion = ev
    champion = dict(champion or {})
    champion[metric] = comp
    guard = R.Check(metric, "champion", max_regression=0.0, ci=ci, relative=relative)
    decision = R.decide([*cfg_checks, guard], values, baseline, champion)
    if improvement(metric, comp) < 0:  # the candidate's mean is worse than the champion's
        assert not decision.blessed
    # With a margin, never blessed beyond it (absolute margins).
    r = 0.05
    decision = R.decide([*cfg_checks, R.Check(metric, "champion", max_regression=r, ci=ci)], values, baseline, champion)
    if decision.blessed:
        assert improvement(metric, comp) >= -r - 1e-12


@settings(max_examples=100, deadline=None)
@given(evidence())
def test_no_thresholds_never_blesses(ev):
    values, baseline, champion = ev
    decision = R.decide([], values, baseline, champion)
    assert not decision.blessed and "no thresholds configured" in decision.reason


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(METRICS), comparisons(), margin)
def test_ci_check_is_never_looser_than_the_mean_check(metric, comp, m):
    with_ci = R.decide([R.Check(metric, "champion", min_improvement=m, ci=True)], {}, {}, {metric: comp})
    on_mean = R.decide([R.Check(metric, "champion", min_improvement=m)], {}, {}, {metric: comp})
    assert with_ci.blessed <= on_mean.blessed


# ---------------------------------------------------------------- the rule on chosen numbers


def test_champion_check_uses_ci_lower_bound_and_direction():
    better = R.Comparison(0.30, 0.25, 0.05, 0.01, 0.09)
    unsure = R.Comparison(0.30, 0.25, 0.05, -0.01, 0.11)
    check = R.Check("recall@1", "champion", min_improvement=0.0, ci=True)
    assert R.decide([check], {}, {}, {"recall@1": better}).blessed
    d = R.decide([check], {}, {}, {"recall@1": unsure})
    assert not d.blessed and d.checks[0].statistic == pytest.approx(-0.01)
    # cross_category_fp@10: lower is better, so a negative difference is an improvement.
    fp = R.Comparison(0.40, 0.45, -0.05, -0.08, -0.02)
    d = R.decide([R.Check("cross_category_fp@10", "champion", min_improvement=0.0, ci=True)], {}, {}, {"cross_category_fp@10": fp})
    assert d.blessed and d.checks[0].statistic == pytest.approx(0.02)


def test_relative_margin_and_zero_reference_fails_closed():
    comp = R.Comparison(0.22, 0.20, 0.02, 0.01, 0.03)
    assert R.decide([R.Check("mrr", "baseline", min_improvement=0.05, relative=True)], {}, {"mrr": comp}, None).blessed  # +10%
    assert not R.decide([R.Check("mrr", "baseline", min_improvement=0.15, relative=True)], {}, {"mrr": comp}, None).blessed
    zero = R.Comparison(0.1, 0.0, 0.1, 0.05, 0.15)
    d = R.decide([R.Check("mrr", "baseline", min_improvement=0.0, relative=True)], {}, {"mrr": zero}, None)
    assert not d.blessed and "undefined" in d.checks[0].detail


def test_missing_or_nan_metric_fails_closed():
    check = R.Check("recall@1", "baseline", max_regression=0.1)
    assert not R.decide([check], {}, {}, None).blessed
    nan = R.Comparison(math.nan, 0.2, math.nan)
    d = R.decide([check], {}, {"recall@1": nan}, None)
    assert not d.blessed and "fail closed" in d.checks[0].detail
    # CI asked for but not available: fail closed, not silently judged on the mean.
    d = R.decide([R.Check("recall@1", "baseline", max_regression=0.1, ci=True)], {}, {"recall@1": R.Comparison(0.3, 0.2, 0.1)}, None)
    assert not d.blessed


def test_no_champion_judges_value_and_baseline_only_and_says_so():
    cfg = [R.Check("recall@1", "champion", min_improvement=0.0), R.Check("recall@10", "value", min=0.5)]
    d = R.decide(cfg, {"recall@10": R.Value(0.6, 0.55, 0.65)}, {}, None)
    assert d.blessed and [c.status for c in d.checks] == ["skipped", "pass"]
    assert "no champion yet, champion checks skipped" in d.reason
    d = R.decide(cfg[:1], {}, {}, None)  # only champion checks and no champion: fail closed
    assert not d.blessed and "fails closed" in d.reason


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"checks": [{"metric": "recall@1", "against": "champion"}]}, "exactly one of"),
        ({"checks": [{"metric": "recall@1", "against": "champion", "min_improvement": 0, "max_regression": 0}]}, "exactly one of"),
        ({"checks": [{"metric": "recall@1", "against": "champion", "max_regression": -0.1}]}, "max_regression must be >= 0"),
        ({"checks": [{"metric": "recall@1", "against": "value"}]}, "needs 'min'"),
        ({"checks": [{"metric": "ndcg", "against": "value", "min": 0.1}]}, "no known direction"),
        ({"checks": [{"metric": "recall@1", "against": "boss", "min": 0.1}]}, "'against' must be"),
        ({"checks": [{"metric": "recall@1", "against": "value", "min": 0.1, "typo": 1}]}, "unknown key"),
        ({"chekcs": []}, "unknown key"),
    ],
)
def test_bad_gate_configs_are_rejected(tmp_path, raw, message):
    with pytest.raises(ConfigError, match=message):
        G.load_gate_config(_gate_file(tmp_path, raw))


def test_default_preset_loads_and_guards_every_metric_against_the_champion():
    cfg = G.load_gate_config("gate")
    guarded = {c.metric for c in cfg.checks if c.against == "champion"}
    assert guarded == set(METRIC_KEYS) - {"recall@5"}
    assert cfg.baseline == "image_only"


# ---------------------------------------------------------------- I/O: evaluation folders


def write_eval(root, per_model: dict[str, dict[str, np.ndarray]], model_dirs: dict | None = None, data=None):
    """A fake-free evaluation folder in the real contract: metrics.json + per_query.parquet."""
    from vsearch.evaluation.metrics import summarize

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, metrics in per_model.items():
        for metric, values in metrics.items():
            rows.append(pd.DataFrame({"model": name, "metric": metric, "query": [f"q{i}" for i in range(len(values))], "value": values}))
    pd.concat(rows).to_parquet(root / "per_query.parquet", index=False)
    summary = {
        "models": {n: summarize(m, n_boot=200) for n, m in per_model.items()},
        "eval": {"data": str(data) if data else None, "queries": 400, "gallery_size": 50, "model_dirs": model_dirs or {}},
    }
    (root / "metrics.json").write_text(json.dumps(summary))
    return root


def hits(rng, p, n=400):
    return (rng.random(n) < p).astype(float)


@pytest.fixture
def evals(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.random(400)
    per_model = {
        "image_only": {"recall@1": hits(rng, 0.2), "recall@10": hits(rng, 0.5)},
        # The candidate finds every query the champion finds plus more: a clear, paired gain.
        "champ": {"recall@1": (base < 0.30).astype(float), "recall@10": (base < 0.6).astype(float)},
        "cand": {"recall@1": (base < 0.40).astype(float), "recall@10": (base < 0.65).astype(float)},
    }
    return write_eval(tmp_path / "eval", per_model)


def cfg_of(*checks):
    return R.GateConfig(checks=tuple(checks), n_boot=500)


def test_run_gate_writes_blessing_with_numbers_ids_and_report(tmp_path, evals):
    cfg = cfg_of(
        R.Check("recall@1", "baseline", min_improvement=0.0, ci=True),
        R.Check("recall@1", "champion", min_improvement=0.05, ci=True),
        R.Check("recall@10", "champion", max_regression=0.0, ci=True),
        R.Check("recall@10", "value", min=0.5),
    )
    blessing = G.run_gate(evals, tmp_path / "gate", cfg, candidate_name="cand", champion=str(evals), champion_name="champ")
    on_disk = json.loads((tmp_path / "gate" / "blessing.json").read_text())
    assert on_disk == blessing.to_dict() and blessing.blessed is True
    assert read_blessing(tmp_path / "gate") == blessing
    assert [c["status"] for c in blessing.checks] == ["pass"] * 4
    r1 = blessing.checks[1]
    assert r1["candidate"] == pytest.approx(0.40, abs=0.05) and r1["diff"] == pytest.approx(r1["candidate"] - r1["reference"])
    assert r1["diff_ci"][0] <= r1["diff"] <= r1["diff_ci"][1] and r1["statistic"] == pytest.approx(r1["diff_ci"][0])
    assert blessing.candidate.name == "cand" and blessing.champion.name == "champ"
    assert blessing.baseline.name == "image_only"
    assert set(blessing.comparisons) == {"baseline", "champion"}
    html = (tmp_path / "gate" / "report.html").read_text()
    assert 'data-status="pass"' in html and "BLESSED" in html and "Candidate vs champion" in html
    assert "http://" not in html and "https://" not in html


def test_run_gate_rejects_worse_candidate_and_report_marks_failures_red(tmp_path, evals):
    cfg = cfg_of(R.Check("recall@1", "champion", max_regression=0.0, ci=True), R.Check("recall@10", "value", min=0.1))
    # Swap the roles: the worse model as candidate.
    blessing = G.run_gate(evals, tmp_path / "gate", cfg, candidate_name="champ", champion=str(evals), champion_name="cand")
    assert blessing.blessed is False
    assert [c["status"] for c in blessing.checks] == ["fail", "pass"]
    assert "1 of 2 checks failed" in blessing.reason and "recall@1" in blessing.reason
    html = (tmp_path / "gate" / "report.html").read_text()
    assert html.count('class="check fail"') == 1 and html.count('class="check pass"') == 1
    assert "NOT BLESSED" in html


def test_cli_exit_codes_and_no_champion(tmp_path, evals, capsys):
    from vsearch.cli import main

    cfg = tmp_path / "gate.yaml"
    cfg.write_text("n_boot: 200\nchecks:\n  - {metric: recall@1, against: champion, min_improvement: 0.0}\n"
                   "  - {metric: recall@1, against: baseline, min_improvement: 0.0}\n")
    assert main(["gate", "--candidate", str(evals), "--candidate-name", "cand", "--config", str(cfg), "--out", str(tmp_path / "g")]) == 0
    out = capsys.readouterr().out
    assert "[SKIP]" in out and "no champion yet" in out
    assert main(["gate", "--candidate", str(evals), "--candidate-name", "cand", "--champion", str(evals),
                 "--champion-name", "cand", "--config", str(cfg), "--out", str(tmp_path / "g2")]) == 1  # equal is not a gain
    cfg.write_text("checks: []\n")
    assert main(["gate", "--candidate", str(evals), "--candidate-name", "cand", "--config", str(cfg), "--out", str(tmp_path / "g3")]) == 1
    assert "no thresholds configured" in capsys.readouterr().out
    # --set: dotted overrides of the gate config, checked like the file's own values.
    assert main(["gate", "--candidate", str(evals), "--candidate-name", "cand", "--config", str(cfg),
                 "--set", "n_boot=10", "--out", str(tmp_path / "g6")]) == 2
    assert "n_boot >= 100" in capsys.readouterr().err and not (tmp_path / "g6").exists()
    # Bad input: one line, exit 2, nothing written.
    assert main(["gate", "--candidate", str(tmp_path / "nope"), "--out", str(tmp_path / "g4")]) == 2
    err = capsys.readouterr().err
    assert "metrics.json" in err and "evaluation file is missing" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g4").exists()
    assert main(["gate", "--candidate", str(evals), "--out", str(tmp_path / "g5")]) == 2  # ambiguous candidate
    assert "--candidate-name" in capsys.readouterr().err


def test_champion_on_other_queries_is_refused(tmp_path, evals):
    rng = np.random.default_rng(1)
    other = write_eval(tmp_path / "other", {"champ": {"recall@1": hits(rng, 0.3, 300)}})
    cfg = cfg_of(R.Check("recall@1", "champion", max_regression=0.0))
    from vsearch.schema import DataError

    with pytest.raises(DataError, match="not evaluated on the candidate's queries"):
        G.run_gate(evals, tmp_path / "g", cfg, candidate_name="cand", champion=str(other), champion_name="champ")


@pytest.mark.parametrize("damage", ["nan_per_query", "out_of_range_per_query", "nan_summary", "empty_summary", "out_of_range_summary"])
def test_broken_metrics_never_bless_and_leave_no_previous_blessing(tmp_path, evals, capsys, damage):
    """Issue 20 item 8: NaN in per_query crashed and left a previous blessed: true; NaN, empty or
    5.0 in metrics.json blessed. Now: one line, exit 2, and no blessing.json left in --out."""
    from vsearch.cli import main

    cfg = tmp_path / "gate.yaml"
    cfg.write_text("n_boot: 200\nwithout_champion: []\nchecks:\n  - {metric: recall@1, against: baseline, min_improvement: 0.0}\n")
    out = tmp_path / "g"
    assert main(["gate", "--candidate", str(evals), "--candidate-name", "cand", "--config", str(cfg), "--out", str(out)]) == 0
    assert read_blessing(out).blessed  # the previous, blessed verdict
    capsys.readouterr()
    per_query = pd.read_parquet(evals / "per_query.parquet")
    summary = json.loads((evals / "metrics.json").read_text())
    cand = (per_query["model"] == "cand") & (per_query["metric"] == "recall@1")
    if damage == "nan_per_query":
        per_query.loc[per_query.index[cand][3], "value"] = float("nan")
    elif damage == "out_of_range_per_query":
        per_query.loc[per_query.index[cand][3], "value"] = 5.0
    elif damage == "nan_summary":
        summary["models"]["cand"]["recall@1"] = float("nan")
    elif damage == "empty_summary":
        summary["models"]["cand"]["recall@1"] = ""
    else:
        summary["models"]["cand"]["recall@1"] = 5.0
    per_query.to_parquet(evals / "per_query.parquet", index=False)
    (evals / "metrics.json").write_text(json.dumps(summary))
    code = main(["gate", "--candidate", str(evals), "--candidate-name", "cand", "--config", str(cfg), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "fails closed" in err[0] and "cand" in err[0]
    assert ("per_query.parquet" if "per_query" in damage else "metrics.json") in err[0]
    assert not (out / "blessing.json").exists()


@pytest.mark.parametrize("stage", ["gate.removed", "gate.decided", "gate.report", "gate.written"])
def test_a_gate_killed_at_any_stage_leaves_no_stale_verdict_and_the_rerun_decides(tmp_path, evals, stage, capsys):
    """Issue 20: SIGKILL the gate at each stage over a previous *blessed* verdict for a candidate
    that now fails: never a stale blessed: true, never a half-written file; the rerun decides."""
    import os
    import subprocess
    import sys

    from vsearch.blessing import read_blessing
    from vsearch.cli import main

    out = tmp_path / "g"
    passes = tmp_path / "pass.yaml"
    passes.write_text("n_boot: 200\nwithout_champion: []\nchecks:\n  - {metric: recall@1, against: baseline, min_improvement: 0.0}\n")
    fails = tmp_path / "fail.yaml"
    fails.write_text("n_boot: 200\nwithout_champion: []\nchecks:\n  - {metric: recall@1, against: baseline, min_improvement: 0.9}\n")
    argv = ["gate", "--candidate", str(evals), "--candidate-name", "cand", "--out", str(out)]
    assert main(argv + ["--config", str(passes)]) == 0 and read_blessing(out).blessed
    killed = subprocess.run([sys.executable, "-m", "vsearch.cli", *argv, "--config", str(fails)], capture_output=True,
                            env={**os.environ, "VSEARCH_FAULT": stage})
    assert killed.returncode == -9, killed.stderr[-300:]
    if stage == "gate.written":
        assert read_blessing(out).blessed is False  # the new verdict was committed, whole
    else:
        assert not (out / "blessing.json").exists()  # no verdict at all rather than a stale blessed one
    assert main(argv + ["--config", str(fails)]) == 1 and read_blessing(out).blessed is False
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_gate_config_loads_through_the_one_loader_with_base_overrides_and_typed_errors(tmp_path):
    """vsearch.config.load_typed: a file may extend a preset, dotted overrides apply, a wrong
    type is one line naming the key; the gate's own rules still run after."""
    own = tmp_path / "gate_strict.yaml"
    own.write_text("base: gate\nn_boot: 200\n")
    cfg = G.load_gate_config(str(own), ["alpha=0.01"])
    assert (cfg.n_boot, cfg.alpha, cfg.checks) == (200, 0.01, G.load_gate_config("gate").checks)
    assert all(isinstance(c, R.Check) for c in cfg.checks) and isinstance(cfg.checks, tuple)
    with pytest.raises(ConfigError, match="n_boot: expected int"):
        G.load_gate_config("gate", ["n_boot=many"])
    with pytest.raises(ConfigError, match="n_boot >= 100"):
        G.load_gate_config("gate", ["n_boot=10"])
    with pytest.raises(ConfigError, match=r"checks\[0\]: unknown key"):
        G.load_gate_config(_gate_file(tmp_path, {"checks": [{"metric": "recall@1", "against": "value", "min": 0.1, "typo": 1}]}))
    with pytest.raises(ConfigError, match=r"checks\[0\]\.metric: a value is required, got null"):
        G.load_gate_config(_gate_file(tmp_path, {"checks": [{"metric": None, "against": "value", "min": 0.1}]}))
