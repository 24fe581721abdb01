"""Validate a data folder: GX suites generated from the schema, plus every image probed.

``validate_dataset`` reads the manifests (never writes to the data folder), probes every
referenced image with a process pool, derives the columns the suites check (see
``suites``), runs one GX suite per manifest in an ephemeral (in-memory) context and returns
a ``ValidationResult``: each check with pass/fail, counts and offending examples (file, row,
value, detail). Optionally it also builds GX's own Data Docs (static HTML rendered from the
stored GX results) into a folder; those load CSS/JS from CDNs, so the offline page the CLI
writes is ``report.render_html``.
"""

from __future__ import annotations

import datetime
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vsearch import artifacts, schema
from vsearch.validation.suites import ValidationConfig, build_suite, derive_columns, numeric_attribute_rules, suite_rules

# Validated in this order; the optional ones only when the file exists.
REQUIRED = (schema.CATALOG_FILE, schema.INTERACTIONS_FILE)
OPTIONAL = (schema.REFORMULATIONS_FILE, schema.PRODUCT_HISTORY_FILE)
EXAMPLES_IN_LINE = 5
# A failure line is at most this long; each value shown in it at most VALUE_CHARS.
LINE_CHARS, VALUE_CHARS = 276, 60  # 300 with the CLI's "vsearch data validate: " prefix
# Our Data Docs site (the ephemeral context already has one called "local_site", in a temp dir).
DATA_DOCS_SITE = "vsearch_data_docs"
RUN_NAME = "vsearch-data-validate"


@dataclass
class CheckResult:
    """One expectation / check and its outcome.

    ``examples``: up to ``max_examples`` offending rows as ``{"row": int | None, "value":
    ..., "detail": str}`` (row: 0-based position in the manifest, None for a column-level
    failure). ``element_count``/``unexpected_count``: rows checked / rows failing (None for
    table-level checks).
    """

    manifest: str
    rule: str
    description: str
    success: bool
    expectation: str
    column: str | None = None
    element_count: int | None = None
    unexpected_count: int | None = None
    observed: Any = None
    examples: list[dict] = field(default_factory=list)
    engine: str = "great_expectations"

    def line(self) -> str:
        """One line for a failed check: file, rule, what it requires, and offending rows."""
        where = f"{self.manifest}: {self.rule}: {self.description}"
        if self.unexpected_count is not None and self.element_count is not None:
            where += f": {self.unexpected_count} of {self.element_count} rows fail"
        rows = [str(ex["row"]) for ex in self.examples[:EXAMPLES_IN_LINE] if ex.get("row") is not None]
        if len(rows) > 1:  # the row numbers first: a clipped line still names every row it shows
            where += ": rows " + ", ".join(rows)
        shown = []
        for ex in self.examples[:EXAMPLES_IN_LINE]:
            text = "" if ex.get("row") is None else f"row {ex['row']}"
            if ex.get("value") is not None:
                value = _clip(repr(ex["value"]), VALUE_CHARS)
                text += f" {value}" if text else value
            if ex.get("detail"):
                detail = _clip(str(ex["detail"]), VALUE_CHARS)
                text += f" ({detail})" if text else detail
            shown.append(text.strip())
        if shown:
            more = (self.unexpected_count or len(self.examples)) - len(shown)
            where += ": " + "; ".join(shown) + (f"; ... {more} more" if more > 0 else "")
        return _clip(where, LINE_CHARS)


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut); one line always."""
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class ValidationResult:
    """All checks of one run. ``success`` is True only when every check passed.

    ``data_docs``: the GX Data Docs ``index.html`` when they were built (not in ``to_dict``:
    the folder may be a staging one that is renamed); ``data_docs_error``: why they could not
    be built (the validation itself stands).
    """

    data_dir: str
    success: bool
    checks: list[CheckResult]
    statistics: dict
    data_docs: Path | None = None
    data_docs_error: str | None = None

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]

    def to_dict(self) -> dict:
        return {
            "data_dir": self.data_dir,
            "success": self.success,
            "statistics": self.statistics,
            "failed": [c.line() for c in self.failures],
            "checks": [asdict(c) for c in self.checks],
        }


def _jsonable(value: Any) -> Any:
    """Plain JSON types for example values (numpy scalars, timestamps, bytes, NaN)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return repr(value)
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, list, dict)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, (str, int, float, bool)):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _read(data_dir: Path, name: str) -> tuple[pd.DataFrame | None, CheckResult | None]:
    """Read one manifest; a missing required or unreadable file becomes a failed check."""
    path = data_dir / name
    if not path.is_file():
        if name in OPTIONAL:
            return None, None
        return None, CheckResult(name, "manifest_readable", "the manifest file exists and is readable parquet", False,
                                 "vsearch.manifest_readable", examples=[{"row": None, "value": None, "detail": "file is missing"}],
                                 engine="vsearch")
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        return None, CheckResult(name, "manifest_readable", "the manifest file exists and is readable parquet", False,
                                 "vsearch.manifest_readable",
                                 examples=[{"row": None, "value": None, "detail": f"{type(err).__name__}: {err}"[:300]}],
                                 engine="vsearch")
    return df.reset_index(drop=True), CheckResult(name, "manifest_readable", "the manifest file exists and is readable parquet",
                                                  True, "vsearch.manifest_readable", element_count=len(df), unexpected_count=0,
                                                  engine="vsearch")


