"""Offline evaluation: embed the test catalog and queries, score every model on the same sets.

Street-to-shop retrieval is query image -> product image over the test gallery: the products
of the test split (never seen in training) plus catalog products nobody clicked. Multimodal
search fuses the query photo with the reformulation text ("in red") and must find the target
product in the same gallery. Writes ``metrics.json`` (the contract other stages read),
``per_query.parquet`` (per-query values, for paired comparisons), ``curves.json`` and a
self-contained ``report.html``; all published atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vsearch import artifacts, model_folder, schema
from vsearch.config import EvalConfig
from vsearch.data.dataset import Collator, ImageStore
from vsearch.evaluation import metrics as M
from vsearch.evaluation.report import RetrievalExample, RetrievedItem, write_report
from vsearch.memory import keep_freed_memory
from vsearch.models.multitower import MultiTowerModel, fuse, load_model
from vsearch.schema import DataError

METRICS_FILE = "metrics.json"
PER_QUERY_FILE = "per_query.parquet"
CURVES_FILE = "curves.json"
REPORT_FILE = "report.html"
CURVE_KS = tuple(range(1, 51))


@dataclass
class EvalSet:
    """The fixed evaluation sets, shared by every model compared.

    ``gallery``: catalog rows searched (G rows); ``queries``: test engagement rows (Q) with
    ``target`` = gallery row of the clicked product; ``reformulations``: multimodal queries
    (R) with ``target``.
    """

    data_dir: str
    gallery: pd.DataFrame
    queries: pd.DataFrame
    reformulations: pd.DataFrame


def load_eval_set(data_dir: str | os.PathLike, split: str = "test") -> EvalSet:
    """Build the gallery and query sets of ``split`` from the manifests.

    Raises:
        DataError: broken manifests, leakage between splits, or an empty test split.
    """
    data_dir = str(data_dir)
    catalog, interactions, reformulations = schema.read_dataset(data_dir)
    splits = schema.product_splits(interactions)
    in_gallery = catalog["product_id"].map(lambda p: splits.get(p, split) == split)
    gallery = catalog[in_gallery].reset_index(drop=True)
    row_of = {pid: i for i, pid in enumerate(gallery["product_id"])}
    queries = interactions[interactions["split"] == split].reset_index(drop=True)
    if queries.empty:
        raise DataError(Path(data_dir) / schema.INTERACTIONS_FILE, f"no rows with split == '{split}' to evaluate on")
    queries = queries.assign(target=queries["product_id"].map(row_of).astype(np.int64))
    refs = reformulations[reformulations["product_id"].isin(row_of)].reset_index(drop=True)
    refs = refs.assign(target=refs["product_id"].map(row_of).astype(np.int64))
    return EvalSet(data_dir, gallery, queries, refs)


@torch.no_grad()
def embed_images(model: MultiTowerModel, data_dir: str, uris: list[str], manifest: str, batch_size: int, device) -> np.ndarray:
    """Encode images at ``uris`` -> (N, D) float32, unit norm. Bad images raise DataError."""
    store = ImageStore(data_dir, model.cfg.image_size, cache=False)
    collator = Collator([], mean=model.cfg.image_mean, std=model.cfg.image_std)
    out = []
    for start in range(0, len(uris), batch_size):
        chunk = uris[start : start + batch_size]
        images = torch.stack([store.get(u, manifest=manifest, row=start + i) for i, u in enumerate(chunk)])
        out.append(model.encode_image(collator.normalize(images).to(device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.cfg.embed_dim), np.float32)


@torch.no_grad()
def embed_texts(model: MultiTowerModel, tokenizer, texts: list[str], batch_size: int, device) -> np.ndarray:
    """Encode texts -> (N, D) float32, unit norm (needs a model with a text encoder)."""
    collator = Collator([], tokenizer, model.cfg.max_text_length)
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = collator.tokenize(texts[start : start + batch_size])
        out.append(model.encode_text(**{k: v.to(device) for k, v in tokens.items()}).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.cfg.embed_dim), np.float32)


@dataclass
class ModelResult:
    """Per-query values of one model (each array's mean is the metric) and its rankings."""

    per_query: dict[str, np.ndarray]
    ranks: np.ndarray  # (Q,) street-to-shop target ranks
    topk: np.ndarray  # (Q, 10) gallery rows
    scores_topk: np.ndarray  # (Q, 10)
    mm_topk: np.ndarray  # (R, 10) multimodal gallery rows
    mm_scores_topk: np.ndarray
    fusion_text_weight: float


def evaluate_model(model: MultiTowerModel, tokenizer, evalset: EvalSet, cfg: EvalConfig, device="cpu") -> ModelResult:
    """Score one model on ``evalset``; see module docstring for the protocol."""
    model.eval()
    bs = cfg.batch_size
    gallery = embed_images(model, evalset.data_dir, list(evalset.gallery["image_uri"]), schema.CATALOG_FILE, bs, device)
    queries = embed_images(model, evalset.data_dir, list(evalset.queries["query_image_uri"]), schema.INTERACTIONS_FILE, bs, device)
    scores = queries @ gallery.T
    targets = evalset.queries["target"].to_numpy()
    ranks = M.target_ranks(scores, targets)
    depth = min(10, gallery.shape[0])
    topk = M.topk_indices(scores, depth)
    categories = evalset.gallery["category"].to_numpy()
    per_query = {f"recall@{k}": M.recall_at_k(ranks, k) for k in cfg.ks}
    per_query["mrr"] = M.reciprocal_rank(ranks)
    per_query["cross_category_fp@10"] = M.cross_category_fp_at_k(topk, categories, categories[targets])

    # Multimodal search: fused (photo, reformulation text) query; image-only models have no
    # text encoder, so their multimodal query is the photo alone (text weight 0).
    weight = cfg.fusion_text_weight if cfg.fusion_text_weight is not None else model.cfg.fusion_text_weight
    weight = weight if model.has_text and tokenizer is not None else 0.0
    refs = evalset.reformulations
    mm_topk = np.zeros((0, depth), np.int64)
    mm_scores = np.zeros((0, depth), np.float32)
    if len(refs):
        ref_images = embed_images(model, evalset.data_dir, list(refs["query_image_uri"]), schema.REFORMULATIONS_FILE, bs, device)
        fused = ref_images
        if weight > 0:
            ref_texts = embed_texts(model, tokenizer, list(refs["reformulation_text"]), bs, device)
            fused = fuse(torch.from_numpy(ref_images), torch.from_numpy(ref_texts), weight).numpy()
        mm_all = fused @ gallery.T
        mm_ranks = M.target_ranks(mm_all, refs["target"].to_numpy())
        per_query["multimodal_recall@10"] = M.recall_at_k(mm_ranks, 10)
        mm_topk = M.topk_indices(mm_all, depth)
        mm_scores = np.take_along_axis(mm_all, mm_topk, axis=1)
    return ModelResult(
        per_query=per_query,
        ranks=ranks,
        topk=topk,
        scores_topk=np.take_along_axis(scores, topk, axis=1),
        mm_topk=mm_topk,
        mm_scores_topk=mm_scores,
        fusion_text_weight=float(weight),
    )


def _examples(evalset: EvalSet, results: dict[str, ModelResult], n: int, seed: int) -> list[RetrievalExample]:
    """A seeded random sample of test queries (2/3) and reformulations (1/3): not cherry-picked."""
    rng = np.random.default_rng(seed)
    data_dir, gallery = evalset.data_dir, evalset.gallery
    n_mm = min(len(evalset.reformulations), n // 3)
    n_q = min(len(evalset.queries), n - n_mm)

    def items(topk_row, score_row, target):
        return [
            RetrievedItem(
                product_id=str(gallery.at[g, "product_id"]),
                image=schema.resolve_uri(data_dir, gallery.at[g, "image_uri"]),
                title=str(gallery.at[g, "title"]),
                category=str(gallery.at[g, "category"]),
                score=float(s),
                correct=bool(g == target),
            )
            for g, s in zip(topk_row[:5], score_row[:5])
        ]

    def example(row, label: str, ranking: str, text: str = "") -> RetrievalExample:
        q, target = row.name, int(row["target"])
        return RetrievalExample(
            query_image=schema.resolve_uri(data_dir, row["query_image_uri"]),
            query_label=label,
            true_product_id=str(row["product_id"]),
            results={
                name: items(getattr(r, f"{ranking}topk")[q], getattr(r, f"{ranking}scores_topk")[q], target)
                for name, r in results.items()
            },
            query_text=text,
            true_category=str(gallery.at[target, "category"]),
            true_image=schema.resolve_uri(data_dir, gallery.at[target, "image_uri"]),
        )

    examples = []
    for q in sorted(rng.choice(len(evalset.queries), size=n_q, replace=False)):
        row = evalset.queries.iloc[q]
        examples.append(example(row, f"{row['query_id']}: {gallery.at[int(row['target']), 'title']}", ""))
    for q in sorted(rng.choice(len(evalset.reformulations), size=n_mm, replace=False)) if n_mm else []:
        row = evalset.reformulations.iloc[q]
        label = f"multimodal -> {gallery.at[int(row['target']), 'title']}"
        examples.append(example(row, label, "mm_", str(row["reformulation_text"])))
    return examples


def evaluate(
    models: dict[str, str | os.PathLike],
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: EvalConfig | None = None,
    *,
    title: str = "vsearch evaluation report",
    device: str = "cpu",
    model_uris: dict[str, str] | None = None,
    data_uri: str | None = None,
) -> dict:
    """Evaluate named model folders on the same test sets and publish the results.

    Long because: a nine-argument signature and its Args; the body is load, score, publish.

    Args:
        models: {name: model folder}, e.g. {"image_only": ..., "three_tower": ...}.
        data_dir: dataset folder (data contract).
        out_dir: receives metrics.json, per_query.parquet, curves.json, report.html.
        cfg: evaluation settings (Recall@K depths, fusion weight, bootstrap).
        model_uris: {name: durable URI} of the models (a KFP artifact's ``uri``, e.g.
            ``s3://...``) when ``models`` holds the paths they happen to be mounted at; the
            gate, the registry and the rollout record these, never a pod-local path.
        data_uri: the durable URI of ``data_dir`` (likewise).

    Returns:
        The metrics.json dict: ``{"models": {name: {metric: mean, "ci95": {...}}}, ...}``.
    """
    from vsearch.lineage import data_fingerprint

    cfg = cfg or EvalConfig()
    keep_freed_memory(device)  # 1.7x on the demo's evaluation (vsearch.memory)
    for name, path in models.items():
        if not (Path(path) / model_folder.CONFIG_FILE).is_file():
            raise DataError(path, f"model '{name}' is not a vsearch model folder (missing {model_folder.CONFIG_FILE})")
    evalset = load_eval_set(data_dir)
    results: dict[str, ModelResult] = {}
    for name, path in models.items():
        model, tokenizer = load_model(path, device=device)
        results[name] = evaluate_model(model, tokenizer, evalset, cfg, device)

    summary = {
        "models": {name: M.summarize(r.per_query, n_boot=cfg.n_boot, seed=cfg.seed) for name, r in results.items()},
        "eval": {
            "data": artifacts.durable_uri(data_uri or data_dir),
            "data_fingerprint": data_fingerprint(data_dir),
            "gallery_size": len(evalset.gallery),
            "queries": len(evalset.queries),
            "reformulations": len(evalset.reformulations),
            "fusion_text_weight": {name: r.fusion_text_weight for name, r in results.items()},
            "n_boot": cfg.n_boot,
            # Content versions and URIs: the gate runs in another pod, where these folders are not.
            "model_versions": {name: artifacts.model_version(p) for name, p in models.items()},
            "model_uris": {name: artifacts.durable_uri((model_uris or {}).get(name) or p) for name, p in models.items()},
        },
    }
    curves = {name: M.recall_curve(r.ranks, [k for k in CURVE_KS if k <= len(evalset.gallery)]) for name, r in results.items()}
    ids = {"street_to_shop": evalset.queries["query_id"].to_numpy(), "multimodal": np.arange(len(evalset.reformulations)).astype(str)}
    rows = []
    for name, r in results.items():
        for metric, values in r.per_query.items():
            qids = ids["multimodal"] if metric.startswith("multimodal") else ids["street_to_shop"]
            rows.append(pd.DataFrame({"model": name, "metric": metric, "query": qids, "value": values}))

    out = Path(out_dir)
    with artifacts.staged(out) as staging:
        (staging / METRICS_FILE).write_text(json.dumps(summary, indent=2))
        (staging / CURVES_FILE).write_text(json.dumps(curves))
        pd.concat(rows, ignore_index=True).to_parquet(staging / PER_QUERY_FILE, index=False)
        write_report(
            staging / REPORT_FILE,
            summary,
            curves,
            _examples(evalset, results, cfg.n_examples, cfg.seed),
            title=title,
            subtitle=f"{len(evalset.queries)} test queries, {len(evalset.gallery)} gallery products "
            f"(unseen in training), {len(evalset.reformulations)} multimodal reformulations",
            notes=[
                "95% CIs are percentile bootstrap intervals over queries "
                f"({cfg.n_boot} resamples, seed {cfg.seed}).",
                "cross_category_fp@10: share of the top 10 whose category differs from the true product's (lower is better).",
                "Examples are a seeded random sample, not picked for the outcome.",
                *training_notes(models),
            ],
        )
    return summary


def training_notes(models: dict[str, str]) -> list[str]:
    """One note per model whose training summary says mined reformulation rows were skipped.

    A catalog without the optional variant-group column trains the 4-tower model on
    engagement rows only (vsearch.data.reformulations); the reviewer should see that here.
    """
    notes = []
    for name, path in models.items():
        summary_path = Path(path) / model_folder.SUMMARY_FILE
        if not summary_path.is_file():
            continue
        mined = json.loads(summary_path.read_text()).get("mined_reformulations")  # {"rows", "skipped"?}
        reason = mined.get("skipped") if isinstance(mined, dict) else None
        if reason:
            notes.append(f"{name}: {reason}")
    return notes


def parse_model_args(values: list[str]) -> dict[str, str]:
    """``NAME=DIR`` or ``DIR`` (named after the folder) -> {name: dir}."""
    models: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = Path(value).name, value
        if name in models:
            raise ValueError(f"--model: name '{name}' given twice")
        models[name] = path
    return models


def main(argv: list[str] | None = None) -> int:
    """``vsearch evaluate --model [NAME=]DIR [--model ...] --data DIR --out DIR``."""
    import argparse

    from vsearch.config import load_config

    parser = argparse.ArgumentParser(prog="vsearch evaluate", description="Evaluate models on the test split; write metrics.json and report.html.")
    parser.add_argument("--model", action="append", required=True, help="[NAME=]model folder; repeat to compare models")
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", default="image_only", help="preset whose eval section is used")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.n_boot=2000")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides).eval
    models = parse_model_args(args.model)
    artifacts.check_out(args.out, [args.data, *models.values()], ours=(METRICS_FILE,))
    summary = evaluate(models, args.data, args.out, cfg)
    print(format_table(summary))
    return 0


def format_table(summary: dict) -> str:
    """Plain-text table of every model's metrics with 95% CIs (for stdout)."""
    keys = [k for k in M.METRIC_KEYS if any(k in m for m in summary["models"].values())]
    width = max([len(n) for n in summary["models"]] + [10])
    lines = [f"{'model':<{width}}  " + "  ".join(f"{k:>24}" for k in keys)]
    for name, m in summary["models"].items():
        cells = []
        for k in keys:
            if k in m:
                lo, hi = m["ci95"][k]
                cells.append(f"{m[k]:.3f} [{lo:.3f},{hi:.3f}]".rjust(24))
            else:
                cells.append("-".rjust(24))
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    arrows = "  ".join(("(higher better)" if M.METRIC_DIRECTIONS[k] == "higher" else "(lower better)").rjust(24) for k in keys)
    lines.append(f"{'':<{width}}  {arrows}")
    return "\n".join(lines)
