"""Markdown table from `benchmarks/quality.py` JSON outputs (one row per run and model).

    python experiments/ablation_table.py experiments/quality-runs/*.json
    python experiments/ablation_table.py --doc   # regenerate the tables in experiments/model-quality-log.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import PAIRED  # noqa: E402  (the bar lives with the benchmark)

METRICS = ("recall@1", "recall@10", "mrr", "cross_category_fp@10", "multimodal_recall@10")


def fmt(entry: dict | None) -> str:
    if entry is None:
        return "-"
    lo, hi = entry["ci95"]
    return f"{entry['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def main(paths: list[str]) -> int:
    print("| run | split, seeds | model | " + " | ".join(METRICS) + " |")
    print("|---|---|---|" + "---|" * len(METRICS))
    for path in paths:
        run = json.loads(Path(path).read_text())
        where = f"{run['preset']}/{run['split']}, {','.join(map(str, run['seeds']))}"
        for model, metrics in run["models"].items():
            cells = " | ".join(fmt(metrics.get(m)) for m in METRICS)
            print(f"| {run['label'] or Path(path).stem} | {where} | {model} | {cells} |")
    print()
    print("| run | paired difference | mean [95% CI] | holds |")
    print("|---|---|---|---|")
    bars = {f"{a}-{b}:{metric}": (want, rel) for a, b, metric, want, rel in PAIRED}
    for path in paths:
        run = json.loads(Path(path).read_text())
        for name, entry in run["paired"].items():
            # Judge every run by today's bar (older outputs predate the relative requirement).
            want, bar = bars[name]
            holds = entry["ci95"][0] > 0 if want == "higher" else entry["ci95"][1] < 0
            if bar is not None:
                entry["relative_required"] = bar
                holds = holds and entry.get("relative") is not None and entry["relative"] <= bar
            entry["holds"] = holds
            rel = f" (relative {entry['relative']:+.1%}" + (f", required {entry['relative_required']:+.0%}" if "relative_required" in entry else "") + ")" if entry.get("relative") is not None else ""
            print(f"| {run['label'] or Path(path).stem} | {name} | {fmt(entry)}{rel} | {'yes' if entry['holds'] else 'no'} |")
    return 0


def render_doc(doc_path: str, tables: dict[str, list[str]]) -> None:
    """Replace each ``<!-- table:KEY -->...<!-- /table -->`` block with the table of its files."""
    import contextlib
    import io
    import re

    doc = Path(doc_path).read_text()
    for key, files in tables.items():
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            main(files)
        block = f"<!-- table:{key} -->\n{buf.getvalue().strip()}\n<!-- /table -->"
        doc, n = re.subn(rf"<!-- table:{key} -->.*?<!-- /table -->", lambda _: block, doc, flags=re.S)
        if n != 1:
            raise SystemExit(f"{doc_path}: marker table:{key} not found")
    Path(doc_path).write_text(doc)


DOC_TABLES = {
    "final_default": ["experiments/quality-runs/final_default.json"],
    "final_holdout": ["experiments/quality-runs/final_holdout.json"],
    "previous": ["experiments/quality-runs/previous_default.json", "experiments/quality-runs/previous_holdout.json"],
    "dev": [
        "experiments/quality-runs/dev_4t_base.json",
        "experiments/quality-runs/dev_4t_epochs8.json",
        "experiments/quality-runs/dev_4t_textw.json",
        "experiments/quality-runs/dev_4t_textw_epochs8.json",
        "experiments/quality-runs/dev_4t_mined.json",
    ],
    "pretrained_default": ["experiments/quality-runs/pretrained_default.json"],
    "pretrained_holdout": ["experiments/quality-runs/pretrained_holdout.json"],
    "pt128_screens": [
        f"experiments/quality-runs/screen_pretrained_ft128_{name}.json"
        for name in ("e5", "minilm", "minilm_w1", "soft015", "soft03", "soft06", "neg05", "soft03_t02")
    ]
    + ["experiments/quality-runs/screen_large128_final_recipe.json"],
    "pt128_round2": [
        f"experiments/quality-runs/screen_{name}.json"
        for name in (
            "val3_final_recipe",
            "val3_textw1",
            "val3_soft_warmup",
            "val3_catalog_relational",
            "val3_text_finetuned",
            "val1_category_batches",
            "val1_epochs10",
            "val1_frozen_backbone",
        )
    ],
    "pt128_round3": [
        f"experiments/quality-runs/screen_{name}.json"
        for name in (
            "val3_final_recipe",
            "val3_text_finetuned",
            "val3_text_finetuned_reference_targets",
            "val3_text_finetuned_lr03_reference_targets",
            "val1_epochs10",
            "val1_epochs10_reference_targets",
            "val3_epochs10_reference_targets",
        )
    ],
    "pt128_round4": [
        f"experiments/quality-runs/screen_{name}.json"
        for name in ("val3_final_recipe", "val3_textw1", "val3_textw025", "val3_title_temperature01")
    ],
    "pt128_round5": [
        f"experiments/quality-runs/screen_{name}.json"
        for name in ("val3_final_recipe", "val3_soft_negatives03", "val3_soft_exclude_siblings")
    ],
    "pt128_soft03_default": ["experiments/quality-runs/pt128_soft03_default.json"],
    "pt128_soft03_holdout": ["experiments/quality-runs/pt128_soft03_holdout.json"],
    "pt128_soft03_default_5seeds": ["experiments/quality-runs/pt128_soft03_default_5seeds.json"],
    "pt128_soft03_holdout_5seeds": ["experiments/quality-runs/pt128_soft03_holdout_5seeds.json"],
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--doc"]:
        render_doc("experiments/model-quality-log.md", DOC_TABLES)
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