def _detail(rule, df: pd.DataFrame, idx: int, probes: dict) -> str:
    """Why row ``idx`` failed ``rule``, in words (image probe detail, derived value ...)."""
    checked = rule.kwargs.get("column")
    if rule.rule in ("uri_allowed", "uri_resolvable", "image_nonempty", "image_within_limits", "image_decodable"):
        probe = probes.get(df.at[idx, rule.column])
        return f"{probe.status}: {probe.detail}" if probe is not None else ""
    if rule.rule == "image_min_size":
        probe = probes.get(df.at[idx, rule.column])
        return f"{probe.width}x{probe.height} px" if probe is not None else ""
    if rule.rule in ("unique_key", "duplicate_query_image") and checked in df.columns:
        same = df.index[(df[checked] == df.at[idx, checked]) & (df.index != idx)].tolist()[:5]
        return "same as row(s) " + ", ".join(map(str, same)) if same else ""
    if rule.rule == "split_leakage":
        pid = df.at[idx, "product_id"]
        return "splits " + ", ".join(sorted(map(str, df.loc[df["product_id"] == pid, "split"].dropna().unique())))
    if rule.rule == "category_share":
        return f"category {df.at[idx, 'category']!r} is {df.at[idx, 'category__share']:.0%} of the catalog"
    if rule.rule == "text_utf8":
        return "invalid UTF-8"
    if rule.rule == "title_length" and isinstance(df.at[idx, "title"], str):
        return f"{len(df.at[idx, 'title'])} characters"
    return ""


def _to_check(name: str, rule, res, df: pd.DataFrame, probes: dict, max_examples: int) -> CheckResult:
    result = res.result or {}
    check = CheckResult(name, rule.rule, rule.description, bool(res.success), res.expectation_config.type, rule.column,
                        element_count=result.get("element_count"), unexpected_count=result.get("unexpected_count"),
                        observed=_jsonable(result.get("observed_value")) if not isinstance(result.get("observed_value"), (list, dict)) else result.get("observed_value"))
    info = res.exception_info or {}
    if info.get("raised_exception"):
        check.success = False
        check.examples = [{"row": None, "value": None, "detail": f"GX could not evaluate it: {str(info.get('exception_message'))[:300]}"}]
        return check
    if check.success:
        return check
    indices = result.get("unexpected_index_list")
    if indices and rule.rule == "split_leakage":
        # Rows outside their product's majority split first: those are the likely mistakes.
        majority = df.groupby("product_id")["split"].agg(lambda s: s.value_counts().index[0])
        indices = sorted(indices, key=lambda i: (df.at[i, "split"] == majority.get(df.at[i, "product_id"]), i))
    if indices:
        for idx in indices[:max_examples]:
            idx = int(idx)
            value = df.at[idx, rule.column] if rule.column in df.columns else None
            check.examples.append({"row": idx, "value": _jsonable(value), "detail": _detail(rule, df, idx, probes)})
    elif rule.rule == "columns_present":
        missing = sorted(set(rule.kwargs["column_set"]) - set(df.columns))
        check.examples = [{"row": None, "value": None, "detail": f"missing column(s) {missing}"}]
    elif rule.rule == "column_type":
        check.examples = [{"row": None, "value": None, "detail": f"column dtype is {result.get('observed_value') or df[rule.column].dtype}"}]
        check.unexpected_count = None
    elif rule.rule == "row_count":
        check.examples = [{"row": None, "value": None, "detail": f"{result.get('observed_value')} rows"}]
    elif rule.rule == "category_count":
        check.examples = [{"row": None, "value": None, "detail": f"{result.get('observed_value')} distinct categories"}]
    return check


