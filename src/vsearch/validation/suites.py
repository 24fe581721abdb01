"""Great Expectations suites generated from ``vsearch.schema`` (the one source of truth).

A suite is first a list of ``Rule`` records (plain data: rule id, human description, the GX
expectation class and its kwargs), so the generation is testable without importing GX;
``build_suite`` turns them into a GX ``ExpectationSuite``.

Checks that GX cannot express on the raw columns (image decodes, content hashes, split
leakage, category mix) are computed first as *derived columns* (``<column>__<what>``) on an
in-memory copy of the manifest, then checked by ordinary GX expectations, so every rule lands
in one GX result with counts and offending row indices. Derived values are None where an
earlier rule already failed for that row (GX map expectations skip nulls), so one bad image
is reported by exactly one rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from vsearch import schema

# GX reports tz-aware datetime columns with this type name.
GX_TIMESTAMP_TYPE = "Timestamp"


@dataclass(frozen=True)
class ValidationConfig:
    """Thresholds of the rules that are not in the schema itself.

    Attributes:
        min_image_size: smallest accepted image side, pixels (the tiny preset renders 32 px).
        max_title_chars: longest accepted title, characters.
        min_categories: fewest distinct catalog categories (cross-category metrics need >= 2).
        max_category_share: largest share (0-1) of the catalog one category may take.
        workers: image-probing processes (None: min(2, cpus); 1: in-process).
        max_examples: offending examples kept per rule in the result.
    """

    min_image_size: int = 32
    max_title_chars: int = schema.TITLE_MAX_CHARS
    min_categories: int = 2
    max_category_share: float = 0.5
    workers: int | None = None
    max_examples: int = 20


@dataclass(frozen=True)
class Rule:
    """One expectation of a suite.

    ``rule`` is a stable id (also the name in failure lines); ``column`` is the manifest
    column whose values are shown as offending examples (may differ from the checked,
    derived column); ``kwargs`` go to the GX expectation class named ``expectation``.
    """

    rule: str
    description: str
    expectation: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    column: str | None = None


def manifest_columns(name: str, df_columns: list[str]) -> list[schema.Column]:
    """Required columns of manifest ``name`` plus the optional ones present in the file."""
    present = set(df_columns)
    return list(schema.MANIFESTS[name]) + [c for c in schema.OPTIONAL_COLUMNS.get(name, ()) if c.name in present]


def _utf8_ok(value: Any) -> bool | None:
    """True for text that is valid UTF-8 with no decoding scars; None for non-text (type rule)."""
    if isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return False
    elif isinstance(value, str):
        text = value
    else:
        return None
    try:
        text.encode("utf-8")  # lone surrogates (from errors="surrogateescape") fail here
    except UnicodeEncodeError:
        return False
    return "\ufffd" not in text  # U+FFFD: something upstream replaced undecodable bytes


# Derived per-image columns, one per stage of the input boundary (see derive_columns).
IMAGE_STAGES = ("allowed", "resolvable", "nonempty", "within_limits", "decodable")


def derive_columns(
    name: str,
    df: pd.DataFrame,
    probes: dict,
    *,
    catalog: pd.DataFrame | None,
    min_image_size: int,
    interactions: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """A copy of manifest ``df`` with the derived ``<column>__<what>`` columns its rules check.

    ``probes`` maps URI -> ``images.ImageProbe``; ``catalog`` (when readable) gives the
    category of each product for the category-mix rules; ``interactions`` (when readable)
    the train split the reformulation rules compare against.
    """
    from vsearch.validation import images

    out = df.copy()
    present = set(df.columns)
    uri_columns = schema.URI_COLUMNS.get(name, ())
    for col in manifest_columns(name, list(df.columns)):
        if col.name not in present:
            continue
        if col.kind == "timestamp":
            if pd.api.types.is_datetime64_any_dtype(df[col.name]):  # else column_type fails
                bad = schema.timestamp_out_of_range(df[col.name])
                out[f"{col.name}__in_range"] = [None if pd.isna(v) else not b for v, b in zip(df[col.name], bad)]
                out[f"{col.name}__in_range"] = out[f"{col.name}__in_range"].astype(object)
            continue
        out[f"{col.name}__utf8"] = df[col.name].map(_utf8_ok).astype(object)
        if col.name not in uri_columns:  # a URI's characters are rule uri_allowed's
            out[f"{col.name}__printable"] = df[col.name].map(
                lambda v: schema.UNPRINTABLE.search(v) is None if isinstance(v, str) else None).astype(object)
    # Each image fails exactly one of these, in this order (later ones are None once one fails).
    stages = ((images.ESCAPES,), (images.MISSING, images.UNREADABLE), (images.EMPTY,), (images.TOO_LARGE,), (images.UNDECODABLE,))
    for col in uri_columns:
        if col not in present:
            continue
        found = [probes.get(u) if isinstance(u, str) else None for u in df[col]]
        status = [p.status if p is not None else None for p in found]
        earlier: tuple = (None,)
        for derived, failing in zip(IMAGE_STAGES, stages):
            out[f"{col}__{derived}"] = pd.Series([None if s in earlier else s not in failing for s in status], dtype=object, index=df.index)
            earlier += failing
        out[f"{col}__min_side"] = pd.array([min(p.width, p.height) if p is not None and p.status == images.OK else None for p in found], dtype="Int64")
        if name == schema.INTERACTIONS_FILE:
            out[f"{col}__sha256"] = [p.sha256 if p is not None and p.status == images.OK else None for p in found]
    if (name == schema.REFORMULATIONS_FILE and interactions is not None
            and {"product_id", "query_image_uri"} <= present and {"product_id", "split", "query_image_uri"} <= set(interactions.columns)):
        leaks = schema.reformulation_leaks(df, interactions)
        train_uris = interactions.loc[interactions["split"] == "train", "query_image_uri"]
        train_hashes = {probes[u].sha256 for u in train_uris if isinstance(u, str) and u in probes and probes[u].sha256}
        same_bytes = df["query_image_uri"].map(lambda u: isinstance(u, str) and u in probes and probes[u].sha256 in train_hashes)
        target, photo = leaks.values()
        out["product_id__not_train"] = (~target).astype(object)
        out["query_image_uri__not_train"] = (~(photo | same_bytes.astype(bool))).astype(object)
    if name == schema.INTERACTIONS_FILE and {"product_id", "split"} <= present:
        n_splits = df.groupby("product_id", dropna=False)["split"].transform(lambda s: s.dropna().nunique())
        out["product_id__n_splits"] = n_splits.astype("Int64")
    category_of = None
    if catalog is not None and {"product_id", "category"} <= set(catalog.columns):
        category_of = catalog.drop_duplicates("product_id").set_index("product_id")["category"]
    if name == schema.CATALOG_FILE and "category" in present:
        share = df["category"].map(df["category"].value_counts(normalize=True, dropna=False))
        out["category__share"] = share.astype(float)
    if name == schema.INTERACTIONS_FILE and category_of is not None and {"product_id", "split"} <= present:
        category = df["product_id"].map(category_of)
        train_categories = set(category[df["split"] == "train"].dropna())
        out["category__seen_in_train"] = [None if pd.isna(c) else c in train_categories for c in category]
        out["category__seen_in_train"] = out["category__seen_in_train"].astype(object)
    return out


def suite_rules(name: str, df_columns: list[str], cfg: ValidationConfig, catalog_ids: list[str] | None) -> list[Rule]:
    """The rules of manifest ``name``, generated from the schema and the columns present.

    Long because: one flat table of rules per manifest, read top to bottom.

    Args:
        name: a manifest file name (``schema.MANIFESTS`` key).
        df_columns: columns of the manifest as read (with derived ones): a rule on a missing
            column is not generated (``columns_present`` reports it instead).
        cfg: thresholds.
        catalog_ids: product ids of a readable catalog, for referential integrity (None: skip).
    """
    present = set(df_columns)
    required = [c.name for c in schema.MANIFESTS[name]]
    rules = [Rule("columns_present", f"required columns {required} are present", "ExpectTableColumnsToMatchSet",
                  {"column_set": required, "exact_match": False})]
    if name in schema.REQUIRED_ROWS:
        rules.append(Rule("row_count", "the manifest has at least one row", "ExpectTableRowCountToBeBetween", {"min_value": 1}))
    declared = manifest_columns(name, df_columns)
    for col in declared:
        if col.name not in present:
            continue
        c = col.name
        if not col.nullable:
            rules.append(Rule("not_null", f"'{c}' has no null / NaN", "ExpectColumnValuesToNotBeNull", {"column": c}, c))
        if col.kind == "timestamp":
            rules.append(Rule("column_type", f"'{c}' is a timezone-aware (UTC) timestamp", "ExpectColumnValuesToBeOfType",
                              {"column": c, "type_": GX_TIMESTAMP_TYPE}, c))
            if f"{c}__in_range" in present:
                rules.append(Rule("timestamp_range", f"'{c}' lies between {schema.TIMESTAMP_MIN.date()} and now (+{schema.TIMESTAMP_MAX_AHEAD})",
                                  "ExpectColumnValuesToBeInSet", {"column": f"{c}__in_range", "value_set": [True]}, c))
        else:
            rules.append(Rule("column_type", f"'{c}' holds strings", "ExpectColumnValuesToBeOfType", {"column": c, "type_": "str"}, c))
            rules.append(Rule("text_utf8", f"'{c}' is valid UTF-8 (no undecodable bytes, no U+FFFD)", "ExpectColumnValuesToBeInSet",
                              {"column": f"{c}__utf8", "value_set": [True]}, c))
            if f"{c}__printable" in present:
                rules.append(Rule("text_printable", f"'{c}' has no control or bidi-override characters (NUL, ESC, U+202E ...)",
                                  "ExpectColumnValuesToBeInSet", {"column": f"{c}__printable", "value_set": [True]}, c))
        if col.allowed is not None:
            rules.append(Rule("allowed_values", f"'{c}' is one of {list(col.allowed)}", "ExpectColumnValuesToBeInSet",
                              {"column": c, "value_set": list(col.allowed)}, c))
    for c in schema.NON_EMPTY_TEXT.get(name, ()):
        if c in present:
            rules.append(Rule("non_empty_text", f"'{c}' is not empty or blank", "ExpectColumnValuesToMatchRegex", {"column": c, "regex": r"\S"}, c))
    if "title" in present:
        rules.append(Rule("title_length", f"'title' has 1 to {cfg.max_title_chars} characters", "ExpectColumnValueLengthsToBeBetween",
                          {"column": "title", "min_value": 1, "max_value": cfg.max_title_chars}, "title"))
    key = schema.UNIQUE_KEYS.get(name)
    if key in present:
        rules.append(Rule("unique_key", f"'{key}' is unique", "ExpectColumnValuesToBeUnique", {"column": key}, key))
    if name == schema.PRODUCT_HISTORY_FILE and {"product_id", "event_timestamp"} <= present:
        rules.append(Rule("unique_key", "(product_id, event_timestamp) is unique", "ExpectCompoundColumnsToBeUnique",
                          {"column_list": ["product_id", "event_timestamp"]}, "product_id"))
    for uri in schema.URI_COLUMNS.get(name, ()):
        if uri not in present:
            continue
        rules += [
            Rule("uri_allowed", f"'{uri}' stays inside the data folder or is a URL under ${schema.ALLOWED_URI_PREFIXES_ENV}; no control characters",
                 "ExpectColumnValuesToBeInSet", {"column": f"{uri}__allowed", "value_set": [True]}, uri),
            Rule("uri_resolvable", f"'{uri}' exists and is a regular readable file", "ExpectColumnValuesToBeInSet",
                 {"column": f"{uri}__resolvable", "value_set": [True]}, uri),
            Rule("image_nonempty", f"'{uri}' file is not empty (0 bytes)", "ExpectColumnValuesToBeInSet",
                 {"column": f"{uri}__nonempty", "value_set": [True]}, uri),
            Rule("image_within_limits", f"'{uri}' file has at most {schema.MAX_IMAGE_BYTES} bytes and {schema.MAX_IMAGE_PIXELS} pixels",
                 "ExpectColumnValuesToBeInSet", {"column": f"{uri}__within_limits", "value_set": [True]}, uri),
            Rule("image_decodable", f"'{uri}' decodes completely as an image (not corrupt or truncated)", "ExpectColumnValuesToBeInSet",
                 {"column": f"{uri}__decodable", "value_set": [True]}, uri),
            Rule("image_min_size", f"'{uri}' image is at least {cfg.min_image_size}x{cfg.min_image_size} px", "ExpectColumnValuesToBeBetween",
                 {"column": f"{uri}__min_side", "min_value": cfg.min_image_size}, uri),
        ]
        if name == schema.INTERACTIONS_FILE:
            rules.append(Rule("duplicate_query_image", f"no two rows have byte-identical '{uri}' images", "ExpectColumnValuesToBeUnique",
                              {"column": f"{uri}__sha256"}, uri))
    if catalog_ids is not None and name != schema.CATALOG_FILE and "product_id" in present:
        rules.append(Rule("referential_integrity", f"'product_id' exists in {schema.CATALOG_FILE}", "ExpectColumnValuesToBeInSet",
                          {"column": "product_id", "value_set": sorted(catalog_ids)}, "product_id"))
    if "product_id__not_train" in present:
        rules.append(Rule("reformulation_target_not_train", "the reformulation's target product is not in the train split", "ExpectColumnValuesToBeInSet",
                          {"column": "product_id__not_train", "value_set": [True]}, "product_id"))
    if "query_image_uri__not_train" in present:
        rules.append(Rule("reformulation_photo_not_train", "the reformulation's photo is not a train-split photo (same URI or same bytes)",
                          "ExpectColumnValuesToBeInSet", {"column": "query_image_uri__not_train", "value_set": [True]}, "query_image_uri"))
    if "product_id__n_splits" in present:
        rules.append(Rule("split_leakage", "each product is in exactly one split (no leakage)", "ExpectColumnValuesToBeBetween",
                          {"column": "product_id__n_splits", "max_value": 1}, "product_id"))
    if name == schema.CATALOG_FILE and "category" in present:
        rules.append(Rule("category_count", f"at least {cfg.min_categories} distinct categories", "ExpectColumnUniqueValueCountToBeBetween",
                          {"column": "category", "min_value": cfg.min_categories}, "category"))
        rules.append(Rule("category_share", f"no category holds more than {cfg.max_category_share:.0%} of the catalog", "ExpectColumnValuesToBeBetween",
                          {"column": "category__share", "max_value": cfg.max_category_share}, "category"))
    if "category__seen_in_train" in present:
        rules.append(Rule("category_coverage", "the category of every clicked product also occurs in the train split", "ExpectColumnValuesToBeInSet",
                          {"column": "category__seen_in_train", "value_set": [True]}, "product_id"))
    return rules


def numeric_attribute_rules(name: str, df: pd.DataFrame) -> list[Rule]:
    """Extra numeric columns (attributes beyond the contract) must hold no NaN: a NaN feature
    poisons a join or a model silently."""
    declared = {c.name for c in manifest_columns(name, list(df.columns))}
    return [
        Rule("numeric_not_nan", f"numeric attribute '{c}' has no NaN / null", "ExpectColumnValuesToNotBeNull", {"column": c}, c)
        for c in df.columns
        if c not in declared and "__" not in str(c) and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
    ]


def build_suite(context, name: str, rules: list[Rule]):
    """A GX ``ExpectationSuite`` named after the manifest, one expectation per rule.

    The rule id, description and example column ride in each expectation's ``meta``.
    """
    import great_expectations as gx

    expectations = [
        getattr(gx.expectations, rule.expectation)(
            **rule.kwargs, meta={"rule": rule.rule, "description": rule.description, "example_column": rule.column, "index": i}
        )
        for i, rule in enumerate(rules)
    ]
    # Built whole, then stored once (adding one by one re-serialises the suite each time).
    return context.suites.add(gx.ExpectationSuite(name=f"vsearch.{name.removesuffix('.parquet')}", expectations=expectations))
