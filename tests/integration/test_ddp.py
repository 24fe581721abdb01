"""DDP parity: 2 processes (torchrun, gloo, CPU) train exactly like 1 process on the same global batch.

Real processes, real collectives: ``vsearch train --nproc-per-node 2`` re-launches itself
under ``torch.distributed.run --standalone``; each rank takes half of every global batch of 8,
features are all-gathered (with gradients) so every rank's loss is the loss over the global
batch, and DDP averages the gradients.

Model: the tiny 3-tower config with a LayerNorm-only image tower (tiny ViT) and dropout off
in the text tower. The default tiny ResNet has BatchNorm, which on CPU normalises each rank's
half on its own (torch's SyncBatchNorm runs on GPUs only), and dropout draws per-rank masks:
both change the numbers legitimately, so they are kept out of a test for exact parity.

Tolerances: float32 runs that differ only in the order of reductions (two half batches and
a 2-way gradient average vs one batch): measured differences on these machines are <= 5e-7
in the loss, <= 1e-5 relative in the gradient norm and <= 1e-6 in any weight after 8 AdamW
steps. The bounds below (loss 2e-5 abs, grad norm 2e-4 rel, weights 2e-5 abs) leave a margin
of ~20x and are orders of magnitude below what a real fault gives: per-rank negatives change
the loss by ~ln 2 per term, gradients off by the world size double (or halve) the norm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.integration

STEPS = 8
PARITY_OVERRIDES = [
    "model.image.type=vit",
    "model.image.kwargs={image_size: 32, patch_size: 8, hidden_size: 32, num_hidden_layers: 1, "
    "num_attention_heads: 2, intermediate_size: 64}",
    "model.text.kwargs={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64, "
    "hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}",
    f"train.max_steps={STEPS}",
    "data.batch_size=8",
]
LOSS_ATOL = 2e-5
GRAD_NORM_RTOL = 2e-4
WEIGHT_ATOL = 2e-5


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(
        OMP_NUM_THREADS="1",  # one thread per process: 2 ranks on 2 cores, same kernels as the 1-process run
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        DO_NOT_TRACK="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def _run(cmd: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, f"{cmd}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    return proc


def _train(data: Path, out: Path, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    launch = ["--nproc-per-node", str(nproc)] if nproc > 1 else []
    cmd = [sys.executable, "-m", "vsearch.cli", "train", *launch, "--config", "tiny", "--data", str(data), "--out", str(out), "--quiet"]
    return _run([*cmd, *PARITY_OVERRIDES, *extra])


def _log(model_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines() if line]


def _assert_same_curve(reference: list[dict], other: list[dict]) -> None:
    assert [r["step"] for r in reference] == list(range(1, STEPS + 1))
    assert [r["step"] for r in other] == list(range(1, STEPS + 1))
    for ref, got in zip(reference, other):
        step = ref["step"]
        assert got["loss"] == pytest.approx(ref["loss"], abs=LOSS_ATOL), f"loss at step {step}"
        for term in (k for k in ref if k.endswith("_loss")):
            assert got[term] == pytest.approx(ref[term], abs=LOSS_ATOL), f"{term} at step {step}"
        # AdamW is blind to a constant gradient scale; the logged (pre-clip) norm is not.
        assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=GRAD_NORM_RTOL), f"grad_norm at step {step}"
        assert got["lr"] == pytest.approx(ref["lr"], rel=1e-12)
        assert got["logit_scale"] == pytest.approx(ref["logit_scale"], abs=WEIGHT_ATOL)
    # The curve moves (a frozen or constant run would match trivially).
    assert len({round(r["loss"], 4) for r in reference}) > STEPS // 2


def _max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa if wa[k].is_floating_point())


@pytest.fixture(scope="module")
def single_process(tiny_data, tmp_path_factory) -> Path:
    """The reference: one process, global batch 8."""
    out = tmp_path_factory.mktemp("ddp") / "one"
    _train(tiny_data, out, 1)
    return out


def test_two_processes_follow_the_single_process_loss_curve(tiny_data, single_process, tmp_path):
    two = tmp_path / "two"
    proc = _train(tiny_data, two, 2)

    summary = json.loads((two / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 8 and summary["steps"] == STEPS
    assert json.loads((single_process / "train_summary.json").read_text())["world_size"] == 1
    assert "BatchNorm" not in proc.stderr  # the parity model has none (see the module docstring)
    # Exactly one published line: rank 0 reports, rank 1 stays quiet.
    assert [json.loads(line)["out"] for line in proc.stdout.splitlines() if line.startswith("{")] == [str(two)]

    _assert_same_curve(_log(single_process), _log(two))
    assert _max_weight_diff(single_process, two) < WEIGHT_ATOL

    # The published folder is the same model: files, architecture, tokenizer.
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(two) == files(single_process)
    assert not (tmp_path / "two.partial").exists()
    assert json.loads((two / "vsearch_model.json").read_text()) == json.loads((single_process / "vsearch_model.json").read_text())
    for tok_file in (single_process / "tokenizer").iterdir():
        assert (two / "tokenizer" / tok_file.name).read_bytes() == tok_file.read_bytes(), tok_file.name


def test_ddp_resumes_from_a_checkpoint_written_by_rank_0(tiny_data, single_process, tmp_path):
    """Preempted at step 4 under DDP (rank 0 writes the checkpoint), relaunched with the
    documented torchrun command line: every rank loads it and the curve is that of one
    uninterrupted process."""
    out = tmp_path / "resumed"
    driver = tmp_path / "preempt.py"
    driver.write_text(
        textwrap.dedent(
            f"""
            from vsearch.config import load_config
            from vsearch.training.loop import train

            cfg = load_config("tiny", {PARITY_OVERRIDES!r})
            summary = train(cfg, {str(tiny_data)!r}, {str(out)!r}, stop_after=4, progress=False)
            assert summary["published"] is False and summary["world_size"] == 2, summary
            """
        )
    )
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    _run([*torchrun, str(driver)])
    partial = Path(f"{out}.partial")
    assert not out.exists()
    assert sorted(p.name for p in (partial / "checkpoints").iterdir()) == ["step_00000004"]
    assert [r["step"] for r in _log(partial)] == [1, 2, 3, 4]

    cmd = ["-m", "vsearch.training.loop", "--config", "tiny", "--data", str(tiny_data), "--out", str(out), "--quiet"]
    _run([*torchrun, *cmd, *PARITY_OVERRIDES])

    assert json.loads((out / "train_summary.json").read_text())["world_size"] == 2
    _assert_same_curve(_log(single_process), _log(out))
    assert _max_weight_diff(single_process, out) < WEIGHT_ATOL


def test_nproc_per_node_rejects_a_global_batch_it_cannot_split(tiny_data, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "vsearch.cli", "train", "--nproc-per-node", "3", "--config", "tiny",
         "--data", str(tiny_data), "--out", str(tmp_path / "m")],
        env=_env(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "data.batch_size 8 (the global batch) must be divisible by --nproc-per-node 3" in proc.stderr
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()



def test_each_rank_draws_its_own_random_stream_and_one_process_keeps_its_own():
    from vsearch.training.distributed import DistEnv, rank_seed

    assert rank_seed(0, 5, DistEnv()) is None  # one process: the global stream is left alone
    seeds = {rank_seed(0, step, DistEnv(rank=r, world_size=4)) for step in range(50) for r in range(4)}
    assert len(seeds) == 200  # distinct per (step, rank): no two ranks share augmentations or dropout masks
    assert rank_seed(3, 7, DistEnv(rank=1, world_size=2)) == rank_seed(3, 7, DistEnv(rank=1, world_size=2))
