import json
from importlib import resources
from pathlib import Path

import pytest
import yaml

from vsearch.config import ConfigError, load_config, preset_names, to_dict

ROOT = Path(__file__).parents[2]
# The run whose figures docs/model-quality.md gives as the shipped recipe's; it named presets
# that now live in experiments/configs/.
FINAL_RUN = ROOT / "experiments" / "quality-runs" / "pt128_soft03_default.json"
# Every product training preset resolved before issue 22 took the experiments out of the package.
BEFORE = Path(__file__).with_name("product_presets_before.json")
# The retired loss levers (experiments/levers.py) and the value that meant "off": a preset may
# lose one of these keys only where it held that value.
RETIRED_PAIR_KEYS = {"soft_form": "mix", "soft_exclude": "", "start_step": 0, "ramp_steps": 0, "logit_scale": None}
# What the measured run's four_tower really trained, now said by its preset: its config said
# the title encoder was frozen, but `--init` did not apply `freeze` to the loaded 3-tower until
# 2026-12-04, so it was fine-tuned, in eval mode (tests/unit/test_frozen_backbones.py).
AS_TRAINED = {"four_tower": {"freeze": False, "eval_mode": True}}
RETIRED_REFERENCE_TEXT = {"type": "", "kwargs": {}, "pretrained": None, "pooling": "auto", "freeze": False, "projection": ""}


def test_presets_load_and_every_model_gets_the_same_image_tower():
    names = set(preset_names())
    assert {"image_only", "three_tower", "four_tower", "tiny", "tiny_image_only", "tiny_four_tower"} <= names
    io, three, four = load_config("image_only"), load_config("three_tower"), load_config("four_tower")
    assert io.model.towers == ["query_image", "product_image"]
    assert three.model.towers == ["query_image", "product_image", "product_text"]
    assert four.model.towers == three.model.towers + ["query_text"]
    # Same backbones: 3-tower vs 4-tower is a config difference, not another architecture.
    assert io.model.image == three.model.image == four.model.image
    assert [p.name for p in three.loss.pairs] == ["image_image", "query_image_title", "product_image_title"]
    assert "fused_query_product_image" in [p.name for p in four.loss.pairs]


@pytest.mark.parametrize("model", ["image_only", "three_tower", "four_tower"])
def test_default_presets_are_the_measured_final_recipe(model):
    """The presets `make demo` trains are exactly the configs (preset + overrides) of the run
    whose figures docs/model-quality.md reports: a changed preset needs a new measured run."""
    run = json.loads(FINAL_RUN.read_text())
    preset = ROOT / "experiments" / "configs" / f"{run['configs'][model]}.yaml"
    measured = to_dict(load_config(preset, [*run["overrides"]["all"], *run["overrides"][model]]))
    measured["model"]["text"].update(AS_TRAINED.get(model, {}))
    preset = to_dict(load_config(model))
    measured.pop("name"), preset.pop("name")
    assert preset == measured


def test_product_presets_resolve_as_before():
    """Every product preset resolves to exactly the config it had before the experiment presets
    (its former bases) and the retired loss levers left the package; a retired key may only be
    missing where it was off, so no trained behaviour changed."""
    before = json.loads(BEFORE.read_text())
    before.pop("_about")
    presets = resources.files("vsearch.configs")
    training_presets = {n for n in preset_names() if "loss" in yaml.safe_load((presets / f"{n}.yaml").read_text())}
    assert training_presets == set(before)  # a new preset gets pinned here too
    for name, want in before.items():
        reference_text = want["loss"].pop("reference_text")
        assert reference_text == RETIRED_REFERENCE_TEXT, name
        for pair in want["loss"]["pairs"]:
            for key, off in RETIRED_PAIR_KEYS.items():
                assert pair.pop(key) == off, (name, pair["name"], key)
        for side in ("image", "text"):
            want["model"][side].setdefault("eval_mode", False)  # a key added since (False: as before)
        want["model"]["text"].update(AS_TRAINED.get(name, {}))
        assert to_dict(load_config(name)) == want, name


