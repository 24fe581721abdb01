"""Rollout writer: schema round trip, per-arm KServe manifests, refusals, one collection-name rule."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml
from test_registry import bless, make_model_dir  # tests/unit is on sys.path

from vsearch.artifacts import model_version
from vsearch.config import ConfigError
from vsearch.registry import Registry
from vsearch.rollout import kserve
from vsearch.rollout.schema import assign_variant, load_rollout
from vsearch.indexing.store import collection_name
from vsearch.rollout.writer import load_rollout_defaults, write_rollout
from vsearch.schema import DataError


@pytest.fixture
def blessed(tmp_path):
    champ, cand = make_model_dir(tmp_path / "champ", 1), make_model_dir(tmp_path / "cand", 2, towers=4)
    return bless(tmp_path, "cand", cand, champion_dir=champ), champ, cand


def test_rollout_round_trips_and_names_models_aliases_ramp_guardrails(tmp_path, blessed):
    blessing, champ, cand = blessed
    paths = write_rollout(blessing, tmp_path / "rollout")
    cfg = load_rollout(paths["rollout"])
    assert cfg.control.model.version == model_version(champ) and cfg.treatment.model.version == model_version(cand)
    assert cfg.control.milvus_alias == "vsearch_serving" and cfg.treatment.milvus_alias == "vsearch_serving_candidate"
    assert cfg.live_alias == "vsearch_serving"
    # One naming rule (vsearch.indexing.store.collection_name), the one backfill uses.
    assert cfg.treatment.milvus_collection == collection_name("vsearch", model_version(cand))
    assert [s.treatment_percent for s in cfg.traffic.ramp] == [10, 25, 50]
    assert all(s.min_duration_hours > 0 for s in cfg.traffic.ramp) and cfg.traffic.treatment_percent == 10
    assert {g.metric for g in cfg.guardrails} == {"ctr", "add_to_cart_rate", "p99_latency_ms", "error_rate"}
    assert cfg.rollback.restore_collection == collection_name("vsearch", model_version(champ))
    assert "vsearch release rollback" in cfg.rollback.instruction
    # The plan carries its blessing beside it (the gate's own path may exist only in one pod).
    assert cfg.blessing == "blessing.json" and paths["blessing"].read_bytes() == blessing.read_bytes()
    # Round trip: dump -> load -> dump gives the same document; the service's routing works on it.
    raw = yaml.safe_load(paths["rollout"].read_text())
    assert load_rollout(paths["rollout"]).model_dump(mode="json") == raw
    share = sum(assign_variant(cfg, f"user{i}").name == "treatment" for i in range(20_000)) / 20_000
    assert 0.09 < share < 0.11  # 10% of users on the treatment at the first step
    # Overrides: another alias and ramp; a non-increasing ramp is rejected by the schema.
    other = load_rollout_defaults(overrides=["alias=search_v2", "collection_prefix=img",
                                             "ramp=[{treatment_percent: 10, min_duration_hours: 1}]"])
    cfg2 = load_rollout(write_rollout(blessing, tmp_path / "r2", other)["rollout"])
    assert cfg2.treatment.milvus_alias == "search_v2_candidate" and len(cfg2.traffic.ramp) == 1
    assert cfg2.treatment.milvus_collection == collection_name("img", model_version(cand))
    # Hostile plan values are refused by the schema: a path as alias, an infinite step, an empty ramp.
    for override in ("alias=../../etc", "ramp=[{treatment_percent: 10, min_duration_hours: .inf}]", "ramp=[]",
                     "kserve.namespace=Bad_NS!"):
        with pytest.raises(ConfigError):
            write_rollout(blessing, tmp_path / "r4", load_rollout_defaults(overrides=[override]))
    assert not (tmp_path / "r4").exists()
    bad = load_rollout_defaults(overrides=["ramp=[{treatment_percent: 5, min_duration_hours: 1}, {treatment_percent: 1, min_duration_hours: 1}]"])
    with pytest.raises(ConfigError, match="strictly increase"):
        write_rollout(blessing, tmp_path / "r3", bad)
    assert not (tmp_path / "r3").exists()


def test_kserve_manifests_one_per_arm_are_structurally_valid_and_sticky(tmp_path, blessed):
    """KServe's canary splits requests, not users: one InferenceService per arm, no canaryTrafficPercent."""
    blessing, champ, cand = blessed
    paths = write_rollout(blessing, tmp_path / "rollout")
    docs = list(yaml.safe_load_all(paths["kserve"].read_text()))
    plan = load_rollout(paths["rollout"])
    assert [d["metadata"]["name"] for d in docs] == ["vsearch-query-encoder-control", "vsearch-query-encoder-treatment"]
    for doc, arm, model in zip(docs, (plan.control, plan.treatment), (champ, cand)):
        kserve.validate_manifest(doc)
        predictor = doc["spec"]["predictor"]
        assert "canaryTrafficPercent" not in predictor
        container = predictor["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["STORAGE_URI"] == str(model.resolve()) and env["VSEARCH_MODEL_VERSION"] == model_version(model)
        assert container["args"][container["args"].index("--alias") + 1] == arm.milvus_alias  # each arm its own alias
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        # The same sticky assignment as rollout.yaml and the service, carried for any front.
        assert plan.assignment.salt in doc["metadata"]["annotations"]["vsearch.io/assignment"]
        from components.image import IMAGE

        assert container["image"] == IMAGE  # the one project image tag, unless the config names another
    manifest = docs[1]
    # The validator is not a rubber stamp: each of these must be rejected.
    broken = []
    for path, value in [
        (("spec", "predictor", "canaryTrafficPercent"), 150),
        (("spec", "predictor", "canaryTrafficPercent"), "5"),
        (("spec", "predictor", "canaryTrafficPercentage"), 5),  # typo: would be pruned silently
        (("metadata", "labels"), {"a": 1}),  # core ObjectMeta: label values are strings
        (("metadata", "name"), "Vsearch_Encoder"),  # not a DNS-1035 label
        (("spec", "predictor", "containers"), [{"name": "x", "image": "i", "port": 80}]),  # core Container, strict
        (("kind",), "Deployment"),
    ]:
        doc = copy.deepcopy(manifest)
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        broken.append(doc)
    del broken[0]["spec"]["predictor"]["containers"]
    broken[0]["spec"]["predictor"]["canaryTrafficPercent"] = 5  # and now neither model nor containers
    for doc in broken:
        with pytest.raises(jsonschema.ValidationError):
            kserve.validate_manifest(doc)


def test_kubernetes_validate_has_no_kserve_schema_hence_the_composition():
    import kubernetes_validate.utils as kv

    with pytest.raises(kv.SchemaNotFoundError):
        kv.validate({"apiVersion": kserve.API_VERSION, "kind": kserve.KIND, "metadata": {"name": "x"}}, "1.32", strict=True)


def test_unblessed_stale_and_championless_blessings_are_refused(tmp_path, capsys):
    from vsearch.cli import main

    champ, cand = make_model_dir(tmp_path / "champ", 1), make_model_dir(tmp_path / "cand", 2)
    unblessed = bless(tmp_path, "worse", cand, champion_dir=champ, good=False)
    out = tmp_path / "rollout"
    assert main(["rollout", "--blessing", str(unblessed), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "rollout refused: the candidate is not blessed" in err and "blessing.json" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    # No champion in the blessing: nothing to A/B against, unless a control model is named.
    first = bless(tmp_path, "first", cand)
    with pytest.raises(ConfigError, match="no control to A/B against"):
        write_rollout(first, out)
    cfg = load_rollout(write_rollout(first, out, control_model=str(champ))["rollout"])
    # First deployment: the control is the baseline on its own alias, never the (absent) live one.
    assert cfg.control.model.version == model_version(champ) and cfg.control.milvus_alias == "vsearch_serving_baseline"
    assert cfg.rollback.restore_collection is None
    # A registry whose champion is neither the blessing's champion nor the candidate: stale.
    reg = tmp_path / "registry"
    other = make_model_dir(tmp_path / "other", 3)
    Registry(reg).promote(bless(tmp_path, "other", other))
    good = bless(tmp_path, "cand", cand, champion_dir=champ)
    with pytest.raises(DataError, match="stale blessing"):
        write_rollout(good, tmp_path / "r2", registry=str(reg))
    # Given a Milvus, a plan whose aliases do not exist is refused (nothing written).
    with pytest.raises(DataError, match="does not exist"):
        write_rollout(good, tmp_path / "r5", milvus_uri=str(tmp_path / "empty.db"))
    assert not (tmp_path / "r5").exists()
    # The CLI happy path prints both files.
    assert main(["rollout", "--blessing", str(good), "--out", str(tmp_path / "r3"), "kserve.namespace=search"]) == 0
    assert "inferenceservice.yaml" in capsys.readouterr().out
    assert {d["metadata"]["namespace"] for d in yaml.safe_load_all((tmp_path / "r3" / "inferenceservice.yaml").read_text())} == {"search"}


def test_a_running_service_follows_a_ramp_written_to_the_plan_and_users_stay_sticky(tmp_path, blessed):
    """`vsearch release ramp` rewrites the share; the service re-reads the plan without a restart,
    and raising the share only moves control users over (no treated user goes back)."""
    from vsearch.rollout.schema import dump_rollout, with_traffic
    from vsearch.serving.app import ServiceState

    blessing, _, _ = blessed
    plan = write_rollout(blessing, tmp_path / "r")["rollout"]
    cfg = load_rollout(plan)
    state = ServiceState(searchers={}, hydrator=None, data_dir=str(tmp_path), rollout=cfg, rollout_path=str(plan))
    users = [f"user{i}" for i in range(4000)]
    before = {u for u in users if state.route(u) == "treatment"}
    assert 0.08 < len(before) / len(users) < 0.12
    dump_rollout(with_traffic(cfg, 50.0), plan)
    state._checked_at = float("-inf")  # the service looks at the file at most once a second
    after = {u for u in users if state.route(u) == "treatment"}
    assert 0.47 < len(after) / len(users) < 0.53 and before <= after
    # A plan naming other arms is not hot-swapped (a restart is needed), the loaded one stays.
    other = cfg.model_dump(mode="json") | {"experiment_id": "another-release"}
    plan.write_text(yaml.safe_dump(other))
    state._checked_at = float("-inf")
    assert state.route("user1") in ("control", "treatment") and state.rollout.experiment_id == cfg.experiment_id


def test_each_arm_names_its_drift_reference_the_champions_from_the_registry(tmp_path):
    """The monitor's reference_uri once an arm serves: the candidate's and a first deployment's
    baseline's as given (durable URIs), a champion control's as the registry records it."""
    champ, cand = make_model_dir(tmp_path / "champ", 1), make_model_dir(tmp_path / "cand", 2)
    first = load_rollout(write_rollout(bless(tmp_path, "first", cand), tmp_path / "r1", control_model=str(champ),
                                       reference="s3://refs/cand", control_reference=str(tmp_path / "refs" / "champ"))["rollout"])
    assert first.treatment.model.drift_reference == "s3://refs/cand"
    assert first.control.model.drift_reference == str((tmp_path / "refs" / "champ").resolve())
    reg = tmp_path / "registry"
    Registry(reg).promote(bless(tmp_path, "champ", champ), drift_reference="s3://refs/champ")
    later = load_rollout(write_rollout(bless(tmp_path, "cand", cand, champion_dir=champ), tmp_path / "r2", registry=str(reg),
                                       reference="s3://refs/cand", control_reference="s3://ignored")["rollout"])
    assert (later.treatment.model.drift_reference, later.control.model.drift_reference) == ("s3://refs/cand", "s3://refs/champ")
    # Without a registry (or a reference recorded) the plan says nothing rather than guessing.
    bare = load_rollout(write_rollout(bless(tmp_path, "cand2", cand, champion_dir=champ), tmp_path / "r3")["rollout"])
    assert bare.treatment.model.drift_reference is None and bare.control.model.drift_reference is None


class _Arm:
    """A searcher's readiness surface (the real one checks the arm's alias against its model)."""

    def __init__(self, version: str, ready: bool):
        self.version, self._ready = version, ready

    def ready(self) -> tuple[bool, str]:
        return self._ready, "ok" if self._ready else "alias now on a collection another model built"


def test_a_promoted_plan_serves_the_treatment_to_everyone_and_stays_ready(tmp_path, blessed):
    """After `vsearch release promote` the plan gives the treatment 100% and the live alias (the
    control's) is on the treatment's collection: the control model no longer matches it. The
    service must not then send anonymous users to the control (503) nor report itself not ready
    (Kubernetes would take every replica out of the Service)."""
    from fastapi.testclient import TestClient

    from vsearch.rollout.schema import dump_rollout, with_traffic
    from vsearch.serving.app import ServiceState, create_app

    blessing, _, _ = blessed
    plan = write_rollout(blessing, tmp_path / "r")["rollout"]
    cfg = load_rollout(plan)
    arms = {"control": _Arm("control-v", ready=False), "treatment": _Arm("treatment-v", ready=True)}
    state = ServiceState(searchers=arms, hydrator=None, data_dir=str(tmp_path), rollout=cfg, rollout_path=str(plan))
    client = TestClient(create_app(state))
    # During the A/B test both arms serve: a control that does not match its alias holds readiness back.
    assert state.route(None) == "control"
    assert client.get("/readyz").status_code == 503
    dump_rollout(with_traffic(cfg, 100.0), plan)  # what promote writes
    state._checked_at = float("-inf")
    assert state.route(None) == "treatment" and state.route("anyone") == "treatment"
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.json()
    assert state.serving_arms() == ["treatment"]
    assert ready.json()["variants"]["control"] == {"ready": False, "detail": "alias now on a collection another model built",
                                                   "model_version": "control-v", "traffic": False}
    # Rolled back before promotion (0%): only the control serves, and must be ready.
    dump_rollout(with_traffic(cfg, 0.0), plan)
    state._checked_at = float("-inf")
    assert state.serving_arms() == ["control"] and state.route("anyone") == "control"
    assert client.get("/readyz").status_code == 503
