"""Both demos (``vsearch demo`` in process, ``vsearch pipeline demo`` through KFP) take the
generated benchmark's ``--preset`` and ``--seed`` from one declaration
(``vsearch.data.synth.add_benchmark_arguments``), with the defaults they always had."""

from __future__ import annotations

import argparse

import pytest

from vsearch.data.synth import add_benchmark_arguments


def test_benchmark_arguments_defaults_and_types():
    parser = argparse.ArgumentParser()
    add_benchmark_arguments(parser)
    assert vars(parser.parse_args([])) == {"preset": "default", "seed": 0}
    assert vars(parser.parse_args(["--preset", "tiny", "--seed", "7"])) == {"preset": "tiny", "seed": 7}
    with pytest.raises(SystemExit):
        parser.parse_args(["--seed", "x"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--preset", "defualt"])


def _help(main, capsys) -> str:
    """``main --help`` with white space folded (argparse wraps to the terminal's width)."""
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_both_demos_list_the_same_benchmark_options(capsys):
    from pipelines.demo import main as pipeline_demo
    from vsearch.demo import main as demo

    for text in (_help(demo, capsys), _help(pipeline_demo, capsys)):
        # Every generator preset, and only those: a misspelt one is refused by argparse.
        assert "--out OUT [--preset {default,holdout,large,tiny}] [--seed SEED]" in text


def test_the_demo_trains_in_bf16_only_where_the_processor_computes_it_natively(monkeypatch):
    import torch

    from pipelines import demo
    from vsearch.training import device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for avx512_bf16, amx, fast in ((False, False, False), (True, False, True), (False, True, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert device.fast_bf16() is fast
        assert demo._precision("fast") == ("bf16" if fast else None)  # None: the presets' own auto (fp32 on CPU)
    assert (demo._precision("auto"), demo._precision("fp32"), demo._precision("bf16")) == (None, "fp32", "bf16")
