"""The champion registry: promotion only through a matching blessing, rollback, history, and
compare-and-swap under concurrent promotions (threads and processes)."""

from __future__ import annotations

import json
import multiprocessing as mp
import threading
import zlib

import numpy as np
import pytest

from vsearch.artifacts import model_version
from vsearch.config import ConfigError
from vsearch.evaluation import gate as G
from vsearch.evaluation import gate_rule as R
from vsearch.registry import Registry, RegistryConflict
from vsearch.schema import DataError

from test_gate import write_eval  # tests/unit is on sys.path (rootdir-relative test modules)


def make_model_dir(path, seed: int, towers: int = 3):
    """A model folder as far as the registry cares: real safetensors weights + vsearch_model.json."""
    from safetensors.numpy import save_file

    path.mkdir(parents=True)
    save_file({"w": np.random.default_rng(seed).standard_normal((8, 8)).astype(np.float32)}, str(path / "model.safetensors"))
    names = ["query_image", "product_image", "product_text", "query_text"][:towers]
    (path / "vsearch_model.json").write_text(json.dumps({"model": {"towers": names}}))
    return path


CHECKS = R.GateConfig(checks=(R.Check("recall@1", "baseline", min_improvement=0.0),
                              R.Check("recall@1", "champion", max_regression=0.05)), n_boot=200)


def bless(tmp_path, name: str, candidate_dir, champion_dir=None, good: bool = True):
    """A real blessing from the real gate over a small evaluation folder."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # not hash(): PYTHONHASHSEED changes it per run
    base = rng.random(200)
    per_model = {"image_only": {"recall@1": (base < 0.1).astype(float)}, name: {"recall@1": (base < (0.4 if good else 0.05)).astype(float)}}
    dirs = {name: str(candidate_dir)}
    if champion_dir is not None:
        per_model["champion"] = {"recall@1": (base < 0.3).astype(float)}
        dirs["champion"] = str(champion_dir)
    ev = write_eval(tmp_path / f"eval-{name}", per_model, model_dirs=dirs)
    out = tmp_path / f"gate-{name}"
    G.run_gate(ev, out, CHECKS, candidate_name=name, champion=str(ev) if champion_dir else None,
               champion_name="champion" if champion_dir else None, write_report=False)
    return out / "blessing.json"


def test_promote_history_rollback(tmp_path):
    reg = Registry(tmp_path / "registry")
    assert reg.current() is None and reg.history() == []
    m1, m2 = make_model_dir(tmp_path / "m1", 1), make_model_dir(tmp_path / "m2", 2)
    r1 = reg.promote(bless(tmp_path, "first", m1))
    assert r1["registry_version"] == 1 and r1["replaces"] is None
    assert reg.current()["model_version"] == model_version(m1)
    r2 = reg.promote(bless(tmp_path, "second", m2, champion_dir=m1))
    assert reg.current()["model_version"] == model_version(m2) and r2["replaces"] == 1
    r3 = reg.rollback(reason="guardrail p99 latency")
    assert r3["action"] == "rollback" and r3["rolled_back"] == model_version(m2)
    assert reg.current()["model_version"] == model_version(m1)
    # m1 replaced nobody: rolling it back restores "no champion yet" (a first release undone).
    r4 = reg.rollback(reason="first release undone")
    assert r4["champion"] is None and r4["rolled_back"] == model_version(m1) and reg.current() is None
    with pytest.raises(ConfigError, match="nothing to roll back"):
        reg.rollback()
    assert [r["action"] for r in reg.history()] == ["promote", "promote", "rollback", "rollback"]
    # Records are plain JSON files in the store, one per version.
    assert sorted(p.name for p in (tmp_path / "registry" / "records").iterdir()) == [f"00000{i}.json" for i in range(1, 5)]


def test_the_champion_entry_names_its_drift_reference_and_a_rollback_restores_the_old_one(tmp_path):
    """The monitor's reference_uri: what the champion entry records (durable URI), champion by champion."""
    reg = Registry(tmp_path / "registry")
    m1, m2 = make_model_dir(tmp_path / "m1", 1), make_model_dir(tmp_path / "m2", 2)
    reg.promote(bless(tmp_path, "first", m1), drift_reference="s3://refs/m1")
    assert reg.current()["drift_reference"] == "s3://refs/m1"
    reg.promote(bless(tmp_path, "second", m2, champion_dir=m1), drift_reference=str(tmp_path / "refs" / "m2"))
    assert reg.current()["drift_reference"] == str((tmp_path / "refs" / "m2").resolve())
    reg.rollback(reason="guardrail")
    assert reg.current()["drift_reference"] == "s3://refs/m1"


