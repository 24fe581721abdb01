"""Two `benchmarks/quality.py` JSON outputs side by side, as a Markdown table.

For every model and metric: both means with their 95% CIs, the difference, the per-seed
differences and whether the second run's mean lies inside the first run's CI; then the same
for the paired differences (the paper's claims). The runs must share preset, split and seeds.

    python experiments/side_by_side.py A.json B.json --names "ATen grad" "fast grad" > table.md
"""

from __future__ import annotations

import argparse
import json
import sys


def _ci(entry: dict) -> str:
    lo, hi = entry["ci95"]
    return f"{entry['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def _inside(a: dict, b: dict) -> str:
    lo, hi = a["ci95"]
    return "yes" if lo <= b["mean"] <= hi else "**no**"


def _seeds(a: dict, b: dict) -> str:
    return " ".join(f"{y - x:+.3f}" for x, y in zip(a["per_seed"], b["per_seed"]))


def table(a: dict, b: dict, name_a: str, name_b: str) -> str:
    for key in ("preset", "split", "seeds"):
        if a[key] != b[key]:
            raise SystemExit(f"the runs differ in {key}: {a[key]} vs {b[key]}")
    seeds = " ".join(f"s{s}" for s in a["seeds"])
    lines = [
        f"| model | metric | {name_a} mean [95% CI] | {name_b} mean [95% CI] | difference | per-seed ({seeds}) | {name_b} mean in {name_a} CI? |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, metrics in a["models"].items():
        for metric, x in metrics.items():
            y = b["models"][model][metric]
            lines.append(f"| {model} | {metric} | {_ci(x)} | {_ci(y)} | {y['mean'] - x['mean']:+.3f} | {_seeds(x, y)} | {_inside(x, y)} |")
    lines += ["", f"| paired | {name_a} mean [95% CI], holds | {name_b} mean [95% CI], holds | per-seed ({seeds}) | {name_b} mean in {name_a} CI? |",
              "|---|---|---|---|---|"]
    for key, x in a["paired"].items():
        y = b["paired"][key]
        lines.append(f"| {key} | {_ci(x)}, {x['holds']} | {_ci(y)}, {y['holds']} | {_seeds(x, y)} | {_inside(x, y)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--names", nargs=2, default=["A", "B"])
    args = parser.parse_args(argv)
    with open(args.a) as fa, open(args.b) as fb:
        sys.stdout.write(table(json.load(fa), json.load(fb), *args.names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
