"""Outputs never destroy inputs: ``artifacts.check_out`` and the crash windows of ``publish``."""

from __future__ import annotations

import pytest

from vsearch import artifacts
from vsearch.schema import DataError


def _tree(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "catalog.parquet").write_bytes(b"catalog")
    (root / "images" / "a.png").write_bytes(b"png")
    return root


@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_an_out_that_is_contains_or_lies_inside_an_input_is_refused(data, where):
    out = {"same": data, "inside": data / "images", "parent": data.parent}[where]
    before = _tree(data)
    with pytest.raises(DataError, match="an output never replaces an input"):
        artifacts.check_out(out, [None, "s3://bucket/x", data])
    assert _tree(data) == before


def test_a_foreign_non_empty_folder_is_refused_and_ours_are_accepted(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match="did not write"):
        artifacts.check_out(foreign, ours=("metrics.json",))
    with pytest.raises(DataError, match="not a folder"):
        artifacts.check_out(foreign / "thesis.tex")
    (foreign / "metrics.json").write_text("{}")  # written by an earlier version: no marker
    assert artifacts.check_out(foreign, ours=("metrics.json",)) == foreign
    empty = tmp_path / "empty"
    empty.mkdir()
    artifacts.check_out(empty)
    staging = artifacts.fresh_staging(tmp_path / "published")
    (staging / "x.json").write_text("{}")
    artifacts.publish(staging, tmp_path / "published")
    assert (tmp_path / "published" / artifacts.MARKER).is_file()
    artifacts.check_out(tmp_path / "published")  # the marker says: ours


def test_a_kill_between_publishs_renames_keeps_the_old_output_and_leftovers_are_cleaned(tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = artifacts.fresh_staging(out)
    (first / "v").write_text("1")
    artifacts.publish(first, out)

    second = artifacts.fresh_staging(out)
    (second / "v").write_text("2")
    monkeypatch.setattr(artifacts.faults, "fault_point", lambda stage: (_ for _ in ()).throw(SystemExit(stage)))
    with pytest.raises(SystemExit):  # as a kill after `out` was moved aside
        artifacts.publish(second, out)
    assert not out.exists() and second.exists()
    artifacts.check_out(out)  # the next run of the command
    assert (out / "v").read_text() == "1", "the old output is back"
    assert not second.exists() and not list(tmp_path.glob(".out.old-*")), "no leftovers"



def test_staged_publishes_a_whole_folder_or_leaves_the_previous_one(tmp_path):
    out = tmp_path / "out"
    with artifacts.staged(out) as staging:
        (staging / "a.txt").write_text("one")
    assert _tree(out) == {artifacts.MARKER: (out / artifacts.MARKER).read_bytes(), "a.txt": b"one"}
    with pytest.raises(RuntimeError, match="half"):
        with artifacts.staged(out) as staging:
            (staging / "a.txt").write_text("two")
            raise RuntimeError("half written")
    assert (out / "a.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left


def test_staged_file_replaces_a_file_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "x.json"
    with artifacts.staged_file(path) as tmp:
        tmp.write_text("one")
    with pytest.raises(RuntimeError):
        with artifacts.staged_file(path) as tmp:
            tmp.write_text("tw")
            raise RuntimeError("half written")
    assert path.read_text() == "one"
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]
