"""Window snapshots: what the drift monitor compares.

A snapshot of a window of traffic (a data folder, optionally a time range of its engagement
log) under one model holds, for a seeded subsample of queries and of catalog products:

* ``queries.parquet``: per query ``query_id``, features (``query_text_length`` in words,
  ``image_size`` = longer side in pixels, ``brightness`` = mean luminance 0-255,
  ``mean_red/green/blue`` 0-255), the retrieval-health proxy ``top1_similarity`` (cosine of
  the best catalog match, gallery = the window's catalog), and the query-image embedding in
  columns ``emb_000 ...`` (unit norm);
* ``products.parquet``: per product ``product_id``, ``category``, ``title_length`` (words),
  ``image_size``, ``brightness``, ``mean_red/green/blue`` and the product-image embedding;
* ``snapshot.json``: model version, data folder and fingerprint, window, sizes, and the
  ``low_confidence_threshold`` (on a reference: the ``low_confidence_quantile`` of its
  top-1 similarities; the share of current queries below it is the low-confidence share).

The same function builds the reference (`build_reference`: its own folder, built from the
trained model and its training data by the pipelines' ``build_drift_reference`` step) and
any current window, so both are measured identically.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from vsearch import artifacts, schema
from vsearch.memory import keep_freed_memory
from vsearch.model_folder import REFERENCE_DIR, WEIGHTS_FILE

QUERIES_FILE = "queries.parquet"
PRODUCTS_FILE = "products.parquet"
SNAPSHOT_FILE = "snapshot.json"
EMB_PREFIX = "emb_"
QUERY_FEATURES = ("query_text_length", "image_size", "brightness", "mean_red", "mean_green", "mean_blue")
PRODUCT_FEATURES = ("title_length", "category", "image_size", "brightness", "mean_red", "mean_green", "mean_blue")
HEALTH_COLUMN = "top1_similarity"
# Fewest rows per window (queries, products) the drift checks accept: the embedding
# classifier and the two-sample tests need a few rows on each side.
MIN_WINDOW_ROWS = 5


def _image_stats(data_dir: str, uris: list[str], size: int, manifest: str):
    """Decode ``uris`` -> ((N, 3, S, S) uint8 tensor at the model's size, stats DataFrame).

    Stats come from the decoded image: longer side of the original in pixels, mean luminance
    (ITU-R BT.601) and per-channel means, 0-255.
    """
    import torch
    from PIL import Image

    from vsearch.data.dataset import decode_image

    tensors, rows = [], []
    for row, uri in enumerate(uris):
        image = decode_image(data_dir, uri, size, manifest=manifest, row=row)
        tensors.append(image)
        path = schema.resolve_uri(data_dir, uri, manifest=manifest, row=row)
        if "://" in path:
            import fsspec

            with fsspec.open(path, "rb") as fh, Image.open(fh) as im:
                side = max(im.size)
        else:
            with Image.open(path) as im:
                side = max(im.size)
        rgb = image.float().mean(dim=(1, 2)).tolist()
        rows.append({"image_size": float(side), "brightness": 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2],
                     "mean_red": rgb[0], "mean_green": rgb[1], "mean_blue": rgb[2]})
    stacked = torch.stack(tensors) if tensors else torch.zeros((0, 3, size, size), dtype=torch.uint8)
    return stacked, pd.DataFrame(rows, columns=["image_size", "brightness", "mean_red", "mean_green", "mean_blue"])


def _embed(model, images, batch_size: int = 128) -> np.ndarray:
    """(N, 3, S, S) uint8 -> (N, D) float32 unit-norm image embeddings."""
    import torch

    from vsearch.data.dataset import Collator

    collator = Collator([], mean=model.cfg.image_mean, std=model.cfg.image_std)
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = collator.normalize(images[start : start + batch_size]).to(device)
            out.append(model.encode_image(batch).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.cfg.embed_dim), np.float32)


def _sample(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, size=k, replace=False)) if k < n else np.arange(n)


def _with_embeddings(df: pd.DataFrame, emb: np.ndarray) -> pd.DataFrame:
    cols = {f"{EMB_PREFIX}{i:03d}": emb[:, i] for i in range(emb.shape[1])}
    return pd.concat([df.reset_index(drop=True), pd.DataFrame(cols)], axis=1)


def _window(data_dir: str, interactions: pd.DataFrame, since: str | None, until: str | None) -> pd.DataFrame:
    """The engagement rows with ``since <= event_timestamp < until`` (UTC); DataError if none."""
    window = interactions
    if since:
        window = window[window["event_timestamp"] >= pd.Timestamp(since, tz="UTC")]
    if until:
        window = window[window["event_timestamp"] < pd.Timestamp(until, tz="UTC")]
    if window.empty:
        raise schema.DataError(Path(data_dir) / schema.INTERACTIONS_FILE, "no queries in the snapshot window",
                               detail=f"since={since} until={until}")
    return window


def _gallery_embeddings(model, data_dir: str, catalog: pd.DataFrame, g_idx: np.ndarray,
                        p_rows: pd.DataFrame, p_emb: np.ndarray) -> np.ndarray:
    """(G, D) embeddings of the gallery ``catalog.iloc[g_idx]``.

    The gallery shares the sampled products' embeddings ``p_emb`` (rows of ``p_rows``);
    only the rest are decoded and embedded.
    """
    p_pos = {pid: i for i, pid in enumerate(p_rows["product_id"])}
    gallery = catalog.iloc[g_idx].reset_index(drop=True)
    missing = [i for i, pid in enumerate(gallery["product_id"]) if pid not in p_pos]
    g_emb = np.zeros((len(gallery), p_emb.shape[1]), np.float32)
    for i, pid in enumerate(gallery["product_id"]):
        if pid in p_pos:
            g_emb[i] = p_emb[p_pos[pid]]
    if missing:
        import torch

        from vsearch.data.dataset import decode_image

        size = model.cfg.image_size
        imgs = torch.stack([decode_image(data_dir, gallery.at[i, "image_uri"], size, manifest=schema.CATALOG_FILE,
                                         row=int(g_idx[i]))
                            for i in missing])
        g_emb[missing] = _embed(model, imgs)
    return g_emb


def _measure(model, data_dir: str, q_rows: pd.DataFrame, p_rows: pd.DataFrame, catalog: pd.DataFrame,
             g_idx: np.ndarray):
    """Features, embeddings and retrieval health of the sampled rows under ``model``.

    Returns:
        (queries DataFrame with ``HEALTH_COLUMN``, products DataFrame, (Q, D) query
        embeddings, (P, D) product embeddings, gallery size).
    """
    keep_freed_memory(next(model.parameters()).device)  # a batch step: 15 s -> 9 s (vsearch.memory)
    was_training = model.training
    model.eval()
    try:
        size = model.cfg.image_size
        q_images, q_stats = _image_stats(data_dir, list(q_rows["query_image_uri"]), size, schema.INTERACTIONS_FILE)
        p_images, p_stats = _image_stats(data_dir, list(p_rows["image_uri"]), size, schema.CATALOG_FILE)
        q_emb, p_emb = _embed(model, q_images), _embed(model, p_images)
        g_emb = _gallery_embeddings(model, data_dir, catalog, g_idx, p_rows, p_emb)
        top1 = (q_emb @ g_emb.T).max(axis=1) if len(g_emb) else np.zeros(len(q_emb), np.float32)
    finally:
        model.train(was_training)
    queries = pd.concat([
        pd.DataFrame({"query_id": q_rows["query_id"].astype(str),
                      "query_text_length": q_rows["query_text"].str.split().str.len().astype(float)}),
        q_stats,
        pd.DataFrame({HEALTH_COLUMN: top1.astype(float)}),
    ], axis=1)
    products = pd.concat([
        pd.DataFrame({"product_id": p_rows["product_id"].astype(str), "category": p_rows["category"].astype(str),
                      "title_length": p_rows["title"].str.split().str.len().astype(float)}),
        p_stats,
    ], axis=1)
    return queries, products, q_emb, p_emb, int(len(g_emb))


def build_snapshot(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model=None,
    model_dir: str | os.PathLike | None = None,
    max_queries: int = 500,
    max_products: int = 500,
    max_gallery: int = 20_000,
    seed: int = 0,
    since: str | None = None,
    until: str | None = None,
    low_confidence_quantile: float = 0.1,
    low_confidence_threshold: float | None = None,
    record_model_dir: str | os.PathLike | None = None,
    data_uri: str | None = None,
) -> dict:
    """Snapshot a window of ``data_dir`` under a model; published atomically to ``out_dir``.

    Args:
        model: a loaded `MultiTowerModel` (e.g. just trained), or None to load ``model_dir``.
        model_dir: the model folder (recorded, and loaded when ``model`` is None).
        max_queries, max_products: seeded subsample sizes (keeps Evidently fast).
        max_gallery: catalog rows searched for the top-1 similarity (seeded subsample).
        since, until: optional ISO timestamps bounding ``event_timestamp`` (UTC) of the window.
        low_confidence_quantile: on a reference, the top-1 similarity quantile that defines a
            low-confidence query; ``low_confidence_threshold`` fixes it instead.
        record_model_dir: the model folder recorded in snapshot.json when not ``model_dir`` (a
            training run's staging folder is published elsewhere; a pipeline step's has a URI).
        data_uri: the data's URI recorded in snapshot.json when ``data_dir`` is where one pod
            mounted it.

    Returns:
        The snapshot.json dict.

    Raises:
        DataError: bad manifests or images, or an empty window.
    """
    from vsearch.artifacts import durable_uri, model_version
    from vsearch.lineage import data_fingerprint

    data_dir = str(data_dir)
    if model is None:
        if model_dir is None:
            raise ValueError("build_snapshot needs a model or a model_dir")
        from vsearch.models.multitower import load_model
        model = load_model(model_dir)[0]
    catalog = schema.read_manifest(data_dir, schema.CATALOG_FILE)
    window = _window(data_dir, schema.read_manifest(data_dir, schema.INTERACTIONS_FILE), since, until)
    rng = np.random.default_rng(seed)
    q_rows = window.iloc[_sample(len(window), max_queries, rng)].reset_index(drop=True)
    p_rows = catalog.iloc[_sample(len(catalog), max_products, rng)].reset_index(drop=True)
    g_idx = _sample(len(catalog), max_gallery, rng)
    queries, products, q_emb, p_emb, n_gallery = _measure(model, data_dir, q_rows, p_rows, catalog, g_idx)
    top1 = queries[HEALTH_COLUMN].to_numpy(np.float32)  # float32 -> float64 -> float32 is exact
    threshold = (low_confidence_threshold if low_confidence_threshold is not None
                 else float(np.quantile(top1, low_confidence_quantile)))
    meta = {
        "schema_version": 1,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_dir": durable_uri(record_model_dir or model_dir) if (record_model_dir or model_dir) else None,
        "model_version": model_version(model_dir) if model_dir and (Path(model_dir) / WEIGHTS_FILE).is_file() else None,
        "data": durable_uri(data_uri or data_dir),
        "data_fingerprint": data_fingerprint(data_dir),
        "window": {"since": since, "until": until, "queries_in_window": int(len(window)), "catalog_size": int(len(catalog))},
        "queries": int(len(queries)),
        "products": int(len(products)),
        "gallery": n_gallery,
        "embed_dim": int(q_emb.shape[1]),
        "seed": seed,
        "low_confidence_quantile": low_confidence_quantile if low_confidence_threshold is None else None,
        "low_confidence_threshold": threshold,
        "mean_top1_similarity": float(top1.mean()),
        "low_confidence_share": float((top1 < threshold).mean()),
    }
    with artifacts.staged(Path(out_dir)) as staging:
        _with_embeddings(queries, q_emb).to_parquet(staging / QUERIES_FILE, index=False)
        _with_embeddings(products, p_emb).to_parquet(staging / PRODUCTS_FILE, index=False)
        (staging / SNAPSHOT_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def build_reference(model_dir: str | os.PathLike, data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                    sample=None, *, model_uri: str | None = None, data_uri: str | None = None) -> dict:
    """The drift monitor's reference: a snapshot of all of ``data_dir`` (the data the model was
    trained on) under the model at ``model_dir``, published to ``out_dir``, its own folder.

    The pipelines' ``build_drift_reference`` step after each ``train_model`` (a new artifact
    beside the model: a KFP step never writes into its input), and the demo after training.
    The monitor finds it by its durable URI (the monitoring pipeline's ``reference_uri``,
    recorded in the release plan and the registry's champion).

    Args:
        sample: the drift config's ``sample`` section (``max_queries``, ``max_products``,
            ``seed``); None: the defaults (500, 500, 0).
        model_uri, data_uri: the durable URIs recorded in snapshot.json when the folders are
            where one pod mounted them.

    Returns:
        The snapshot.json dict (``model_version`` names the model; the monitor refuses a
        current window embedded by another).
    """
    sizes = ({"max_queries": int(sample.max_queries), "max_products": int(sample.max_products), "seed": int(sample.seed)}
             if sample is not None else {})
    return build_snapshot(data_dir, out_dir, model_dir=model_dir, record_model_dir=model_uri, data_uri=data_uri, **sizes)


def load_snapshot(path: str | os.PathLike) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Read a snapshot folder, or a model folder that holds ``drift_reference`` (DataError if absent).

    Models trained before the reference became its own step (issue 22) carry it in their folder.
    """
    path = Path(path)
    if not (path / SNAPSHOT_FILE).is_file() and (path / REFERENCE_DIR / SNAPSHOT_FILE).is_file():
        path = path / REFERENCE_DIR
    meta_path = path / SNAPSHOT_FILE
    if not meta_path.is_file():
        raise schema.DataError(meta_path, "not a drift snapshot (snapshot.json missing); build one with `vsearch drift snapshot`")
    try:
        meta = json.loads(meta_path.read_text())
        queries = pd.read_parquet(path / QUERIES_FILE)
        products = pd.read_parquet(path / PRODUCTS_FILE)
    except (OSError, ValueError) as err:
        raise schema.DataError(path, "unreadable drift snapshot", detail=f"{type(err).__name__}: {err}") from err
    for name, df, needed in ((QUERIES_FILE, queries, (*QUERY_FEATURES, HEALTH_COLUMN)), (PRODUCTS_FILE, products, PRODUCT_FEATURES)):
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise schema.DataError(path / name, f"missing column(s) {missing}")
        emb = [c for c in df.columns if c.startswith(EMB_PREFIX)]
        if not emb:
            raise schema.DataError(path / name, "no embedding columns")
        if len(df) < MIN_WINDOW_ROWS:
            raise schema.DataError(path / name, f"{len(df)} row(s): a drift window needs at least {MIN_WINDOW_ROWS}")
        if not np.isfinite(df[emb].to_numpy()).all():
            row = int(np.flatnonzero(~np.isfinite(df[emb].to_numpy()).all(axis=1))[0])
            raise schema.DataError(path / name, "embedding contains NaN or inf", row)
        for column in needed:
            values = df[column]
            bad = ~np.isfinite(values.to_numpy(dtype=float)) if pd.api.types.is_numeric_dtype(values) else values.isna().to_numpy()
            if bad.any():
                raise schema.DataError(path / name, f"feature '{column}' is NaN, inf or missing", int(np.flatnonzero(bad)[0]))
    return meta, queries, products
