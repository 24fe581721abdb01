"""Bad input through the CLI: one clear line naming the file (and row), exit 2, nothing half-written."""

import shutil

import pandas as pd
import pytest

from vsearch import artifacts, schema
from vsearch.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture()
def data(tiny_data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(tiny_data, copy)
    return copy


def _run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def _first_train_query_image(data):
    inter = pd.read_parquet(data / schema.INTERACTIONS_FILE)
    row = int((inter["split"] == "train").to_numpy().nonzero()[0][0])
    return row, data / inter.loc[row, "query_image_uri"]


@pytest.mark.parametrize(
    "damage,expected",
    [
        ("missing_manifest", r"catalog.parquet: manifest file is missing"),
        ("corrupt_manifest", r"catalog.parquet: not a readable parquet file"),
        ("missing_image", r"interactions.parquet, row {row}: .*: image file is missing"),
        ("corrupt_image", r"interactions.parquet, row {row}: .*: image cannot be decoded"),
        ("empty_image", r"interactions.parquet, row {row}: .*: image file is empty"),
        ("truncated_image", r"interactions.parquet, row {row}: .*: image cannot be decoded"),
    ],
)
def test_train_fails_with_one_clear_line_and_keeps_the_previous_model(data, tmp_path, capsys, damage, expected):
    out = tmp_path / "model"
    out.mkdir()
    (out / "previous.txt").write_text("the model already served")
    artifacts.mark(out)  # a folder vsearch published earlier (it may be replaced, never broken)
    row, image = _first_train_query_image(data)
    if damage == "missing_manifest":
        (data / schema.CATALOG_FILE).unlink()
    elif damage == "corrupt_manifest":
        (data / schema.CATALOG_FILE).write_bytes(b"PAR1 garbage")
    elif damage == "missing_image":
        image.unlink()
    elif damage == "corrupt_image":
        image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    elif damage == "empty_image":
        image.write_bytes(b"")
    elif damage == "truncated_image":
        image.write_bytes(image.read_bytes()[:60])
    code, err = _run(capsys, "train", "--config", "tiny", "--data", str(data), "--out", str(out), "--quiet")
    assert code == 2
    assert len(err) == 1, err
    import re

    assert re.search(expected.format(row=row), err[0]), err[0]
    assert (out / "previous.txt").read_text() == "the model already served"
    assert sorted(p.name for p in out.iterdir()) == sorted([artifacts.MARKER, "previous.txt"])
    assert not list(tmp_path.glob("model.partial*"))


def test_evaluate_on_a_corrupt_catalog_image_names_it_and_writes_nothing(data, tiny_models, tmp_path, capsys):
    catalog = pd.read_parquet(data / schema.CATALOG_FILE)
    inter = pd.read_parquet(data / schema.INTERACTIONS_FILE)
    test_pid = inter.loc[inter["split"] == "test", "product_id"].iloc[0]
    row = int((catalog["product_id"] == test_pid).to_numpy().nonzero()[0][0])
    (data / catalog.loc[row, "image_uri"]).write_bytes(b"not an image")
    out = tmp_path / "eval"
    code, err = _run(capsys, "evaluate", "--model", str(tiny_models["three_tower"]), "--data", str(data), "--out", str(out))
    assert code == 2 and len(err) == 1
    assert "catalog.parquet" in err[0] and catalog.loc[row, "image_uri"] in err[0] and "cannot be decoded" in err[0]
    assert not out.exists() and not list(tmp_path.glob("eval.*"))


def test_evaluate_rejects_a_folder_that_is_not_a_model(data, tmp_path, capsys):
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    code, err = _run(capsys, "evaluate", "--model", str(not_a_model), "--data", str(data), "--out", str(tmp_path / "e"))
    assert code == 2 and "not a vsearch model folder" in err[0]


def test_a_uri_escaping_the_data_folder_is_refused(data, tmp_path, capsys):
    catalog = pd.read_parquet(data / schema.CATALOG_FILE)
    catalog.loc[0, "image_uri"] = "../../etc/passwd"
    catalog.to_parquet(data / schema.CATALOG_FILE)
    code, err = _run(capsys, "train", "--config", "tiny", "--data", str(data), "--out", str(tmp_path / "m"), "--quiet")
    assert code == 2 and "outside the data folder" in err[0]


def test_bad_config_override_is_one_line(data, tmp_path, capsys):
    code, err = _run(capsys, "train", "--config", "tiny", "--data", str(data), "--out", str(tmp_path / "m"), "train.bogus=1")
    assert code == 2 and len(err) == 1 and "unknown key" in err[0]
