"""The tiny training pipeline end to end with every task inside the built image.

The package is compiled with the built image's reference and run by ``kfp.local.DockerRunner``
against podman's Docker-compatible API: each task runs its compiled command in its compiled
image, with no network, as the image's non-root user (the run folder is bind-mounted at the
same path, as kfp.local does). What a cluster adds beyond this (object-store artifacts, GPUs,
the KFP backend) is listed in docs/cluster.md.
"""

# No `from __future__ import annotations`: KFP reads the real annotations of the probe component.

import json
import subprocess
from pathlib import Path

import pytest

from pipelines.config import load_pipeline_config
from pipelines.local import EXECUTOR_OUTPUT, TINY_PARAMS, run_local

pytestmark = [pytest.mark.containers, pytest.mark.integration, pytest.mark.timeout(1500)]

IMAGE_UID = 10001  # dockerfiles/Dockerfile: USER 10001:10001


def _podman(*args: str) -> str:
    from pipelines.local import CONTAINERS_CONF

    env = {"CONTAINERS_CONF": str(CONTAINERS_CONF)} if CONTAINERS_CONF.is_file() else {}
    import os

    return subprocess.run(["podman", *args], capture_output=True, text=True, check=True, env={**os.environ, **env}).stdout


def test_the_image_runs_offline_as_its_user_and_knows_its_code_version(images):
    ref = images["cpu"]["ref"]
    out = _podman("run", "--rm", "--network", "none", ref, "python", "-c",
                  "import os, json, torch, vsearch, kfp; print(json.dumps({'uid': os.getuid(), "
                  "'code': os.environ.get('VSEARCH_CODE_VERSION'), 'torch': torch.__version__, 'cuda': torch.cuda.is_available()}))")
    facts = json.loads(out.strip().splitlines()[-1])
    assert facts["uid"] == IMAGE_UID
    assert facts["torch"].startswith("2.13.0") and facts["cuda"] is False
    assert facts["code"] == images["cpu"]["code_version"] and facts["code"] != "unknown"
    # The build's pip settings were mounted, never baked in: no pip.conf, no setting in the history,
    # and the mount points podman leaves under /run/vsearch-build are empty.
    history = _podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", ref)
    assert "find-links" not in history and "/opt/wheels" not in history
    leftovers = _podman("run", "--rm", "--network", "none", ref, "sh", "-c",
                        "ls /etc/pip.conf /etc/xdg/pip/pip.conf 2>/dev/null; find /run/vsearch-build -type f -size +0 2>/dev/null; true")
    assert leftovers.strip() == ""


def test_the_gpu_install_resolves(images):
    """The GPU image's resolve stage: CUDA torch, its torchvision and '.[all]' under the lock resolve."""
    report = json.loads(_podman("run", "--rm", "--network", "none", images["gpu"]["ref"], "cat", "/build/resolve-torch.json"))
    names = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in report["install"]}
    assert names["torch"] == "2.13.0" and names["torchvision"] == "0.28.0"
    assert any(n.startswith("nvidia-") for n in names), "the GPU torch resolved without its CUDA libraries (a CPU build?)"


def test_the_tiny_training_pipeline_runs_every_task_in_the_image(images, docker_host, tmp_path):
    ref = images["cpu"]["ref"]
    cfg = load_pipeline_config(None, ["retry.num_retries=0", f"image={ref}"])
    out = tmp_path / "runs"
    # Milvus Lite and the registry live in the pipeline root: the only folder the tasks see.
    state = out / "state"
    state.mkdir(parents=True)
    state.chmod(0o1777)
    params = {k: v for k, v in TINY_PARAMS["training"].items()}
    params.update(seed=1, gate_config="gate_smoke", milvus_uri=str(state / "milvus.db"), registry=str(state / "registry"))
    manifest = run_local("training", cfg, out, params, expect=["write-rollout-config"], runner="container",
                         docker_host=docker_host)
    assert manifest["runner"] == "container"
    run_dir = Path(manifest["run_dir"])
    ran = sorted(manifest["tasks"])
    assert {"synth-data", "validate-data", "build-training-set", "train-model", "train-model-2", "train-model-3",
            "evaluate-model", "gate-model", "backfill-embeddings", "write-rollout-config"} <= set(ran)
    # Every task wrote its outputs as the image's user: it ran in the image, not in this venv (root here).
    for task in ran:
        assert (run_dir / task / EXECUTOR_OUTPUT).stat().st_uid == IMAGE_UID, task
    # The package that ran names the built image on every executor, nothing else.
    package = (run_dir / "pipeline.yaml").read_text()
    assert f"image: {ref}" in package and "ghcr.io/vsearch-ml/vsearch:" not in package
    blessing = json.loads((run_dir / "gate-model" / "blessing" / "blessing.json").read_text())
    assert blessing["blessed"] is True
    rollout = next(run_dir.glob("write-rollout-config/rollout/rollout.yaml"))
    assert "vsearch_serving_candidate" in rollout.read_text()
    # The release opened in review, in the registry the tasks wrote as the image's user.
    assert any((state / "registry" / "releases").iterdir())
    # Lineage: the code version the gate recorded is the image's own.
    assert blessing["lineage"]["code_version"] == images["cpu"]["code_version"]


def _fails_in_the_image() -> str:
    import vsearch_module_that_does_not_exist  # noqa: F401  (an ImportError, as a missing dependency gives)

    return "never"


def test_a_task_that_fails_in_its_container_fails_the_run(images, docker_host, tmp_path):
    """kfp.local's DockerRunner reported SUCCESS for a container that exited 1 when podman had
    already removed it (auto_remove); the run must say the task failed, not that it left no output."""
    from kfp import compiler, dsl

    from pipelines.local import run_package

    failing = dsl.component(_fails_in_the_image, base_image=images["cpu"]["ref"], install_kfp_package=False)

    @dsl.pipeline(name="probe-container-failure")
    def probe():
        failing()

    package = tmp_path / "probe.yaml"
    compiler.Compiler().compile(probe, str(package))
    with pytest.raises(RuntimeError) as err:
        run_package(package, tmp_path / "runs", runner="container", docker_host=docker_host)
    message = str(err.value)
    assert "FAILURE" in message and "did not run" not in message, message


def test_a_build_untags_the_earlier_builds_of_its_repositories(images, tmp_path):
    """Each build is ~3 GB under a new content-hash tag: the earlier tags go, the one built stays."""
    import sys

    ref, builder = images["cpu"]["ref"], images["cpu"]["builder"]
    repo = ref.rsplit(":", 1)[0]
    assert builder.startswith(f"{repo}-builder:")  # its builder stage is tagged, so its earlier ones can go too
    earlier = f"{repo}:0000000000000000"  # what an earlier tree's build left behind
    earlier_builder = f"{repo}-builder:0000000000000000"
    _podman("tag", ref, earlier)
    _podman("tag", builder, earlier_builder)
    proc = subprocess.run([sys.executable, str(Path(__file__).parents[2] / "dockerfiles" / "build.py"), "--gpu", "skip",
                           "--record", str(tmp_path / "images.json")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"removed the earlier build {earlier}" in proc.stdout and f"removed the earlier build {earlier_builder}" in proc.stdout
    for current, old in ((ref, earlier), (builder, earlier_builder)):
        tags = _podman("images", "--filter", f"reference={current.rsplit(':', 1)[0]}", "--format", "{{.Repository}}:{{.Tag}}").split()
        assert current in tags and old not in tags
