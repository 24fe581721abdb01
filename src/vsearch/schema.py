"""The data contract: one source of truth for column names, dtypes, towers and files.

Great Expectations suites, Feast definitions, the Milvus collection and every loader read
their column lists from here. A URI in a manifest is relative to the data folder or an
absolute fsspec URL; a relative one never resolves outside the data folder.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

CATALOG_FILE = "catalog.parquet"
INTERACTIONS_FILE = "interactions.parquet"
REFORMULATIONS_FILE = "reformulations.parquet"
# Optional: product feature history (one row per product version) for point-in-time joins.
PRODUCT_HISTORY_FILE = "product_history.parquet"

SPLITS = ("train", "val", "test")

# Towers. The name is the contract end to end: batch key, encoder input, "<tower>_features".
QUERY_IMAGE = "query_image"
PRODUCT_IMAGE = "product_image"
PRODUCT_TEXT = "product_text"
QUERY_TEXT = "query_text"
IMAGE_TOWERS = (QUERY_IMAGE, PRODUCT_IMAGE)
TEXT_TOWERS = (PRODUCT_TEXT, QUERY_TEXT)
TOWERS = IMAGE_TOWERS + TEXT_TOWERS
# The fused multimodal query (query image + query text) is a derived feature, not a tower.
FUSED_QUERY = "fused_query"
# Titles through a frozen reference encoder (loss.reference_text): computed once per title by
# the training loop, never part of the model; usable only as a loss pair's soft_targets.
REFERENCE_TEXT = "reference_text"


@dataclass(frozen=True)
class Column:
    """One manifest column: ``kind`` is one of "string", "timestamp", "category"."""

    name: str
    kind: str
    nullable: bool = False
    allowed: tuple[str, ...] | None = None
    description: str = ""


CATALOG_COLUMNS = (
    Column("product_id", "string", description="Unique product id."),
    Column("image_uri", "string", description="Catalog image, relative to the data folder or an fsspec URL."),
    Column("title", "string", description="Product title as shown in the catalog."),
    Column("category", "string", description="Product category (used for cross-category false positives)."),
)
INTERACTION_COLUMNS = (
    Column("query_id", "string", description="Unique id of the search event."),
    Column("query_image_uri", "string", description="The street photo the user searched with."),
    Column("query_text", "string", description="Short text typed with the photo; may be empty."),
    Column("product_id", "string", description="The product clicked or bought."),
    Column("event_timestamp", "timestamp", description="When the engagement happened (UTC)."),
    Column("split", "category", allowed=SPLITS, description="train | val | test, assigned by product."),
)
REFORMULATION_COLUMNS = (
    Column("query_image_uri", "string", description="The street photo."),
    Column("reformulation_text", "string", description='Reformulation such as "in red".'),
    Column("product_id", "string", description="The product the reformulated query should find."),
)

PRODUCT_HISTORY_COLUMNS = (
    Column("product_id", "string", description="Product id (the Feast entity key)."),
    Column("image_uri", "string", description="Catalog image of this product version."),
    Column("title", "string", description="Title of this product version."),
    Column("category", "string", description="Category of this product version."),
    Column("event_timestamp", "timestamp", description="When this version became effective (UTC)."),
)
# Optional columns: checked when present. A training set built point-in-time carries, per
# click, the title the product had at that moment (the dataset uses it instead of the catalog's).
OPTIONAL_COLUMNS: dict[str, tuple[Column, ...]] = {
    INTERACTIONS_FILE: (Column("title", "string", description="Title of the clicked product at event_timestamp."),),
}
# Longest title accepted by validation (characters); tokenizers truncate far earlier.
TITLE_MAX_CHARS = 512

MANIFESTS: dict[str, tuple[Column, ...]] = {
    CATALOG_FILE: CATALOG_COLUMNS,
    INTERACTIONS_FILE: INTERACTION_COLUMNS,
    REFORMULATIONS_FILE: REFORMULATION_COLUMNS,
    PRODUCT_HISTORY_FILE: PRODUCT_HISTORY_COLUMNS,
}
# Columns whose value must be non-empty text (query_text may be empty by contract).
NON_EMPTY_TEXT = {
    CATALOG_FILE: ("product_id", "image_uri", "title", "category"),
    INTERACTIONS_FILE: ("query_id", "query_image_uri", "product_id"),
    REFORMULATIONS_FILE: ("query_image_uri", "reformulation_text", "product_id"),
    PRODUCT_HISTORY_FILE: ("product_id", "image_uri", "title", "category"),
}
URI_COLUMNS = {
    CATALOG_FILE: ("image_uri",),
    INTERACTIONS_FILE: ("query_image_uri",),
    REFORMULATIONS_FILE: ("query_image_uri",),
    PRODUCT_HISTORY_FILE: ("image_uri",),
}
UNIQUE_KEYS = {CATALOG_FILE: "product_id", INTERACTIONS_FILE: "query_id"}


class DataError(ValueError):
    """Bad input: the message names the file, the row (when there is one) and the rule broken."""

    def __init__(self, path: str | os.PathLike, rule: str, row: int | None = None, detail: str = ""):
        self.path, self.rule, self.row, self.detail = str(path), rule, row, detail
        where = f"{self.path}" + (f", row {row}" if row is not None else "")
        super().__init__(f"{where}: {rule}" + (f" ({detail})" if detail else ""))


def resolve_uri(data_dir: str | os.PathLike, uri: str, *, manifest: str = "", row: int | None = None) -> str:
    """Resolve a manifest URI to something `open`/fsspec can read.

    Relative URIs are joined to ``data_dir`` and must stay inside it (no ``..`` escapes, no
    symlink escapes). Absolute fsspec URLs (``s3://``, ``gs://``, ``file://``) pass through.
    """
    if not isinstance(uri, str) or not uri:
        raise DataError(manifest or data_dir, "URI must be a non-empty string", row)
    if "://" in uri:
        return uri
    if os.path.isabs(uri):
        raise DataError(manifest or data_dir, "a local URI must be relative to the data folder", row, uri)
    root = Path(data_dir).resolve()
    path = (root / uri).resolve()
    if path != root and root not in path.parents:
        raise DataError(manifest or data_dir, "URI resolves outside the data folder", row, uri)
    return str(path)


def _check_column(df: pd.DataFrame, col: Column, path: Path) -> None:
    series = df[col.name]
    if col.kind == "timestamp":
        if not pd.api.types.is_datetime64_any_dtype(series):
            raise DataError(path, f"column '{col.name}' must be a timestamp", detail=f"got dtype {series.dtype}")
        bad = series.isna()
    else:
        bad = ~series.map(lambda v: isinstance(v, str))
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        value = series.iloc[row]
        kind = "null" if value is None or (isinstance(value, float) and math.isnan(value)) else type(value).__name__
        raise DataError(path, f"column '{col.name}' must be {col.kind}, not {kind}", row)
    if col.allowed is not None:
        bad = ~series.isin(col.allowed)
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise DataError(path, f"column '{col.name}' must be one of {list(col.allowed)}", row, repr(series.iloc[row]))


def read_manifest(data_dir: str | os.PathLike, name: str) -> pd.DataFrame:
    """Read one manifest (``catalog.parquet`` ...) and enforce its schema.

    Raises:
        DataError: missing or unreadable file, missing column, wrong type, empty required
            text, duplicate key. The message names the file, the row and the rule.
    """
    path = Path(data_dir) / name
    if not path.is_file():
        raise DataError(path, "manifest file is missing")
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise DataError(path, "not a readable parquet file", detail=f"{type(err).__name__}: {err}") from err
    columns = MANIFESTS[name]
    missing = [c.name for c in columns if c.name not in df.columns]
    if missing:
        raise DataError(path, f"missing required column(s) {missing}")
    df = df.reset_index(drop=True)
    for col in columns:
        _check_column(df, col, path)
    for col in OPTIONAL_COLUMNS.get(name, ()):
        if col.name in df.columns:
            _check_column(df, col, path)
    for name_ in NON_EMPTY_TEXT[name]:
        empty = df[name_].str.strip() == ""
        if empty.any():
            raise DataError(path, f"column '{name_}' must not be empty", int(empty.to_numpy().nonzero()[0][0]))
    for uri_col in URI_COLUMNS.get(name, ()):
        # Lexical check of every row (cheap); symlink escapes are caught when resolving.
        local = ~df[uri_col].str.contains("://", regex=False)
        escapes = local & (
            df[uri_col].str.startswith(("/", "\\")) | df[uri_col].str.contains(r"(?:^|[\\/])\.\.(?:[\\/]|$)", regex=True)
        )
        if escapes.any():
            row = int(escapes.to_numpy().nonzero()[0][0])
            raise DataError(path, f"column '{uri_col}': URI resolves outside the data folder", row, repr(df[uri_col].iloc[row]))
    key = UNIQUE_KEYS.get(name)
    if key is not None:
        dup = df[key].duplicated()
        if dup.any():
            row = int(dup.to_numpy().nonzero()[0][0])
            raise DataError(path, f"column '{key}' must be unique", row, repr(df[key].iloc[row]))
    return df


def read_dataset(data_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read catalog, interactions and reformulations, checking cross-file references.

    Returns:
        (catalog, interactions, reformulations); reformulations may be empty.
    """
    catalog = read_manifest(data_dir, CATALOG_FILE)
    interactions = read_manifest(data_dir, INTERACTIONS_FILE)
    ref_path = Path(data_dir) / REFORMULATIONS_FILE
    if ref_path.exists():
        reformulations = read_manifest(data_dir, REFORMULATIONS_FILE)
    else:
        reformulations = pd.DataFrame({c.name: pd.Series(dtype=object) for c in REFORMULATION_COLUMNS})
    known = set(catalog["product_id"])
    for name, df in ((INTERACTIONS_FILE, interactions), (REFORMULATIONS_FILE, reformulations)):
        bad = ~df["product_id"].isin(known)
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise DataError(Path(data_dir) / name, "product_id not in the catalog", row, repr(df["product_id"].iloc[row]))
    return catalog, interactions, reformulations


def product_splits(interactions: pd.DataFrame) -> dict[str, str]:
    """Map product_id -> split; a product seen in two splits is leakage and raises DataError."""
    per_product = interactions.groupby("product_id")["split"].nunique()
    leaked = per_product[per_product > 1]
    if len(leaked):
        pid = leaked.index[0]
        row = int((interactions["product_id"] == pid).to_numpy().nonzero()[0][0])
        raise DataError(INTERACTIONS_FILE, "a product appears in more than one split (leakage)", row, repr(pid))
    return dict(interactions.drop_duplicates("product_id").set_index("product_id")["split"])
