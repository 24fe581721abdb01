"""GPU steps (issue 21 item 1): a step given an accelerator gets ``VSEARCH_REQUIRE_CUDA=1`` from
``pipelines.wiring`` (with the GPU image; the compile test holds every pipeline to it). Without
CUDA such a step used to train or embed on the CPU while the GPU sat idle; now it stops at once
with one line, before it reads data or writes an output."""

import pytest
import torch
from kfp.dsl import Dataset, Metrics, Model

from components.embed_shard import embed_shard
from components.train_model import train_model
from vsearch.config import ConfigError
from vsearch.training.device import REQUIRE_CUDA_ENV, require_cuda


@pytest.fixture
def gpu_step_without_cuda(monkeypatch):
    monkeypatch.setenv(REQUIRE_CUDA_ENV, "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only torch, or the GPU not visible


def _artifact(cls, path):
    return cls(name=path.name, uri=str(path), metadata={})


def test_train_model_given_a_gpu_without_cuda_stops_before_training(gpu_step_without_cuda, tmp_path, tiny_data):
    with pytest.raises(ConfigError, match=f"{REQUIRE_CUDA_ENV}=1 .* sees no CUDA device: refusing to run on the CPU") as err:
        train_model.python_func(data=_artifact(Dataset, tiny_data), config="tiny", model=_artifact(Model, tmp_path / "model"),
                                metrics=_artifact(Metrics, tmp_path / "metrics"), overrides=["train.device=auto"])
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())  # nothing trained, nothing staged


def test_embed_shard_given_a_gpu_without_cuda_stops_before_embedding(gpu_step_without_cuda, tmp_path, tiny_data, tiny_models):
    with pytest.raises(ConfigError, match="sees no CUDA device") as err:
        embed_shard.python_func(model=_artifact(Model, tiny_models["three_tower"]), data=_artifact(Dataset, tiny_data),
                                shard=0, num_shards=1, embeddings=_artifact(Dataset, tmp_path / "shard0.parquet"),
                                metrics=_artifact(Metrics, tmp_path / "m"))
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())


def test_without_the_variable_a_step_runs_where_it_is(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for value in (None, "", "0"):
        if value is None:
            monkeypatch.delenv(REQUIRE_CUDA_ENV, raising=False)
        else:
            monkeypatch.setenv(REQUIRE_CUDA_ENV, value)
        require_cuda()  # a laptop, kfp.local, a CPU step: no accelerator was promised
    monkeypatch.setenv(REQUIRE_CUDA_ENV, "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    require_cuda()
