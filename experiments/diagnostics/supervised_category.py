"""Upper bound: can the image tower learn a product's category from the street photos at all?

Trains the `image_only` preset's image encoder (same ResNet, same `light` augmentation, same
optimiser settings) with a linear head and cross-entropy on the *category* of the clicked
product, on the training split's street photos, and prints the test-split accuracy after
every epoch (JSON lines). No text model can put more category into the image tower than the
labels themselves do: if this bound is low, cross-category false positives cannot fall much
through image-text alignment at this data scale.

    python experiments/diagnostics/supervised_category.py --data runs/quality-data/default-seed0 --epochs 12

Another tower: ``--config pretrained_image_only --set model.image_size=128`` (the ImageNet
MobileNetV2, its backbone at the preset's lower learning rate, as `vsearch train` does).
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd
import torch
import torch.nn as nn

from vsearch import schema
from vsearch.config import load_config
from vsearch.data.dataset import ImageStore
from vsearch.data.transforms import build_augment
from vsearch.models.multitower import build_model
from vsearch.training.loop import build_optimizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--attribute", default="category")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default="image_only", help="preset whose image tower, size, augmentation and optimiser are used")
    p.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. model.image_size=128")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    cfg = load_config(args.config, args.set)
    catalog = pd.read_parquet(f"{args.data}/{schema.CATALOG_FILE}").set_index("product_id")
    inter = pd.read_parquet(f"{args.data}/{schema.INTERACTIONS_FILE}")
    train, test = inter[inter.split == "train"], inter[inter.split == "test"]
    store = ImageStore(args.data, cfg.model.image_size)
    classes = {c: i for i, c in enumerate(sorted(catalog[args.attribute].unique()))}

    def load(df):
        x = torch.stack([store.get(u) for u in df.query_image_uri])
        y = torch.tensor([classes[c] for c in catalog.loc[df.product_id, args.attribute]])
        return x, y

    (x_train, y_train), (x_test, y_test) = load(train), load(test)
    encoder = build_model(cfg.model).image_encoder
    head = nn.Linear(cfg.model.embed_dim, len(classes))
    mean = torch.tensor(cfg.model.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.model.image_std).view(1, 3, 1, 1)
    augment = build_augment(cfg.data.augment, cfg.model.image_size)

    def logits(x, aug=None):
        x = x.float() / 255
        x = aug(x).clamp(0, 1) if aug is not None else x
        return head(10 * encoder(pixel_values=(x - mean) / std))  # unit features: scale up for the head

    if cfg.train.image_backbone_lr_scale == 1.0:
        opt = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    else:  # the training loop's parameter groups (gentler pretrained backbone)
        opt = build_optimizer(nn.ModuleDict({"image_encoder": encoder, "head": head}), cfg.train)
    started = time.time()
    for epoch in range(args.epochs):
        encoder.train()
        perm = torch.randperm(len(x_train))
        for i in range(0, len(perm), cfg.data.batch_size):
            b = perm[i : i + cfg.data.batch_size]
            loss = nn.functional.cross_entropy(logits(x_train[b], augment), y_train[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        encoder.eval()
        with torch.no_grad():
            acc = (logits(x_test).argmax(1) == y_test).float().mean().item()
        print(json.dumps({"data": args.data, "config": args.config, "overrides": args.set, "attribute": args.attribute, "epoch": epoch, "train_queries": len(x_train),
                          "test_accuracy": round(acc, 3), "chance": round(1 / len(classes), 3),
                          "seconds": round(time.time() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
