"""``vsearch demo --out DIR``: the whole story on a laptop, as a plain Python driver.

synth (default preset, seed 0) -> train image-only, 3-tower, 4-tower (from the 3-tower
model), each followed by its drift reference (``DIR/references/<name>``, as the pipelines'
``build_drift_reference`` step) -> evaluate all three on the same test set -> ``DIR/metrics.json``,
``DIR/report.html`` and a summary table on stdout, then the release half, as the pipeline
does it (``run_release``):

1. gate the 4-tower model against the image-only baseline (no champion in the demo's fresh
   registry: a first deployment, so the gain must be significant);
2. if blessed: index the candidate under ``<alias>_candidate`` and the baseline (the first
   deployment's control) under ``<alias>_baseline`` in ``release/milvus.db``, write the
   release plan (``release/rollout/rollout.yaml``, each arm with its drift reference) and
   open the release in review. Nothing
   is promoted and the live alias is not created: that is a reviewer's step
   (``vsearch release approve | ramp | promote``). If not blessed: the gate's reasons;
3. drift: the 4-tower model's reference window (built after its training) against a
   same-distribution window (another seed of the benchmark) and a shifted one (new category
   mix, colour shift, longer titles).

Everything of the release half lands under ``<out>/release``; the demo's registry and Milvus
start empty on every run. The demo sits above every stage: no stage imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from vsearch import artifacts
from vsearch.config import load_config
from vsearch.data import synth
from vsearch.evaluation.evaluate import METRICS_FILE, REPORT_FILE, evaluate, format_table
from vsearch.monitoring.drift import load_drift_config
from vsearch.monitoring.reference import build_reference
from vsearch.training.loop import train

MODELS = (("image_only", "image_only", None), ("three_tower", "three_tower", None), ("four_tower", "four_tower", "three_tower"))


def _log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _copy_atomic(src: Path, dst: Path) -> None:
    with artifacts.staged_file(dst) as tmp:
        shutil.copyfile(src, tmp)


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
    references: dict[str, Path] = {}
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
        references[name] = out / "references" / name
        build_reference(model_dir, data, references[name], load_drift_config("drift").sample)
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
    run_release(out, data, out / "eval", model_dirs, references, preset, seed)
    total = time.perf_counter() - started
    (out / "timings.json").write_text(json.dumps({"train_seconds": timings, "total_seconds": total}, indent=2))
    print(format_table(metrics))
    print(f"\nmetrics: {out / METRICS_FILE}\nreport:  {out / REPORT_FILE}\ntotal:   {total:.0f} s")
    return metrics


def run_release(out: str | Path, data_dir: str | Path, eval_dir: str | Path, model_dirs: dict[str, str | Path],
                references: dict[str, str | Path], preset: str = "default", seed: int = 0) -> dict:
    """Run the release steps of the demo; returns a JSON-able summary (also ``release/summary.json``).

    ``references``: each model's drift reference (`vsearch.monitoring.reference.build_reference`)."""
    from vsearch.data import synth
    from vsearch.evaluation.gate import format_checks, load_gate_config, run_gate
    from vsearch.indexing.backfill import backfill
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import baseline_alias, candidate_alias, connect
    from vsearch.monitoring.drift import detect_drift, format_result
    from vsearch.monitoring.simulate import shifted_copy
    from vsearch.release.lifecycle import Release
    from vsearch.rollout.writer import load_rollout_defaults, write_rollout

    root = Path(out) / "release"
    registry_uri, milvus_uri = str(root / "registry"), str(root / "milvus.db")
    shutil.rmtree(root / "registry", ignore_errors=True)
    shutil.rmtree(root / "milvus.db", ignore_errors=True)
    summary: dict = {"registry": registry_uri, "milvus": milvus_uri, "steps": []}

    gate_dir = root / "gate" / "four_tower"
    blessing = run_gate(eval_dir, gate_dir, load_gate_config("gate"), candidate_name="four_tower", registry=registry_uri)
    _log(f"gate four_tower (first deployment): {'BLESSED' if blessing.blessed else 'NOT BLESSED'}")
    print(f"\ngate: four_tower (no champion yet)\n{format_checks(blessing)}\nreport: {gate_dir / 'report.html'}")
    step = {"candidate": "four_tower", "blessed": blessing.blessed, "reason": blessing.reason, "blessing": str(gate_dir / "blessing.json")}
    if blessing.blessed:
        rollout_cfg = load_rollout_defaults()
        live = str(rollout_cfg.get("alias", "vsearch_serving"))
        index_cfg = load_index_config(None, [])
        with connect(milvus_uri, index_cfg) as store:
            backfill(model_dirs["four_tower"], data_dir, store, candidate_alias(live), index_cfg)
            backfill(model_dirs["image_only"], data_dir, store, baseline_alias(live), index_cfg)
        paths = write_rollout(gate_dir, root / "rollout", rollout_cfg, registry=registry_uri,
                              control_model=str(model_dirs["image_only"]), milvus_uri=milvus_uri,
                              reference=str(references["four_tower"]), control_reference=str(references["image_only"]))
        Release(paths["rollout"]).ensure_open(actor="demo")
        step["release"] = {"status": "in_review", "plan": str(paths["rollout"])}
        print(f"  -> release in review: vsearch release status --rollout {paths['rollout']}")
    else:
        print("  -> not indexed, no release: the gate's reasons are above")
    summary["steps"].append(step)

    _log("drift: reference window of four_tower vs a same-distribution and a shifted window")
    windows = root / "windows"
    same, shifted = windows / "same_distribution", windows / "shifted"
    if not (same / "synth_config.json").is_file():
        synth.generate(same, preset, seed=seed + 1, overwrite=True)
    shifted_copy(data_dir, shifted)
    drift_cfg = load_drift_config("drift")
    model = Path(model_dirs["four_tower"])
    summary["drift"] = {}
    for label, window in (("same_distribution", same), ("shifted", shifted)):
        result = detect_drift(references["four_tower"], window, root / "drift" / label, drift_cfg, model=model)
        summary["drift"][label] = {"drift": result["drift"], "summary": result["summary"], "drifted_checks": result["drifted_checks"]}
        print(f"\ndrift: {label} window ({window})\n{format_result(result)}\nreport: {root / 'drift' / label}")
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vsearch demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="run folder (data, models, eval, metrics.json, report.html)")
    synth.add_benchmark_arguments(parser)
    parser.add_argument("overrides", nargs="*", help="dotted config overrides applied to every model (e.g. train.max_steps=20)")
    args = parser.parse_args(argv)
    artifacts.check_out(args.out, ours=("timings.json", METRICS_FILE))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    artifacts.mark(args.out)  # the run folder is built in place: say now that it is ours
    run_demo(args.out, args.preset, args.seed, args.overrides)
    return 0
