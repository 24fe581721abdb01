"""`vsearch pipeline compile --images build/images.json` compiles with the images that were built.

The record is what dockerfiles/build.py writes; a record of the GPU image's resolve stage only
names no runnable image, so the accelerator steps keep the configured GPU image.
"""

import json

from pipelines.compiler import load_documents
from vsearch.cli import main


def _images(package) -> dict[str, str]:
    """{executor: image} of a compiled package."""
    spec = load_documents(package)[0]
    return {name: ex["container"]["image"] for name, ex in spec["deploymentSpec"]["executors"].items() if "container" in ex}


def _record(tmp_path, gpu_target: str):
    record = {
        "cpu": {"ref": "localhost/vsearch:0123456789abcdef", "target": "runtime"},
        "gpu": {"ref": "localhost/vsearch-gpu:fedcba9876543210", "target": gpu_target},
    }
    path = tmp_path / f"images-{gpu_target}.json"
    path.write_text(json.dumps(record))
    return path


def test_compile_uses_the_built_cpu_image_and_the_full_gpu_image(tmp_path, cli_compile):
    out = cli_compile(tmp_path / "out", "--name", "training", "--images", str(_record(tmp_path, "runtime")), "--set", "gpu.enabled=true")
    images = _images(out / "training.yaml")
    assert set(images.values()) == {"localhost/vsearch:0123456789abcdef", "localhost/vsearch-gpu:fedcba9876543210"}
    assert images["exec-train-model"] == "localhost/vsearch-gpu:fedcba9876543210"
    assert images["exec-evaluate-model"] == "localhost/vsearch:0123456789abcdef"


def test_a_resolve_only_gpu_record_leaves_the_configured_gpu_image(tmp_path, cli_compile):
    from components.image import GPU_IMAGE

    out = cli_compile(tmp_path / "out", "--name", "training", "--images", str(_record(tmp_path, "resolve")), "--set", "gpu.enabled=true")
    images = _images(out / "training.yaml")
    assert images["exec-train-model"] == GPU_IMAGE
    assert images["exec-gate-model"] == "localhost/vsearch:0123456789abcdef"


def test_a_broken_record_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "images.json"
    bad.write_text('{"gpu": {}}')
    assert main(["pipeline", "compile", "--out", str(tmp_path / "out"), "--images", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a record of built images" in err[0] and str(bad) in err[0]
