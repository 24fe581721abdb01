"""The search service for real: Milvus Lite, tiny trained models, FastAPI app over HTTP (TestClient)."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
import yaml
from PIL import Image

from vsearch.artifacts import model_version

pytestmark = pytest.mark.integration


def _png(size=(32, 32), colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def backend(tmp_path_factory, tiny_data, tiny_models):
    """Both tiny models backfilled into one Milvus Lite db: aliases ``a`` (3-tower), ``b`` (image-only)."""
    from vsearch.indexing.backfill import backfill
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import connect

    root = tmp_path_factory.mktemp("serving")
    cfg = load_index_config(overrides=["backfill.num_workers=0"])
    store = connect(str(root / "milvus.db"), cfg)
    backfill(tiny_models["three_tower"], tiny_data, store, "a", cfg)
    backfill(tiny_models["image_only"], tiny_data, store, "b", cfg)
    rollout = {
        "experiment_id": "exp-1",
        "created_at": "2026-01-01T00:00:00Z",
        "blessing": "blessing.json",
        "control": {"name": "control", "model": {"uri": str(tiny_models["three_tower"]), "version": model_version(tiny_models["three_tower"])}, "milvus_alias": "a"},
        "treatment": {"name": "treatment", "model": {"uri": str(tiny_models["image_only"]), "version": model_version(tiny_models["image_only"])}, "milvus_alias": "b"},
        "traffic": {"treatment_percent": 50, "ramp": [{"treatment_percent": 50, "min_duration_hours": 1}]},
        "assignment": {"salt": "exp-1"},
        "guardrails": [{"metric": "error_rate", "direction": "lower_is_better", "max_absolute": 0.01}],
        "rollback": {"instruction": "vsearch index rollback --alias b", "alias": "b"},
    }
    (root / "rollout.yaml").write_text(yaml.safe_dump(rollout))
    yield store, cfg, root
    store.close()


@pytest.fixture(scope="module")
def client(backend, tiny_data, tiny_models):
    from fastapi.testclient import TestClient

    from vsearch.serving.app import Limits, build_state, create_app

    store, cfg, root = backend
    state = build_state(data_dir=str(tiny_data), store=store, index_cfg=cfg, rollout_path=str(root / "rollout.yaml"),
                        limits=Limits(max_upload_bytes=50_000, max_pixels=512 * 512, max_k=20))
    with TestClient(create_app(state)) as c:
        yield c


@pytest.fixture(scope="module")
def query_photo(tiny_data):
    inter = pd.read_parquet(tiny_data / "interactions.parquet")
    row = inter.iloc[0]
    return (tiny_data / row["query_image_uri"]).read_bytes(), row["product_id"]


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert set(ready.json()["variants"]) == {"control", "treatment"}


def test_search_returns_hydrated_results_and_images(client, query_photo, tiny_data):
    photo, _ = query_photo
    resp = client.post("/search", files={"image": ("q.png", photo, "image/png")}, data={"k": "5", "text": "in red"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    catalog = pd.read_parquet(tiny_data / "catalog.parquet").set_index("product_id")
    assert body["variant"] == "control" and body["alias"] == "a" and body["text_used"] is True
    assert len(body["results"]) == 5
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    for r in body["results"]:
        assert r["title"] == catalog.at[r["product_id"], "title"]
        img = client.get(r["image_url"])
        assert img.status_code == 200 and img.headers["content-type"] == "image/png"
        assert img.content == (tiny_data / catalog.at[r["product_id"], "image_uri"]).read_bytes()


def test_catalog_image_is_exact_top1(client, tiny_data):
    """A catalog image as the query finds its own product first (index + encoder wired right)."""
    catalog = pd.read_parquet(tiny_data / "catalog.parquet")
    row = catalog.iloc[7]
    resp = client.post("/search", files={"image": ("p.png", (tiny_data / row["image_uri"]).read_bytes(), "image/png")},
                       data={"k": "3"}, headers={"X-User-Id": ""})
    assert resp.status_code == 200 and resp.json()["results"][0]["product_id"] == row["product_id"]


def test_an_alias_moved_under_a_running_searcher_never_meets_its_query_vectors(backend, tiny_models, query_photo):
    """Between two checks of its alias (every 5 s) a searcher searches the collection the last
    check verified: right after a promotion moves the alias to another model's collection, this
    model's query vectors still search its own collection, and the next check refuses the move.
    Before, for up to 5 s they searched the other model's vectors through the alias."""
    from vsearch.indexing.store import EmbeddingSpaceMismatch
    from vsearch.serving.search import Searcher, decode_query_image

    store, cfg, _ = backend
    own, other = store.alias_target("a"), store.alias_target("b")  # built by the 3-tower / the image-only model
    store.move_alias("moving", own)
    try:
        searcher = Searcher(tiny_models["three_tower"], "moving", store, cfg)
        searcher.prepare()
        image = decode_query_image(query_photo[0])
        before, _ = searcher.query(image, "", 5)
        store.move_alias("moving", other)  # a promotion, while the last check is fresh
        after, _ = searcher.query(image, "", 5)
        assert after == before
        searcher._checked = None  # the next re-check (5 s later)
        with pytest.raises(EmbeddingSpaceMismatch):
            searcher.query(image, "", 5)
    finally:
        store.drop_alias("moving")


