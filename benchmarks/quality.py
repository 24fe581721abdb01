"""Model quality over seeds: image-only vs 3-tower vs 4-tower, with paired differences.

For each seed s: the benchmark preset generated with seed s (``--data-seeds vary``, the
default; ``fixed`` keeps the preset's own seed), then image-only, 3-tower and 4-tower (from
that 3-tower) trained with ``train.seed=s``, all evaluated on the same split. Prints one
JSON object with, per model and metric, the mean over seeds and a 95% CI, and the paired
differences the paper's claim is about:

- 3-tower minus image-only on recall@1 (want > 0) and cross_category_fp@10 (want < 0);
- 4-tower minus 3-tower on multimodal_recall@10 (want > 0).

CIs come from a stratified bootstrap: queries are resampled within each seed (the same
resample for both models of a paired difference) and the per-seed means averaged, so the
interval reflects query sampling over all seeds' test sets. The per-seed values and a
t-interval across seeds are reported too, so seed-to-seed spread is visible.

Tune on ``--split val`` (test products never influence a choice); report on ``test``.
``--reuse`` takes an already trained model from ``--work`` only if its saved config is the
requested one (else it stops, naming the keys); the JSON records every resolved config.

    python benchmarks/quality.py --preset default --seeds 0 1 2
    python benchmarks/quality.py --preset default --seeds 0 --split val --set train.epochs=20
    python benchmarks/quality.py --three-set loss.pairs=[...]   # per-model overrides
    python benchmarks/quality.py --set train.precision=bf16 [--aten-depthwise-grad]  # CPU, as the demo
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yaml

# (model a, model b, metric, direction, required relative change of a vs b): the bar.
PAIRED = (
    ("three_tower", "image_only", "recall@1", "higher", None),
    ("three_tower", "image_only", "cross_category_fp@10", "lower", -0.20),
    ("four_tower", "three_tower", "multimodal_recall@10", "higher", None),
)


def stratified_ci(per_seed: list[np.ndarray], n_boot: int, seed: int, other: list[np.ndarray] | None = None):
    """Mean over seeds of per-seed means (of a - b if ``other``) and its 95% bootstrap CI."""
    rng = np.random.default_rng(seed)
    boots = np.zeros(n_boot)
    point = []
    for i, values in enumerate(per_seed):
        values = values if other is None else values - other[i]
        point.append(values.mean())
        idx = rng.integers(0, len(values), size=(n_boot, len(values)))
        boots += values[idx].mean(axis=1)
    boots /= len(per_seed)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(np.mean(point)), [float(lo), float(hi)], [float(p) for p in point]


def t_interval(points: list[float]) -> list[float] | None:
    """95% Student-t interval of the mean across seeds (None for one seed)."""
    if len(points) < 2:
        return None
    from scipy import stats

    mean, sem = statistics.mean(points), statistics.stdev(points) / math.sqrt(len(points))
    half = float(stats.t.ppf(0.975, len(points) - 1)) * sem
    return [mean - half, mean + half]


# Keys that do not change what a model learns: a reused model may differ there.
REUSE_IGNORED = ("name", "train.log_every", "train.checkpoint_every", "train.device", "eval")


def config_differences(want: dict, have: dict, prefix: str = "") -> list[str]:
    """Dotted keys where two config dicts differ (REUSE_IGNORED left out)."""
    keys: list[str] = []
    for key in sorted(set(want) | set(have)):
        path = f"{prefix}{key}"
        if path in REUSE_IGNORED:
            continue
        a, b = want.get(key), have.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += config_differences(a, b, f"{path}.")
        elif a != b:
            keys.append(path)
    return keys


def check_reusable(model_dir: Path, cfg) -> None:
    """A model reused from --work must have been trained with the requested config."""
    from vsearch.config import ConfigError, config_from_dict, to_dict
    from vsearch.training.loop import RUN_CONFIG_FILE

    saved = model_dir / RUN_CONFIG_FILE
    try:
        have = to_dict(config_from_dict(yaml.safe_load(saved.read_text())))
    except ConfigError as err:  # e.g. written before issue 22 retired the experiment-only loss keys
        raise SystemExit(f"--reuse: {saved} no longer loads ({err}); retrain it (leave the model out of --reuse)") from err
    diff = config_differences(to_dict(cfg), have)
    if diff:
        raise SystemExit(
            f"--reuse: {saved} was trained with another config (differs at {', '.join(diff)}); "
            "retrain it (leave the model out of --reuse) or use another --work"
        )


def run_seed(args, seed: int, work: Path, resolved: dict) -> dict[str, dict[str, np.ndarray]]:
    from vsearch.config import load_config, to_dict
    from vsearch.data import synth
    from vsearch.evaluation.evaluate import evaluate_model, load_eval_set
    from vsearch.models import load_model
    from vsearch.training.loop import train

    data_seed = seed if args.data_seeds == "vary" else None
    data = Path(args.cache) / f"{args.preset}-seed{data_seed if data_seed is not None else 'preset'}"
    if not (data / "synth_config.json").is_file():
        synth.generate(data, args.preset, seed=data_seed, overwrite=True)
    evalset = load_eval_set(data, split=args.split)
    results, dirs = {}, {}
    specs = (
        ("image_only", args.image_only, args.image_only_set, None),
        ("three_tower", args.three, args.three_set, None),
        ("four_tower", args.four, args.four_set, "three_tower"),
    )
    for name, preset, extra, init in specs:
        if name not in args.models:
            continue
        cfg = load_config(preset, [f"train.seed={seed}", *args.set, *extra])
        resolved.setdefault(name, to_dict(cfg))
        dirs[name] = work / f"seed{seed}" / name
        t0 = time.perf_counter()
        if name in args.reuse and (dirs[name] / "train_summary.json").is_file():
            # an earlier run's model of the same seed (e.g. the 3-tower a 4-tower variant starts from)
            check_reusable(dirs[name], cfg)
        else:
            train(cfg, data, dirs[name], init=dirs[init] if init else None, restart=True, progress=False)
        model, tokenizer = load_model(dirs[name])
        result = evaluate_model(model, tokenizer, evalset, cfg.eval)
        results[name] = result.per_query
        print(
            f"[quality] seed {seed} {name}: {time.perf_counter() - t0:.0f} s "
            + " ".join(f"{k}={v.mean():.3f}" for k, v in result.per_query.items()),
            file=sys.stderr,
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-seeds", choices=("vary", "fixed"), default="vary")
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--image-only", default="image_only", help="config preset of the baseline")
    parser.add_argument("--three", default="three_tower")
    parser.add_argument("--four", default="four_tower")
    parser.add_argument("--models", nargs="+", default=["image_only", "three_tower", "four_tower"])
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every model")
    parser.add_argument("--image-only-set", nargs="*", default=[])
    parser.add_argument("--three-set", nargs="*", default=[])
    parser.add_argument("--four-set", nargs="*", default=[])
    parser.add_argument("--cache", default="runs/quality-data", help="generated datasets are kept here")
    parser.add_argument("--work", default="runs/quality", help="models are written here")
    parser.add_argument("--reuse", nargs="*", default=[], help="models to reuse from --work if already trained (same seed)")
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--label", default="", help="free text recorded in the output")
    parser.add_argument("--aten-depthwise-grad", action="store_true",
                        help="ATen's own bf16 CPU input gradient for MobileNetV2's stride-2 depthwise convolutions "
                        "(vsearch.models.mobilenet.FAST_STRIDED_DEPTHWISE_GRAD off): the side-by-side of that kernel")
    args = parser.parse_args(argv)
    from vsearch.models import mobilenet

    mobilenet.FAST_STRIDED_DEPTHWISE_GRAD = not args.aten_depthwise_grad
    if "four_tower" in args.models and "three_tower" not in args.models:
        parser.error("four_tower starts from three_tower: include both")

    started = time.perf_counter()
    resolved: dict[str, dict] = {}
    per_seed = [run_seed(args, s, Path(args.work), resolved) for s in args.seeds]
    models = list(per_seed[0])
    summary: dict = {}
    for name in models:
        summary[name] = {}
        for metric in per_seed[0][name]:
            mean, ci, points = stratified_ci([r[name][metric] for r in per_seed], args.n_boot, 0)
            summary[name][metric] = {"mean": mean, "ci95": ci, "per_seed": points, "t95_across_seeds": t_interval(points)}
    paired = {}
    for a, b, metric, want, relative_bar in PAIRED:
        if a in models and b in models and metric in per_seed[0][a]:
            mean, ci, points = stratified_ci(
                [r[a][metric] for r in per_seed], args.n_boot, 1, other=[r[b][metric] for r in per_seed]
            )
            holds = ci[0] > 0 if want == "higher" else ci[1] < 0
            entry = {"mean": mean, "ci95": ci, "per_seed": points, "t95_across_seeds": t_interval(points), "want": want, "holds": holds}
            base = summary[b][metric]["mean"]
            entry["relative"] = mean / base if base else None
            if relative_bar is not None:
                entry["relative_required"] = relative_bar
                entry["holds"] = holds and entry["relative"] is not None and entry["relative"] <= relative_bar
            paired[f"{a}-{b}:{metric}"] = entry
    print(
        json.dumps(
            {
                "benchmark": "quality",
                "label": args.label,
                "preset": args.preset,
                "split": args.split,
                "seeds": args.seeds,
                "data_seeds": args.data_seeds,
                "aten_depthwise_grad": args.aten_depthwise_grad,
                "configs": {"image_only": args.image_only, "three_tower": args.three, "four_tower": args.four},
                "overrides": {"all": args.set, "image_only": args.image_only_set, "three_tower": args.three_set, "four_tower": args.four_set},
                # each model's full config as trained (train.seed is the first seed's; each seed sets its own)
                "resolved_configs": resolved,
                "models": summary,
                "paired": paired,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
