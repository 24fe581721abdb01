"""Run a real-Milvus-server scenario in its own network namespace (loopback only).

Milvus 2.3.5 (PyPI ``milvus``) binds every interface whatever its ``ip:`` settings, so its
tests run the server inside ``unshare -n`` where only ``lo`` exists. A test module defines
``_scenario(work, data, three_tower, image_only) -> dict`` and calls
``run_scenario(__file__, ...)`` from its test; ``scenario_main(_scenario)`` under
``if __name__ == "__main__"`` runs it inside the namespace and prints its JSON result.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

LOOPBACK_PEERS = ("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")
ROOT = Path(__file__).resolve().parents[2]
MILVUS_MANIFEST = ROOT / "k8s" / "milvus" / "milvus.yaml"
# A scratch Milvus server (never the serving one) to run the server scenario against instead
# of the local one: docs/indexing.md "Milvus versions".
EXTERNAL_URI_ENV = "VSEARCH_TEST_MILVUS_URI"


def deployed_version() -> str:
    """The Milvus version k8s deploys: the image tag of k8s/milvus/milvus.yaml, without the "v"."""
    (cr,) = [d for d in yaml.safe_load_all(MILVUS_MANIFEST.read_text()) if d and d.get("kind") == "Milvus"]
    image = cr["spec"]["components"]["image"]
    repo, tag = image.rsplit(":", 1)
    assert repo == "milvusdb/milvus" and tag.startswith("v"), image
    return tag[1:]


def pinned_server_version() -> str:
    """The Milvus server version the tests run here: the ``milvus`` pin of constraints.txt."""
    pins = [line.split("==", 1)[1].strip() for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line.startswith("milvus==")]
    assert len(pins) == 1, pins
    return pins[0]


def run_scenario(test_file: str, *args: str, timeout: int = 280) -> dict:
    """Run ``test_file``'s scenario in a new network namespace; skips where that is impossible."""
    pytest.importorskip("milvus", reason="the PyPI 'milvus' package (real Milvus 2.3.5) is not installed")
    if not shutil.which("unshare") or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace here (unshare -n): the server would listen on all interfaces")
    cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, test_file, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout[proc.stdout.rindex("\n{") + 1 :])
    if "skip" in result:
        pytest.skip(result["skip"])
    interfaces = [line.split(":")[1].strip() for line in result["interfaces"] if line.strip()]
    assert interfaces == ["lo"]  # nothing but loopback exists where the server runs
    peers = [line.split()[4] for line in result["connections"] if line.strip()]
    assert all(p.startswith(LOOPBACK_PEERS) for p in peers), peers
    return result


def scenario_main(scenario) -> None:
    """Inside the namespace: offline settings, run the scenario, print its result as the last JSON line."""
    for var, val in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("DO_NOT_TRACK", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(var, val)
    print("\n" + json.dumps(scenario(*sys.argv[1:5])), flush=True)