def test_retired_levers_are_unknown_keys():
    for override in ("soft_form: negatives", "soft_exclude: design_id", "start_step: 10", "ramp_steps: 5", "logit_scale: 10"):
        with pytest.raises(ConfigError, match=r"unknown key\(s\) \['" + override.split(":")[0]):
            load_config("three_tower", [f"loss.pairs=[{{a: query_image, b: product_image, {override}}}]"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['reference_text'\]"):
        load_config("three_tower", ["loss.reference_text={pretrained: x}"])
    with pytest.raises(ConfigError, match="unknown config preset 'scratch_three_tower'"):
        load_config("scratch_three_tower")


def test_dotted_overrides_are_parsed_as_yaml():
    cfg = load_config("tiny", ["train.lr=0.5", "data.batch_size=4", "model.towers=[query_image, product_image]",
                               "loss.pairs=[{a: query_image, b: product_image}]"])
    assert cfg.train.lr == 0.5 and cfg.data.batch_size == 4
    assert cfg.loss.pairs[0].name == "query_image_product_image"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["train.lrr=1"], "unknown key"),
        (["model.towers=[query_image, product_image]"], "not produced by towers"),
        (["model.towers=[query_image, sound]"], "unknown tower"),
        (["data.batch_size=1"], "batch_size"),
        (["noequals"], "section.key=value"),
        (["loss.pairs=[]"], "at least one pair"),
    ],
)
def test_bad_configs_fail_with_a_clear_message(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", overrides)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ConfigError, match="known: .*three_tower"):
        load_config("five_tower")


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.max_steps=-5", r"train.max_steps=-5: must be >= 0"),
        ("model.embed_dim=0", r"model.embed_dim=0: must be >= 1"),
        ("model.embed_dim=-3", r"model.embed_dim=-3: must be >= 1"),
        ("train.lr=.nan", r"train.lr=nan: must be a finite number > 0"),
        ("train.lr=-1", r"train.lr=-1.0: must be > 0"),
        ("data.num_workers=-1", r"data.num_workers=-1: must be >= 0"),
        ("train.precision=fp8", r"train.precision=fp8: must be one of \['auto', 'fp32', 'bf16'\]"),
        ("train.warmup_steps=-1", r"train.warmup_steps=-1: must be >= 0"),
        ("train.checkpoint_every=-2", r"train.checkpoint_every=-2: must be >= 0"),
        ("train.max_steps=2.5", r"train.max_steps=2.5: must be a finite integer >= 0"),
        ("train.device=gpu0", r"train.device=gpu0: must be auto, cpu, mps, cuda or cuda:N"),
        ("loss.pairs=[{a: query_image, b: product_image, soft_temperature: 0}]", r"soft_temperature=0.0: must be > 0"),
    ],
)
def test_config_values_outside_their_range_are_refused_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])


@pytest.mark.parametrize("text", ["train: {lr: [1, 2}\n", "train:\n  lr: !!python/object/apply:os.system [echo hi]\n"])
def test_broken_yaml_and_python_tags_are_config_errors_in_files_and_overrides(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="override train.lr: not valid YAML"):
        load_config("tiny", ["train.lr=" + text.split("lr: ")[1]])


def test_a_long_value_is_clipped_in_the_message():
    with pytest.raises(ConfigError) as err:
        load_config("tiny", ["model.embed_dim=" + "x" * 50_000])
    assert len(str(err.value)) < 200 and "50000 chars" in str(err.value)


@pytest.mark.parametrize(
    "load,override,message",
    [
        ("drift", "health.max_drop=0.1", r"^drift.health: unknown key\(s\) \['max_drop'\] for DriftHealth$"),
        ("drift", "sample.max_queries=[1, 2]", r"^drift.sample.max_queries: expected int, got \[1, 2\]$"),
        ("drift", "features={a: 1}", r"unknown key\(s\) \['a'\] for DriftFeatures$"),
        ("rollout", "kserve.replicas=3", r"^rollout.kserve: unknown key\(s\) \['replicas'\] for KServeDefaults$"),
        ("rollout", "alias={a: 1}", r"^rollout.alias: expected str, got \{'a': 1\}$"),
        ("rollout", "ramp=5", r"^rollout.ramp: expected list, got 5$"),
    ],
)
def test_stage_configs_are_typed_and_refuse_unknown_keys_and_wrong_types(load, override, message):
    """The drift and rollout configs go through the one loader into dataclasses (they were
    dicts that took anything); each refusal is one line naming the file and the key."""
    from vsearch.monitoring.drift import load_drift_config
    from vsearch.rollout.writer import load_rollout_defaults

    loader = {"drift": lambda o: load_drift_config("drift", o), "rollout": lambda o: load_rollout_defaults(None, o)}[load]
    with pytest.raises(ConfigError, match=message) as err:
        loader([override])
    assert "\n" not in str(err.value)


