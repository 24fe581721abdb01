"""Training crash safety: SIGKILL ``vsearch train`` at named stages, rerun the same command.

A kill at any instant leaves either the previous output or a run that the same command
finishes, with the same model as an uninterrupted run and no leftover staging folders.
Stages are ``vsearch.faults.fault_point`` calls (test-only, ``VSEARCH_FAULT=<stage>``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from vsearch.cli import main

pytestmark = pytest.mark.integration

OVERRIDES = ["train.max_steps=4", "train.checkpoint_every=2"]


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _argv(data, out, *overrides):
    return ["train", "--config", "tiny_image_only", "--data", str(data), "--out", str(out), "--quiet", *OVERRIDES, *overrides]


def _losses(model_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (model_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "model"
    assert main(_argv(tiny_data, out)) == 0
    return out


def _killed(argv, stage, tmp_path):
    env = {**os.environ, "VSEARCH_FAULT": stage}
    proc = subprocess.run([sys.executable, "-m", "vsearch.cli", *argv], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, (stage, proc.returncode, proc.stderr[-2000:])


@pytest.mark.parametrize(
    "stage,previous",
    [
        ("train.checkpoint", False),  # mid-training, right after a checkpoint
        ("train.save_model", False),  # training done, the model not yet written
        ("train.finished", False),  # the finished run staged, publish not begun
        # between publish's two renames, over a previous model (train() publishes only the
        # model: the drift reference is the build_drift_reference step's)
        ("publish@1", True),
    ],
)
def test_a_kill_at_any_stage_is_finished_by_rerunning_the_same_command(tiny_data, straight, tmp_path, stage, previous):
    out = tmp_path / "model"
    if previous:  # an earlier model of another config at --out: the publish window replaces it
        assert main(_argv(tiny_data, out, "train.max_steps=2")) == 0
    _killed(_argv(tiny_data, out), stage, tmp_path)
    if previous:
        assert not out.exists() and list(tmp_path.glob(".model.old-*")), "killed between the renames"
    assert main(_argv(tiny_data, out)) == 0, "the rerun finishes the run (no 'different config')"
    np.testing.assert_allclose(_losses(out), _losses(straight), rtol=1e-5, atol=1e-6)
    if stage != "train.checkpoint":  # the model was complete in staging: the very same bytes
        assert _sha(out / "model.safetensors") == _sha(straight / "model.safetensors")
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("model",))
    assert leftovers == [], f"leftover staging after the rerun: {leftovers}"