def test_ab_routing_follows_the_rollout(client, backend, query_photo):
    from vsearch.rollout.schema import assign_variant, load_rollout

    rollout = load_rollout(backend[2] / "rollout.yaml")
    photo, _ = query_photo
    seen = set()
    for i in range(12):
        user = f"user-{i}"
        expected = assign_variant(rollout, user)
        via_form = client.post("/search", files={"image": ("q.png", photo, "image/png")}, data={"user_id": user}).json()
        via_header = client.post("/search", files={"image": ("q.png", photo, "image/png")}, headers={"X-User-Id": user}).json()
        assert via_form["variant"] == via_header["variant"] == expected.name
        assert via_form["alias"] == expected.milvus_alias and via_form["model_version"] == expected.model.version
        seen.add(expected.name)
    assert seen == {"control", "treatment"}  # both variants really served
    # The image-only treatment has no text tower: the text is reported unused, not an error.
    treated = next(f"user-{i}" for i in range(12) if assign_variant(rollout, f"user-{i}").name == "treatment")
    body = client.post("/search", files={"image": ("q.png", photo, "image/png")}, data={"user_id": treated, "text": "in red"}).json()
    assert body["variant"] == "treatment" and body["text_used"] is False


def _truncated_png() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "PNG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def _big_png() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((200, 200), 80).convert("RGB").save(buf, "PNG")  # ~120 KB of noise > 50 KB limit
    assert len(buf.getvalue()) > 50_000
    return buf.getvalue()


@pytest.mark.parametrize(
    "files,data,status,message",
    [
        ({"image": ("notes.png", b"these are not pixels at all", "image/png")}, {}, 400, "not an image"),
        ({"image": ("cut.png", _truncated_png(), "image/png")}, {}, 400, "corrupt image"),
        ({"image": ("big.png", _big_png(), "image/png")}, {}, 413, "image too large"),
        ({"image": ("huge.png", _png((1024, 1024)), "image/png")}, {}, 413, "1024x1024 pixels"),
        ({"image": ("q.txt", _png(), "text/plain")}, {}, 415, "wrong content type 'text/plain'"),
        ({"image": ("q.png", b"", "image/png")}, {}, 400, "empty upload"),
        ({"image": ("q.png", _png(), "image/png")}, {"k": "0"}, 422, "k out of range: 0"),
        ({"image": ("q.png", _png(), "image/png")}, {"k": "21"}, 422, "k out of range: 21"),
        ({"image": ("q.png", _png(), "image/png")}, {"k": "ten"}, 422, "k must be an integer"),
        ({"image": ("q.png", _png(), "image/png")}, {"text": "red " * 60}, 422, "text too long"),
        ({}, {"text": "in red"}, 422, "missing form field 'image'"),
    ],
    ids=["not_image", "corrupt", "too_large_bytes", "too_many_pixels", "wrong_type", "empty", "k_zero", "k_big", "k_nan",
         "text_long", "no_image"],
)
def test_bad_uploads_get_clear_4xx(client, files, data, status, message):
    # With no image, send another file part so the request is still multipart.
    resp = client.post("/search", files=files or {"other": ("x.txt", b"x", "text/plain")}, data=data)
    assert resp.status_code == status, resp.text
    assert message in resp.json()["error"]


def test_not_multipart_and_oversized_request_rejected_before_parsing(client):
    resp = client.post("/search", json={"image": "x"})
    assert resp.status_code == 415 and "multipart/form-data" in resp.json()["error"]
    resp = client.post("/search", content=b"x" * 200_000, headers={"content-type": "multipart/form-data; boundary=zz"})
    assert resp.status_code == 413 and "request of 200000 bytes" in resp.json()["error"]
    resp = client.post("/search", content=b"garbage", headers={"content-type": "multipart/form-data; boundary=zz"})
    assert 400 <= resp.status_code < 500


def test_product_images_only_from_under_the_data_folder(client):
    app_state = client.app.state.vsearch
    real = app_state.hydrator

    class Evil:
        def lookup(self, ids):
            return {i: {"title": "x", "category": "x", "image_uri": "../../../../etc/passwd"} for i in ids}

    app_state.hydrator = Evil()
    try:
        resp = client.get("/products/evil/image")
        assert resp.status_code == 404 and "outside the data folder" in resp.json()["error"]
    finally:
        app_state.hydrator = real
    assert client.get("/products/no-such-product/image").status_code == 404