def test_stage_config_presets_equal_their_dataclass_defaults():
    """configs/drift.yaml and configs/rollout.yaml hold exactly the dataclasses' keys and defaults."""
    from vsearch.monitoring.drift import DriftConfig, load_drift_config
    from vsearch.rollout.writer import RolloutDefaults, load_rollout_defaults

    assert load_drift_config() == DriftConfig()
    assert load_rollout_defaults() == RolloutDefaults()


def test_a_null_value_means_the_default_in_every_typed_config(tmp_path):
    """``key:`` with nothing after it (YAML null) takes the field's default, an Optional field
    None; a null for a field without a default is one line naming the key."""
    from vsearch.config import LossPair, RunConfig
    from vsearch.rollout.writer import load_rollout_defaults

    path = tmp_path / "run.yaml"
    path.write_text("base: tiny\nloss:\n  pairs:\ndata:\n  batch_size:\neval:\n  fusion_text_weight:\n")
    cfg = load_config(path)
    assert cfg.loss.pairs == [LossPair("query_image", "product_image")] == RunConfig().loss.pairs
    assert cfg.data.batch_size == RunConfig().data.batch_size and cfg.eval.fusion_text_weight is None
    assert load_config("tiny", ["train.lr=null"]).train.lr == RunConfig().train.lr
    assert load_rollout_defaults(None, ["kserve.service_account=null"]).kserve.service_account is None  # Optional: None, not the default
    with pytest.raises(ConfigError, match=r"^config.loss.pairs\[0\].b: a value is required, got null$"):
        from vsearch.config import config_from_dict

        config_from_dict({"loss": {"pairs": [{"a": "query_image", "b": None}]}})


def test_an_existing_file_is_read_as_a_file_whatever_its_suffix(tmp_path, monkeypatch):
    (tmp_path / "run.cfg").write_text("base: tiny\ntrain: {lr: 0.5}\n")
    (tmp_path / "tiny_image_only").write_text("base: tiny\nname: mine\n")
    monkeypatch.chdir(tmp_path)
    assert load_config("run.cfg").train.lr == 0.5
    assert load_config(tmp_path / "run.cfg").train.lr == 0.5
    assert load_config("tiny_image_only").name == "mine"  # a file here, named like a preset: the file
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config("missing.yaml")


def test_a_base_preset_merges_sections_and_replaces_plain_mappings(tmp_path):
    """`vsearch.config.deep_merge`, the one merge rule: dataclass sections merge key by key at
    every depth; a dict-typed field (backbone kwargs) is one value, replaced whole."""
    from vsearch.config import RunConfig, deep_merge

    path = tmp_path / "mine.yaml"
    path.write_text("base: tiny\nmodel:\n  image:\n    kwargs: {embedding_size: 16, hidden_sizes: [16, 32], depths: [1, 1]}\n")
    tiny, mine = load_config("tiny"), load_config(path)
    assert mine.model.image.kwargs == {"embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1]}  # no layer_type leaks in
    assert mine.model.image.type == tiny.model.image.type and mine.model.text == tiny.model.text
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}  # untyped: every mapping merges
    merged = deep_merge({"model": {"image": {"kwargs": {"x": 1}, "type": "vit"}}}, {"model": {"image": {"kwargs": {"y": 2}}}}, RunConfig)
    assert merged == {"model": {"image": {"kwargs": {"y": 2}, "type": "vit"}}}
