"""Fault injection: a backfill SIGKILLed at every named stage (``VSEARCH_FAULT``), then the same
command again at once, ends exactly where an uninterrupted run ends; between the kill and the
rerun the Milvus Lite database is free, and neither ``index status`` nor ``index rollback``
presents a collection as verified that is not.

The scenario is the hard one of issue 20: the new model's collection C is verified for an older
catalog and sits in the alias history, unserved (the alias is on D); the rerun rewrites C over a
changed catalog (12 products gone, 12 new) and moves the alias to it.

Every command runs as a fork of one helper process that imported torch, transformers and
pymilvus once (a fresh interpreter costs ~7 s of imports on these machines, the work < 2 s):
each is still a separate process, killed for real, with its own DataLoader workers.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vsearch.artifacts import model_version
from vsearch.cli import main as cli
from vsearch.indexing.config import load_index_config
from vsearch.indexing.store import IndexError_, collection_name, connect

pytestmark = pytest.mark.integration

# Every fault_point of a backfill, in the order a run reaches them (encode@2: the second of
# three batches queued, DataLoader workers alive; write@2: the second stored). Each kill must
# happen: a stage not reached fails the test.
STAGES = ["open", "delete", "encode@2", "write@2", "written", "finalize", "index", "verify", "verified", "alias"]
# What `index status` must say of the rewritten collection after each kill (and which ids it holds).
KILLED_STATE = {stage: ("writing", None) for stage in STAGES} | {
    "open": ("verified", "old_ids"), "verified": ("verified", "new_ids"), "alias": ("verified", "new_ids")}

_FORK_SERVER = r"""
import json, os, sys, traceback
# Imports only: no torch op runs here before a fork (a forked OpenMP pool can hang).
import pandas, pyarrow, pymilvus, torch, torch.utils.data, transformers.modeling_utils
import milvus_lite.server_manager, milvus_lite.adapter.grpc.server
import transformers.models.bert.modeling_bert, transformers.models.resnet.modeling_resnet
import vsearch.cli, vsearch.indexing.cli, vsearch.indexing.backfill, vsearch.models.multitower, vsearch.data.dataset
from vsearch.models.towers import register_backbones
register_backbones()
print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.environ.update(job["env"])
        out = os.open(job["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        try:
            rc = vsearch.cli.main(job["argv"])
        except SystemExit as err:
            rc = err.code
        except BaseException:
            traceback.print_exc()
            rc = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc or 0)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
                      "rc": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}), flush=True)
