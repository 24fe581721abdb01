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
        assert "--out OUT [--preset PRESET] [--seed SEED]" in text
        assert "--preset PRESET benchmark preset (tiny, default, holdout)" in text
