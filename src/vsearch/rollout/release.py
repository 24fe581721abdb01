"""The release half of ``vsearch demo`` (the plain Python driver), as the pipeline does it.

1. gate the 4-tower model against the image-only baseline (no champion in the demo's fresh
   registry: a first deployment, so the gain must be significant);
2. if blessed: index the candidate under ``<alias>_candidate`` and the baseline (the first
   deployment's control) under ``<alias>_baseline`` in ``release/milvus.db``, write the
   release plan (``release/rollout/rollout.yaml``) and open the release in review. Nothing
   is promoted and the live alias is not created: that is a reviewer's step
   (``vsearch release approve | ramp | promote``). If not blessed: the gate's reasons;
3. drift: the 4-tower model's reference window (saved with it at training time) against a
   same-distribution window (another seed of the benchmark) and a shifted one (new category
   mix, colour shift, longer titles).

Everything lands under ``<out>/release``; the demo's registry and Milvus start empty on every run.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path


def _log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_release(out: str | Path, data_dir: str | Path, eval_dir: str | Path, model_dirs: dict[str, str | Path],
                preset: str = "default", seed: int = 0, drift_overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Run the release steps of the demo; returns a JSON-able summary (also ``release/summary.json``)."""
    from vsearch.data import synth
    from vsearch.evaluation.gate import format_checks, load_gate_config, run_gate
    from vsearch.indexing.backfill import backfill
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import baseline_alias, candidate_alias, connect
    from vsearch.monitoring.drift import detect_drift, format_result, load_drift_config
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
                              control_model=str(model_dirs["image_only"]), milvus_uri=milvus_uri)
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
    drift_cfg = load_drift_config("drift", drift_overrides)
    model = Path(model_dirs["four_tower"])
    summary["drift"] = {}
    for label, window in (("same_distribution", same), ("shifted", shifted)):
        result = detect_drift(model, window, root / "drift" / label, drift_cfg, model=model)
        summary["drift"][label] = {"drift": result["drift"], "summary": result["summary"], "drifted_checks": result["drifted_checks"]}
        print(f"\ndrift: {label} window ({window})\n{format_result(result)}\nreport: {root / 'drift' / label}")
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
