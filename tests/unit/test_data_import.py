"""`vsearch data import`: a CSV/JSONL catalog + engagement log + image folder -> the data contract."""

from __future__ import annotations

import json
import os
import shlex

import pandas as pd
import pytest
from helpers.import_source import write_catalog_source, write_csv, write_reformulations

from pipelines.cli import _params as run_local_params
from vsearch import schema
from vsearch.cli import main as vsearch
from vsearch.config import load_config
from vsearch.data.importer import assign_splits, import_dataset
from vsearch.schema import DataError


@pytest.fixture
def source(tmp_path):
    return write_catalog_source(tmp_path)


def test_import_writes_the_contract_with_splits_by_variant_group(tmp_path, source):
    out = tmp_path / "data"
    result = import_dataset(source["images"], source["catalog"], source["engagement"], out, variant_group="parent")
    catalog, interactions, reformulations = schema.read_dataset(out)
    assert result["products"] == len(catalog) == 18 and len(interactions) == 36 and reformulations.empty
    assert set(interactions["split"]) == {"train", "val", "test"}
    # every colour of one design lands in the same split (no design leaks across splits)
    splits = interactions.merge(catalog[["product_id", "parent"]]).groupby("parent")["split"].nunique()
    assert (splits == 1).all()
    assert all((out / uri).is_file() for uri in catalog["image_uri"])  # copied inside the data folder
    assert (catalog["image_uri"].str.startswith("images/")).all()
    again = tmp_path / "again"
    import_dataset(source["images"], source["catalog"], source["engagement"], again, variant_group="parent")
    assert pd.read_parquet(again / schema.INTERACTIONS_FILE)["split"].equals(interactions["split"])  # fixed seed


def test_jsonl_tables_and_reference_mode(tmp_path, source, monkeypatch):
    rows = pd.read_csv(source["catalog"], dtype=str)
    jsonl = tmp_path / "catalog.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows.to_dict("records")))
    out = tmp_path / "data"
    import_dataset(source["images"], jsonl, source["engagement"], out, reference=True)
    assert not (out / "images").exists()
    monkeypatch.setenv(schema.ALLOWED_URI_PREFIXES_ENV, source["images"].resolve().as_uri() + "/")
    catalog, _, _ = schema.read_dataset(out)
    assert catalog["image_uri"].str.startswith("file://").all()
    assert schema.resolve_uri(out, catalog["image_uri"].iloc[0]).startswith(str(source["images"].resolve()))


def test_splits_by_product_are_seeded_and_cover_every_split():
    keys = pd.Series([f"p{i}" for i in range(20)])
    a, b = assign_splits(keys, 0, 0.1, 0.2), assign_splits(keys, 0, 0.1, 0.2)
    assert a.equals(b) and a.value_counts().to_dict() == {"train": 14, "test": 4, "val": 2}
    assert not a.equals(assign_splits(keys, 1, 0.1, 0.2))


def _edit(path, row: int, column: str, value: str) -> None:
    (path.parent / "photos" / "notes.txt").write_text("not an image")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[row, column] = value
    df.to_csv(path, index=False)


