import pytest

from side_by_side import table


def _run(mean: float, seeds=(0, 1)) -> dict:
    entry = {"mean": mean, "ci95": [0.70, 0.74], "per_seed": [mean - 0.01, mean + 0.01]}
    return {"preset": "default", "split": "test", "seeds": list(seeds), "models": {"image_only": {"recall@1": entry}},
            "paired": {"p": {**entry, "holds": True}}}


def test_says_whether_the_second_mean_lies_in_the_first_ci():
    inside = table(_run(0.72), _run(0.73), "a", "b")
    assert "| image_only | recall@1 | 0.720 [0.700, 0.740] | 0.730 [0.700, 0.740] | +0.010 | +0.010 +0.010 | yes |" in inside
    assert "| **no** |" in table(_run(0.72), _run(0.75), "a", "b")


def test_refuses_runs_of_other_seeds():
    with pytest.raises(SystemExit, match="seeds"):
        table(_run(0.72), _run(0.72, seeds=(0, 2)), "a", "b")
