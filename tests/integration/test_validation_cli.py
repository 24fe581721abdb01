"""`vsearch data validate` end to end: exit status, one stderr line per failed check, JSON +
an offline HTML page that a real browser renders with no network request."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from vsearch import schema
from vsearch.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture()
def data(tiny_data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(tiny_data, copy)
    return copy


def test_valid_data_exits_0_and_writes_json_and_html(tiny_data, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["data", "validate", "--data", str(tiny_data), "--out", str(out), "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert json.loads(captured.out)["success"] is True
    report = json.loads((out / "validation.json").read_text())
    assert report["success"] and report["failed"] == [] and len(report["checks"]) == report["statistics"]["checks"]
    page = (out / "validation.html").read_text()
    assert "PASS" in page and "http://" not in page and "https://" not in page
    assert not list(tmp_path.glob("report.partial*"))


def test_bad_data_exits_1_with_one_line_per_failed_check_and_a_page_a_browser_renders(data, tmp_path, capsys):
    catalog = pd.read_parquet(data / schema.CATALOG_FILE)
    catalog.at[2, "product_id"] = catalog.at[1, "product_id"]
    catalog.to_parquet(data / schema.CATALOG_FILE, index=False)
    inter = pd.read_parquet(data / schema.INTERACTIONS_FILE)
    inter.at[3, "split"] = "holdout"
    inter.to_parquet(data / schema.INTERACTIONS_FILE, index=False)
    (data / inter.at[4, "query_image_uri"]).write_bytes(b"GIF89a broken")

    out = tmp_path / "report"
    out.mkdir()
    (out / "old.txt").write_text("previous report")
    from vsearch import artifacts

    artifacts.mark(out)  # a report folder vsearch wrote earlier (an unmarked foreign folder is refused)
    code = main(["data", "validate", "--data", str(data), "--out", str(out), "--workers", "1"])
    assert code == 2  # invalid data
    lines = capsys.readouterr().err.strip().splitlines()
    report = json.loads((out / "validation.json").read_text())
    assert len(lines) == len(report["failed"]) == report["statistics"]["failed"] >= 3
    assert any(line.startswith("vsearch data validate: catalog.parquet: unique_key:") and "row 2" in line for line in lines), lines
    assert any("interactions.parquet: allowed_values:" in line and "row 3 'holdout'" in line for line in lines), lines
    assert any("interactions.parquet: image_decodable:" in line and "row 4" in line for line in lines), lines
    assert not (out / "old.txt").exists(), "the report folder is replaced as a whole"

    playwright = pytest.importorskip("playwright.sync_api")
    if shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed (make sysdeps)")
    requests = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox", "--headless"])
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto((out / "validation.html").as_uri())
            assert page.inner_text("#verdict") == "FAIL"
            failed_rows = page.locator("tr.check[data-status=fail]")
            assert failed_rows.count() == report["statistics"]["failed"]
            text = page.locator("tr.check[data-rule=allowed_values][data-status=fail]").inner_text()
            assert "row 3" in text and "holdout" in text
        finally:
            browser.close()
    assert all(url.startswith("file://") for url in requests), requests
