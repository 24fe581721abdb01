"""The search page in a real headless browser (Debian chromium via playwright): upload a photo,
add a reformulation, the result grid renders product images and titles."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import pandas as pd
import pytest

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path, tiny_data, tiny_models):
    import uvicorn

    from vsearch.indexing.backfill import backfill
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import connect
    from vsearch.serving.app import build_state, create_app

    cfg = load_index_config(overrides=["backfill.num_workers=0"])
    store = connect(str(tmp_path / "milvus.db"), cfg)
    backfill(tiny_models["four_tower"], tiny_data, store, "live", cfg)
    state = build_state(data_dir=str(tiny_data), store=store, index_cfg=cfg, model=str(tiny_models["four_tower"]), alias="live")
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        store.close()


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed (make sysdeps)")
def test_page_uploads_photo_and_renders_results(server, tiny_data, tmp_path):
    from playwright.sync_api import sync_playwright

    query = pd.read_parquet(tiny_data / "interactions.parquet").iloc[3]
    titles = set(pd.read_parquet(tiny_data / "catalog.parquet")["title"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new"])
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server + "/")
            page.set_input_files("#photo", str(tiny_data / query["query_image_uri"]))
            page.fill("#text", "in red")
            page.fill("#k", "6")
            page.click("#go")
            page.wait_for_selector(".result img", timeout=20_000)
            page.wait_for_function("() => [...document.querySelectorAll('.result img')].every(i => i.complete && i.naturalWidth > 0)", timeout=20_000)
            cards = page.locator(".result")
            assert cards.count() == 6
            shown = [cards.nth(i).locator(".title").inner_text() for i in range(6)]
            assert all(t in titles for t in shown), shown
            widths = page.eval_on_selector_all(".result img", "imgs => imgs.map(i => i.naturalWidth)")
            assert widths == [32] * 6  # the tiny preset's 32 px catalog renders, really loaded
            assert "photo + text" in page.inner_text("#status")
            # A bad upload shows the service's 4xx message on the page, no result grid.
            bad = tmp_path / "not_an_image.png"
            bad.write_bytes(b"plain text, not pixels")
            page.set_input_files("#photo", str(bad))
            page.click("#go")
            page.wait_for_function("() => document.getElementById('error').textContent.length > 0", timeout=10_000)
            assert "not an image" in page.inner_text("#error")
            assert page.locator(".result").count() == 0
            assert errors == []
        finally:
            browser.close()
