"""The data contract: one source of truth for column names, dtypes, towers and files.

Great Expectations suites, Feast definitions, the Milvus collection and every loader read
their column lists from here. It is also the one input boundary: every reader of a manifest
URI goes through ``resolve_uri`` and ``read_uri_bytes`` (relative paths stay inside the data
folder, URLs only under the prefixes configuration allows, regular files only, a size cap
before reading); ``vsearch.data.dataset.image_to_rgb`` adds the pixel cap before decoding.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

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


@dataclass(frozen=True)
class Column:
    """One manifest column: ``kind`` is one of "string", "timestamp", "category"."""

    name: str
    kind: str
    nullable: bool = False
    allowed: tuple[str, ...] | None = None
    description: str = ""


# The product's columns: the catalog holds one row per product, the product history (below) one
# row per product version. Name, then its description in the catalog and in the history.
_PRODUCT_FIELDS = (
    ("product_id", "Unique product id.", "Product id (the Feast entity key)."),
    ("image_uri", "Catalog image, relative to the data folder or an fsspec URL.", "Catalog image of this product version."),
    ("title", "Product title as shown in the catalog.", "Title of this product version."),
    ("category", "Product category (used for cross-category false positives).", "Category of this product version."),
)
CATALOG_COLUMNS = tuple(Column(name, "string", description=catalog) for name, catalog, _ in _PRODUCT_FIELDS)
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

PRODUCT_HISTORY_COLUMNS = tuple(Column(name, "string", description=version) for name, _, version in _PRODUCT_FIELDS) + (
    Column("event_timestamp", "timestamp", description="When this version became effective (UTC)."),
)
# Optional columns: checked when present. A training set built point-in-time carries, per
# click, the title the product had at that moment (the dataset uses it instead of the catalog's).
OPTIONAL_COLUMNS: dict[str, tuple[Column, ...]] = {
    INTERACTIONS_FILE: (Column("title", "string", description="Title of the clicked product at event_timestamp."),),
}
# Optional catalog columns whose NAME a config sets (a catalog keeps its own names, e.g. a
# parent / variation group), so they are not checked by name here. Without them nothing fails:
# the 4-tower model trains on engagement rows only, without mined reformulation rows
# (vsearch.data.reformulations), and the training summary and the report say so.
CONFIGURED_CATALOG_COLUMNS: dict[str, str] = {
    "data.reformulation_group": "Variant group: products of one design in another colour, size... "
    "(the benchmark's design_id).",
    "data.reformulation_attribute": "The attribute a reformulation names, e.g. colour (its values are used as words).",
}
# Longest title accepted by validation (characters); tokenizers truncate far earlier.
TITLE_MAX_CHARS = 512

# The input boundary (validate, train, evaluate, backfill, drift and the service use the same).
# Largest image file read, bytes (checked on the file's size before reading).
MAX_IMAGE_BYTES = 16 * 1024 * 1024
# Largest image decoded, pixels (width x height from the header, before decoding): the
# service's limit, far below PIL's own bomb warning (89 Mpx) and error (179 Mpx).
MAX_IMAGE_PIXELS = 4096 * 4096
# Comma-separated URL prefixes a manifest may point at, e.g. "s3://bucket/,gs://b/images/".
# Read when a URI is resolved; empty (the default) = relative paths inside the data folder only.
# file:// and http(s):// are refused unless listed (they reach the machine's files and network).
ALLOWED_URI_PREFIXES_ENV = "VSEARCH_ALLOWED_URI_PREFIXES"
# Event timestamps must lie in [TIMESTAMP_MIN, now + TIMESTAMP_MAX_AHEAD] (UTC): a date in
# year 2999 or before 1970 is a clock or unit bug that silently breaks point-in-time joins.
TIMESTAMP_MIN = pd.Timestamp("1970-01-01", tz="UTC")
TIMESTAMP_MAX_AHEAD = pd.Timedelta(days=1)
# Characters no text or URI may hold: C0/C1 controls (NUL, ESC, newline ...) and the bidi
# overrides/isolates that reorder what a reviewer sees (U+202A-U+202E, U+2066-U+2069).
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

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
# Manifests that must hold at least one row (an empty catalog or log trains and evaluates nothing).
REQUIRED_ROWS = (CATALOG_FILE, INTERACTIONS_FILE)


class DataError(ValueError):
    """Bad input: the message names the file, the row (when there is one) and the rule broken.

    ``kind``: for errors of the input boundary, which check failed (``escapes``, ``missing``,
    ``unreadable``, ``too_large``, ``empty``, ``undecodable``); validation maps it to a rule.
    """

    def __init__(self, path: str | os.PathLike, rule: str, row: int | None = None, detail: str = "", *, kind: str = ""):
        self.path, self.rule, self.row, self.detail, self.kind = str(path), rule, row, detail, kind
        where = f"{self.path}" + (f", row {row}" if row is not None else "")
        super().__init__(f"{where}: {rule}" + (f" ({detail})" if detail else ""))


def allowed_uri_prefixes() -> tuple[str, ...]:
    """The URL prefixes of ``$VSEARCH_ALLOWED_URI_PREFIXES`` (each ends with "/").

    Raises:
        DataError: a prefix without a bucket / host (``s3://`` alone would allow every bucket).
    """
    out = []
    for prefix in os.environ.get(ALLOWED_URI_PREFIXES_ENV, "").split(","):
        prefix = prefix.strip()
        if not prefix:
            continue
        match = _URL.match(prefix)
        if not match or not prefix[match.end():].strip("/"):
            raise DataError(ALLOWED_URI_PREFIXES_ENV, "each allowed prefix must be scheme://bucket-or-host/[path/]", detail=prefix)
        out.append(prefix if prefix.endswith("/") else prefix + "/")
    return tuple(out)


def uri_problem(uri, *, extra_prefixes: tuple[str, ...] = ()) -> str | None:
    """Why ``uri`` can never be read (a lexical check, no file system or network), or None.

    The rule in words: not a non-empty string; control or bidi characters; an absolute local
    path; a ``..`` segment; a URL whose prefix configuration (or ``extra_prefixes``, each
    ending with "/", allowed for this call only) does not allow.
    """
    if not isinstance(uri, str) or not uri:
        return "URI must be a non-empty string"
    if UNPRINTABLE.search(uri):
        return "URI contains control characters"
    match = _URL.match(uri)
    if match is None and "://" in uri:
        return "URI is a malformed URL"
    if match is None and (os.path.isabs(uri) or uri.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", uri)):
        return "a local URI must be relative to the data folder"
    path = uri[match.end():] if match else uri
    if ".." in re.split(r"[\\/]", unquote(path)):
        return "URI resolves outside the data folder"
    if match is not None:
        lowered, prefixes = match.group(1).lower() + uri[match.end(1):], allowed_uri_prefixes() + tuple(extra_prefixes)
        if not any(lowered.startswith(p.split("://", 1)[0].lower() + "://" + p.split("://", 1)[1]) for p in prefixes):
            return f"URL not allowed (scheme/bucket not in {ALLOWED_URI_PREFIXES_ENV})"
    return None


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def resolve_uri(data_dir: str | os.PathLike, uri: str, *, manifest: str = "", row: int | None = None) -> str:
    """Resolve a manifest URI to a local path or an fsspec URL, or refuse it (the input boundary).

    Relative URIs are joined to ``data_dir`` and must stay inside it after symlinks are
    resolved (a ``data_dir`` that is itself a URL, e.g. ``s3://bucket/data``, is joined
    lexically). Absolute URLs pass only under a prefix of ``$VSEARCH_ALLOWED_URI_PREFIXES``
    (none by default); an allowed ``file://`` URL becomes a local path, checked the same way.

    Raises:
        DataError (kind "escapes"): the rule of ``uri_problem`` broken, a symlink escape or loop.
    """
    where = manifest or data_dir
    problem = uri_problem(uri)
    if problem is not None:
        raise DataError(where, problem, row, repr(uri)[:120] if isinstance(uri, str) else type(uri).__name__, kind="escapes")
    match = _URL.match(uri)
    if match is not None and match.group(1).lower() != "file":
        return uri
    if match is not None:  # an allowed file:// URL: a local path under the allowed folder
        prefixes = [p for p in allowed_uri_prefixes() if p.lower().startswith("file://") and uri.startswith(p)]
        root_text, local = unquote(urlsplit(prefixes[0]).path), unquote(urlsplit(uri).path)
    elif "://" in str(data_dir):  # the data folder is on object storage
        return str(data_dir).rstrip("/") + "/" + posixpath.normpath(uri).lstrip("/")
    else:
        root_text, local = str(data_dir), os.path.join(str(data_dir), uri)
    try:
        root, path = Path(root_text).resolve(), Path(local).resolve()
    except (RuntimeError, OSError) as err:  # a symlink loop (RuntimeError up to 3.12, OSError after)
        raise DataError(where, "URI cannot be resolved (symlink loop)", row, repr(uri)[:120], kind="escapes") from err
    if not _inside(root, path):
        raise DataError(where, "URI resolves outside the data folder", row, repr(uri)[:120], kind="escapes")
    return str(path)


def read_uri_bytes(path: str, where: str, *, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """Read a path or URL from ``resolve_uri``: regular files only, at most ``max_bytes``.

    The size is checked before reading (a FIFO, a device such as /dev/zero or a directory is
    refused without reading a byte; a local file is opened non-blocking and checked on the
    open descriptor, so nothing can be swapped in between).

    Raises:
        DataError with kind "missing", "unreadable" (also: not a regular file) or "too_large".
    """
    limit = f"limit {max_bytes} bytes"
    try:
        if _URL.match(path):
            import fsspec

            fs, inner = fsspec.core.url_to_fs(path)
            info = fs.info(inner)
            if info.get("type") not in (None, "file"):
                raise DataError(where, "image is not a regular file", detail=str(info.get("type")), kind="unreadable")
            size = info.get("size")
            if size is not None and size > max_bytes:
                raise DataError(where, "image file is too large", detail=f"{size} bytes, {limit}", kind="too_large")
            with fs.open(inner, "rb") as fh:
                raw = fh.read(max_bytes + 1)
        else:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise DataError(where, "image is not a regular file", detail=_file_type(st.st_mode), kind="unreadable")
                if st.st_size > max_bytes:
                    raise DataError(where, "image file is too large", detail=f"{st.st_size} bytes, {limit}", kind="too_large")
            except BaseException:
                os.close(fd)
                raise
            with os.fdopen(fd, "rb") as fh:
                raw = fh.read(max_bytes + 1)
    except DataError:
        raise
    except FileNotFoundError as err:
        raise DataError(where, "image file is missing", kind="missing") from err
    except (OSError, ValueError) as err:
        raise DataError(where, "image file is unreadable", detail=f"{type(err).__name__}: {err}"[:200], kind="unreadable") from err
    if len(raw) > max_bytes:
        raise DataError(where, "image file is too large", detail=f"more than {max_bytes} bytes", kind="too_large")
    return raw


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def unprintable_mask(series: pd.Series) -> pd.Series:
    """True where a text value holds a control or bidi character (``UNPRINTABLE``)."""
    return series.map(lambda v: isinstance(v, str) and UNPRINTABLE.search(v) is not None).astype(bool)


def timestamp_out_of_range(series: pd.Series, now: pd.Timestamp | None = None) -> pd.Series:
    """True where a (tz-aware) timestamp is before TIMESTAMP_MIN or after now + TIMESTAMP_MAX_AHEAD."""
    now = now or pd.Timestamp.now(tz="UTC")
    values = pd.to_datetime(series, utc=True)
    return ((values < TIMESTAMP_MIN) | (values > now + TIMESTAMP_MAX_AHEAD)).fillna(False).astype(bool)


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


def read_manifest(data_dir: str | os.PathLike, name: str, *, extra_prefixes: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read one manifest (``catalog.parquet`` ...) and enforce its schema (``extra_prefixes``:
    URL prefixes allowed besides the configured ones, see ``uri_problem``).

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
    if name in REQUIRED_ROWS and df.empty:
        raise DataError(path, "manifest has no rows")
    for col in columns + OPTIONAL_COLUMNS.get(name, ()):
        if col.name not in df.columns:
            continue
        if col.kind == "timestamp":
            bad = timestamp_out_of_range(df[col.name])
            rule = f"column '{col.name}' must lie between {TIMESTAMP_MIN.date()} and now"
        elif col.name not in URI_COLUMNS.get(name, ()):
            bad, rule = unprintable_mask(df[col.name]), f"column '{col.name}' must not contain control characters"
        else:
            continue
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise DataError(path, rule, row, repr(df[col.name].iloc[row])[:120])
    for uri_col in URI_COLUMNS.get(name, ()):
        # Lexical check of every row (cheap, no I/O); symlink escapes are caught when resolving.
        for row, uri in enumerate(df[uri_col]):
            problem = uri_problem(uri, extra_prefixes=extra_prefixes)
            if problem is not None:
                raise DataError(path, f"column '{uri_col}': {problem}", row, repr(uri)[:120])
    key = UNIQUE_KEYS.get(name)
    if key is not None:
        dup = df[key].duplicated()
        if dup.any():
            row = int(dup.to_numpy().nonzero()[0][0])
            raise DataError(path, f"column '{key}' must be unique", row, repr(df[key].iloc[row]))
    return df


def read_dataset(data_dir: str | os.PathLike, *,
                 extra_prefixes: tuple[str, ...] = ()) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read catalog, interactions and reformulations, checking cross-file references
    (``extra_prefixes``: URL prefixes allowed besides the configured ones, see ``uri_problem``).

    Returns:
        (catalog, interactions, reformulations); reformulations may be empty.
    """
    catalog = read_manifest(data_dir, CATALOG_FILE, extra_prefixes=extra_prefixes)
    interactions = read_manifest(data_dir, INTERACTIONS_FILE, extra_prefixes=extra_prefixes)
    ref_path = Path(data_dir) / REFORMULATIONS_FILE
    if ref_path.exists():
        reformulations = read_manifest(data_dir, REFORMULATIONS_FILE, extra_prefixes=extra_prefixes)
    else:
        reformulations = pd.DataFrame({c.name: pd.Series(dtype=object) for c in REFORMULATION_COLUMNS})
    known = set(catalog["product_id"])
    for name, df in ((INTERACTIONS_FILE, interactions), (REFORMULATIONS_FILE, reformulations)):
        bad = ~df["product_id"].isin(known)
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise DataError(Path(data_dir) / name, "product_id not in the catalog", row, repr(df["product_id"].iloc[row]))
    for rule, bad in reformulation_leaks(reformulations, interactions).items():
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            column = "product_id" if "target" in rule else "query_image_uri"
            raise DataError(Path(data_dir) / REFORMULATIONS_FILE, rule, row, repr(reformulations[column].iloc[row])[:120])
    return catalog, interactions, reformulations


def reformulation_leaks(reformulations: pd.DataFrame, interactions: pd.DataFrame) -> dict[str, pd.Series]:
    """Reformulations (evaluation queries) that leak training data, rule -> (R,) bool mask.

    A target product that is in the train split, or a query photo that a train interaction
    uses (same URI after normalisation), would be scored on what the model learnt; evaluation
    used to drop the first kind silently.
    """
    train = interactions[interactions["split"] == "train"]
    train_products = set(train["product_id"])
    train_photos = {posixpath.normpath(u) for u in train["query_image_uri"] if isinstance(u, str)}
    photo = reformulations["query_image_uri"].map(lambda u: isinstance(u, str) and posixpath.normpath(u) in train_photos)
    return {
        "reformulation target is a train-split product": reformulations["product_id"].isin(train_products).astype(bool),
        "reformulation photo is a train-split photo": photo.astype(bool),
    }


def product_splits(interactions: pd.DataFrame) -> dict[str, str]:
    """Map product_id -> split; a product seen in two splits is leakage and raises DataError."""
    per_product = interactions.groupby("product_id")["split"].nunique()
    leaked = per_product[per_product > 1]
    if len(leaked):
        pid = leaked.index[0]
        row = int((interactions["product_id"] == pid).to_numpy().nonzero()[0][0])
        raise DataError(INTERACTIONS_FILE, "a product appears in more than one split (leakage)", row, repr(pid))
    return dict(interactions.drop_duplicates("product_id").set_index("product_id")["split"])
