"""Data validation (GX suites from the schema + image probes): a bad-input corpus, each case
caught with its rule named and its row identified; valid data passes; input never modified."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vsearch import schema
from vsearch.validation import images
from vsearch.validation.suites import ValidationConfig, suite_rules
from vsearch.validation.validate import validate_dataset

CFG = ValidationConfig(workers=1)


def folder_digest(root: Path) -> dict[str, str]:
    """sha256 + mtime of every file under root (validation must change neither)."""
    return {
        str(p.relative_to(root)): f"{hashlib.sha256(p.read_bytes()).hexdigest()}:{p.stat().st_mtime_ns}"
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture()
def data(tiny_data, tmp_path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(tiny_data, copy)
    return copy


@pytest.fixture(scope="module")
def valid_result(tiny_data):
    before = folder_digest(tiny_data)
    result = validate_dataset(tiny_data, CFG)
    assert folder_digest(tiny_data) == before
    return result


def _read(data: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(data / name)


def _write(data: Path, name: str, df: pd.DataFrame) -> None:
    df.to_parquet(data / name, index=False)


def _failed(result, manifest: str, rule: str):
    hits = [c for c in result.failures if c.manifest == manifest and c.rule == rule]
    assert hits, f"{manifest}: {rule} not among failures: {[c.line() for c in result.failures]}"
    return hits[0]


def _rows(check) -> set:
    return {ex["row"] for ex in check.examples}


# --- the bad-input corpus: (damage, manifest, rule); damage returns the offending row ---------


def corrupt_png(data):
    cat = _read(data, schema.CATALOG_FILE)
    (data / cat.at[3, "image_uri"]).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    return 3


def truncated_jpeg(data):
    inter = _read(data, schema.INTERACTIONS_FILE)
    row = 5
    buf = io.BytesIO()
    Image.open(data / inter.at[row, "query_image_uri"]).convert("RGB").resize((64, 64)).save(buf, "JPEG", quality=95)
    (data / "images/queries/truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    inter.at[row, "query_image_uri"] = "images/queries/truncated.jpg"
    _write(data, schema.INTERACTIONS_FILE, inter)
    return row


def missing_file(data):
    inter = _read(data, schema.INTERACTIONS_FILE)
    (data / inter.at[7, "query_image_uri"]).unlink()
    return 7


def zero_byte_file(data):
    cat = _read(data, schema.CATALOG_FILE)
    (data / cat.at[4, "image_uri"]).write_bytes(b"")
    return 4


def tiny_image(data):
    cat = _read(data, schema.CATALOG_FILE)
    Image.new("RGB", (8, 8), "red").save(data / cat.at[6, "image_uri"])
    return 6


def uri_escapes(data):
    inter = _read(data, schema.INTERACTIONS_FILE)
    inter.at[2, "query_image_uri"] = "../outside.png"
    _write(data, schema.INTERACTIONS_FILE, inter)
    return 2


def empty_title(data):
    cat = _read(data, schema.CATALOG_FILE)
    cat.at[9, "title"] = "   "
    _write(data, schema.CATALOG_FILE, cat)
    return 9


def replacement_char_title(data):
    cat = _read(data, schema.CATALOG_FILE)
    cat.at[12, "title"] = "caf\ufffd mug"  # upstream decoded bad bytes with errors="replace"
    _write(data, schema.CATALOG_FILE, cat)
    return 12


def duplicate_product_id(data):
    cat = _read(data, schema.CATALOG_FILE)
    cat.at[8, "product_id"] = cat.at[7, "product_id"]
    _write(data, schema.CATALOG_FILE, cat)
    return 8


def unknown_clicked_product(data):
    inter = _read(data, schema.INTERACTIONS_FILE)
    inter.at[10, "product_id"] = "p99999"
    _write(data, schema.INTERACTIONS_FILE, inter)
    return 10


def product_in_two_splits(data):
    inter = _read(data, schema.INTERACTIONS_FILE)
    taken = {0, 2, 5, 7, 10, 14, 15, 16, 17, 18}  # rows other damages use
    rows_of = inter.groupby("product_id").indices
    pid = next(p for p, r in rows_of.items() if len(r) >= 2 and not taken & set(r.tolist()))
    row = int(rows_of[pid][-1])
    inter.at[row, "split"] = "test" if inter.at[row, "split"] != "test" else "train"
    _write(data, schema.INTERACTIONS_FILE, inter)
    return row


def nan_in_numeric_column(data):
    cat = _read(data, schema.CATALOG_FILE)
    cat["price"] = np.linspace(5.0, 50.0, len(cat))
    cat.at[13, "price"] = float("nan")
    _write(data, schema.CATALOG_FILE, cat)
    return 13


def timestamp_as_text(data):
    inter = _read(data, schema.INTERACTIONS_FILE)
    inter["event_timestamp"] = inter["event_timestamp"].astype(str)
    _write(data, schema.INTERACTIONS_FILE, inter)
    return 0


def unknown_split_value(data):
    inter = _read(data, schema.INTERACTIONS_FILE)
    inter.at[14, "split"] = "training"
    _write(data, schema.INTERACTIONS_FILE, inter)
    return 14


def null_query_text(data):
    inter = _read(data, schema.INTERACTIONS_FILE)
    inter["query_text"] = inter["query_text"].astype(object)
    inter.at[15, "query_text"] = None
    _write(data, schema.INTERACTIONS_FILE, inter)
    return 15


def duplicate_query_image(data):
    inter = _read(data, schema.INTERACTIONS_FILE)
    shutil.copyfile(data / inter.at[16, "query_image_uri"], data / inter.at[17, "query_image_uri"])
    return 17


def duplicate_query_id(data):
    inter = _read(data, schema.INTERACTIONS_FILE)
    inter.at[18, "query_id"] = inter.at[0, "query_id"]
    _write(data, schema.INTERACTIONS_FILE, inter)
    return 18


def overlong_title(data):
    cat = _read(data, schema.CATALOG_FILE)
    cat.at[1, "title"] = "mug " * 200
    _write(data, schema.CATALOG_FILE, cat)
    return 1


def reformulation_target_unknown(data):
    ref = _read(data, schema.REFORMULATIONS_FILE)
    ref.at[0, "product_id"] = "nope"
    _write(data, schema.REFORMULATIONS_FILE, ref)
    return 0


CORPUS = [
    (corrupt_png, schema.CATALOG_FILE, "image_decodable"),
    (truncated_jpeg, schema.INTERACTIONS_FILE, "image_decodable"),
    (missing_file, schema.INTERACTIONS_FILE, "uri_resolvable"),
    (zero_byte_file, schema.CATALOG_FILE, "image_nonempty"),
    (tiny_image, schema.CATALOG_FILE, "image_min_size"),
    (uri_escapes, schema.INTERACTIONS_FILE, "uri_allowed"),
    (empty_title, schema.CATALOG_FILE, "non_empty_text"),
    (replacement_char_title, schema.CATALOG_FILE, "text_utf8"),
    (duplicate_product_id, schema.CATALOG_FILE, "unique_key"),
    (unknown_clicked_product, schema.INTERACTIONS_FILE, "referential_integrity"),
    (product_in_two_splits, schema.INTERACTIONS_FILE, "split_leakage"),
    (nan_in_numeric_column, schema.CATALOG_FILE, "numeric_not_nan"),
    (timestamp_as_text, schema.INTERACTIONS_FILE, "column_type"),
    (unknown_split_value, schema.INTERACTIONS_FILE, "allowed_values"),
    (null_query_text, schema.INTERACTIONS_FILE, "not_null"),
    (duplicate_query_image, schema.INTERACTIONS_FILE, "duplicate_query_image"),
    (duplicate_query_id, schema.INTERACTIONS_FILE, "unique_key"),
    (overlong_title, schema.CATALOG_FILE, "title_length"),
    (reformulation_target_unknown, schema.REFORMULATIONS_FILE, "referential_integrity"),
]


@pytest.fixture(scope="module")
def damaged(tiny_data, tmp_path_factory):
    """One copy of the tiny preset with every damage of CORPUS applied (each to its own rows,
    so one validation run checks them all), validated once."""
    data = tmp_path_factory.mktemp("corpus") / "data"
    shutil.copytree(tiny_data, data)
    rows = {damage.__name__: damage(data) for damage, _, _ in CORPUS}
    before = folder_digest(data)
    result = validate_dataset(data, CFG)
    assert folder_digest(data) == before, "validation modified its input"
    return rows, result


@pytest.mark.parametrize("damage,manifest,rule", CORPUS, ids=[d.__name__ for d, _, _ in CORPUS])
def test_each_bad_input_is_caught_with_its_rule_and_row(damaged, damage, manifest, rule):
    rows, result = damaged
    row = rows[damage.__name__]
    assert not result.success
    check = _failed(result, manifest, rule)
    assert row in _rows(check), (row, check.examples)
    line = check.line()
    assert line.startswith(f"{manifest}: {rule}: ") and f"row {row}" in line, line
    # A bad image fails exactly one image rule (the later ones skip it).
    if rule.startswith(("image_", "uri_")):
        image_rules = {c.rule for c in result.failures if c.manifest == manifest and c.rule.startswith(("image_", "uri_")) and row in _rows(c)}
        assert image_rules == {rule}, image_rules


def test_non_utf8_title_bytes_are_caught_by_row(data):
    cat = _read(data, schema.CATALOG_FILE)
    titles = [t.encode("utf-8") for t in cat["title"]]
    titles[11] = b"caf\xe9 mug \xff"  # latin-1 bytes: not UTF-8
    table = pa.Table.from_pandas(cat.drop(columns="title"), preserve_index=False).append_column("title", pa.array(titles, pa.binary()))
    pq.write_table(table, data / schema.CATALOG_FILE)
    result = validate_dataset(data, CFG)
    check = _failed(result, schema.CATALOG_FILE, "text_utf8")
    assert _rows(check) == {11} and "row 11" in check.line()
    assert _failed(result, schema.CATALOG_FILE, "column_type").column == "title"  # bytes are not str either


def test_valid_tiny_data_passes_every_check_and_is_left_untouched(valid_result):
    assert valid_result.success, [c.line() for c in valid_result.failures]
    rules = {(c.manifest, c.rule) for c in valid_result.checks}
    for manifest in (schema.CATALOG_FILE, schema.INTERACTIONS_FILE, schema.REFORMULATIONS_FILE):
        assert {(manifest, r) for r in ("columns_present", "column_type", "not_null", "text_utf8", "uri_resolvable",
                                          "image_decodable", "image_min_size")} <= rules
    assert (schema.INTERACTIONS_FILE, "split_leakage") in rules and (schema.CATALOG_FILE, "category_share") in rules
    stats = valid_result.statistics
    assert stats["images"] == 32 + 71  # every catalog and query image probed once
    assert stats["images_by_status"] == {"ok": 103}
    assert stats["rows"] == {schema.CATALOG_FILE: 32, schema.INTERACTIONS_FILE: 71, schema.REFORMULATIONS_FILE: 8}


def test_wrong_dtype_names_the_column_dtype(data):
    inter = _read(data, schema.INTERACTIONS_FILE)
    inter["query_id"] = np.arange(len(inter))
    _write(data, schema.INTERACTIONS_FILE, inter)
    check = _failed(validate_dataset(data, CFG), schema.INTERACTIONS_FILE, "column_type")
    assert check.column == "query_id" and "int64" in check.line()


def test_missing_or_corrupt_manifest_is_a_failed_check_not_a_crash(data):
    (data / schema.CATALOG_FILE).unlink()
    (data / schema.INTERACTIONS_FILE).write_bytes(b"PAR1 not really")
    result = validate_dataset(data, CFG)
    assert "file is missing" in _failed(result, schema.CATALOG_FILE, "manifest_readable").line()
    assert "ArrowInvalid" in _failed(result, schema.INTERACTIONS_FILE, "manifest_readable").line()
    # The reformulations still get checked, without referential integrity (no catalog).
    assert any(c.manifest == schema.REFORMULATIONS_FILE and c.rule == "image_decodable" and c.success for c in result.checks)


def test_category_mix_rules(data):
    cat = _read(data, schema.CATALOG_FILE)
    cat["category"] = "mug"
    _write(data, schema.CATALOG_FILE, cat)
    result = validate_dataset(data, CFG)
    assert "1 distinct categories" in _failed(result, schema.CATALOG_FILE, "category_count").line()
    assert _failed(result, schema.CATALOG_FILE, "category_share").unexpected_count == len(cat)


def test_every_schema_column_gets_type_and_null_rules():
    """The suites are generated from vsearch.schema: a new contract column gets its rules."""
    for name, columns in schema.MANIFESTS.items():
        names = [c.name for c in columns]
        rules = suite_rules(name, names, CFG, catalog_ids=["p1"])
        for col in columns:
            assert any(r.rule == "column_type" and r.kwargs.get("column") == col.name for r in rules), (name, col.name)
            assert any(r.rule == "not_null" and r.kwargs.get("column") == col.name for r in rules), (name, col.name)
            if col.allowed:
                assert any(r.rule == "allowed_values" and r.kwargs["value_set"] == list(col.allowed) for r in rules)
        for c in schema.NON_EMPTY_TEXT[name]:
            assert any(r.rule == "non_empty_text" and r.column == c for r in rules)
        key = schema.UNIQUE_KEYS.get(name)
        assert key is None or any(r.rule == "unique_key" and r.column == key for r in rules)


def test_probe_pool_matches_in_process(data):
    cat = _read(data, schema.CATALOG_FILE)
    (data / cat.at[0, "image_uri"]).write_bytes(b"")
    assert len(images.probe_images(data, list(cat["image_uri"]) * 3, workers=1)) == len(cat)  # each URI once
    images.POOL_MIN_ITEMS, old = 0, images.POOL_MIN_ITEMS
    try:
        pooled = images.probe_images(data, list(cat["image_uri"]) + ["missing.png"], workers=2)
    finally:
        images.POOL_MIN_ITEMS = old
    serial = images.probe_images(data, list(cat["image_uri"]) + ["missing.png"], workers=1)
    assert pooled == serial
    assert serial[cat.at[0, "image_uri"]].status == images.EMPTY and serial["missing.png"].status == images.MISSING
    assert serial[cat.at[1, "image_uri"]].status == images.OK and serial[cat.at[1, "image_uri"]].width == 32
