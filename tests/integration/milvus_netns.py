"""One real Milvus server, in its own network namespace (loopback only), for the server tests.

Milvus 2.3.5 (PyPI ``milvus``) binds every interface whatever its ``ip:`` settings, so its
tests run the server inside ``unshare -n`` where only ``lo`` exists. Starting it costs ~8 s and
the scenarios spend most of their time waiting on it (flushes ~3 s, loads 3-4 s), so the test
files of ``PARTS`` share ONE server start: ``run_on_one_server`` (the session fixture
``real_milvus`` in conftest.py) runs this file as a script inside the namespace; it starts the
server and runs every part at the same time, each as its own test file run as a script
(``part_main(_part)`` under its ``if __name__ == "__main__"``), and prints one JSON object:
the server's facts plus each part's result under ``parts``. The parts cannot interfere: each
uses its own collection prefix, registry collection, alias and folders (checked by the tests).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
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


# name -> the test file whose ``_part(uri, storage, work, data, three_tower, image_only) -> dict``
# runs against the shared server
PARTS = {"swap_rollback": "test_indexing_server.py", "bulk_import": "test_indexing_bulk.py"}


def run_on_one_server(work: Path, data: Path, three: Path, image_only: Path, timeout: int = 280) -> dict:
    """Start the server in a new network namespace and run every part; skips where that is impossible."""
    pytest.importorskip("milvus", reason="the PyPI 'milvus' package (real Milvus 2.3.5) is not installed")
    if not shutil.which("unshare") or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace here (unshare -n): the server would listen on all interfaces")
    args = [str(a) for a in (work, data, three, image_only)]
    cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, __file__, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = _last_json(proc.stdout)
    if "skip" in result:
        pytest.skip(result["skip"])
    return result


def check_shared_run(result: dict) -> None:
    """Nothing but loopback existed where the server ran, every connection seen while the parts ran
    stayed on it, and no two parts used the same collection, registry or alias (each part lists
    its own under ``names``)."""
    interfaces = [line.split(":")[1].strip() for line in result["interfaces"] if line.strip()]
    assert interfaces == ["lo"]
    peers = [line.split()[4] for line in result["connections"] if line.strip()]
    assert peers and all(p.startswith(LOOPBACK_PEERS) for p in peers), peers
    names = {name: set(part.get("names", ())) for name, part in result["parts"].items()}
    for a in names:
        for b in names:
            assert a == b or not names[a] & names[b], f"parts {a} and {b} share {sorted(names[a] & names[b])}"


def part_result(result: dict, name: str) -> dict:
    """Part ``name``'s result; fails with the part's own error output if it crashed."""
    part = result["parts"][name]
    assert "error" not in part, part.get("error")
    return part


def part_main(part) -> None:
    """A part, inside the namespace: offline settings, run ``part(*argv)``, print its JSON last."""
    for var, val in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("DO_NOT_TRACK", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(var, val)
    t0 = time.perf_counter()
    out = part(*sys.argv[1:7])
    out["part_s"] = round(time.perf_counter() - t0, 2)
    print("\n" + json.dumps(out), flush=True)


def _last_json(stdout: str) -> dict:
    return json.loads(stdout[stdout.rindex("\n{") + 1 :])


def _start_server(root: Path):
    """A Milvus server whose components advertise 127.0.0.1 (shared NOTES); (server, ip lines rewritten)."""
    import milvus

    template = Path(milvus.__file__).parent / "data" / "config.yaml.template"
    text, n = re.subn(r"(?m)^(\s*)ip:[^\n]*$", r"\1ip: 127.0.0.1", template.read_text())
    (root / "config.yaml.template").write_text(text)
    config = milvus.MilvusServerConfig(template=str(root / "config.yaml.template"))
    config.glog_conf_file = str(template.parent / "glog.conf")  # only set for the default template
    server = milvus.MilvusServer(config, wait_for_started=False)
    server.show_startup_banner = False
    server.set_base_dir(str(root / "data"))
    server.start()
    return server, n


def _run_parts(uri: str, storage: Path, root: Path, data: str, three: str, image_only: str) -> tuple[dict, list[str]]:
    """Every part at once, each in its own interpreter and work folder: ({name: its result or
    error}, every TCP connection seen while they ran, sampled each second, and at the end)."""
    procs = {}
    for name, test_file in PARTS.items():
        work = root / name
        work.mkdir()
        cmd = [sys.executable, str(Path(__file__).with_name(test_file)), *map(str, [uri, storage, work, data, three, image_only])]
        with (work / "stdout").open("w") as out, (work / "stderr").open("w") as err:
            procs[name] = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
    deadline, seen = time.monotonic() + 240, {}
    while True:
        seen.update(dict.fromkeys(subprocess.run(["ss", "-Htn"], capture_output=True, text=True).stdout.split("\n")))
        if all(proc.poll() is not None for proc in procs.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    parts = {}
    for name, proc in procs.items():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stdout, stderr = ((root / name / f).read_text() for f in ("stdout", "stderr"))
        parts[name] = _last_json(stdout) if proc.returncode == 0 else {"error": f"exit {proc.returncode}: {stderr[-3000:]}"}
    return parts, list(seen)


def _serve(work: str, data: str, three: str, image_only: str) -> dict:
    """Inside the namespace: start the server, run every part against it, stop it; the JSON result."""
    root = Path(work)
    out: dict = {"interfaces": subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.split("\n")}
    t0 = time.perf_counter()
    server, out["ip_lines_rewritten"] = _start_server(root)
    try:
        try:
            server.wait_started(timeout=120_000)
        except (TimeoutError, RuntimeError) as err:
            log = root / "data" / "logs" / "milvus-stderr.log"
            return {"skip": f"Milvus {pinned_server_version()} did not start: {err} {log.read_text()[-800:] if log.exists() else ''}"}
        out["server_start_s"] = round(time.perf_counter() - t0, 2)
        out["listening"] = subprocess.run(["ss", "-Htln"], capture_output=True, text=True).stdout.split("\n")
        storage = Path(server.config.get("local_storage_dir"))  # common.storageType: local -> bulk import reads this fs
        t0 = time.perf_counter()
        out["parts"], out["connections"] = _run_parts(f"http://127.0.0.1:{server.listen_port}", storage, root, data, three, image_only)
        out["parts_s"] = round(time.perf_counter() - t0, 2)
        return out
    finally:
        t0 = time.perf_counter()
        server.stop()
        out["server_stop_s"] = round(time.perf_counter() - t0, 2)


if __name__ == "__main__":  # inside the network namespace, run by run_on_one_server
    print("\n" + json.dumps(_serve(*sys.argv[1:5])), flush=True)
