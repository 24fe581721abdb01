"""What a backbone's ``freeze`` / ``eval_mode`` say is what trains, however its model was made.

The 4-tower starts from a saved 3-tower (`vsearch train --init`). Loading rebuilt the
backbones without applying ``freeze``, so the 3-tower's frozen MiniLM came back trainable and
the 4-tower fine-tuned it while every config said frozen. Now a loaded model honours its
saved ``freeze``, and a run from ``--init`` takes ``freeze``/``eval_mode`` from its own config:
the shipped four_tower preset says, explicitly, what it was measured with (the title encoder
fine-tuned, in eval mode).
"""

from __future__ import annotations

from safetensors.torch import load_file

from vsearch.config import load_config
from vsearch.model_folder import WEIGHTS_FILE
from vsearch.models.multitower import load_model
from vsearch.training import loop

TEXT = "text_encoder.backbone."


def _changed(before: dict, after: dict, prefix: str) -> list[bool]:
    return [not (before[k] == after[k]).all() for k in before if k.startswith(prefix)]


def test_a_frozen_title_encoder_stays_frozen_when_loaded_and_the_4_tower_decides_its_own(tiny_data, tmp_path):
    three = tmp_path / "three"
    loop.train(load_config("tiny", ["train.max_steps=2", "model.text.freeze=true"]), tiny_data, three, progress=False)
    model, _ = load_model(three)
    assert not any(p.requires_grad for p in model.text_encoder.backbone.parameters())
    assert all(p.requires_grad for p in model.image_encoder.backbone.parameters())
    assert not model.train().text_encoder.backbone.training
    before = load_file(str(three / WEIGHTS_FILE))

    frozen = tmp_path / "four_frozen"
    loop.train(load_config("tiny_four_tower", ["train.max_steps=2", "model.text.freeze=true"]), tiny_data, frozen,
               init=str(three), progress=False)
    after = load_file(str(frozen / WEIGHTS_FILE))
    assert _changed(before, after, TEXT) and not any(_changed(before, after, TEXT))  # left as they were
    assert any(_changed(before, after, "image_encoder."))  # and the rest trained

    tuned = tmp_path / "four_tuned"
    loop.train(load_config("tiny_four_tower", ["train.max_steps=2", "model.text.freeze=false", "model.text.eval_mode=true"]),
               tiny_data, tuned, init=str(three), progress=False)
    assert any(_changed(before, load_file(str(tuned / WEIGHTS_FILE)), TEXT))
    model, _ = load_model(tuned)
    assert (model.cfg.text.freeze, model.cfg.text.eval_mode) == (False, True)  # recorded as it trained
    assert all(p.requires_grad for p in model.text_encoder.backbone.parameters())
    assert not model.train().text_encoder.backbone.training  # eval mode: no dropout


def test_the_shipped_4_tower_fine_tunes_the_title_encoder_in_eval_mode_as_measured():
    three, four = load_config("three_tower").model.text, load_config("four_tower").model.text
    assert (three.freeze, three.eval_mode) == (True, False)
    assert (four.freeze, four.eval_mode) == (False, True)
