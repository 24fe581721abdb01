"""The built images and podman's Docker-compatible API, for the ``containers`` tests.

``make test`` installs podman (``make sysdeps``) and builds the images (``make images``:
``dockerfiles/build.py``, cached by a content hash of what goes into them). The fixture runs
the same build, so a stale image is never tested: on an unchanged tree it only hashes the
tree and finds the image. Without podman these tests are skipped with the reason (``make
test`` never skips them: it installs podman first).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict:
    if not shutil.which("podman"):
        pytest.skip("podman not installed (make sysdeps installs it)")
    record = tmp_path_factory.mktemp("images") / "images.json"
    proc = subprocess.run([sys.executable, str(ROOT / "dockerfiles" / "build.py"), "--gpu", "resolve", "--record", str(record)],
                          capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, f"image build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(record.read_text())


@pytest.fixture(scope="session")
def docker_host(tmp_path_factory, images) -> str:
    from pipelines.local import podman_api

    with podman_api(tmp_path_factory.mktemp("podman")) as host:
        yield host
