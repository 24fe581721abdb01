"""benchmarks/quality.py end to end on the tiny preset: its JSON, and --reuse refusing a stale model."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(quality, capsys, tmp_path, *extra):
    args = [
        "--preset", "tiny", "--seeds", "0", "--split", "val", "--n-boot", "50",
        "--image-only", "tiny_image_only", "--three", "tiny", "--models", "image_only", "three_tower",
        "--cache", str(tmp_path / "data"), "--work", str(tmp_path / "work"), *extra,
    ]  # fmt: skip
    assert quality.main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_quality_json_and_reuse_check(quality, capsys, tmp_path):
    first = _run(quality, capsys, tmp_path)
    assert set(first["models"]) == {"image_only", "three_tower"}
    r1 = first["paired"]["three_tower-image_only:recall@1"]
    per_query_diff = first["models"]["three_tower"]["recall@1"]["mean"] - first["models"]["image_only"]["recall@1"]["mean"]
    assert r1["mean"] == pytest.approx(per_query_diff)
    assert r1["ci95"][0] <= r1["mean"] <= r1["ci95"][1]
    xcat = first["paired"]["three_tower-image_only:cross_category_fp@10"]
    assert xcat["relative_required"] == -0.20
    # The resolved configs say what was trained, not just which preset was named.
    assert first["resolved_configs"]["three_tower"]["name"] == "tiny"
    assert first["aten_depthwise_grad"] is False  # the shipped kernel unless asked
    assert first["resolved_configs"]["three_tower"]["train"]["seed"] == 0
    assert "product_text" in first["resolved_configs"]["three_tower"]["model"]["towers"]

    # Reusing both models gives the same figures without training again.
    summary = tmp_path / "work" / "seed0" / "three_tower" / "train_summary.json"
    stamp = summary.stat().st_mtime_ns
    again = _run(quality, capsys, tmp_path, "--reuse", "image_only", "three_tower")
    assert summary.stat().st_mtime_ns == stamp
    assert again["models"]["three_tower"]["recall@1"]["mean"] == first["models"]["three_tower"]["recall@1"]["mean"]

    # A reused model trained with another config is refused, naming the file and the keys.
    with pytest.raises(SystemExit, match=r"three_tower/run_config\.yaml was trained with another config \(differs at train\.lr\)"):
        _run(quality, capsys, tmp_path, "--reuse", "image_only", "three_tower", "--three-set", "train.lr=0.5")
    assert summary.stat().st_mtime_ns == stamp  # the refused model is left as it was
    # Keys that do not change the model are not a reason to refuse.
    _run(quality, capsys, tmp_path, "--reuse", "image_only", "three_tower", "--set", "train.log_every=3")


def test_config_differences_reports_nested_keys(quality):
    want = {"name": "a", "train": {"lr": 1.0, "log_every": 5}, "loss": {"pairs": [{"w": 1}]}}
    have = {"name": "b", "train": {"lr": 2.0, "log_every": 9}, "loss": {"pairs": [{"w": 2}]}}
    assert quality.config_differences(want, have) == ["loss.pairs", "train.lr"]
    assert quality.config_differences(want, want) == []
