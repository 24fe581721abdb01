"""dockerfiles/build.py against a real podman (tiny images imported from an empty tarball)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed (make test installs it)")


def _build_script():
    spec = importlib.util.spec_from_file_location("vsearch_image_build", ROOT / "dockerfiles" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_old_tag_that_cannot_be_removed_is_kept_and_said(tmp_path, capsys):
    """prune_older untags earlier content-hash tags; one podman refuses (a container uses it)
    stays, and the build says so in one line instead of skipping it silently."""
    build = _build_script()
    empty = tmp_path / "empty.tar"
    tarfile.open(empty, "w").close()
    repo, container = f"localhost/vsearch-prune-test-{uuid.uuid4().hex[:8]}", f"vsearch-prune-test-{uuid.uuid4().hex[:8]}"
    old, in_use, new = f"{repo}:old", f"{repo}:in-use", f"{repo}:new"
    try:
        for ref in (old, in_use, new):  # a distinct label each: three images, not three tags of one
            build.podman("import", "--change", f"LABEL vsearch.content-hash={ref.rsplit(':', 1)[1]}", str(empty), ref, capture=True)
        build.podman("create", "--name", container, in_use, "/nothing", capture=True)
        removed = build.prune_older({"cpu": {"ref": new}})
        out = capsys.readouterr().out
        assert removed == [old]
        kept = [line for line in out.splitlines() if line.startswith("kept ")]
        assert len(kept) == 1 and kept[0].startswith(f"kept {in_use}: ") and "in use by a container" in kept[0]
        assert build.image_exists(in_use) and build.image_exists(new) and not build.image_exists(old)
    finally:
        subprocess.run(["podman", "rm", "-f", container], env=build.podman_env(), capture_output=True)
        subprocess.run(["podman", "rmi", "-f", old, in_use, new], env=build.podman_env(), capture_output=True)
