"""Which product attributes do learnt embeddings carry? Linear probes on street-photo embeddings.

Fits a logistic regression from the query-photo embeddings of the training split to each
catalog attribute (category, colour, pattern, brand) of the clicked product and reports its
accuracy on the test split. Prints one JSON line per model.

    python experiments/diagnostics/attribute_probe.py --data runs/quality-data/default-seed0 \
        --model image_only=runs/quality-final/seed0/image_only --model three_tower=runs/quality-final/seed0/three_tower
"""

from __future__ import annotations

import argparse
import json

import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from vsearch import schema
from vsearch.evaluation.evaluate import embed_images, parse_model_args
from vsearch.models.multitower import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--model", action="append", required=True, help="NAME=DIR")
    args = p.parse_args()
    torch.set_num_threads(2)
    catalog = pd.read_parquet(f"{args.data}/{schema.CATALOG_FILE}").set_index("product_id")
    inter = pd.read_parquet(f"{args.data}/{schema.INTERACTIONS_FILE}")
    train, test = inter[inter.split == "train"], inter[inter.split == "test"]
    attrs = [c for c in ("category", "colour", "pattern", "brand") if c in catalog.columns]
    for name, path in parse_model_args(args.model).items():
        model, _ = load_model(path)
        model.eval()
        with torch.no_grad():
            x_train = embed_images(model, args.data, list(train.query_image_uri), schema.INTERACTIONS_FILE, 128, "cpu")
            x_test = embed_images(model, args.data, list(test.query_image_uri), schema.INTERACTIONS_FILE, 128, "cpu")
        result = {"model": name, "data": args.data}
        for a in attrs:
            y_train, y_test = catalog.loc[train.product_id, a].to_numpy(), catalog.loc[test.product_id, a].to_numpy()
            clf = LogisticRegression(max_iter=2000).fit(x_train, y_train)
            result[f"{a}_accuracy"] = round(float((clf.predict(x_test) == y_test).mean()), 3)
            result[f"{a}_chance"] = round(1 / catalog[a].nunique(), 3)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