@pytest.mark.parametrize("table, row, column, value, rule", [
    ("catalog", 3, "image_path", "catalog/missing.png", "image file not found under --images"),
    ("catalog", 2, "image_path", "../catalog.csv", "image path resolves outside --images"),
    ("catalog", 4, "image_path", "/etc/hostname", "image path must be relative to --images"),
    ("engagement", 1, "query_image_path", "https://example.com/a.jpg", "image path must be relative to --images"),
    ("catalog", 5, "product_id", "p0-red", "duplicate product_id"),
    ("catalog", 1, "image_path", "../clicks.csv", "image path resolves outside --images"),
    ("engagement", 3, "query_image_path", "notes.txt", "not a readable image"),
    ("engagement", 7, "product_id", "nope", "clicked product_id not in the catalog"),
    ("engagement", 2, "timestamp", "last tuesday", "timestamp is not an ISO date/time"),
])
def test_a_bad_row_is_one_line_naming_file_row_and_rule_exit_2_and_nothing_written(
        tmp_path, source, capsys, table, row, column, value, rule):
    _edit(source[table], row, column, value)
    out = tmp_path / "data"
    argv = ["data", "import", "--images", str(source["images"]), "--catalog", str(source["catalog"]),
            "--engagement", str(source["engagement"]), "--out", str(out)]
    assert vsearch(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert source[table].name in err and f"row {row}" in err and rule in err
    assert not out.exists() and not list(tmp_path.glob(".data*")) and not list(tmp_path.glob("data.*"))


def test_the_command_prints_what_to_run_next(tmp_path, source, capsys):
    out = tmp_path / "data"
    argv = ["data", "import", "--images", str(source["images"]), "--catalog", str(source["catalog"]),
            "--engagement", str(source["engagement"]), "--out", str(out), "--variant-group", "parent"]
    assert vsearch(argv) == 0
    printed = capsys.readouterr().out
    assert f"vsearch train --config three_tower --data {out}" in printed
    assert "data.reformulation_group=parent" in printed and f"vsearch data validate --data {out}" in printed
    # the pipeline route trains the 4-tower with the same group (else it mines no rows)
    (line,) = [ln for ln in printed.splitlines() if "run-local training-import" in ln]
    words = shlex.split(line.split("pipeline: ", 1)[1])
    params = run_local_params([words[i + 1] for i, w in enumerate(words) if w == "--param"])
    assert params["data_uri"] == str(out) and params["train_overrides"] == ["data.reformulation_group=parent"]
    assert load_config("four_tower", params["train_overrides"]).data.reformulation_group == "parent"


def _splits_of(out) -> dict:
    interactions = pd.read_parquet(out / schema.INTERACTIONS_FILE)
    return dict(zip(interactions["product_id"], interactions["split"]))


@pytest.mark.parametrize("group", ["", "parent"])
def test_reformulation_targets_and_photos_go_to_test_by_product_or_variant_group(tmp_path, source, group):
    """Photo of p<d>-red (clicked in the log) + "in blue" -> p<d>-blue, for designs 0 and 1: the
    contract refuses a reformulation whose target or photo is in train (schema.reformulation_leaks)."""
    refs = write_reformulations(tmp_path, range(2))
    out = tmp_path / "data"
    result = import_dataset(source["images"], source["catalog"], source["engagement"], out,
                            reformulations=refs, variant_group=group)
    catalog, interactions, reformulations = schema.read_dataset(out)
    assert result["reformulations"] == len(reformulations) == 2
    held = {f"p{d}-{c}" for d in range(2) for c in (["red", "blue"] if not group else ["red", "blue", "green"])}
    splits = _splits_of(out)
    assert {splits[p] for p in held} == {"test"} and "train" in splits.values()
    assert set(reformulations["query_image_uri"]) <= set(interactions["query_image_uri"])  # one copy of each photo
    again = tmp_path / "again"  # same seed, same splits
    import_dataset(source["images"], source["catalog"], source["engagement"], again, reformulations=refs, variant_group=group)
    assert _splits_of(again) == splits


def test_reformulations_that_leave_nothing_to_train_on_are_refused_naming_the_users_row(tmp_path, source, capsys):
    refs = write_reformulations(tmp_path, range(6))  # every design's group is evaluated: no group left for train
    out = tmp_path / "data"
    argv = ["data", "import", "--images", str(source["images"]), "--catalog", str(source["catalog"]),
            "--engagement", str(source["engagement"]), "--reformulations", str(refs), "--variant-group", "parent",
            "--out", str(out)]
    assert vsearch(argv) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert f"{refs}, row 5: reformulation targets and photos" in err and "leave no clicked product for the train split" in err
    assert not out.exists()
    assert vsearch(argv[:-4] + ["--out", str(out)]) == 0  # by product the same rows leave the green ones to train
    assert "train" in _splits_of(out).values()


@pytest.mark.parametrize("table, row, column, value", [
    ("catalog", 2, "title", None),
    ("catalog", 4, "category", "missing"),  # a JSON line without the key
    ("catalog", 1, "product_id", "  "),
    ("engagement", 3, "query_id", None),
    ("engagement", 0, "timestamp", None),
])
def test_a_null_or_blank_required_jsonl_cell_is_refused_not_read_as_nan(tmp_path, source, capsys, table, row, column, value):
    rows = pd.read_csv(source[table], dtype=str, keep_default_na=False).to_dict("records")
    if table == "engagement":
        rows = [{**r, "query_id": f"q{i}"} for i, r in enumerate(rows)]
    if value == "missing":
        del rows[row][column]
    else:
        rows[row][column] = value
    jsonl = tmp_path / f"{table}.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "data"
    argv = ["data", "import", "--images", str(source["images"]), "--out", str(out),
            "--catalog", str(jsonl if table == "catalog" else source["catalog"]),
            "--engagement", str(jsonl if table == "engagement" else source["engagement"])]
    assert vsearch(argv) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert f"{jsonl}, row {row}: column '{column}' must not be null or blank" in err
    assert not out.exists()


def test_a_blank_variant_group_makes_the_product_its_own_group(tmp_path, source):
    """A standalone product (no parent) is not one big group of all standalone products: that
    group would put them all in one split and make unrelated products "siblings" when mining."""
    rows = pd.read_csv(source["catalog"], dtype=str, keep_default_na=False)
    standalone = rows["parent"].isin(["d0", "d1", "d2", "d3"])
    rows.loc[standalone, "parent"] = ""
    write_csv(source["catalog"], rows.to_dict("records"))
    out = tmp_path / "data"
    import_dataset(source["images"], source["catalog"], source["engagement"], out, variant_group="parent")
    catalog = pd.read_parquet(out / schema.CATALOG_FILE)
    assert catalog.loc[standalone, "parent"].equals(catalog.loc[standalone, "product_id"])
    assert set(catalog.loc[~standalone, "parent"]) == {"d4", "d5"}
    splits = _splits_of(out)
    assert len({splits[p] for p in catalog.loc[standalone, "product_id"]}) > 1


def test_referenced_images_are_checked_without_touching_the_environment(tmp_path, source, monkeypatch):
    """The importer allows the referenced folder for its own contract check only (a keyword
    down to schema.uri_problem), not by editing the process-wide $VSEARCH_ALLOWED_URI_PREFIXES."""
    monkeypatch.delenv(schema.ALLOWED_URI_PREFIXES_ENV, raising=False)
    out = tmp_path / "data"
    import_dataset(source["images"], source["catalog"], source["engagement"], out, reference=True)
    assert schema.ALLOWED_URI_PREFIXES_ENV not in os.environ
    with pytest.raises(DataError, match="URL not allowed"):
        schema.read_dataset(out)
    catalog, _, _ = schema.read_dataset(out, extra_prefixes=(source["images"].resolve().as_uri() + "/",))
    assert catalog["image_uri"].str.startswith("file://").all()
    assert schema.ALLOWED_URI_PREFIXES_ENV not in os.environ
