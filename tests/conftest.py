"""Shared fixtures: a tiny generated dataset and tiny trained models, built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread, here and in every subprocess a test starts (kfp.local tasks, CLI runs):
# the test models are tiny, and with two OpenMP threads on a machine whose other core is busy
# the workers spin-wait on each other. Measured on the 2-core machine at load 4-5: a MobileNetV2
# step (batch 8, 128 px) took 0.24-0.54 s on one thread and 2.5-4.2 s on two.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """The `tiny` street-to-shop preset (seed 0): read-only for tests; copy before mutating."""
    from vsearch.data.synth import generate

    out = tmp_path_factory.mktemp("tiny") / "data"
    generate(out, "tiny", seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tiny_data):
    """Tiny image-only, 3-tower and 4-tower (from 3-tower) models trained a few steps."""
    from vsearch.config import load_config
    from vsearch.training.loop import train

    root = tmp_path_factory.mktemp("models")
    dirs = {}
    for name, preset, init in (
        ("image_only", "tiny_image_only", None),
        ("three_tower", "tiny", None),
        ("four_tower", "tiny_four_tower", "three_tower"),
    ):
        dirs[name] = root / name
        train(load_config(preset), tiny_data, dirs[name], init=dirs[init] if init else None, progress=False)
    return dirs


@pytest.fixture(scope="session")
def cli_compile():
    """``cli_compile(out, *args)``: run ``vsearch pipeline compile --out OUT *ARGS`` in its own
    interpreter (the goldens' regenerate command) and return ``out``. Not in-process: KFP's task
    setters (set_cpu_request, set_accelerator_type ...) each call ``inspect.stack()``, whose
    cost grows with the stack depth and the number of loaded modules; inside this session a
    compile of the six pipelines took 14-42 s of CPU, in a fresh interpreter 3.5 s."""
    import subprocess
    import sys
    from pathlib import Path

    def compile_(out, *args: str):
        cmd = [sys.executable, "-m", "vsearch.cli", "pipeline", "compile", "--out", str(out), *args]
        done = subprocess.run(cmd, cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{' '.join(cmd[1:])} exited {done.returncode}:\n{done.stderr[-3000:]}"
        return out

    return compile_


@pytest.fixture(scope="session")
def default_package(tmp_path_factory, cli_compile):
    """``default_package(name)``: the path of pipeline ``name`` as ``vsearch pipeline compile``
    writes it with the default compile-time config (what the goldens hold); all the pipelines
    are compiled once per session, on first use (see ``cli_compile``). A dozen tests only read
    the default packages: read-only, copy before changing one."""
    out = tmp_path_factory.mktemp("default-packages")
    compiled: list = []

    def package(name: str):
        if not compiled:
            compiled.append(cli_compile(out))
        path = out / f"{name}.yaml"
        assert path.is_file(), f"no pipeline {name!r} in {sorted(p.name for p in out.iterdir())}"
        return path

    return package


@pytest.fixture(scope="module")
def s3():
    """An S3 API on 127.0.0.1 (moto) with one bucket, ``vsearch-test``; the AWS_* variables point
    every client at it. Returns a boto3 client. One server per module that asks for it."""
    boto3 = pytest.importorskip("boto3")
    s3fs = pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    endpoint = f"http://{host}:{port}"
    # moto keeps its buckets in process-wide backends, not per server: start every module empty
    # (an earlier module's objects under the same bucket and prefix would otherwise show up).
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).close()
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "FEAST_S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "vsearch-test",
            "AWS_SECRET_ACCESS_KEY": "vsearch-test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            env.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            env.delenv(name, raising=False)
        s3fs.S3FileSystem.clear_instance_cache()  # a cached filesystem would keep another endpoint
        client = boto3.client("s3")
        client.create_bucket(Bucket="vsearch-test")
        yield client
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()
