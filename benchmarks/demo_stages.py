"""Where `make demo`'s training time goes: the demo's three training stages, timed per lever.

Runs image_only, three_tower and four_tower (init from three_tower) on the demo's dataset
(synth preset ``default``, seed 0, as vsearch.demo) once per lever setting, and prints JSON:
per stage seconds, samples/s, seconds inside the image tower and the text tower (forward),
in dataset item loading (decode/resize/augment/tokenize), the rest (loss, backward, optimizer),
each lever's peak memory and page faults, and the machine's load before and after.

    .venv/bin/python benchmarks/demo_stages.py --steps 20 --levers none,text_cache
    .venv/bin/python benchmarks/demo_stages.py --full --levers none,all

Levers: ``none`` (all off), ``text_cache`` (frozen text tower output cached per distinct
text), ``bf16`` (``train.precision=bf16``: bf16 autocast with channels_last image towers; the
loss stays float32), ``all``; ``all_default_heap`` is ``all`` with glibc's default allocator
behaviour (`vsearch.memory.keep_freed_memory` off); ``all_stock_depthwise_grad`` is ``all`` with
ATen's own (slow on the CPU in bf16) input gradient for MobileNetV2's stride-2 depthwise
convolutions (`vsearch.models.mobilenet.DepthwiseConv2d` off). Each lever runs in its own process.

    .venv/bin/python benchmarks/demo_stages.py --steps 20 --levers all_default_heap,all --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from vsearch.config import load_config
from vsearch.data import dataset as dataset_module
from vsearch.data.synth import generate
from vsearch.demo import MODELS as STAGES  # (name, preset, init): the demo's three trainings
from vsearch.models import mobilenet, towers
from vsearch import memory
from vsearch.training.loop import train

LEVERS = {
    "none": {"text_cache": False, "set": []},
    "text_cache": {"text_cache": True, "set": []},
    # bf16 autocast (the loss stays float32) with channels_last image towers (training/task.py).
    "bf16": {"text_cache": False, "set": ["train.precision=bf16"]},
    "all": {"text_cache": True, "set": ["train.precision=bf16"]},
    # The demo's setting with glibc's default allocator (vsearch.memory.keep_freed_memory off).
    "all_default_heap": {"text_cache": True, "set": ["train.precision=bf16"], "keep_freed": False},
    # The demo's setting with ATen's own input gradient for the stride-2 depthwise convolutions
    # (vsearch.models.mobilenet.FAST_STRIDED_DEPTHWISE_GRAD off).
    "all_stock_depthwise_grad": {"text_cache": True, "set": ["train.precision=bf16"], "fast_depthwise_grad": False},
    # Recipe candidates (they change what is trained: quality.py decides): smaller images.
    "bf16_img112": {"text_cache": False, "set": ["train.precision=bf16", "model.image_size=112"]},
    "bf16_img96": {"text_cache": False, "set": ["train.precision=bf16", "model.image_size=96"]},
}


class _Clock:
    """Seconds spent inside wrapped callables, by label."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, owner, attr: str, label_of):
        original = getattr(owner, attr)

        def timed(inner_self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(inner_self, *args, **kwargs)
            finally:
                self.seconds[label_of(args, kwargs)] += time.perf_counter() - t0

        setattr(owner, attr, timed)
        return original


def _run_stages(data: Path, work: Path, steps: int | None, lever: dict, clock: _Clock) -> dict:
    towers.Encoder.cache_frozen = lever["text_cache"]
    memory.KEEP_FREED_MEMORY = lever.get("keep_freed", True)
    mobilenet.FAST_STRIDED_DEPTHWISE_GRAD = lever.get("fast_depthwise_grad", True)
    results, model_dirs = {}, {}
    for name, preset, init in STAGES:
        overrides = ["train.seed=0", *lever["set"]] + ([f"train.max_steps={steps}"] if steps else [])
        cfg = load_config(preset, overrides)
        clock.seconds.clear()
        t0 = time.perf_counter()
        summary = train(cfg, data, work / name, init=model_dirs.get(init), restart=True)
        seconds = time.perf_counter() - t0
        model_dirs[name] = work / name
        parts = {k: round(v, 2) for k, v in clock.seconds.items()}
        parts["other_loss_backward_optimizer_setup"] = round(seconds - sum(clock.seconds.values()), 2)
        results[name] = {
            "steps": summary["steps"],
            "seconds": round(seconds, 2),
            "train_samples_per_s": round(summary["samples_per_s"], 1),
            "parts_seconds": parts,
            "final": summary.get("final"),
        }
    results["total_seconds"] = round(sum(r["seconds"] for r in results.values() if isinstance(r, dict)), 2)
    return results


def _one_lever(args) -> None:
    """Child process: one lever's stages, as JSON on the last line of stdout."""
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = _Clock()
    clock.wrap(towers.Encoder, "forward", lambda a, kw: "text_tower_s" if "input_ids" in kw else "image_tower_s")
    clock.wrap(dataset_module.EngagementDataset, "__getitem__", lambda a, kw: "dataset_items_s")
    result = _run_stages(Path(args.data), Path(args.work), None if args.full else args.steps, LEVERS[args.one], clock)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["page_faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="time N steps per stage")
    parser.add_argument("--full", action="store_true", help="whole stages (the demo's epochs)")
    parser.add_argument("--levers", default="none,all", help=f"comma list of {sorted(LEVERS)}")
    parser.add_argument("--data", default=None, help="existing demo dataset (default: generate into a temp dir)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the lever list this many times, alternating; each lever keeps every "
                        "round's stages and reports the median total")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: this lever only
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return _one_lever(args)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "data"
        if not args.data:
            generate(data, "default", seed=0, overwrite=True)
        report = {"load_before": os.getloadavg(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
        report["steps_per_stage"] = "full" if args.full else args.steps
        names = list(dict.fromkeys(args.levers.split(",")))
        rounds: dict[str, list[dict]] = {name: [] for name in names}
        for r in range(args.rounds):
            for name in names:
                # Each lever in its own process: the allocator lever cannot be undone in-process,
                # and no lever inherits another's warm caches.
                work = Path(tmp) / f"{name}-{r}"
                child = [sys.executable, __file__, "--one", name, "--data", str(data), "--work", str(work),
                         "--steps", str(args.steps), "--threads", str(args.threads)] + (["--full"] if args.full else [])
                done = subprocess.run(child, check=True, stdout=subprocess.PIPE, text=True)
                rounds[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
                shutil.rmtree(work, ignore_errors=True)
        for name, runs in rounds.items():
            report[name] = runs[0] if len(runs) == 1 else {
                "rounds": runs, "total_seconds": statistics.median(run["total_seconds"] for run in runs)}
        base = report.get("none")
        for name in names:
            if base and name != "none":
                report[name]["speedup_vs_none"] = round(base["total_seconds"] / report[name]["total_seconds"], 3)
        for variant in ("all_default_heap", "all_stock_depthwise_grad"):  # the demo's setting minus one lever
            if variant in report and "all" in report:
                report[f"all_speedup_vs_{variant.removeprefix('all_')}"] = round(
                    report[variant]["total_seconds"] / report["all"]["total_seconds"], 3)
        report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