"""


class ForkedCLI:
    """``vsearch`` commands, each a fork of one process that has imported everything once."""

    def __init__(self, workdir: Path):
        self.workdir, self.n = workdir, 0
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        env.pop("VSEARCH_FAULT", None)
        self.proc = subprocess.Popen([sys.executable, "-c", _FORK_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        assert self.proc.stdout.readline().strip() == "ready"

    def __call__(self, *argv: str, fault: str | None = None) -> tuple[int, int | None, str]:
        """(signal that ended it or 0, exit code or None, its stdout+stderr)."""
        self.n += 1
        out = self.workdir / f"cmd{self.n}.log"
        env = {"VSEARCH_FAULT": fault} if fault else {"VSEARCH_FAULT": ""}
        self.proc.stdin.write(json.dumps({"argv": list(argv), "env": env, "out": str(out)}) + "\n")
        self.proc.stdin.flush()
        result = json.loads(self.proc.stdout.readline())
        return result["signal"], result["rc"], out.read_text()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.kill()  # no interpreter teardown to wait for
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def forked(tmp_path_factory):
    runner = ForkedCLI(tmp_path_factory.mktemp("forked"))
    yield runner
    runner.close()


def _changed_catalog(tiny_data: Path, out: Path) -> list[str]:
    """A copy of the tiny dataset whose catalog lost 12 products and gained 12 new ids."""
    import pandas as pd

    shutil.copytree(tiny_data, out)
    catalog = pd.read_parquet(out / "catalog.parquet")
    catalog.loc[catalog.index[-12:], "product_id"] = [f"n{i:05d}" for i in range(12)]
    catalog.to_parquet(out / "catalog.parquet", index=False)
    return catalog["product_id"].tolist()


def _backfill_argv(model, data, uri, *extra):
    return ["index", "backfill", "--model", str(model), "--data", str(data), "--milvus-uri", str(uri), "--alias", "live",
            "--set", "backfill.batch_size=4", *extra]


def _all_rows(uri, collection) -> dict[str, list[float]]:
    with connect(str(uri), load_index_config()) as store:
        store.ensure_loaded(collection)
        rows = store.client.query(collection, filter='product_id != ""', output_fields=["product_id", "embedding"],
                                  limit=1000, consistency_level="Strong")
    ids = [r["product_id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate product ids"
    return {r["product_id"]: r["embedding"] for r in rows}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, tiny_data, tiny_models):
    """A template database (C verified for the old catalog, unserved; alias on D) and the
    reference: C after an uninterrupted rewrite over the changed catalog."""
    root = tmp_path_factory.mktemp("faults")
    new_ids = _changed_catalog(tiny_data, root / "data_v2")
    new, old = tiny_models["image_only"], tiny_models["three_tower"]
    template = root / "template.db"
    for model, data in ((new, tiny_data), (old, root / "data_v2")):
        assert cli(_backfill_argv(model, data, template, "--set", "backfill.num_workers=0")) == 0
    reference = root / "reference.db"
    shutil.copytree(template, reference)
    assert cli(_backfill_argv(new, root / "data_v2", reference, "--set", "backfill.num_workers=0")) == 0
    c = collection_name("vsearch", model_version(new))
    ref = _all_rows(reference, c)
    assert sorted(ref) == sorted(new_ids)
    return {"template": template, "data": root / "data_v2", "new": new, "c": c,
            "old_ids": set(_all_rows(template, c)), "new_ids": set(new_ids), "reference": ref}


def _lock_free_within(uri: Path, seconds: float) -> float | None:
    """Seconds until the Lite LOCK could be taken (then released), None if not within ``seconds``."""
    start = time.monotonic()
    while True:
        fd = os.open(uri / "LOCK", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return time.monotonic() - start
        except OSError:
            if time.monotonic() - start > seconds:
                return None
        finally:
            os.close(fd)
        time.sleep(0.02)


def _check_servable_only(status: dict) -> None:
    """`index status` is truthful: a collection shown verified holds what was verified; the alias is on one."""
    for name, col in status["collections"].items():
        if col["status"] == "verified":
            assert col["rows"] == col["verified_rows"] == 32 and col["servable"], (name, col)
        else:
            assert not col["servable"], (name, col)
    live = status["aliases"]["live"]["collection"]
    assert status["collections"][live]["servable"], status


@pytest.mark.parametrize("stage", STAGES)
def test_backfill_killed_at_stage_then_rerun(stage, forked, scenario, tmp_path):
    sc = scenario
    uri = tmp_path / "milvus.db"
    shutil.copytree(sc["template"], uri)
    argv = _backfill_argv(sc["new"], sc["data"], uri, "--set", "backfill.num_workers=2")

    sig, _, log = forked(*argv, fault=stage)
    assert sig == signal.SIGKILL, f"stage {stage} was never reached:\n{log[-3000:]}"
    # DataLoader workers die with the process and never held the Lite LOCK: free at once.
    assert _lock_free_within(uri, 1.0) is not None, f"Milvus Lite LOCK still held 1 s after the kill at {stage}"

    sig, rc, log = forked("index", "status", "--milvus-uri", str(uri))
    assert (sig, rc) == (0, 0), log[-3000:]
    status = json.loads(log[log.index("{") :])
    _check_servable_only(status)
    # C is verified with the old catalog until its first row changes, then writing until the
    # rerun verifies it with the new one.
    want_status, want_ids = KILLED_STATE[stage]
    assert status["collections"][sc["c"]]["status"] == want_status, (stage, status["collections"][sc["c"]])
    if want_ids:
        assert set(_all_rows(uri, sc["c"])) == sc[want_ids]

    # A rollback (on a copy: the rerun below must start from the killed state) never reaches
    # a collection that is not verified and whole.
    probe = tmp_path / "rollback.db"
    shutil.copytree(uri, probe)
    sig, rc, log = forked("index", "rollback", "--alias", "live", "--milvus-uri", str(probe))
    assert sig == 0 and rc in (0, 1), log[-3000:]
    with connect(str(probe), load_index_config()) as store:
        target = store.alias_target("live")
        record = store.collection_record(target)
    rows = _all_rows(probe, target)
    assert record["status"] == "verified" and set(rows) in (sc["old_ids"], sc["new_ids"]), (stage, target, sorted(rows))

    sig, rc, log = forked(*argv)
    assert (sig, rc) == (0, 0), log[-3000:]
    sig, rc, log = forked("index", "status", "--milvus-uri", str(uri))
    status = json.loads(log[log.index("{") :])
    _check_servable_only(status)
    assert status["aliases"]["live"]["collection"] == sc["c"]
    assert status["collections"][sc["c"]]["status"] == "verified"
    rows = _all_rows(uri, sc["c"])
    assert sorted(rows) == sorted(sc["new_ids"])
    got = np.asarray([rows[i] for i in sorted(rows)], dtype=np.float32)
    want = np.asarray([sc["reference"][i] for i in sorted(rows)], dtype=np.float32)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_connect_waits_for_a_briefly_held_lite_lock(tmp_path):
    uri = tmp_path / "milvus.db"
    connect(str(uri), load_index_config()).close()
    lock = open(uri / "LOCK", "r+")  # a separate open file: the flock conflicts as another process's would
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    release = threading.Timer(0.5, lock.close)
    try:
        with pytest.raises(IndexError_, match="still locked by another process"):
            connect(str(uri), load_index_config(), lock_wait_s=0.3)
        release.start()
        start = time.monotonic()
        with connect(str(uri), load_index_config(), lock_wait_s=10) as store:
            assert store.versioned_collections() == []
        assert 0.4 < time.monotonic() - start < 5
    finally:
        release.cancel()
        if release.is_alive():
            release.join()
        lock.close()


def test_rollback_and_status_refuse_a_verified_collection_whose_rows_changed(scenario, tmp_path, capsys):
    """A database an older vsearch left behind: C recorded verified, then partly rewritten."""
    uri = tmp_path / "milvus.db"
    shutil.copytree(scenario["template"], uri)
    with connect(str(uri), load_index_config()) as store:
        store.ensure_loaded(scenario["c"])
        store.client.delete(scenario["c"], filter='product_id in ["p00000", "p00001", "p00002", "p00003"]')
    capsys.readouterr()
    assert cli(["index", "rollback", "--alias", "live", "--milvus-uri", str(uri)]) == 1
    assert "no earlier verified collection" in capsys.readouterr().err
    assert cli(["index", "status", "--milvus-uri", str(uri)]) == 0
    col = json.loads(capsys.readouterr().out)["collections"][scenario["c"]]
    assert (col["status"], col["rows"], col["verified_rows"], col["servable"]) == ("verified", 28, 32, False)
