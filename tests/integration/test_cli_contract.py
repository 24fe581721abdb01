"""The one-line error contract of every command, and outputs that never destroy inputs.

Every command x {bad YAML, bad override value, bad model folder, ``--out`` over an input}
ends with exit status 2 and one stderr line of at most 300 characters, and every input is
byte-identical afterwards. Commands run in-process through ``vsearch.cli.main``.
"""

from __future__ import annotations

import hashlib
import shutil

import pandas as pd
import pytest
import torch

from vsearch.cli import main
from vsearch.errors import MAX_ERROR_CHARS, error_line
from vsearch.schema import DataError

pytestmark = pytest.mark.integration


def _tree(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_data, tiny_models):
    """Inputs the commands may read but never change, and hostile files."""
    root = tmp_path_factory.mktemp("contract")
    paths = {"root": root, "data": root / "inputs" / "data", "model": root / "inputs" / "model"}
    shutil.copytree(tiny_data, paths["data"])
    shutil.copytree(tiny_models["three_tower"], paths["model"])
    (root / "broken.yaml").write_text("train: {lr: [1, 2}\n")
    (root / "python_tag.yaml").write_text("train:\n  lr: !!python/object/apply:os.system [echo pwned]\n")
    # A model folder whose weights are a pickle, and one with a pickle named .safetensors.
    pickle_model = root / "pickle_model"
    pickle_model.mkdir()
    shutil.copy(paths["model"] / "vsearch_model.json", pickle_model)
    torch.save({"w": torch.zeros(2)}, pickle_model / "pytorch_model.bin")
    fake = root / "fake_safetensors"
    shutil.copytree(paths["model"], fake)
    torch.save({"w": torch.zeros(2)}, fake / "model.safetensors")
    paths.update(pickle_model=pickle_model, fake_safetensors=fake)
    # Somebody's own folder: no command may replace it.
    foreign = root / "inputs" / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("years of work")
    paths["foreign"] = foreign
    # Drift windows: empty, one row, a NaN feature (edited copies of the model's reference window).
    from vsearch.monitoring.reference import build_reference

    build_reference(paths["model"], paths["data"], root / "reference")
    for name, edit in (("empty", lambda q: q.iloc[:0]), ("one_row", lambda q: q.iloc[:1]),
                       ("nan_feature", lambda q: q.assign(brightness=q["brightness"].where(q.index != 2)))):
        window = root / "inputs" / name
        shutil.copytree(root / "reference", window)
        queries = pd.read_parquet(window / "queries.parquet")
        edit(queries).to_parquet(window / "queries.parquet", index=False)
        paths[name] = window
    return paths


