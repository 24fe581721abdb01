"""``python -m vsearch.training.trainjob render``: print the job manifest of a multi-node run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from vsearch.config import ConfigError
from vsearch.training.trainjob.manifest import build_manifest
from vsearch.training.trainjob.spec import FLAVOURS, TrainJobSpec, Volume, VolumeMount, derive_name


def _default_image() -> str:
    from vsearch.images import GPU_IMAGE

    return GPU_IMAGE


def main(argv: list[str] | None = None) -> int:
    """``python -m vsearch.training.trainjob render --config NAME --data DIR --out DIR --nodes N``."""
    import argparse

    import yaml

    parser = argparse.ArgumentParser(prog="python -m vsearch.training.trainjob",
                                     description="Render the Kubeflow TrainJob / PyTorchJob of a multi-node run.")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="print the job manifest as YAML (kubectl apply -f -)")
    render.add_argument("--config", required=True, help="config preset or YAML path inside the image")
    render.add_argument("--data", required=True, help="dataset folder as the nodes see it (shared volume)")
    render.add_argument("--out", required=True, help="model folder as the nodes see it (shared volume)")
    render.add_argument("--init", help="model folder to start from")
    render.add_argument("--spec", help="YAML file with TrainJobSpec fields (flags below override it)")
    render.add_argument("--name", help="job name (default: derived from config, data and out)")
    render.add_argument("--namespace")
    render.add_argument("--image", help="default: the project GPU image (vsearch.images.GPU_IMAGE)")
    render.add_argument("--flavour", choices=FLAVOURS)
    render.add_argument("--nodes", type=int, help="number of nodes")
    render.add_argument("--nproc-per-node", type=int)
    render.add_argument("--gpus-per-node", type=int, help="accelerators per node (0: CPU only)")
    render.add_argument("--pvc", help="ReadWriteMany PVC mounted in every node")
    render.add_argument("--mount-path", default="/mnt/vsearch", help="where the PVC is mounted")
    render.add_argument("--service-account")
    render.add_argument("overrides", nargs="*", help="dotted config overrides passed to vsearch train")
    args = parser.parse_args(argv)

    raw: dict[str, Any] = {}
    if args.spec:
        path = Path(args.spec)
        if not path.is_file():
            raise ConfigError(f"{path}: spec file not found")
        raw = yaml.safe_load(path.read_text()) or {}
    spec = TrainJobSpec.from_dict(raw, where=args.spec or "trainjob spec")
    for key, value in (("namespace", args.namespace), ("image", args.image), ("flavour", args.flavour),
                       ("num_nodes", args.nodes), ("nproc_per_node", args.nproc_per_node),
                       ("service_account", args.service_account)):
        if value is not None:
            setattr(spec, key, value)
    if args.gpus_per_node is not None:
        spec.accelerator_count = args.gpus_per_node
        if args.nproc_per_node is None and args.gpus_per_node > 0:
            spec.nproc_per_node = args.gpus_per_node
    if args.pvc:
        spec.volumes.append(Volume(name="vsearch-shared", pvc=args.pvc))
        spec.mounts.append(VolumeMount(volume="vsearch-shared", path=args.mount_path))
    spec.image = spec.image or _default_image()
    spec.name = args.name or spec.name or derive_name(Path(args.config).stem, args.config, args.data, args.out, args.overrides)
    train_args = ["--config", args.config, "--data", args.data, "--out", args.out, "--quiet"]
    if args.init:
        train_args += ["--init", args.init]
    manifest = build_manifest(spec, train_args + list(args.overrides))
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
    return 0