def test_search_cli(tmp_path, tiny_data, tiny_models, query_photo, capsys):
    """``vsearch search`` end to end on its own Lite db (a separate process-level server)."""
    from vsearch.cli import main as cli

    uri = str(tmp_path / "m.db")
    assert cli(["index", "backfill", "--model", str(tiny_models["four_tower"]), "--data", str(tiny_data), "--milvus-uri", uri,
                "--alias", "live", "--set", "backfill.num_workers=0"]) == 0
    capsys.readouterr()
    photo = tmp_path / "q.png"
    photo.write_bytes(query_photo[0])
    assert cli(["search", "--image", str(photo), "--text", "in red", "-k", "4", "--model", str(tiny_models["four_tower"]),
                "--alias", "live", "--data", str(tiny_data), "--milvus-uri", uri]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["results"]) == 4 and out["text_used"] is True and all(r["title"] for r in out["results"])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    assert cli(["search", "--image", str(bad), "--model", str(tiny_models["four_tower"]), "--alias", "live",
                "--data", str(tiny_data), "--milvus-uri", uri]) == 2
    assert "not an image" in capsys.readouterr().err


def test_a_service_following_the_champion_swaps_models_with_a_promotion_and_a_rollback(backend, tiny_data, tiny_models,
                                                                                      query_photo, tmp_path):
    """`vsearch serve --champion-from REGISTRY`: a promotion (alias, then registry) and a rollback
    are followed with no 503 and no mixed pair; a state the registry does not back is waited out,
    answered from the last verified pair for at most the grace period, then refused."""
    import sys
    from pathlib import Path

    from fastapi.testclient import TestClient

    from vsearch.artifacts import fetch_model
    from vsearch.registry import Registry
    from vsearch.serving.app import build_state, create_app
    from vsearch.serving.follow import ChampionFollower

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
    from test_registry import bless

    store, cfg, _ = backend
    three, image_only = tiny_models["three_tower"], tiny_models["image_only"]
    v3, v_io = model_version(three), model_version(image_only)
    coll3, coll_io = store.alias_target("a"), store.alias_target("b")
    registry = Registry(tmp_path / "registry")
    registry.promote(bless(tmp_path, "three_tower", three))
    store.move_alias("live", coll3)
    served, _ = fetch_model(three, tmp_path / "mnt" / "champion")  # what the init container does
    state = build_state(data_dir=str(tiny_data), store=store, index_cfg=cfg, model=str(served), alias="live")
    follower = ChampionFollower(state, registry.store, tmp_path / "mnt" / ".champions")
    client = TestClient(create_app(state))

    def search() -> dict:
        r = client.post("/search", files={"image": ("q.png", query_photo[0], "image/png")})
        assert r.status_code == 200, r.text
        return r.json()

    def recheck_due() -> None:
        state.searchers["default"]._checked = (state.searchers["default"]._checked[0], float("-inf"))

    try:
        assert search()["model_version"] == v3 and "serving" in follower.poll()
        # A promotion, as `vsearch release promote` does it: the alias first, then the registry.
        store.move_alias("live", coll_io)
        recheck_due()
        assert search()["model_version"] == v3  # the last verified pair, not the 3-tower's vectors against the other's
        ready = client.get("/readyz")
        assert ready.status_code == 200 and "has moved" in ready.json()["variants"]["default"]["detail"]
        assert follower.poll().startswith("waiting")  # the registry has not moved yet: nothing is loaded
        registry.promote(bless(tmp_path, "second", image_only, champion_dir=three))
        assert follower.poll() == f"followed the champion: {v3} -> {v_io} (registry v2)"
        body = search()
        assert body["model_version"] == v_io and client.get("/readyz").status_code == 200
        assert (tmp_path / "mnt" / ".champions" / v_io / "model.safetensors").is_file() and served.is_dir()
        # A rollback: registry and alias back; followed the same way, the fetched folder removed.
        registry.rollback(reason="test")
        store.move_alias("live", coll3)
        recheck_due()
        assert search()["model_version"] == v_io
        assert follower.poll().startswith("followed the champion") and search()["model_version"] == v3
        assert not (tmp_path / "mnt" / ".champions" / v_io).exists()
        # The alias moved by hand to a collection the registry does not name: waited out, answered
        # from the last verified pair for the grace period, then refused (fail closed).
        store.move_alias("live", coll_io)
        recheck_due()
        assert search()["model_version"] == v3 and follower.poll().startswith("waiting")
        state.searchers["default"].moved_since -= 301  # the grace period (300 s) has passed
        recheck_due()
        r = client.post("/search", files={"image": ("q.png", query_photo[0], "image/png")})
        assert r.status_code == 503 and "another embedding space" in r.json()["error"]
        assert client.get("/readyz").status_code == 503
    finally:
        store.drop_alias("live")
