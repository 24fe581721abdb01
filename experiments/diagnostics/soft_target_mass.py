"""Where does the soft relational target mass go? Its share per relation to the row's product.

The soft targets of the image-image term (``soft_targets: product_text``) give each row's
query a target distribution over the other products of its batch: a softmax, at the pair's
``soft_temperature``, of title similarity under the model's text tower. This script draws
the training batches exactly as training does (``UniqueProductBatchSampler``, the run's
batch size and seed, one epoch), encodes the titles with the trained model's (frozen) text
tower, and reports the mean share of that mass on colour siblings (same ``design_id``),
other designs of the same category, and other categories (and, of those, the same colour
or the same brand). ``--exclude design_id`` removes a row's own group from its targets, as
the loss option ``soft_exclude`` does. Prints one JSON line per temperature.

    python experiments/diagnostics/soft_target_mass.py --data runs/quality-data/default-seed0 \
        --model runs/quality-pt128-soft03-default/seed0/three_tower --temperatures 0.05 0.2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vsearch import schema
from vsearch.data.dataset import UniqueProductBatchSampler
from vsearch.evaluation.evaluate import embed_texts
from vsearch.models.multitower import load_model

sys.path.insert(0, str(Path(__file__).parents[1]))
from levers import load_run_config, soft_targets  # noqa: E402  (the soft_exclude variant left the package)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True, help="a trained model folder with a text tower")
    p.add_argument("--temperatures", nargs="+", type=float, default=[0.05])
    p.add_argument("--exclude", default="", help="catalog column whose shared value gets no soft mass (soft_exclude)")
    args = p.parse_args()
    torch.set_num_threads(2)
    cfg = load_run_config(f"{args.model}/run_config.yaml")
    catalog = pd.read_parquet(f"{args.data}/{schema.CATALOG_FILE}").set_index("product_id")
    inter = pd.read_parquet(f"{args.data}/{schema.INTERACTIONS_FILE}")
    train = inter[inter.split == "train"]
    products = catalog.loc[sorted(train.product_id.unique())]
    index = {pid: i for i, pid in enumerate(products.index)}
    model, tokenizer = load_model(args.model)
    model.eval()
    feats = embed_texts(model, tokenizer, list(products.title), 128, "cpu")
    sampler = UniqueProductBatchSampler(train.product_id.map(index).to_numpy(), cfg.data.batch_size, cfg.train.seed)
    batches = [np.asarray(train.product_id.iloc[b].map(index)) for b in sampler]
    attr = {k: products[k].to_numpy() for k in ("design_id", "category", "colour", "brand")}
    exclude = torch.from_numpy(np.unique(products[args.exclude].astype(str).to_numpy(), return_inverse=True)[1]) if args.exclude else None
    for temperature in args.temperatures:
        shares: dict[str, list[float]] = {}
        for batch in batches:
            mass = soft_targets(torch.from_numpy(feats[batch]), temperature, exclude[batch] if exclude is not None else None).numpy()
            same = {k: v[batch][:, None] == v[batch][None, :] for k, v in attr.items()}
            other_cat = ~same["category"]
            parts = {
                "colour_sibling": same["design_id"],
                "same_category_other_design": same["category"] & ~same["design_id"],
                "other_category": other_cat,
                "other_category_same_colour": other_cat & same["colour"],
                "other_category_same_brand": other_cat & same["brand"],
            }
            for k, m in parts.items():
                shares.setdefault(k, []).append(float((mass * m).sum(axis=1).mean()))
        print(json.dumps({
            "model": args.model, "data": args.data, "temperature": temperature, "exclude": args.exclude, "batches": len(batches),
            "batch_size": cfg.data.batch_size, "mean_share": {k: round(float(np.mean(v)), 4) for k, v in shares.items()},
        }))


if __name__ == "__main__":
    main()
