"""The gate on real tiny models: the champion found three ways (same evaluation, a model
folder evaluated on the spot, the registry) gives the same paired numbers."""

from __future__ import annotations

import pytest

from vsearch.artifacts import model_version
from vsearch.evaluation import gate as G
from vsearch.evaluation import gate_rule as R
from vsearch.registry import Registry

CFG = R.GateConfig(checks=(R.Check("recall@1", "baseline", max_regression=1.0),
                           R.Check("mrr", "champion", max_regression=1.0, ci=True),
                           R.Check("recall@10", "value", min=0.0)), n_boot=200,
                  without_champion=())  # tiny models: the plumbing, not a significant gain


def flat(comparisons: dict) -> dict:
    return {(m, k, i): v for m, row in comparisons.items() for k, val in row.items()
            for i, v in enumerate(val if isinstance(val, list) else [val])}


@pytest.fixture(scope="module")
def evals(tmp_path_factory, tiny_models, tiny_data):
    from vsearch.config import EvalConfig
    from vsearch.evaluation.evaluate import evaluate

    root = tmp_path_factory.mktemp("gate_models")
    cfg = EvalConfig(n_boot=50, n_examples=2)
    evaluate({k: tiny_models[k] for k in ("image_only", "three_tower", "four_tower")}, tiny_data, root / "all", cfg)
    evaluate({k: tiny_models[k] for k in ("image_only", "four_tower")}, tiny_data, root / "pair", cfg)
    return root


def test_champion_from_evaluation_model_folder_or_registry_agree(tmp_path, evals, tiny_models):
    champ = tiny_models["three_tower"]
    same_eval = G.run_gate(evals / "all", tmp_path / "a", CFG, candidate_name="four_tower",
                           champion=str(evals / "all"), champion_name="three_tower")
    reused = G.run_gate(evals / "all", tmp_path / "b", CFG, candidate_name="four_tower", champion=str(champ))
    on_the_spot = G.run_gate(evals / "pair", tmp_path / "c", CFG, champion=str(champ))  # not in that evaluation
    assert reused.champion_lookup["reused_evaluation_of"] == "three_tower"
    assert "evaluated_on" in on_the_spot.champion_lookup
    for blessing in (same_eval, reused, on_the_spot):
        assert blessing.candidate.version == model_version(tiny_models["four_tower"])
        assert blessing.champion.version == model_version(champ)
        assert blessing.blessed is True
    assert flat(on_the_spot.comparisons["champion"]) == pytest.approx(flat(same_eval.comparisons["champion"]))
    assert reused.comparisons == same_eval.comparisons
    assert same_eval.data["fingerprint"] and same_eval.data["queries"] > 0

    # Through the registry: promote the 3-tower (judged with no champion), then gate the 4-tower.
    store = tmp_path / "registry"
    first = G.run_gate(evals / "all", tmp_path / "d", CFG, candidate_name="three_tower", registry=str(store))
    assert first.champion is None and "no champion yet" in first.reason
    Registry(store).promote(tmp_path / "d" / "blessing.json")
    via_registry = G.run_gate(evals / "all", tmp_path / "e", CFG, candidate_name="four_tower", registry=str(store))
    assert via_registry.champion.version == model_version(champ)
    assert via_registry.comparisons == same_eval.comparisons
