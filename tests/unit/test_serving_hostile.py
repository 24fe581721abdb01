"""The service's request handling under hostile uploads (issue 20 item 9), over the real ASGI app.

No model or Milvus is needed: both behaviours happen before a request reaches a searcher.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from vsearch.serving import app as service

BOUNDARY = "b0undary"
HEAD = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
        "Content-Type: image/png\r\n\r\n").encode()


def _app(tmp_path, max_upload_bytes=100_000):
    state = service.ServiceState(searchers={}, hydrator=None, data_dir=str(tmp_path),
                                 limits=service.Limits(max_upload_bytes=max_upload_bytes))
    return service.create_app(state)


def test_a_chunked_upload_is_refused_at_the_limit_not_spooled_in_full(tmp_path):
    """No Content-Length (chunked): the body is counted as it streams and refused past the limit."""
    sent = 0

    async def body():
        nonlocal sent
        yield HEAD
        for _ in range(200):  # 20 MB of "image" in 100 kB chunks
            sent += 100_000
            yield b"\0" * 100_000

    async def run():
        transport = httpx.ASGITransport(app=_app(tmp_path))
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            return await client.post("/search", content=body(),
                                     headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"})

    response = asyncio.run(run())
    assert response.status_code == 413 and "too large" in response.json()["error"]
    assert sent <= 400_000, f"read {sent} bytes of a 20 MB upload before refusing it"


def test_decoding_runs_off_the_event_loop(tmp_path, monkeypatch):
    """A slow decode must not stall /healthz: the loop keeps answering while a photo decodes."""

    def slow_decode(raw, **_):
        time.sleep(1.0)  # a big JPEG on a busy CPU
        raise service.QueryError(400, "not an image (test)")

    monkeypatch.setattr(service, "decode_query_image", slow_decode)
    files = {"image": ("a.png", b"\x89PNG not really", "image/png")}

    async def run():
        transport = httpx.ASGITransport(app=_app(tmp_path))
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            started = time.perf_counter()
            search = asyncio.create_task(client.post("/search", files=files))
            await asyncio.sleep(0.2)  # the decode is under way (a blocked loop would only wake after it)
            health = await client.get("/healthz")
            took = time.perf_counter() - started
            return health, took, await search

    health, took, search = asyncio.run(run())
    assert health.status_code == 200 and search.status_code == 400
    assert took < 0.8, f"/healthz answered {took:.2f} s after the search began: it waited behind the 1 s decode"


@pytest.mark.parametrize("body,status", [(b"{}", 422), (b"not json", 400),
                                        (b'{"request_id": "../x", "product_id": "p"}', 422)])
def test_click_without_an_event_log_or_with_bad_json_is_a_clear_4xx(tmp_path, body, status):
    from vsearch.rollout.events import EventLog

    app = _app(tmp_path)
    app.state.vsearch.events = EventLog(tmp_path / "events")

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            return await client.post("/click", content=body, headers={"content-type": "application/json"})

    r = asyncio.run(run())
    assert r.status_code == status and "error" in r.json()
    assert (tmp_path / "events" / "clicks.jsonl").read_text() == ""  # nothing bad is logged


def test_catalog_image_with_a_symlink_loop_is_a_404_not_a_500(tmp_path, tiny_data):
    """Issue 20 item 4: /products/{id}/image on a URI that loops answered HTTP 500."""
    import shutil

    import pandas as pd

    from vsearch.serving.search import CatalogHydrator

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "loop").symlink_to(data / "loop")
    catalog = pd.read_parquet(data / "catalog.parquet")
    catalog.loc[0, "image_uri"] = "loop/x.png"
    catalog.to_parquet(data / "catalog.parquet", index=False)
    state = service.ServiceState(searchers={}, hydrator=CatalogHydrator(data), data_dir=str(data))

    async def run():
        transport = httpx.ASGITransport(app=service.create_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            return await client.get(f"/products/{catalog.loc[0, 'product_id']}/image")

    r = asyncio.run(run())
    assert r.status_code == 404 and "not served" in r.json()["error"]


def test_serve_refuses_an_invalid_plan_with_one_line(tmp_path, capsys):
    """Issue 20 item 11: `serve --rollout` with invalid traffic gave a traceback."""
    from vsearch.cli import main

    plan = tmp_path / "rollout.yaml"
    plan.write_text("experiment_id: x\ntraffic: {treatment_percent: 250, ramp: []}\n")
    assert main(["serve", "--rollout", str(plan), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rollout.yaml" in err[0] and "not a valid rollout" in err[0] and len(err[0]) <= 300


def test_champion_from_is_refused_with_a_rollout(capsys):
    """A release's A/B arms are the plan's to move: following the registry is for one model's alias."""
    from vsearch.serving.app import main

    with pytest.raises(SystemExit) as exit_:
        main(["--rollout", "rollout.yaml", "--champion-from", "registry", "--data", "data"])
    assert exit_.value.code == 2 and "--champion-from follows one model's alias" in capsys.readouterr().err