def _cases(w, out):
    d, m = str(w["data"]), str(w["model"])
    train = ["train", "--config", "tiny", "--data", d, "--quiet"]
    return {
        # bad YAML: a broken file and a python tag, wherever a command reads a config
        "train-broken-yaml": [*train, "--out", out, "--config", str(w["root"] / "broken.yaml")],
        "train-python-tag": [*train, "--out", out, "--config", str(w["root"] / "python_tag.yaml")],
        "evaluate-python-tag": ["evaluate", "--model", m, "--data", d, "--out", out, "--config", str(w["root"] / "python_tag.yaml")],
        "drift-broken-yaml": ["drift", "--reference", m, "--current", d, "--out", out, "--config", str(w["root"] / "broken.yaml")],
        "snapshot-python-tag": ["drift", "snapshot", "--model", m, "--data", d, "--out", out, "--config", str(w["root"] / "python_tag.yaml")],
        "gate-broken-yaml": ["gate", "--candidate", m, "--out", out, "--config", str(w["root"] / "broken.yaml")],
        "rollout-python-tag": ["rollout", "--blessing", m, "--out", out, "--config", str(w["root"] / "python_tag.yaml")],
        # bad override values
        "train-lr-nan": [*train, "--out", out, "train.lr=.nan"],
        "train-embed-dim-0": [*train, "--out", out, "model.embed_dim=0"],
        "train-max-steps-negative": [*train, "--out", out, "train.max_steps=-5"],
        "train-batch-over-products": [*train, "--out", out, "data.batch_size=1000"],
        "train-missing-device": [*train, "--out", out, "train.device=cuda:7"],
        "train-long-value": [*train, "--out", out, "model.embed_dim=" + "9x" * 40_000],
        "evaluate-n-boot-negative": ["evaluate", "--model", m, "--data", d, "--out", out, "eval.n_boot=-1"],
        "drift-section-not-mapping": ["drift", "--reference", m, "--current", d, "--out", out, "embeddings=[1]"],
        # bad model folders
        "evaluate-pickle-model": ["evaluate", "--model", str(w["pickle_model"]), "--data", d, "--out", out],
        "evaluate-fake-safetensors": ["evaluate", "--model", str(w["fake_safetensors"]), "--data", d, "--out", out],
        "train-init-fake-safetensors": [*train, "--out", out, "--init", str(w["fake_safetensors"])],
        "snapshot-pickle-model": ["drift", "snapshot", "--model", str(w["pickle_model"]), "--data", d, "--out", out],
        # drift windows too small or broken
        "drift-empty-window": ["drift", "--reference", str(w["root"] / "reference"), "--current", str(w["empty"]), "--out", out, "--no-html"],
        "drift-one-row-window": ["drift", "--reference", str(w["root"] / "reference"), "--current", str(w["one_row"]), "--out", out, "--no-html"],
        "drift-nan-feature": ["drift", "--reference", str(w["root"] / "reference"), "--current", str(w["nan_feature"]), "--out", out, "--no-html"],
        # --out over an input: is it, lies inside it, contains it; or somebody else's folder
        "validate-out-is-data": ["data", "validate", "--data", d, "--out", d, "--no-data-docs"],
        "validate-out-contains-data": ["data", "validate", "--data", d, "--out", str(w["data"].parent), "--no-data-docs"],
        "train-out-is-data": [*train, "--out", d],
        "train-out-inside-data": [*train, "--out", str(w["data"] / "images")],
        "train-out-is-init": [*train, "--out", m, "--init", m],
        "evaluate-out-is-model": ["evaluate", "--model", m, "--data", d, "--out", m],
        "drift-out-is-model": ["drift", "--reference", m, "--current", d, "--out", m, "--no-html"],
        "snapshot-out-is-data": ["drift", "snapshot", "--model", m, "--data", d, "--out", d],
        "features-out-is-data": ["features", "build-training-set", "--data", d, "--out", d],
        "synth-overwrite-foreign": ["data", "synth", "--preset", "tiny", "--out", str(w["foreign"]), "--overwrite"],
        "demo-out-foreign": ["demo", "--preset", "tiny", "--out", str(w["foreign"])],
        "train-out-foreign": [*train, "--out", str(w["foreign"])],
    }


CASES = sorted(_cases({k: __import__("pathlib").Path("/x") for k in (
    "root", "data", "model", "pickle_model", "fake_safetensors", "foreign", "empty", "one_row", "nan_feature")}, "o"))


@pytest.mark.parametrize("case", CASES)
def test_every_command_fails_with_one_short_line_and_leaves_inputs_untouched(work, tmp_path, capsys, case):
    inputs = work["root"] / "inputs"
    before = _tree(inputs)
    out = tmp_path / "out"
    rc = main(_cases(work, str(out))[case])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err[-3000:]
    assert len(lines) == 1 and "error" in lines[0] and len(lines[0]) <= MAX_ERROR_CHARS, err[-3000:]
    assert _tree(inputs) == before, "an input changed"
    assert not out.exists() and not list(tmp_path.glob("out.partial*")), "nothing written, nothing left to block a rerun"


def test_a_pretrained_backbone_with_pickle_weights_is_refused(work, tmp_path, capsys):
    from transformers import AutoConfig, AutoModel

    backbone = tmp_path / "vit"
    config = AutoConfig.for_model("vit", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, image_size=32, patch_size=8)
    config.save_pretrained(backbone)
    torch.save(AutoModel.from_config(config).state_dict(), backbone / "pytorch_model.bin")
    argv = ["train", "--config", "tiny_image_only", "--data", str(work["data"]), "--out", str(tmp_path / "m"), "--quiet",
            "train.max_steps=1", "model.image.type=''", f"model.image.pretrained={backbone}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "safetensors" in err and "pytorch_model.bin" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_error_lines_keep_file_row_and_rule_and_cut_long_values():
    err = DataError("/data/catalog.parquet", "column 'title' longer than 200 characters", 17, "x" * 80_000)
    line = error_line("data validate", err)
    assert len(line) <= MAX_ERROR_CHARS
    assert "/data/catalog.parquet, row 17: column 'title' longer than 200 characters (xxx" in line
    line = error_line("train", ValueError("y" * 50_000 + "\nsecond line"))
    assert len(line) <= MAX_ERROR_CHARS and "\n" not in line
