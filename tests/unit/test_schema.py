import pandas as pd
import pytest

from vsearch import schema
from vsearch.schema import DataError


def test_resolve_uri_never_escapes_the_data_folder(tmp_path):
    (tmp_path / "images").mkdir()
    assert schema.resolve_uri(tmp_path, "images/a.png") == str((tmp_path / "images" / "a.png").resolve())
    for bad in ("../secret.png", "images/../../x.png", "/etc/passwd"):
        with pytest.raises(DataError):
            schema.resolve_uri(tmp_path, bad)
    # An absolute URL only under a configured prefix (issue 20: no fetch unless configuration allows it).
    with pytest.raises(DataError, match="not allowed"):
        schema.resolve_uri(tmp_path, "s3://bucket/key.png")


def test_allowed_url_prefix_passes_through(tmp_path, monkeypatch):
    monkeypatch.setenv("VSEARCH_ALLOWED_URI_PREFIXES", "s3://bucket/")
    assert schema.resolve_uri(tmp_path, "s3://bucket/key.png") == "s3://bucket/key.png"
    with pytest.raises(DataError, match="not allowed"):
        schema.resolve_uri(tmp_path, "s3://other/key.png")


def test_symlink_escape_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "link").symlink_to(outside)
    with pytest.raises(DataError, match="outside the data folder"):
        schema.resolve_uri(data, "link/x.png")


def _write(tmp_path, name, df):
    df.to_parquet(tmp_path / name)


def test_manifest_rules_name_file_row_and_rule(tmp_path):
    good = pd.DataFrame({"product_id": ["a", "b"], "image_uri": ["a.png", "b.png"], "title": ["t", "u"], "category": ["c", "c"]})
    _write(tmp_path, schema.CATALOG_FILE, good)
    assert len(schema.read_manifest(tmp_path, schema.CATALOG_FILE)) == 2

    _write(tmp_path, schema.CATALOG_FILE, good.assign(title=["t", " "]))
    with pytest.raises(DataError, match=r"catalog.parquet, row 1: column 'title' must not be empty"):
        schema.read_manifest(tmp_path, schema.CATALOG_FILE)

    _write(tmp_path, schema.CATALOG_FILE, good.assign(product_id=["a", "a"]))
    with pytest.raises(DataError, match=r"row 1: column 'product_id' must be unique"):
        schema.read_manifest(tmp_path, schema.CATALOG_FILE)

    _write(tmp_path, schema.CATALOG_FILE, good.drop(columns=["category"]))
    with pytest.raises(DataError, match=r"missing required column"):
        schema.read_manifest(tmp_path, schema.CATALOG_FILE)

    _write(tmp_path, schema.CATALOG_FILE, good.assign(title=[1.5, float("nan")]))
    with pytest.raises(DataError, match=r"row 0: column 'title' must be string"):
        schema.read_manifest(tmp_path, schema.CATALOG_FILE)

    (tmp_path / schema.CATALOG_FILE).write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable parquet"):
        schema.read_manifest(tmp_path, schema.CATALOG_FILE)


def test_interaction_rules(tmp_path):
    cat = pd.DataFrame({"product_id": ["a", "b"], "image_uri": ["a.png", "b.png"], "title": ["t", "u"], "category": ["c", "c"]})
    _write(tmp_path, schema.CATALOG_FILE, cat)
    base = pd.DataFrame({
        "query_id": ["q1", "q2"], "query_image_uri": ["q1.png", "q2.png"], "query_text": ["", "x"],
        "product_id": ["a", "b"], "event_timestamp": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True),
        "split": ["train", "test"],
    })
    _write(tmp_path, schema.INTERACTIONS_FILE, base)
    catalog, inter, refs = schema.read_dataset(tmp_path)
    assert len(inter) == 2 and refs.empty

    _write(tmp_path, schema.INTERACTIONS_FILE, base.assign(split=["train", "holdout"]))
    with pytest.raises(DataError, match=r"row 1: column 'split' must be one of"):
        schema.read_dataset(tmp_path)

    _write(tmp_path, schema.INTERACTIONS_FILE, base.assign(product_id=["a", "zz"]))
    with pytest.raises(DataError, match=r"interactions.parquet, row 1: product_id not in the catalog"):
        schema.read_dataset(tmp_path)

    _write(tmp_path, schema.INTERACTIONS_FILE, base.assign(event_timestamp=["2026", "2027"]))
    with pytest.raises(DataError, match="must be a timestamp"):
        schema.read_dataset(tmp_path)

    leaked = base.assign(product_id=["a", "a"])
    with pytest.raises(DataError, match="more than one split"):
        schema.product_splits(leaked)
