"""``vsearch data import``: a folder of images plus CSV/JSONL tables -> the data contract.

Inputs (CSV with a header, or JSON Lines; image paths relative to ``--images``):

- catalog: ``product_id, image_path, title, category`` + any attribute columns (e.g. colour)
  + optionally the variant-group column (``--variant-group``);
- engagement log: ``query_image_path, product_id, timestamp`` (+ optional ``query_id``,
  ``query_text``);
- reformulations (optional): ``query_image_path, reformulation_text, product_id``.

Writes ``catalog.parquet``, ``interactions.parquet``, ``reformulations.parquet`` and, unless
``--reference``, ``images/`` (copies) into ``--out``, atomically (``vsearch.artifacts.staged``:
a failed import leaves ``--out`` as it was). Splits are assigned by product, or by variant
group when one is given, with a fixed seed. A product whose variant-group cell is blank (or
null) is its own group: its product_id is written into that column (a standalone product, or
the main variant of a group named after it). Reformulations are evaluation queries: each
target, and each product clicked with a reformulation's photo, goes to the test split with its
variant group (``schema.reformulation_leaks``: never train). Every bad row ends the import
with one line naming the file, the row (0-based data row) and the rule, exit status 2: also
a null or blank cell in a required column.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from vsearch import artifacts, schema
from vsearch.schema import DataError

CATALOG_IN = ("product_id", "image_path", "title", "category")
ENGAGEMENT_IN = ("query_image_path", "product_id", "timestamp")
REFORMULATIONS_IN = ("query_image_path", "reformulation_text", "product_id")
IMAGES_DIR = "images"


def _refuse_first(bad: pd.Series, path: str | os.PathLike, rule: str, values: pd.Series) -> None:
    """DataError at the first row where ``bad`` (R,) is True: the file, that row (0-based data
    row), the rule and the row's value from ``values`` (R,); nothing when no row is bad."""
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(path, rule, row, repr(values.iloc[row])[:120])


def _blank(values: pd.Series) -> pd.Series:
    """True where a cell is null (JSON null, a missing key) or blank text ("" / spaces)."""
    return values.map(lambda v: not v.strip() if isinstance(v, str) else bool(pd.api.types.is_scalar(v) and pd.isna(v)))


