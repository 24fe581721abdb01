"""The release lifecycle end to end, for real: tiny models, Milvus Lite, the registry, the service.

evaluate -> gate -> candidate indexed (live alias untouched) -> serve the rollout (both arms
answer, each from a collection its own model built) -> approve -> simulated traffic and clicks
-> analyze -> ramp -> analyze -> promote (live alias and champion move together) -> a second
candidate -> promote -> roll back (both restored) -> a mismatched model/collection refused at
every entry point (search CLI, service, an A/B arm, promote, rollback).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import zlib
from pathlib import Path

import pandas as pd
import pytest

from vsearch.artifacts import model_version
from vsearch.cli import main

pytestmark = pytest.mark.integration

LIVE = "vsearch_serving"
# Small guardrail sample sizes and step durations: the plan's rules, at test scale.
PLAN_OVERRIDES = [
    "ramp=[{treatment_percent: 30, min_duration_hours: 0.000001}, {treatment_percent: 60, min_duration_hours: 0.000001}]",
    "guardrails=[{metric: ctr, direction: higher_is_better, max_relative_regression: 0.5, min_samples: 15},"
    " {metric: error_rate, direction: lower_is_better, max_absolute: 0.2, min_samples: 15},"
    " {metric: p99_latency_ms, direction: lower_is_better, max_absolute: 60000, min_samples: 15}]",
]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_data, tiny_models):
    """Evaluation of the three tiny models, a Milvus Lite db, an empty registry."""
    from vsearch.config import EvalConfig
    from vsearch.evaluation.evaluate import evaluate

    root = tmp_path_factory.mktemp("release")
    evaluate({k: str(v) for k, v in tiny_models.items()}, tiny_data, root / "eval", EvalConfig(n_boot=50))
    return {"root": root, "eval": root / "eval", "milvus": str(root / "milvus.db"), "registry": str(root / "registry")}


def _store(world):
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import connect

    return connect(world["milvus"], load_index_config(overrides=["backfill.num_workers=0"]))


def _index(world, model, data, alias):
    from vsearch.indexing.backfill import backfill
    from vsearch.indexing.config import load_index_config

    cfg = load_index_config(overrides=["backfill.num_workers=0", "verify.sample_size=30"])
    with _store(world) as store:
        return backfill(model, data, store, alias, cfg).collection


def _release(world, name, tiny_data, tiny_models, control_model=None):
    """gate -> index the candidate (and a first deployment's baseline) -> the plan, as the pipeline does."""
    from vsearch.evaluation.gate import load_gate_config, run_gate
    from vsearch.indexing.store import baseline_alias, candidate_alias
    from vsearch.rollout.writer import load_rollout_defaults, write_rollout

    gate_dir = world["root"] / f"gate-{name}"
    blessing = run_gate(world["eval"], gate_dir, load_gate_config("gate_smoke"), candidate_name=name, registry=world["registry"])
    assert blessing.blessed
    _index(world, tiny_models[name], tiny_data, candidate_alias(LIVE))
    if not blessing.has_champion:
        _index(world, control_model, tiny_data, baseline_alias(LIVE))
    out = world["root"] / f"plan-{name}"
    paths = write_rollout(gate_dir, out, load_rollout_defaults(overrides=PLAN_OVERRIDES), registry=world["registry"],
                          control_model=str(control_model) if control_model else None, milvus_uri=world["milvus"])
    from vsearch.release.lifecycle import Release

    Release(paths["rollout"]).ensure_open(actor="pipeline")
    return paths["rollout"]


def _photos(tiny_data, n):
    inter = pd.read_parquet(tiny_data / "interactions.parquet")
    return [(tiny_data / uri).read_bytes() for uri in inter["query_image_uri"].head(n)]


@contextlib.contextmanager
def _serving(world, tiny_data, **kwargs):
    """The real service app over Milvus Lite (TestClient), closed on exit."""
    from fastapi.testclient import TestClient

    from vsearch.indexing.config import load_index_config
    from vsearch.serving.app import build_state, create_app

    with _store(world) as store:
        state = build_state(data_dir=str(tiny_data), store=store, index_cfg=load_index_config(), **kwargs)
        try:
            with TestClient(create_app(state)) as client:
                yield client, store
        finally:
            if state.events is not None:
                state.events.close()


def _traffic(client, photos, users, *, clicks_by_arm):
    """One search per user; a user clicks the top result with the arm's probability (deterministic by user)."""
    arms = {}
    for i, user in enumerate(users):
        r = client.post("/search", data={"user_id": user, "k": "5"}, files={"image": ("q.png", photos[i % len(photos)], "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        arms.setdefault(body["variant"], []).append(body)
        # A stable per-user draw (str hash() changes with PYTHONHASHSEED: each run clicked other users).
        if (zlib.crc32(user.encode()) % 100) / 100 < clicks_by_arm[body["variant"]]:
            c = client.post("/click", json={"request_id": body["request_id"], "product_id": body["results"][0]["product_id"],
                                            "user_id": user})
            assert c.status_code == 204, c.text
    return arms


@pytest.mark.timeout(600)
def test_release_lifecycle_review_ab_promote_second_candidate_rollback(world, tiny_data, tiny_models, capsys):
    from vsearch.indexing.store import candidate_alias
    from vsearch.registry import Registry
    from vsearch.release.lifecycle import Release
    from vsearch.rollout.events import read_events
    from vsearch.rollout.schema import load_rollout

    v = {name: model_version(path) for name, path in tiny_models.items()}
    plan = _release(world, "four_tower", tiny_data, tiny_models, control_model=tiny_models["image_only"])
    # Candidate indexed and in review: the live alias does not exist yet, the registry is empty.
    with _store(world) as store:
        assert store.alias_target(LIVE) is None
        cand_coll = store.alias_target(candidate_alias(LIVE))
        assert store.collection_record(cand_coll)["model_version"] == v["four_tower"]
        assert store.collection_record(cand_coll)["status"] == "verified"
    assert Registry(world["registry"]).current() is None
    rollout = load_rollout(plan)
    assert rollout.control.model.version == v["image_only"] and rollout.treatment.model.version == v["four_tower"]
    assert main(["release", "status", "--rollout", str(plan)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["status"] == "in_review" and status["next"] == ["approve", "rollback"]
    assert all(a["collection"] for name, a in status["aliases"].items() if name != LIVE)  # every alias of the plan exists

    # Illegal before approval: one line, exit 2, nothing moves.
    for argv in (["promote", "--force", "--reason", "x"], ["ramp", "--force", "--reason", "x"]):
        assert main(["release", *argv, "--rollout", str(plan)]) == 2
        assert "approve" in _one_line(capsys)
    assert load_rollout(plan).traffic.treatment_percent == 30

    # The plan is servable as written: 50 users, all answered, by both arms, each from its own model's collection.
    # (Milvus Lite is one process's file: the service stops while a release command runs; a Milvus server needs no pause.)
    photos = _photos(tiny_data, 8)
    with _serving(world, tiny_data, rollout_path=str(plan)) as (client, store):
        assert client.get("/readyz").status_code == 200
        arms = _traffic(client, photos, [f"first-{i}" for i in range(50)], clicks_by_arm={"control": 0.0, "treatment": 0.0})
        assert set(arms) == {"control", "treatment"} and sum(map(len, arms.values())) == 50
        impressions, _ = read_events(plan.parent / "events")
        by_arm = {i["arm"]: i for i in impressions}
        for arm, model in (("control", "image_only"), ("treatment", "four_tower")):
            assert {b["model_version"] for b in arms[arm]} == {v[model]}
            assert store.collection_record(by_arm[arm]["collection"])["model_version"] == v[model]

    # approve -> A/B at step 1; traffic where the treatment's users click, the control's do not.
    assert main(["release", "approve", "--rollout", str(plan), "--actor", "reviewer", "--note", "report read"]) == 0
    capsys.readouterr()
    with _serving(world, tiny_data, rollout_path=str(plan)) as (client, _):
        _traffic(client, photos, [f"u{i}" for i in range(120)], clicks_by_arm={"control": 0.1, "treatment": 0.9})
    analysis = world["root"] / "analysis"
    assert main(["rollout", "analyze", "--rollout", str(plan), "--out", str(analysis), "--n-boot", "300"]) == 0
    result = json.loads((analysis / "analysis.json").read_text())
    assert result["recommendation"] == "ramp", result["reason"]
    assert (analysis / "analysis.html").read_text().lower().startswith("<!doctype html>")  # case-insensitive in HTML
    capsys.readouterr()
    assert main(["release", "promote", "--rollout", str(plan), "--analysis", str(analysis)]) == 2  # not at the last step
    assert "ramp to the last step" in _one_line(capsys)
    assert main(["release", "ramp", "--rollout", str(plan), "--analysis", str(analysis)]) == 0
    assert load_rollout(plan).traffic.treatment_percent == 60
    with _serving(world, tiny_data, rollout_path=str(plan)) as (client, _):
        _traffic(client, photos, [f"w{i}" for i in range(120)], clicks_by_arm={"control": 0.1, "treatment": 0.9})
    assert main(["rollout", "analyze", "--rollout", str(plan), "--out", str(analysis), "--n-boot", "300"]) == 0
    result = json.loads((analysis / "analysis.json").read_text())
    assert result["recommendation"] == "promote", result["reason"]
    assert result["ctr_lift"]["diff_ci"][0] > 0
    capsys.readouterr()
    assert main(["release", "promote", "--rollout", str(plan), "--analysis", str(analysis)]) == 0
    # Promoted: the live alias and the champion moved together, to the candidate.
    with _store(world) as store:
        assert store.alias_target(LIVE) == cand_coll
    assert Registry(world["registry"]).current()["model_version"] == v["four_tower"]
    assert Registry(world["registry"]).current()["model_uri"] == str(Path(tiny_models["four_tower"]).resolve())
    # The promoted plan serves the treatment to everyone, anonymous users too (they got the control).
    with _serving(world, tiny_data, rollout_path=str(plan)) as (client, _):
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["variants"]["control"]["traffic"] is False, ready.json()
        r = client.post("/search", files={"image": ("q.png", photos[0], "image/png")})
        assert r.status_code == 200 and r.json()["variant"] == "treatment", r.text
        assert r.json()["model_version"] == v["four_tower"]

    # A second candidate (the 3-tower model) against the new champion; promoted by an override, then rolled back.
    plan2 = _release(world, "three_tower", tiny_data, tiny_models)
    r2 = load_rollout(plan2)
    assert r2.control.model.version == v["four_tower"] and r2.control.milvus_alias == LIVE
    with _store(world) as store:
        assert store.alias_target(LIVE) == cand_coll  # the second pipeline run did not touch the live alias
        second_coll = store.alias_target(candidate_alias(LIVE))
    assert main(["release", "approve", "--rollout", str(plan2)]) == 0
    assert main(["release", "ramp", "--rollout", str(plan2), "--force"]) == 2  # an override needs a reason
    assert "--reason" in _one_line(capsys)
    assert main(["release", "ramp", "--rollout", str(plan2), "--force", "--reason", "test: skip the wait"]) == 0
    assert main(["release", "promote", "--rollout", str(plan2), "--force", "--reason", "test"]) == 0
    with _store(world) as store:
        assert store.alias_target(LIVE) == second_coll
    assert Registry(world["registry"]).current()["model_version"] == v["three_tower"]
    # This control served the live alias, which is now on the candidate's vectors: the control model
    # no longer matches it, yet the service stays ready on the treatment (it reported 503, and
    # Kubernetes would have taken every replica out of the Service).
    with _serving(world, tiny_data, rollout_path=str(plan2)) as (client, _):
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.json()
        control = ready.json()["variants"]["control"]
        assert control["traffic"] is False and control["ready"] is False and v["three_tower"] in control["detail"]
        r = client.post("/search", files={"image": ("q.png", photos[0], "image/png")})
        assert r.status_code == 200 and r.json()["model_version"] == v["three_tower"], r.text
    assert main(["release", "rollback", "--rollout", str(plan2), "--reason", "guardrail"]) == 0
    with _store(world) as store:
        assert store.alias_target(LIVE) == cand_coll  # restored...
    assert Registry(world["registry"]).current()["model_version"] == v["four_tower"]  # ...together
    capsys.readouterr()
    assert main(["release", "rollback", "--rollout", str(plan2)]) == 2
    assert "rolled back" in _one_line(capsys)
    assert load_rollout(plan2).traffic.treatment_percent == 0
    events = [e["action"] for e in Release(plan2).events()]
    assert events == ["open", "approve", "ramp", "promote", "rollback"]
    assert Release(plan2).events()[2]["forced"] is True and Release(plan2).events()[2]["note"] == "test: skip the wait"

    # --------------------------------------------------------- a mismatched model/collection, at every entry point
    photo = tiny_data / pd.read_parquet(tiny_data / "interactions.parquet")["query_image_uri"].iloc[0]
    # search CLI: the image-only model against the live alias (the 4-tower's vectors).
    assert main(["search", "--image", str(photo), "--model", str(tiny_models["image_only"]), "--alias", LIVE,
                 "--data", str(tiny_data), "--milvus-uri", world["milvus"]]) == 2
    line = _one_line(capsys)
    assert v["four_tower"] in line and v["image_only"] in line and "another embedding space" in line
    # service (single model): not ready, naming both versions; searches answer 503.
    with _serving(world, tiny_data, model=str(tiny_models["image_only"]), alias=LIVE) as (client, _):
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert v["four_tower"] in json.dumps(ready.json()) and v["image_only"] in json.dumps(ready.json())
        r = client.post("/search", files={"image": ("q.png", photos[0], "image/png")})
        assert r.status_code == 503 and "another embedding space" in r.json()["error"]
    # an A/B arm: a plan whose control model is not the one that built its alias' collection.
    bad = world["root"] / "bad-plan" / "rollout.yaml"
    bad.parent.mkdir()
    raw = load_rollout(plan2).model_dump(mode="json")
    raw["control"]["model"] = {"uri": str(tiny_models["image_only"]), "version": v["image_only"]}
    import yaml

    bad.write_text(yaml.safe_dump(raw))
    with _serving(world, tiny_data, rollout_path=str(bad)) as (client, _):
        ready = client.get("/readyz").json()
        assert ready["ready"] is False and ready["variants"]["control"]["ready"] is False
        assert v["four_tower"] in ready["variants"]["control"]["detail"]
    # promote: a third plan whose candidate alias was moved to another model's collection.
    plan3 = _release(world, "three_tower", tiny_data, tiny_models)  # same candidate again: a new review
    with _store(world) as store:
        store.move_alias(candidate_alias(LIVE), cand_coll)  # now the 4-tower's vectors behind the 3-tower's arm
    assert main(["release", "approve", "--rollout", str(plan3)]) == 2
    assert "built by model" in _one_line(capsys)
    with _store(world) as store:
        store.move_alias(candidate_alias(LIVE), second_coll)
    assert main(["release", "approve", "--rollout", str(plan3)]) == 0
    main(["release", "ramp", "--rollout", str(plan3), "--force", "--reason", "t"])
    with _store(world) as store:
        store.move_alias(candidate_alias(LIVE), cand_coll)
    capsys.readouterr()
    assert main(["release", "promote", "--rollout", str(plan3), "--force", "--reason", "t"]) == 2
    assert "built by model" in _one_line(capsys)
    with _store(world) as store:
        assert store.alias_target(LIVE) == cand_coll  # nothing moved
        store.move_alias(candidate_alias(LIVE), second_coll)
    assert Registry(world["registry"]).current()["model_version"] == v["four_tower"]
    # rollback: after promotion, the collection to restore no longer records the champion as its builder.
    assert main(["release", "promote", "--rollout", str(plan3), "--force", "--reason", "t"]) == 0
    with _store(world) as store:
        record = store.collection_record(cand_coll)
        store.set_collection_status(cand_coll, model_version="4t-000000000000")
    assert main(["release", "rollback", "--rollout", str(plan3)]) == 2
    assert "built by model" in _one_line(capsys)
    with _store(world) as store:
        assert store.alias_target(LIVE) == second_coll  # nothing moved
        store.set_collection_status(cand_coll, model_version=record["model_version"])
    assert main(["release", "rollback", "--rollout", str(plan3)]) == 0
    with _store(world) as store:
        assert store.alias_target(LIVE) == cand_coll
    assert Registry(world["registry"]).current()["model_version"] == v["four_tower"]
    shutil.rmtree(world["root"] / "bad-plan")
