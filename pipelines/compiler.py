"""Compiling the pipelines to KFP YAML, deterministically, and checking what was written.

``PIPELINES`` maps the names used on the command line to their factories. Compiling writes
``<out>/<name>.yaml`` atomically (temporary file + rename) after a strict check: both YAML
documents (the PipelineSpec and the Kubernetes PlatformSpec) must parse into their protobuf
messages with no unknown field. Same code + same config -> byte-identical YAML.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path

from pipelines.config import PipelineConfig
from vsearch.config import ConfigError

# name -> (module, factory): the factory takes a PipelineConfig and returns the @dsl.pipeline.
PIPELINES: dict[str, tuple[str, str]] = {
    "model": ("pipelines.model", "build"),
    "model-import": ("pipelines.model", "build_import"),
    "training": ("pipelines.training", "build"),
    "training-import": ("pipelines.training", "build_import"),
    "monitoring": ("pipelines.monitoring", "build"),
    "backfill": ("pipelines.backfill", "build"),
}


def pipeline_func(name: str, cfg: PipelineConfig):
    if name not in PIPELINES:
        raise ConfigError(f"unknown pipeline '{name}' (known: {', '.join(sorted(PIPELINES))})")
    module, factory = PIPELINES[name]
    return getattr(importlib.import_module(module), factory)(cfg)


def load_documents(path: str | os.PathLike) -> list[dict]:
    import yaml

    return [doc for doc in yaml.safe_load_all(Path(path).read_text()) if doc is not None]


def check_package(path: str | os.PathLike):
    """Strictly parse a compiled package; returns (PipelineSpec, PlatformSpec or None).

    Raises:
        ValueError: a document that is not a valid PipelineSpec / PlatformSpec, or a
            Kubernetes executor config with a field KFP's driver would not understand.
    """
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb
    from kfp.pipeline_spec import pipeline_spec_pb2

    docs = load_documents(path)
    if not 1 <= len(docs) <= 2:
        raise ValueError(f"{path}: expected 1 or 2 YAML documents, found {len(docs)}")
    try:
        spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
        platform = None
        if len(docs) == 2:
            platform = json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
            for executor, config in docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items():
                json_format.ParseDict(config, k8s_pb.KubernetesExecutorConfig())
    except json_format.ParseError as err:
        raise ValueError(f"{path}: not a valid compiled pipeline: {err}") from err
    return spec, platform


def compile_pipeline(name: str, cfg: PipelineConfig, out_dir: str | os.PathLike) -> Path:
    """Compile pipeline ``name`` to ``<out_dir>/<name>.yaml`` (checked, then renamed in place)."""
    from kfp import compiler

    func = pipeline_func(name, cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.yaml"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".yaml", dir=out_dir)
    os.close(fd)
    try:
        compiler.Compiler().compile(pipeline_func=func, package_path=tmp)
        check_package(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def compile_all(cfg: PipelineConfig, out_dir: str | os.PathLike, names: list[str] | None = None) -> list[Path]:
    return [compile_pipeline(name, cfg, out_dir) for name in (names or sorted(PIPELINES))]
