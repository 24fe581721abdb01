"""What do the top-1 errors of street-to-shop retrieval have in common with the right product?

For every query whose first result is wrong, the wrong product is put in one class by how it
relates to the clicked one: a colour sibling (same ``design_id``), same category (same /
other pattern), or another category (same / other pattern, colour and brand). Counts are
summed over the seeds given. Prints one JSON line per model.

    python experiments/diagnostics/error_classes.py --split test --seeds 0 1 2 3 4 \
        --data 'runs/quality-data/default-seed{seed}' \
        --model 'image_only=runs/quality-pt128-soft03-default/seed{seed}/image_only' \
        --model 'three_tower=runs/quality-pt128-soft03-default/seed{seed}/three_tower'
"""

from __future__ import annotations

import argparse
import collections
import json

import torch

from vsearch.config import EvalConfig
from vsearch.evaluation.evaluate import evaluate_model, load_eval_set, parse_model_args
from vsearch.models.multitower import load_model


def error_class(right, wrong) -> str:
    """The relation of a wrongly ranked-first catalog row to the right one (two pandas rows)."""
    if right.design_id == wrong.design_id:
        return "colour_sibling"
    pattern = "same_pattern" if right.pattern == wrong.pattern else "other_pattern"
    if right.category == wrong.category:
        return f"same_category/{pattern}"
    colour = "same_colour" if right.colour == wrong.colour else "other_colour"
    brand = "same_brand" if right.brand == wrong.brand else "other_brand"
    return f"other_category/{pattern}/{colour}/{brand}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset folder; '{seed}' is replaced by each seed")
    p.add_argument("--model", action="append", required=True, help="NAME=DIR; '{seed}' is replaced by each seed")
    p.add_argument("--seeds", nargs="+", type=int, required=True)
    p.add_argument("--split", default="test", choices=("val", "test"))
    args = p.parse_args()
    torch.set_num_threads(2)
    models = parse_model_args(args.model)
    counts = {name: collections.Counter() for name in models}
    for seed in args.seeds:
        evalset = load_eval_set(args.data.format(seed=seed), split=args.split)
        gallery, targets = evalset.gallery, evalset.queries["target"].to_numpy()
        for name, path in models.items():
            model, tokenizer = load_model(path.format(seed=seed))
            first = evaluate_model(model, tokenizer, evalset, EvalConfig()).topk[:, 0]
            c = counts[name]
            c["queries"] += len(targets)
            for right, got in zip(targets, first):
                c["hit" if right == got else error_class(gallery.iloc[right], gallery.iloc[got])] += 1
    for name, c in counts.items():
        errors = c["queries"] - c["hit"]
        by_class = {k: v for k, v in sorted(c.items()) if k not in ("queries", "hit")}
        cross = sum(v for k, v in by_class.items() if k.startswith("other_category"))
        cross_brand = sum(v for k, v in by_class.items() if k.startswith("other_category") and k.endswith("/same_brand"))
        within = sum(v for k, v in by_class.items() if not k.startswith("other_category"))
        print(json.dumps({
            "model": name, "split": args.split, "seeds": args.seeds, "queries": c["queries"],
            "recall@1": round(c["hit"] / c["queries"], 4), "errors": errors,
            "other_category_errors": cross, "other_category_same_brand_errors": cross_brand,
            "same_category_errors": within, "classes": by_class,
        }))


if __name__ == "__main__":
    main()
