"""The release half of ``vsearch demo``: gate -> registry -> rollout, then drift checks.

1. gate the 3-tower model (no champion yet: value and baseline thresholds only); if
   blessed, promote it: the first champion;
2. gate the 4-tower model against the registry's champion on the same queries; if blessed,
   write rollout.yaml + the KServe canary manifest (control = champion); if not, show the
   refusal: the gate's reasons, and the rollout writer refusing the unblessed candidate;
3. drift: the 4-tower model's reference window (saved with it at training time) against a
   same-distribution window (another seed of the benchmark) and a shifted one (new category
   mix, colour shift, longer titles).

Everything lands under ``<out>/release``; the demo's registry starts empty on every run.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from vsearch.config import ConfigError
from vsearch.schema import DataError


def _log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_release(out: str | Path, data_dir: str | Path, eval_dir: str | Path, model_dirs: dict[str, str | Path],
                preset: str = "default", seed: int = 0, drift_overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Run the release steps of the demo; returns a JSON-able summary (also ``release/summary.json``)."""
    from vsearch.data import synth
    from vsearch.evaluation.gate import format_checks, load_gate_config, run_gate
    from vsearch.monitoring.drift import detect_drift, format_result, load_drift_config
    from vsearch.monitoring.simulate import shifted_copy
    from vsearch.registry import Registry
    from vsearch.rollout.writer import write_rollout

    root = Path(out) / "release"
    registry_uri = str(root / "registry")
    shutil.rmtree(root / "registry", ignore_errors=True)
    registry = Registry(registry_uri)
    cfg = load_gate_config("gate")
    summary: dict = {"registry": registry_uri, "steps": []}

    for name in ("three_tower", "four_tower"):
        gate_dir = root / "gate" / name
        blessing = run_gate(eval_dir, gate_dir, cfg, candidate_name=name, registry=registry_uri)
        champion = (blessing.get("champion") or {}).get("name")
        _log(f"gate {name} vs {champion or 'no champion'}: {'BLESSED' if blessing['blessed'] else 'NOT BLESSED'}")
        print(f"\ngate: {name} (champion: {champion or 'none yet'})\n{format_checks(blessing)}\nreport: {gate_dir / 'report.html'}")
        step = {"candidate": name, "champion": champion, "blessed": blessing["blessed"], "reason": blessing["reason"],
                "blessing": str(gate_dir / "blessing.json")}
        if blessing.get("champion") is None:
            if blessing["blessed"]:
                record = registry.promote(gate_dir / "blessing.json")
                step["registry"] = f"promoted: registry v{record['registry_version']}, champion {record['champion']['model_version']}"
            else:
                step["registry"] = "not promoted (not blessed)"
        else:
            try:
                paths = write_rollout(gate_dir / "blessing.json", root / "rollout", registry=registry_uri)
                step["rollout"] = {k: str(v) for k, v in paths.items()}
            except (DataError, ConfigError) as err:
                step["rollout"] = f"refused: {err}"
        print(f"  -> {step.get('registry') or step.get('rollout')}")
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
