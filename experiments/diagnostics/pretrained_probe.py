"""How much category do FROZEN ImageNet MobileNetV2 features carry on the street photos?

Before training anything with a pretrained image tower: the 1280-d global-average features of
the frozen backbone (ImageNet weights vs the same architecture at random init), for the
street photos of the training and validation splits, decoded at one or more sizes (the
`default` photos are 64 px; larger sizes are bilinear upsamples, which give the stride-32
network a larger last feature map). Per size and weights it reports

- linear-probe accuracy (logistic regression, train -> val) for category, colour, pattern;
- zero-shot retrieval on the validation gallery with the raw features (cosine):
  recall@1, recall@10 and cross_category_fp@10, the issue's metrics.

Validation split only (decisions are taken there). One JSON line per (weights, size).

    python experiments/diagnostics/pretrained_probe.py --data runs/quality-data/default-seed0 --sizes 64 96 128
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
import torch

from vsearch import schema
from vsearch.data.dataset import ImageStore
from vsearch.evaluation.evaluate import load_eval_set
from vsearch.evaluation.metrics import cross_category_fp_at_k
from vsearch.models import mobilenet


@torch.no_grad()
def features(model, data: str, uris: list[str], size: int, batch: int = 128) -> np.ndarray:
    store = ImageStore(data, size, cache=False)
    mean = torch.tensor(mobilenet.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(mobilenet.IMAGENET_STD).view(1, 3, 1, 1)
    out = []
    for start in range(0, len(uris), batch):
        x = torch.stack([store.get(u) for u in uris[start : start + batch]]).float() / 255
        out.append(model(pixel_values=(x - mean) / std).pooler_output.numpy())
    return np.concatenate(out)


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    p.add_argument("--weights", nargs="+", default=["imagenet", "random"])
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    catalog = pd.read_parquet(f"{args.data}/{schema.CATALOG_FILE}").set_index("product_id")
    inter = pd.read_parquet(f"{args.data}/{schema.INTERACTIONS_FILE}")
    train, val = inter[inter.split == "train"], inter[inter.split == "val"]
    evalset = load_eval_set(args.data, "val")
    attrs = [c for c in ("category", "colour", "pattern") if c in catalog.columns]
    for weights in args.weights:
        model = mobilenet.build({}, None if weights == "random" else weights).eval()
        for size in args.sizes:
            t0 = time.time()
            x_train = features(model, args.data, list(train.query_image_uri), size)
            x_val = features(model, args.data, list(val.query_image_uri), size)
            result = {"weights": weights, "size": size, "n_train": len(x_train), "n_val": len(x_val)}
            scaler = StandardScaler().fit(x_train)
            for a in attrs:
                y_train, y_val = catalog.loc[train.product_id, a].to_numpy(), catalog.loc[val.product_id, a].to_numpy()
                clf = LogisticRegression(max_iter=3000, C=0.1).fit(scaler.transform(x_train), y_train)
                result[f"{a}_probe_accuracy"] = round(float((clf.predict(scaler.transform(x_val)) == y_val).mean()), 3)
                result[f"{a}_chance"] = round(1 / catalog[a].nunique(), 3)
            # Zero-shot street -> catalog retrieval with the raw features.
            gallery = features(model, args.data, list(evalset.gallery.image_uri), size)
            queries = features(model, args.data, list(evalset.queries.query_image_uri), size)
            gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            scores = queries @ gallery.T
            target = evalset.queries["target"].to_numpy()
            topk = np.argsort(-scores, axis=1)[:, :10]
            cats = evalset.gallery["category"].to_numpy()
            result["zero_shot_recall@1"] = round(float((topk[:, 0] == target).mean()), 3)
            result["zero_shot_recall@10"] = round(float((topk == target[:, None]).any(axis=1).mean()), 3)
            result["zero_shot_cross_category_fp@10"] = round(float(cross_category_fp_at_k(topk, cats, cats[target]).mean()), 3)
            result["seconds"] = round(time.time() - t0, 1)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
