"""False-alarm rate of the drift monitor on same-distribution windows, and its detection rate
on shifted ones, measured side by side in one run. Prints one JSON object.

Two ways to draw a same-distribution pair of windows (``--mode``):

- ``resample`` (default): one benchmark dataset is snapshotted whole under the model; each
  run draws two *disjoint* random windows from it (``--window`` queries, and half of the
  catalog each): the reference and the current window;
- ``seeds``: each run compares the reference window (seed 0) with a window of a freshly
  generated dataset of the same preset (seed 1, 2, ...): new designs and products from the
  same generator, which also captures design-to-design variation (slower: one synth each).

Each run also compares the same reference with a window drawn from a shifted copy of the
data (`vsearch.monitoring.simulate.shifted_copy`: category mix, colour shift, titles) to
show the monitor is not silent. The decision is exactly ``vsearch drift``'s (configs/drift.yaml,
no HTML). Acceptance: false-alarm rate <= 5% over 20 runs.

    python benchmarks/drift_false_alarm.py --runs 20                     # default preset, resample
    python benchmarks/drift_false_alarm.py --runs 20 --mode seeds --preset tiny
    python benchmarks/drift_false_alarm.py --model runs/demo/models/four_tower --data runs/demo/data
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")


def _log(message: str) -> None:
    print(f"[drift-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _window(meta, queries, products, q_idx, p_idx, threshold=None):
    """A window (as load_snapshot returns it) made of rows of a pooled snapshot."""
    q, p = queries.iloc[q_idx].reset_index(drop=True), products.iloc[p_idx].reset_index(drop=True)
    meta = dict(meta, queries=len(q), products=len(p))
    if threshold is None:  # a reference: its own low-confidence threshold, as build_snapshot sets it
        threshold = float(np.quantile(q["top1_similarity"], meta.get("low_confidence_quantile") or 0.1))
    meta["low_confidence_threshold"] = threshold
    return meta, q, p


def main(argv: list[str] | None = None) -> int:
    import torch

    from vsearch.config import load_config
    from vsearch.data import synth
    from vsearch.monitoring.drift import compare_windows, load_drift_config
    from vsearch.monitoring.reference import build_snapshot, load_snapshot
    from vsearch.monitoring.simulate import shifted_copy
    from vsearch.training.loop import train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--mode", choices=["resample", "seeds"], default="resample")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--data", help="dataset to use (default: generate the preset, seed 0, in --work)")
    parser.add_argument("--model", help="model folder (default: train the tiny config for --steps steps on the data)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--window", type=int, default=500, help="queries per window")
    parser.add_argument("--work", default="runs/drift_bench")
    parser.add_argument("--config", default="drift")
    parser.add_argument("overrides", nargs="*", help="drift config overrides, e.g. embeddings.params.threshold=0.6")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = load_drift_config(args.config, args.overrides)
    started = time.perf_counter()

    data = Path(args.data) if args.data else work / f"data_{args.preset}_0"
    if not args.data and not (data / "synth_config.json").is_file():
        _log(f"generating the {args.preset} preset (seed 0)")
        synth.generate(data, args.preset, seed=0, overwrite=True)
    model = Path(args.model) if args.model else work / f"model_{data.name}_{args.steps}"
    if not args.model and not (model / "vsearch_model.json").is_file():
        _log(f"training the tiny config for {args.steps} steps on {data}")
        train(load_config("tiny", [f"train.max_steps={args.steps}", "data.batch_size=32"]), data, model, restart=True, progress=False)
    shifted = work / f"{data.name}_shifted"
    shifted_copy(data, shifted)

    def pool(src: Path, name: str, max_rows: int = 10**9):
        out = work / f"pool_{name}"
        build_snapshot(src, out, model_dir=model, max_queries=max_rows, max_products=max_rows, seed=0)
        return load_snapshot(out)

    _log("snapshotting the data and its shifted copy")
    ref_meta, ref_q, ref_p = pool(data, "reference")
    sh_meta, sh_q, sh_p = pool(shifted, "shifted")
    n_q = min(args.window, len(ref_q) // 2)
    n_p = len(ref_p) // 2

    false_alarms, detections, per_check, seconds = [], [], {}, []
    for run in range(args.runs):
        rng = np.random.default_rng(1000 + run)
        q_perm, p_perm = rng.permutation(len(ref_q)), rng.permutation(len(ref_p))
        reference = _window(ref_meta, ref_q, ref_p, q_perm[:n_q], p_perm[:n_p])
        if args.mode == "resample":
            current = _window(ref_meta, ref_q, ref_p, q_perm[n_q : 2 * n_q], p_perm[n_p : 2 * n_p], reference[0]["low_confidence_threshold"])
        else:
            seed_data = work / f"data_{args.preset}_{run + 1}"
            if not (seed_data / "synth_config.json").is_file():
                synth.generate(seed_data, args.preset, seed=run + 1, overwrite=True)
            s_meta, s_q, s_p = pool(seed_data, f"seed{run + 1}")
            current = _window(s_meta, s_q, s_p, rng.permutation(len(s_q))[:n_q], rng.permutation(len(s_p))[:n_p],
                              reference[0]["low_confidence_threshold"])
        shifted_window = _window(sh_meta, sh_q, sh_p, rng.permutation(len(sh_q))[: min(n_q, len(sh_q))],
                                 rng.permutation(len(sh_p))[: min(n_p, len(sh_p))], reference[0]["low_confidence_threshold"])
        t0 = time.perf_counter()
        same = compare_windows(reference, current, cfg)
        seconds.append(time.perf_counter() - t0)
        moved = compare_windows(reference, shifted_window, cfg)
        false_alarms.append(same["drift"])
        detections.append(moved["drift"] and moved["summary"]["embedding"] and moved["summary"]["feature"])
        for check in same["checks"]:
            per_check.setdefault(check["name"], 0)
            per_check[check["name"]] += int(check["drifted"])
        _log(f"run {run + 1}/{args.runs}: same-distribution drift={same['drift']} {same['drifted_checks']}; "
             f"shifted detected={detections[-1]}")

    result = {
        "benchmark": "drift_false_alarm",
        "mode": args.mode,
        "preset": args.preset if not args.data else None,
        "data": str(data),
        "model": str(model),
        "runs": args.runs,
        "window": {"queries": n_q, "products": n_p},
        "false_alarm_rate": sum(false_alarms) / args.runs,
        "false_alarms": int(sum(false_alarms)),
        "false_alarms_per_check": {k: v for k, v in per_check.items() if v},
        "shifted_detection_rate": sum(detections) / args.runs,
        "acceptance_false_alarm_rate_max": 0.05,
        "passes": sum(false_alarms) / args.runs <= 0.05,
        "median_seconds_per_comparison": statistics.median(seconds),
        "config": {"embeddings": asdict(cfg.embeddings), "features": {k: v for k, v in asdict(cfg.features).items() if "columns" not in k},
                   "health": asdict(cfg.health)},
        "total_seconds": time.perf_counter() - started,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
