"""Point-in-time training set: each click joined with the product features as of the click.

``build_training_set(data_dir, out)`` writes a data folder that ``vsearch train`` reads
unchanged: ``catalog.parquet`` (as is), ``interactions.parquet`` (same rows, same order,
plus ``title``: the title the clicked product had at ``event_timestamp``, from Feast's
historical retrieval), ``reformulations.parquet`` and ``product_history.parquet`` when
present, and the images. URIs are left as they are: relative images are hard-linked (copied
across file systems) into the new folder at the same relative paths, so every URI resolves
inside the new folder and nothing points back out of it; absolute URLs (s3://, gs://)
stay URLs. The folder is published atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from vsearch import artifacts, schema
from vsearch.features import repo as feature_repo
from vsearch.schema import DataError

PROVENANCE_FILE = "training_set.json"


def point_in_time_titles(store, interactions: pd.DataFrame, path: str | os.PathLike) -> pd.Series:
    """Title of each click's product as of the click, via Feast historical retrieval.

    Args:
        store: a FeatureStore with the definitions applied.
        interactions: rows with product_id and event_timestamp (UTC).
        path: the interactions file, named in errors.

    Returns:
        (len(interactions),) titles aligned with ``interactions.index``.

    Raises:
        DataError: a click has no product version at or before its timestamp (Feast drops
            or nulls such rows; we name the first one).
    """
    # Feast's file offline store keeps one row per (entity key, timestamp): two clicks of one
    # product in the same instant would lose one. So join the distinct pairs, then map back.
    keys = pd.DataFrame({
        "product_id": interactions["product_id"].to_numpy(),
        "event_timestamp": pd.to_datetime(interactions["event_timestamp"], utc=True).astype("datetime64[ns, UTC]").to_numpy(),
    })
    entity_df = keys.drop_duplicates().reset_index(drop=True)
    service = store.get_feature_service(feature_repo.FEATURE_SERVICE)
    joined = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    joined["event_timestamp"] = pd.to_datetime(joined["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
    found = keys.merge(joined[["product_id", "event_timestamp", "title"]].drop_duplicates(["product_id", "event_timestamp"]),
                       on=["product_id", "event_timestamp"], how="left")
    aligned = pd.Series(found["title"].to_numpy(), index=interactions.index)
    missing = aligned.isna().to_numpy()
    if missing.any():
        row = int(missing.nonzero()[0][0])
        raise DataError(path, "clicked product has no feature version at or before the click time", row,
                        f"{interactions['product_id'].iloc[row]!r} at {interactions['event_timestamp'].iloc[row]}")
    return aligned.astype(object)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def _copy_images(data_dir: Path, staging: Path, frames: dict[str, pd.DataFrame]) -> int:
    """Hard-link every relative image URI into ``staging`` at the same relative path."""
    n = 0
    seen: set[str] = set()
    for name, df in frames.items():
        for col in schema.URI_COLUMNS.get(name, ()):
            for row, uri in enumerate(df[col]):
                if uri in seen or "://" in uri:
                    continue
                seen.add(uri)
                src = Path(schema.resolve_uri(data_dir, uri, manifest=str(data_dir / name), row=row))
                if not src.is_file():
                    raise DataError(data_dir / name, "image file is missing", row, uri)
                _link_or_copy(src, staging / uri)
                n += 1
    return n


def build_training_set(data_dir: str | os.PathLike, out: str | os.PathLike, repo_dir: str | os.PathLike | None = None,
                       *, data_uri: str | None = None) -> dict:
    """Build the point-in-time training set of ``data_dir`` into ``out`` (published atomically).

    Args:
        data_dir: a data folder (catalog, interactions [, reformulations, product_history]).
        out: the new data folder; an existing one is replaced only when the new one is complete.
        repo_dir: working Feast repo to use (kept); None: a temporary one.
        data_uri: the durable URI of ``data_dir`` (a KFP artifact's ``uri``), recorded as the
            training set's source when ``data_dir`` is where one pod mounted it.

    Returns:
        A JSON-able summary (rows, products, titles that differ from the catalog's, seconds).
    """
    t0 = time.perf_counter()
    data_dir, out = Path(data_dir), Path(out)
    catalog, interactions, _ = schema.read_dataset(data_dir)
    interactions = interactions.drop(columns=["title"], errors="ignore")
    temp = None
    if repo_dir is None:
        temp = tempfile.mkdtemp(prefix="vsearch-feast-")
        repo_dir = temp
    try:
        store = feature_repo.prepare_repo(data_dir, repo_dir)
        titles = point_in_time_titles(store, interactions, data_dir / schema.INTERACTIONS_FILE)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    result = interactions.assign(title=titles)

    with artifacts.staged(out) as staging:
        frames = {schema.CATALOG_FILE: catalog, schema.INTERACTIONS_FILE: result}
        for name in (schema.REFORMULATIONS_FILE, schema.PRODUCT_HISTORY_FILE):
            if (data_dir / name).is_file():
                frames[name] = schema.read_manifest(data_dir, name)
        # The manifests are copied byte for byte where unchanged; interactions gain `title`.
        for name in frames:
            if name == schema.INTERACTIONS_FILE:
                result.to_parquet(staging / name, index=False)
            else:
                shutil.copy2(data_dir / name, staging / name)
        n_images = _copy_images(data_dir, staging, frames)
        current = result["product_id"].map(catalog.set_index("product_id")["title"])
        summary = {
            "source": artifacts.durable_uri(data_uri or data_dir),
            "feature_service": feature_repo.FEATURE_SERVICE,
            "rows": len(result),
            "products": int(result["product_id"].nunique()),
            "titles_differing_from_catalog": int((current != result["title"]).sum()),
            "images": n_images,
            "history": (data_dir / schema.PRODUCT_HISTORY_FILE).is_file(),
        }
        (staging / PROVENANCE_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return {**summary, "out": str(out), "seconds": round(time.perf_counter() - t0, 3)}