def _run_suites(context, frames: dict[str, pd.DataFrame], probes, cfg: ValidationConfig,
                catalog_ids: list[str] | None) -> list[CheckResult]:
    """Build each manifest's suite and run it through GX on its derived columns, as one GX run."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    source = context.data_sources.add_pandas("vsearch")
    # One run (name + time) for all manifests: Data Docs list them as one run.
    run_id = RunIdentifier(run_name=RUN_NAME, run_time=datetime.datetime.now(datetime.timezone.utc))
    catalog = frames.get(schema.CATALOG_FILE)
    checks: list[CheckResult] = []
    for name, df in frames.items():
        derived = derive_columns(name, df, probes, catalog=catalog, min_image_size=cfg.min_image_size,
                                 interactions=frames.get(schema.INTERACTIONS_FILE))
        rules = suite_rules(name, list(derived.columns), cfg, catalog_ids) + numeric_attribute_rules(name, df)
        suite = build_suite(context, name, rules)
        batch = source.add_dataframe_asset(name.removesuffix(".parquet")).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=f"vsearch.{name}", data=batch, suite=suite))
        run = definition.run(batch_parameters={"dataframe": derived}, result_format={"result_format": "COMPLETE"},
                             run_id=run_id)
        by_index = {r.expectation_config.meta["index"]: r for r in run.results}
        for i, rule in enumerate(rules):
            checks.append(_to_check(name, rule, by_index[i], derived, probes, cfg.max_examples))
    return checks


def _try_data_docs(context, data_docs_dir: str | os.PathLike) -> tuple[Path | None, str | None]:
    """Build the Data Docs: (index.html, None), or (None, the error) when GX fails to render them."""
    existed = Path(data_docs_dir).exists()
    try:
        return build_data_docs(context, data_docs_dir), None
    except Exception as err:  # a GX rendering bug must not turn a data verdict into a crash
        if not existed:  # no half-built site left behind (a folder that was there is kept)
            shutil.rmtree(data_docs_dir, ignore_errors=True)
        return None, f"{type(err).__name__}: {err}"[:300]


def validate_dataset(data_dir: str | os.PathLike, cfg: ValidationConfig | None = None,
                     data_docs_dir: str | os.PathLike | None = None, *, data_uri: str | None = None) -> ValidationResult:
    """Run every check on the data folder ``data_dir`` (read-only).

    Args:
        data_docs_dir: when given, also build GX Data Docs there (a static site: index.html,
            one page per suite and per validation result; a few MB, mostly GX's static
            images). Created if missing; never inside ``data_dir`` unless you put it there.
        data_uri: the durable URI of ``data_dir`` (a KFP artifact's ``uri``): the result and its
            report name it when ``data_dir`` is where one pod mounted it.

    Returns:
        A ValidationResult; ``statistics`` holds rows per manifest, images probed (and per
        status), and wall-clock seconds of the image probing, the GX run, the Data Docs
        (``data_docs_seconds``, None when not built) and the whole.
    """
    cfg = cfg or ValidationConfig()
    data_dir = Path(data_dir)
    t0 = time.perf_counter()
    frames: dict[str, pd.DataFrame] = {}
    checks: list[CheckResult] = []
    for name in REQUIRED + OPTIONAL:
        df, check = _read(data_dir, name)
        if check is not None:
            checks.append(check)
        if df is not None:
            frames[name] = df

    from vsearch.validation import images

    uris = [u for name, df in frames.items() for col in schema.URI_COLUMNS.get(name, ()) if col in df.columns for u in df[col]]
    t_img = time.perf_counter()
    probes = images.probe_images(data_dir, uris, cfg.workers)
    image_seconds = time.perf_counter() - t_img

    catalog = frames.get(schema.CATALOG_FILE)
    catalog_ids = None
    if catalog is not None and "product_id" in catalog.columns:
        catalog_ids = sorted({p for p in catalog["product_id"] if isinstance(p, str)})

    t_gx = time.perf_counter()
    context = _gx_context()
    checks += _run_suites(context, frames, probes, cfg, catalog_ids)
    gx_seconds = time.perf_counter() - t_gx

    docs_index, docs_error, docs_seconds = None, None, None
    if data_docs_dir is not None:
        t_docs = time.perf_counter()
        docs_index, docs_error = _try_data_docs(context, data_docs_dir)
        docs_seconds = round(time.perf_counter() - t_docs, 3)

    statuses: dict[str, int] = {}
    for p in probes.values():
        statuses[p.status] = statuses.get(p.status, 0) + 1
    total = time.perf_counter() - t0
    rows = sum(len(df) for df in frames.values())
    stats = {
        "rows": {name: len(df) for name, df in frames.items()},
        "images": len(probes),
        "images_by_status": statuses,
        "image_seconds": round(image_seconds, 3),
        "gx_seconds": round(gx_seconds, 3),
        "data_docs_seconds": docs_seconds,
        "seconds": round(total, 3),
        "rows_per_s": round(rows / total, 1) if total > 0 else None,
        "images_per_s": round(len(probes) / image_seconds, 1) if image_seconds > 0 else None,
        "checks": len(checks),
        "failed": sum(not c.success for c in checks),
        "config": asdict(cfg),
    }
    return ValidationResult(artifacts.durable_uri(data_uri or data_dir), all(c.success for c in checks), checks, stats,
                            data_docs=docs_index, data_docs_error=docs_error)


def build_data_docs(context, out_dir: str | os.PathLike) -> Path:
    """Build GX Data Docs for every suite and stored validation result of ``context`` into
    ``out_dir`` (a filesystem site of its own; the context's ``local_site`` is left alone).

    Returns the site's ``index.html``. The pages load Bootstrap/jQuery/Vega from CDNs: offline
    they show unstyled (the content is all there).
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if DATA_DOCS_SITE not in context.list_data_docs_sites():
        context.add_data_docs_site(DATA_DOCS_SITE, {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(out_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    context.build_data_docs(site_names=[DATA_DOCS_SITE])
    index = out_dir / "index.html"
    if not index.is_file():
        raise RuntimeError(f"GX built no index.html in {out_dir}")
    return index


def _gx_context():
    """An ephemeral (in-memory) GX context: nothing is written anywhere, no progress bars."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context
