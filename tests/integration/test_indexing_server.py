"""Backfill + search + alias swap + rollback against a real Milvus 2.3.5 standalone server
(PyPI ``milvus``), reachable on loopback only.

Milvus 2.3.5 binds every component on all interfaces (``*:19530`` ...; its ``ip:`` settings only
change the advertised address). So the scenario runs in its own network namespace
(``unshare -n``) whose only interface is ``lo``: the server cannot listen or connect anywhere
else. The scenario is this file run as a script inside the namespace, against one server
start shared with the bulk-import scenario of test_indexing_bulk.py (milvus_netns.py); it
prints one JSON object the test checks. Skipped, with the reason, where the server or the
namespace cannot start here.

The cluster deploys another version (k8s/milvus/milvus.yaml); no server of that version can
run here (docs/indexing.md "Milvus versions"). The same scenario runs against a scratch server
of it with ``VSEARCH_TEST_MILVUS_URI`` set (``test_..._on_the_deployed_version``), which also
checks that the server is the version the manifest deploys.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from milvus_netns import EXTERNAL_URI_ENV, check_shared_run, deployed_version, part_main, part_result, pinned_server_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _part(uri: str, storage: str, work: str, data: str, three: str, image_only: str) -> dict:
    """Runs inside the network namespace, against the shared server (milvus_netns.PARTS)."""
    os.environ["VSEARCH_MILVUS_TOKEN"] = "root:Milvus"  # the token path is exercised (auth is off here)
    out = _exercise(uri, data, three, image_only)
    out["names"] = [*out["collections"].values(), "vsearch_registry", "live"]  # its own on the shared server
    return out


def _exercise(uri: str, data: str, three: str, image_only: str) -> dict:
    """Backfill twice, search through the alias, roll back, fail a verification; the server's version."""
    from vsearch.artifacts import model_version
    from vsearch.cli import main as cli
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import collection_name, connect, hit_id

    out: dict = {}
    base = ["--data", data, "--milvus-uri", uri, "--alias", "live", "--set", "backfill.num_workers=0"]
    t0 = time.perf_counter()
    out["backfill_codes"] = [cli(["index", "backfill", "--model", m, *base]) for m in (three, image_only)]
    out["backfill_s"] = round(time.perf_counter() - t0, 2)
    c3, c1 = (collection_name("vsearch", model_version(m)) for m in (three, image_only))
    out["collections"] = {"three_tower": c3, "image_only": c1}
    cfg = load_index_config()
    with connect(uri, cfg) as store:
        out["alias_after_backfills"] = store.alias_target("live")
        out["counts"] = [store.count(c1), store.count(c3)]
        out["index_type"] = store.client.describe_index(c1, "embedding")["index_type"]
        pid = sorted(store.existing_ids(c1))[3]
        (vec,) = store.fetch_vectors(c1, [pid]).values()
        hits = store.search("live", [vec], 5, cfg.search, "IP", consistency="Strong")
        out["search_top1_is_self"] = hit_id(hits[0][0]) == pid
    out["rollback_code"] = cli(["index", "rollback", "--alias", "live", "--milvus-uri", uri])
    out["failed_verify_code"] = cli(["index", "backfill", "--model", image_only, *base, "--set", "verify.min_recall=1.01"])
    with connect(uri, cfg) as store:
        out["alias_after_rollback_and_failed_verify"] = store.alias_target("live")
        out["server_version"] = store.client.get_server_version()
    return out


def _check_scenario(result: dict) -> None:
    c = result["collections"]
    assert result["backfill_codes"] == [0, 0]
    assert result["alias_after_backfills"] == c["image_only"]
    assert result["counts"] == [32, 32] and result["index_type"] == "HNSW" and result["search_top1_is_self"]
    assert result["rollback_code"] == 0 and result["failed_verify_code"] == 1
    assert result["alias_after_rollback_and_failed_verify"] == c["three_tower"]


def test_backfill_search_swap_rollback_on_real_server(real_milvus):
    check_shared_run(real_milvus)
    result = part_result(real_milvus, "swap_rollback")
    listening = [line.split()[3] for line in real_milvus["listening"] if line.strip()]
    assert any(addr.endswith(":19530") or addr.endswith(":19531") for addr in listening)
    assert real_milvus["ip_lines_rewritten"] >= 7
    # The server that ran is the pinned one (the embedded build calls itself "v2.3.5-lite").
    assert result["server_version"].removesuffix("-lite") == f"v{pinned_server_version()}"
    _check_scenario(result)


@pytest.mark.skipif(not os.environ.get(EXTERNAL_URI_ENV), reason=f"no scratch Milvus of the deployed version: set "
                    f"{EXTERNAL_URI_ENV} (and VSEARCH_MILVUS_TOKEN) on a cluster; docs/indexing.md 'Milvus versions'")
def test_backfill_search_swap_rollback_on_the_deployed_version(tiny_data, tiny_models):
    """What a cluster must prove: the same scenario on the version k8s deploys (a scratch server)."""
    result = _exercise(os.environ[EXTERNAL_URI_ENV], str(tiny_data), str(tiny_models["three_tower"]),
                       str(tiny_models["image_only"]))
    assert result["server_version"] == f"v{deployed_version()}"
    _check_scenario(result)


if __name__ == "__main__":  # this file's part of the shared server run (milvus_netns.PARTS)
    part_main(_part)
