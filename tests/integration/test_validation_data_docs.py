"""`vsearch data validate` also writes GX's own Data Docs (`<out>/gx_data_docs/`): one page per
suite and per validation result, listed in index.html, with the same verdicts as
validation.json; our offline validation.html links them relatively; `--no-data-docs` skips
them."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest

from vsearch import schema
from vsearch.cli import main

pytestmark = pytest.mark.integration


def _text(page: str) -> str:
    """The visible text of an HTML page, whitespace collapsed."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S | re.I)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def _validate(data, out, *extra) -> int:
    return main(["data", "validate", "--data", str(data), "--out", str(out), "--workers", "1", *extra])


def _docs_by_suite(out, report) -> dict[str, tuple[str, str]]:
    """suite name -> (relative path of its validation page, the page's visible text)."""
    docs = out / "gx_data_docs"
    pages = {}
    for manifest in report["statistics"]["rows"]:
        stem = manifest.removesuffix(".parquet")
        found = sorted((docs / "validations" / "vsearch" / stem / "vsearch-data-validate").glob("*/*.html"))
        assert len(found) == 1, (manifest, found)
        pages[f"vsearch.{stem}"] = (found[0].relative_to(docs).as_posix(), _text(found[0].read_text(encoding="utf-8")))
    return pages


def _gx_failures(report, manifest) -> int:
    return sum(not c["success"] for c in report["checks"] if c["manifest"] == manifest and c["engine"] == "great_expectations")


def test_data_docs_index_lists_every_suite_and_validation_page_linked_from_our_page(tiny_data, tmp_path, capsys):
    out = tmp_path / "report"
    assert _validate(tiny_data, out) == 0
    assert json.loads(capsys.readouterr().out)["success"] is True
    report = json.loads((out / "validation.json").read_text())
    assert report["statistics"]["data_docs_seconds"] is not None

    index = out / "gx_data_docs" / "index.html"
    assert index.is_file()
    index_html = index.read_text(encoding="utf-8")
    pages = _docs_by_suite(out, report)
    assert set(pages) == {"vsearch.catalog", "vsearch.interactions", "vsearch.reformulations"}
    for suite, (rel, text) in pages.items():
        assert suite in index_html and rel in index_html, suite  # listed and linked from the index
        assert (out / "gx_data_docs" / "expectations" / "vsearch" / f"{suite.removeprefix('vsearch.')}.html").is_file()
        assert f"Expectation Suite: {suite}" in text and "Status: Succeeded" in text, suite
        assert "Unsuccessful Expectations 0" in text, suite
    assert "Failed" not in re.findall(r"_validation_success_text': '(\w+)'", index_html)

    page = (out / "validation.html").read_text()
    href = re.search(r"<a href='([^']+)'>GX Data Docs</a>", page).group(1)
    assert href == "gx_data_docs/index.html" and (out / href).is_file()
    assert "CDN" in page and "http://" not in page and "https://" not in page
    assert not list(tmp_path.glob("report.partial*"))


def test_failing_data_shows_the_failure_in_the_data_docs(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    inter = pd.read_parquet(data / schema.INTERACTIONS_FILE)
    inter.at[3, "split"] = "holdout"
    inter.to_parquet(data / schema.INTERACTIONS_FILE, index=False)

    out = tmp_path / "report"
    assert _validate(data, out) == 2  # invalid data: exit 2, as every command
    capsys.readouterr()
    report = json.loads((out / "validation.json").read_text())
    pages = _docs_by_suite(out, report)

    _, failing = pages["vsearch.interactions"]
    assert "Status: Failed" in failing and "holdout" in failing
    assert f"Unsuccessful Expectations {_gx_failures(report, schema.INTERACTIONS_FILE)} " in failing
    _, passing = pages["vsearch.catalog"]
    assert "Status: Succeeded" in passing and _gx_failures(report, schema.CATALOG_FILE) == 0
    index_html = (out / "gx_data_docs" / "index.html").read_text(encoding="utf-8")
    assert "Failed" in re.findall(r"_validation_success_text': '(\w+)'", index_html)


def test_no_data_docs_flag_skips_them(tiny_data, tmp_path, capsys):
    out = tmp_path / "report"
    assert _validate(tiny_data, out, "--no-data-docs") == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["validation.html", "validation.json"]
    assert "GX Data Docs" not in (out / "validation.html").read_text()
    assert json.loads((out / "validation.json").read_text())["statistics"]["data_docs_seconds"] is None


def test_a_data_docs_failure_keeps_the_verdict_and_is_noted(tiny_data, tmp_path, capsys, monkeypatch):
    from vsearch.validation import validate

    def broken(context, out_dir):
        (out_dir / "half").mkdir(parents=True)
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(validate, "build_data_docs", broken)
    out = tmp_path / "report"
    assert _validate(tiny_data, out) == 0
    assert capsys.readouterr().err == ""  # stderr stays one line per failed check
    assert not (out / "gx_data_docs").exists()
    assert "GX Data Docs could not be built: RuntimeError: renderer exploded" in (out / "validation.html").read_text()
    assert json.loads((out / "validation.json").read_text())["success"] is True
