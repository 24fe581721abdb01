import copy
import json

import torch

from vsearch.config import load_config
from vsearch.data.dataset import Collator, EngagementDataset
from vsearch.losses import MultiTowerLoss
from vsearch.model_folder import REFERENCE_DIR
from vsearch.models import build_model
from vsearch.models.tokenizer import train_title_tokenizer
from vsearch.training import loop
from vsearch.training.task import TrainingTask


def _batch(cfg, data_dir, n=8):
    catalog, rows = loop._training_rows(str(data_dir))
    rows = rows.drop_duplicates("product_id").head(n)
    dataset = EngagementDataset(str(data_dir), catalog, rows, cfg.model.image_size, cache=False)
    tokenizer = train_title_tokenizer(
        list(catalog["title"]) + list(rows["query_text"]), cfg.model.tokenizer_vocab_size, cfg.model.max_text_length
    )
    collate = Collator(cfg.model.towers, tokenizer, cfg.model.max_text_length, cfg.model.image_mean, cfg.model.image_std)
    return collate([dataset[i] for i in range(len(rows))]), tokenizer


def test_the_task_returns_the_loss_terms_of_the_model_and_loss_it_joins(tiny_data):
    cfg = load_config("tiny")
    batch, tokenizer = _batch(cfg, tiny_data)
    torch.manual_seed(0)
    model = build_model(cfg.model, tokenizer).eval()
    task = TrainingTask(model, cfg.loss)
    assert task.term_names == [f"{p.name}_loss" for p in cfg.loss.pairs]
    out = task(batch)
    with torch.no_grad():
        expected = MultiTowerLoss(cfg.loss.pairs)(**model(batch))
    assert set(out) == set(expected) | {"loss", "logit_scale"}
    for name, value in expected.items():
        assert torch.equal(out[name].detach(), value), name
    assert torch.equal(out["loss"].detach(), sum(expected.values()))
    out["loss"].backward()  # the graph reaches the model's weights
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_the_summary_says_how_many_reformulations_were_mined_or_why_none(tiny_data, tmp_path, caplog):
    mined = loop.train(
        load_config("tiny", ["train.max_steps=2", "data.mine_reformulations=1"]), tiny_data, tmp_path / "mined", progress=False
    )
    assert mined["mined_reformulations"]["rows"] > 0 and "skipped" not in mined["mined_reformulations"]
    assert mined["train_rows"] > mined["mined_reformulations"]["rows"]
    saved = json.loads((tmp_path / "mined" / "train_summary.json").read_text())
    assert saved["mined_reformulations"] == mined["mined_reformulations"]

    cfg = load_config("tiny", ["train.max_steps=2", "data.mine_reformulations=1", "data.reformulation_group=no_such_column"])
    with caplog.at_level("WARNING", logger="vsearch.training.loop"):
        skipped = loop.train(cfg, tiny_data, tmp_path / "skipped", progress=False)
    reason = skipped["mined_reformulations"].get("skipped")
    assert skipped["mined_reformulations"]["rows"] == 0 and reason and "no_such_column" in reason
    assert [r.getMessage() for r in caplog.records].count(f"mined reformulations skipped: {reason}") == 1
    assert skipped["train_rows"] < mined["train_rows"]


def test_train_leaves_the_drift_reference_to_its_own_step(tiny_models):
    # build_drift_reference (a pipeline step of its own) writes it, not train().
    assert not (tiny_models["three_tower"] / REFERENCE_DIR).exists()


def test_under_bf16_the_image_towers_run_channels_last_and_save_as_they_train(tiny_data, tmp_path):
    from vsearch.models.multitower import MultiTowerModel

    cfg = load_config("tiny")
    batch, tokenizer = _batch(cfg, tiny_data)
    torch.manual_seed(0)
    model = build_model(cfg.model, tokenizer).eval()
    fp32 = TrainingTask(copy.deepcopy(model), cfg.loss)(batch)
    task = TrainingTask(model, cfg.loss, use_bf16=True)
    convs = [p for p in model.image_encoder.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    out = task(batch)
    # bf16 rounding only: the same loss to about 1e-2 (the layout changes no value).
    torch.testing.assert_close(out["loss"].detach(), fp32["loss"].detach(), rtol=3e-2, atol=0)
    out["loss"].backward()
    assert all(p.grad is not None for p in convs)
    model.save_pretrained(tmp_path / "model", tokenizer)
    loaded = MultiTowerModel.from_pretrained(tmp_path / "model").state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(loaded[name], value), name