def test_promotion_needs_a_blessing_for_exactly_this_model_and_champion(tmp_path):
    reg = Registry(tmp_path / "registry")
    m1, m2, m3 = (make_model_dir(tmp_path / f"m{i}", i) for i in (1, 2, 3))
    with pytest.raises(DataError, match="needs a blessed candidate"):
        reg.promote(bless(tmp_path, "bad", m1, good=False))
    blessing = bless(tmp_path, "first", m1)
    with pytest.raises(DataError, match="names another model"):
        reg.promote(blessing, model_uri=str(m2))
    stale = bless(tmp_path, "late", m3)  # judged with no champion ...
    reg.promote(blessing)
    with pytest.raises(DataError, match="stale blessing"):
        reg.promote(stale)  # ... but now there is one
    with pytest.raises(DataError, match="already the champion"):
        reg.promote(blessing)
    with pytest.raises(RegistryConflict, match="expected registry version 0, found 1"):
        reg.promote(bless(tmp_path, "second", m2, champion_dir=m1), expected_version=0)
    assert [r["registry_version"] for r in reg.history()] == [1]  # refusals wrote nothing


def _promote_in_process(store, blessing, start, queue):
    start.wait()
    try:
        record = Registry(store).promote(blessing, expected_version=0)
        queue.put(("ok", record["champion"]["model_version"]))
    except RegistryConflict as err:
        queue.put(("conflict", str(err)))
    except Exception as err:  # noqa: BLE001 - report anything else to the test
        queue.put(("error", repr(err)))


def test_concurrent_promotions_in_processes_one_wins_no_corruption(tmp_path):
    store = str(tmp_path / "registry")
    blessings = [bless(tmp_path, f"c{i}", make_model_dir(tmp_path / f"m{i}", i)) for i in range(4)]
    ctx = mp.get_context("fork")
    start, queue = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_promote_in_process, args=(store, b, start, queue)) for b in blessings]
    for p in procs:
        p.start()
    start.set()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    kinds = sorted(kind for kind, _ in results)
    assert kinds == ["conflict", "conflict", "conflict", "ok"], results
    winner = next(v for kind, v in results if kind == "ok")
    reg = Registry(store)
    assert reg.versions() == [1] and reg.current()["model_version"] == winner
    assert all("re-read and retry" in msg or "expected registry version" in msg for kind, msg in results if kind == "conflict")
    assert [p.name for p in (tmp_path / "registry" / "records").iterdir()] == ["000001.json"]  # no temp files left


def race_on_the_next_version(reg: Registry, writers: int = 8) -> list[str]:
    """``writers`` threads commit the same next record at once; each one's outcome, sorted."""
    barrier, outcomes = threading.Barrier(writers), []

    def write(i):
        barrier.wait()
        try:
            reg._commit(0, "promote", {"model_version": f"3t-{i:012d}"}, None)
            outcomes.append("ok")
        except RegistryConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(outcomes)


def test_concurrent_threads_racing_on_the_same_version(tmp_path):
    reg = Registry(tmp_path / "registry")
    assert race_on_the_next_version(reg) == ["conflict"] * 7 + ["ok"]
    assert reg.versions() == [1] and reg.head()["champion"]["model_version"].startswith("3t-")