def read_table(path: str | os.PathLike, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV (header row) or JSONL file; the ``required`` columns, and the ``optional`` ones
    present, as strings. DataError if unreadable, a required column is missing, or one of those
    cells is null or blank (before the text conversion would turn a null into "nan")."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            df = pd.read_json(path, lines=True, dtype=False)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as err:
        raise DataError(path, "not a readable CSV or JSONL file", detail=f"{type(err).__name__}: {err}") from err
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(path, f"missing required column(s) {missing}")
    df = df.reset_index(drop=True)
    text = [c for c in required + optional if c in df.columns]
    for column in text:
        _refuse_first(_blank(df[column]), path, f"column '{column}' must not be null or blank", df[column])
    return df.astype({c: str for c in text})


def image_source(root: Path, value: str, table: Path, row: int) -> Path:
    """The image file ``value`` names under ``root``; it must exist and stay inside ``root``."""
    if not value or "://" in value or os.path.isabs(value):
        raise DataError(table, "image path must be relative to --images (no URL, no absolute path)", row, repr(value)[:120])
    path = (root / value).resolve()
    if not (root == path or root in path.parents):
        raise DataError(table, "image path resolves outside --images", row, repr(value)[:120])
    if not path.is_file():
        raise DataError(table, "image file not found under --images", row, repr(value)[:120])
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:  # header + structure only; `vsearch data validate` decodes
            image.verify()
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise DataError(table, "not a readable image", row, f"{value!r}: {type(err).__name__}"[:120]) from err
    return path


def _image_uris(root: Path, values: pd.Series, table: Path, reference: bool) -> tuple[list[str], dict[Path, str]]:
    """Manifest URIs for the image column, and the copies to make (source -> relative URI)."""
    uris, copies = [], {}
    for row, value in enumerate(values):
        source = image_source(root, value, table, row)
        relative = source.relative_to(root).as_posix()
        uri = source.as_uri() if reference else f"{IMAGES_DIR}/{relative}"
        copies[source] = uri
        uris.append(uri)
    return uris, ({} if reference else copies)


def assign_splits(keys: pd.Series, seed: int, val: float, test: float, held: tuple | list = ()) -> pd.Series:
    """``train | val | test`` per row, by distinct key (product or variant group), seeded.

    At least one key goes to val and to test when there are three or more keys. Keys in
    ``held`` (those the reformulations evaluate on) all go to test, before the seeded draw
    fills the rest of the test share; val then takes its share, leaving train at least one key.
    """
    distinct = sorted(keys.unique())
    held = set(held)
    rest = np.array([k for k in distinct if k not in held], dtype=object)
    order = np.random.default_rng(seed).permutation(len(rest))
    n_test = max(1, round(test * len(distinct))) if len(distinct) >= 3 else 0
    n_val = max(1, round(val * len(distinct))) if len(distinct) >= 3 else 0
    n_more = max(0, n_test - len(held))
    n_val = max(0, min(n_val, len(rest) - n_more - 1))
    split = dict.fromkeys(distinct, "train") | dict.fromkeys(held, "test")
    split |= dict.fromkeys(rest[order[:n_more]], "test") | dict.fromkeys(rest[order[n_more:n_more + n_val]], "val")
    return keys.map(split)


def _held_out_keys(reformulations: pd.DataFrame, interactions: pd.DataFrame, key_of: pd.Series, path) -> list:
    """The split keys the reformulations keep out of train, in row order: each target's, and
    those of the products clicked with its photo (``schema.reformulation_leaks``' two rules).

    Args:
        reformulations, interactions: the contract's columns (URIs as the importer writes them).
        key_of: product_id -> split key (the product itself, or its variant group).
        path: the user's reformulations file, named by the error.

    Raises:
        DataError: the first row by which every clicked key is held out (no training data left).
    """
    clicked_keys = interactions["product_id"].map(key_of)
    photo_keys = clicked_keys.groupby(interactions["query_image_uri"]).agg(list).to_dict()
    clicked, held = set(clicked_keys), {}
    for row, (photo, target) in enumerate(zip(reformulations["query_image_uri"], reformulations["product_id"])):
        held.update(dict.fromkeys([key_of[target], *photo_keys.get(photo, [])]))
        if clicked and clicked <= held.keys():
            raise DataError(path, "reformulation targets and photos (with their variant groups) leave no clicked "
                            "product for the train split", row, repr(target)[:120])
    return list(held)


def _catalog(path: Path, root: Path, group: str, reference: bool):
    df = read_table(path, CATALOG_IN)
    if group:
        if group not in df.columns:
            raise DataError(path, f"missing the --variant-group column {group!r}")
        df[group] = df[group].mask(_blank(df[group]), df["product_id"]).astype(str)  # blank: its own group
    _refuse_first(df["product_id"].duplicated(), path, "duplicate product_id", df["product_id"])
    uris, copies = _image_uris(root, df["image_path"], path, reference)
    catalog = df.drop(columns=["image_path"]).assign(image_uri=uris)
    first = [c.name for c in schema.CATALOG_COLUMNS]
    return catalog[first + [c for c in catalog.columns if c not in first]], copies


def _engagement(path: Path, root: Path, known: set, reference: bool):
    df = read_table(path, ENGAGEMENT_IN, optional=("query_id",))
    _refuse_first(~df["product_id"].isin(known), path, "clicked product_id not in the catalog", df["product_id"])
    stamps = pd.to_datetime(df["timestamp"], errors="coerce", utc=True, format="mixed")
    _refuse_first(stamps.isna() | schema.timestamp_out_of_range(stamps), path,
                 "timestamp is not an ISO date/time between 1970 and now", df["timestamp"])
    uris, copies = _image_uris(root, df["query_image_path"], path, reference)
    query_ids = df["query_id"] if "query_id" in df.columns else pd.Series([f"q{i}" for i in range(len(df))])
    _refuse_first(query_ids.duplicated(), path, "duplicate query_id", query_ids)
    texts = df["query_text"].fillna("").astype(str) if "query_text" in df.columns else ""
    return pd.DataFrame({"query_id": query_ids, "query_image_uri": uris, "query_text": texts,
                         "product_id": df["product_id"], "event_timestamp": stamps}), copies


def _reformulations(path: Path | None, root: Path, known: set, reference: bool):
    if path is None:
        return pd.DataFrame({c.name: pd.Series(dtype=str) for c in schema.REFORMULATION_COLUMNS}), {}
    df = read_table(path, REFORMULATIONS_IN)
    _refuse_first(~df["product_id"].isin(known), path, "target product_id not in the catalog", df["product_id"])
    uris, copies = _image_uris(root, df["query_image_path"], path, reference)
    return pd.DataFrame({"query_image_uri": uris, "reformulation_text": df["reformulation_text"],
                         "product_id": df["product_id"]}), copies


def _check_contract(staging: Path, referenced_root: Path | None) -> None:
    """The contract's own checks (types, empty titles, leakage) before publishing; referenced
    images are file:// URLs under their root, allowed for this check only (later readers need
    the root in $VSEARCH_ALLOWED_URI_PREFIXES, as the command prints)."""
    schema.read_dataset(staging, extra_prefixes=(referenced_root.as_uri() + "/",) if referenced_root else ())


def import_dataset(images: str | os.PathLike, catalog: str | os.PathLike, engagement: str | os.PathLike,
                   out: str | os.PathLike, *, reformulations: str | os.PathLike | None = None,
                   variant_group: str = "", reference: bool = False, seed: int = 0,
                   val_share: float = 0.1, test_share: float = 0.2) -> dict:
    """Build the data contract in ``out`` from tables and an image folder (see the module doc).

    Returns:
        ``{"out", "products", "queries", "reformulations", "splits": {split: products}}``.

    Raises:
        DataError: a bad row or file (named, with the row and the rule); ``out`` untouched.
    """
    root = Path(images).resolve()
    if not root.is_dir():
        raise DataError(images, "--images is not a folder")
    out = artifacts.check_out(out, [images, catalog, engagement, reformulations], ours=(schema.CATALOG_FILE,))
    cat, copies = _catalog(Path(catalog), root, variant_group, reference)
    known = set(cat["product_id"])
    inter, more = _engagement(Path(engagement), root, known, reference)
    refs, most = _reformulations(Path(reformulations) if reformulations else None, root, known, reference)
    products = cat.set_index("product_id")
    keys = (products[variant_group] if variant_group else products.index.to_series()).astype(str)
    held = _held_out_keys(refs, inter, keys, reformulations)
    product_split = assign_splits(keys, seed, val_share, test_share, held)
    inter["split"] = inter["product_id"].map(product_split)
    with artifacts.staged(out) as staging:
        for source, uri in {**copies, **more, **most}.items():
            (staging / uri).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, staging / uri)
        cat.to_parquet(staging / schema.CATALOG_FILE, index=False)
        inter.to_parquet(staging / schema.INTERACTIONS_FILE, index=False)
        refs.to_parquet(staging / schema.REFORMULATIONS_FILE, index=False)
        _check_contract(staging, root if reference else None)
    splits = inter.drop_duplicates("product_id")["split"].value_counts().to_dict()
    return {"out": str(out), "products": len(cat), "queries": len(inter), "reformulations": len(refs), "splits": splits}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vsearch data import", description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True, help="root folder of every image path in the tables")
    p.add_argument("--catalog", required=True, help="CSV/JSONL: product_id, image_path, title, category, attributes...")
    p.add_argument("--engagement", required=True, help="CSV/JSONL: query_image_path, product_id, timestamp [, query_text]")
    p.add_argument("--reformulations", help="CSV/JSONL: query_image_path, reformulation_text, product_id (optional)")
    p.add_argument("--out", required=True, help="data folder to write (the data contract)")
    p.add_argument("--variant-group", default="", help="catalog column grouping variants of one design (splits by it)")
    p.add_argument("--reference", "--link", dest="reference", action="store_true",
                   help="reference the images as file:// URIs under --images instead of copying them")
    p.add_argument("--seed", type=int, default=0, help="split seed (default %(default)s)")
    args = p.parse_args(argv)
    result = import_dataset(args.images, args.catalog, args.engagement, args.out, reformulations=args.reformulations,
                            variant_group=args.variant_group, reference=args.reference, seed=args.seed)
    print(f"imported {result['products']} products, {result['queries']} queries, {result['reformulations']} "
          f"reformulations into {result['out']} (products per split: {result['splits']})")
    env = f"{schema.ALLOWED_URI_PREFIXES_ENV}={Path(args.images).resolve().as_uri()}/ " if args.reference else ""
    group = f" data.reformulation_group={args.variant_group}" if args.variant_group else ""
    # the pipeline trains all three models with train_overrides: only the 4-tower preset mines rows by the group
    overrides = json.dumps([f"data.reformulation_group={args.variant_group}"]) if args.variant_group else ""
    pipeline_group = f" --param {shlex.quote('train_overrides=' + overrides)}" if overrides else ""
    print("next:")
    print(f"  {env}vsearch data validate --data {args.out} --out {args.out}-validation")
    print(f"  {env}vsearch train --config image_only --data {args.out} --out models/image_only")
    print(f"  {env}vsearch train --config three_tower --data {args.out} --out models/three_tower")
    print(f"  {env}vsearch train --config four_tower --data {args.out} --init models/three_tower --out models/four_tower{group}")
    print(f"  {env}vsearch evaluate --data {args.out} --out reports/{Path(args.out).name} --model image_only=models/image_only"
          " --model three_tower=models/three_tower --model four_tower=models/four_tower")
    print(f"  or all of it as the demo's pipeline: {env}vsearch pipeline run-local training-import --param data_uri={args.out}"
          f"{pipeline_group}")
    return 0
