"""``vsearch demo --out DIR``: the whole story on a laptop, as a plain Python driver.

synth (default preset, seed 0) -> train image-only, 3-tower, 4-tower (from the 3-tower
model) -> evaluate all three on the same test set -> ``DIR/metrics.json``,
``DIR/report.html`` and a summary table on stdout. (The KFP pipeline takes this over later.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from vsearch.config import load_config
from vsearch.data import synth
from vsearch.evaluation.evaluate import METRICS_FILE, REPORT_FILE, evaluate, format_table
from vsearch.training.loop import train

MODELS = (("image_only", "image_only", None), ("three_tower", "three_tower", None), ("four_tower", "four_tower", "three_tower"))


def _log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _dataset(out: Path, preset: str, seed: int) -> Path:
    data = out / "data"
    record = data / "synth_config.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        if saved.get("preset") == preset and saved.get("seed") == seed:
            _log(f"reusing dataset {data} (preset {preset}, seed {seed})")
            return data
    _log(f"generating the '{preset}' street-to-shop benchmark (seed {seed}) -> {data}")
    summary = synth.generate(data, preset, seed=seed, overwrite=True)
    _log(f"dataset: {json.dumps(summary)}")
    return data


def run_demo(out: str | os.PathLike, preset: str = "default", seed: int = 0, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Run the demo; returns the metrics.json dict. ``overrides`` apply to every model."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = _dataset(out, preset, seed)
    model_dirs: dict[str, Path] = {}
    timings: dict[str, float] = {}
    for name, preset_name, init in MODELS:
        cfg = load_config(preset_name, [f"train.seed={seed}", *overrides])
        model_dir = out / "models" / name
        _log(f"training {name} (config {preset_name}{', init ' + init if init else ''})")
        t0 = time.perf_counter()
        summary = train(cfg, data, model_dir, init=model_dirs[init] if init else None, restart=True)
        timings[name] = time.perf_counter() - t0
        _log(f"{name}: {summary['steps']} steps in {timings[name]:.0f} s ({summary['samples_per_s']:.0f} samples/s)")
        model_dirs[name] = model_dir
    _log("evaluating all three models on the test split")
    eval_cfg = load_config("three_tower", list(overrides)).eval
    metrics = evaluate(
        {name: str(path) for name, path in model_dirs.items()},
        data,
        out / "eval",
        eval_cfg,
        title="vsearch demo: image-only vs 3-tower vs 4-tower",
    )
    _copy_atomic(out / "eval" / METRICS_FILE, out / METRICS_FILE)
    _copy_atomic(out / "eval" / REPORT_FILE, out / REPORT_FILE)
    from vsearch.rollout.release import run_release  # gate -> registry -> rollout, drift windows

    run_release(out, data, out / "eval", model_dirs, preset, seed)
    total = time.perf_counter() - started
    (out / "timings.json").write_text(json.dumps({"train_seconds": timings, "total_seconds": total}, indent=2))
    print(format_table(metrics))
    print(f"\nmetrics: {out / METRICS_FILE}\nreport:  {out / REPORT_FILE}\ntotal:   {total:.0f} s")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vsearch demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="run folder (data, models, eval, metrics.json, report.html)")
    parser.add_argument("--preset", default="default", help="benchmark preset (tiny, default, holdout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="dotted config overrides applied to every model (e.g. train.max_steps=20)")
    args = parser.parse_args(argv)
    from vsearch import artifacts

    artifacts.check_out(args.out, ours=("timings.json", METRICS_FILE))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    artifacts.mark(args.out)  # the run folder is built in place: say now that it is ours
    run_demo(args.out, args.preset, args.seed, args.overrides)
    return 0