def test_cli_show_promote_history_rollback(tmp_path, capsys):
    from vsearch.cli import main

    store = str(tmp_path / "registry")
    m1, m2 = make_model_dir(tmp_path / "m1", 1), make_model_dir(tmp_path / "m2", 2)
    assert main(["registry", "--store", store, "show"]) == 0 and capsys.readouterr().out.strip() == "null"
    assert main(["registry", "--store", store, "promote", "--blessing", str(bless(tmp_path, "a", m1))]) == 0
    assert main(["registry", "--store", store, "promote", "--blessing", str(bless(tmp_path, "b", m2, champion_dir=m1))]) == 0
    assert main(["registry", "--store", store, "rollback"]) == 0
    out = capsys.readouterr().out
    assert f"champion {model_version(m1)}" in out.splitlines()[-1]
    assert main(["registry", "--store", store, "history"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and "rollback" in lines[2]
    assert main(["registry", "--store", store, "promote", "--blessing", str(tmp_path / "missing.json")]) == 2
    assert "blessing file is missing" in capsys.readouterr().err


def test_fetch_publishes_the_champions_folder_checked_against_its_recorded_content(tmp_path, capsys):
    """`vsearch registry fetch --out DIR`: what the search service's init container runs. The
    copy is the recorded champion's (content id checked), published whole; a rerun downloads
    nothing; a promote or rollback changes what the next fetch brings."""
    from vsearch.cli import main

    store = str(tmp_path / "registry")
    m1, m2 = make_model_dir(tmp_path / "m1", 1), make_model_dir(tmp_path / "m2", 2)
    (m1 / "tokenizer").mkdir()
    (m1 / "tokenizer" / "tokenizer.json").write_text("{}")
    out = tmp_path / "serve" / "champion"
    # No champion yet: one line, exit 2, nothing written.
    assert main(["registry", "--store", store, "fetch", "--out", str(out)]) == 2
    assert "no champion" in capsys.readouterr().err and not out.exists()
    Registry(store).promote(bless(tmp_path, "a", m1))
    assert main(["registry", "--store", store, "fetch", "--out", str(out)]) == 0
    assert f"champion {model_version(m1)} (registry v1) fetched from" in capsys.readouterr().out
    assert model_version(out) == model_version(m1) and (out / "tokenizer" / "tokenizer.json").read_text() == "{}"
    assert main(["registry", "--store", store, "fetch", "--out", str(out)]) == 0
    assert "already here" in capsys.readouterr().out
    Registry(store).promote(bless(tmp_path, "b", m2, champion_dir=m1))
    assert main(["registry", "--store", store, "fetch", "--out", str(out)]) == 0
    assert model_version(out) == model_version(m2) and not (out / "tokenizer").exists()
    # The champion's folder was overwritten after promotion: refused, the served copy stays.
    from safetensors.numpy import save_file

    save_file({"w": np.zeros((8, 8), np.float32)}, str(m1 / "model.safetensors"))
    Registry(store).rollback()
    capsys.readouterr()
    assert main(["registry", "--store", store, "fetch", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights changed after it was promoted" in err and model_version(m1) in err
    assert model_version(out) == model_version(m2) and not list(out.parent.glob("champion.partial*"))
    # A folder somebody else owns is never replaced.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    save_file({"w": np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)}, str(m1 / "model.safetensors"))
    assert main(["registry", "--store", store, "fetch", "--out", str(foreign)]) == 2
    assert (foreign / "notes.txt").read_text() == "mine"


def test_any_fsspec_store_works_sequentially(tmp_path):
    """A non-local store (fsspec memory://) through the same code path as s3:// or gs://."""
    reg = Registry(f"memory://vsearch-test-{tmp_path.name}/registry")
    m1, m2 = make_model_dir(tmp_path / "m1", 1), make_model_dir(tmp_path / "m2", 2)
    reg.promote(bless(tmp_path, "a", m1))
    reg.promote(bless(tmp_path, "b", m2, champion_dir=m1))
    with pytest.raises(RegistryConflict):
        reg._commit(1, "promote", {"model_version": "x"}, None)  # version 2 exists: the CAS refuses
    assert reg.rollback()["champion"]["model_version"] == model_version(m1)
    assert Registry(reg.store).versions() == [1, 2, 3]
