"""Public entry points: `generate` and the CLI `main` (``vsearch data synth``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vsearch import artifacts
from vsearch.data.synth.config import (
    CATALOG_IMAGE_DIR,
    CONFIG_FILE,
    GENERATOR_VERSION,
    PRESETS,
    QUERY_IMAGE_DIR,
    SynthConfig,
)
from vsearch.data.synth.jobs import _render_all
from vsearch.data.synth.planning import _plan
from vsearch.schema import CATALOG_FILE, INTERACTIONS_FILE, REFORMULATIONS_FILE, SPLITS


def _resolve_config(preset: str | SynthConfig) -> SynthConfig:
    if isinstance(preset, SynthConfig):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown synth preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset]


def _is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def generate(
    out_dir: str | os.PathLike,
    preset: str | SynthConfig = "default",
    seed: int | None = None,
    workers: int | None = None,
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generate the benchmark into ``out_dir`` atomically.

    Everything is written to a temporary sibling folder that is renamed to ``out_dir`` only
    when complete; on any error it is removed, and an existing ``out_dir`` is never touched.

    Args:
        out_dir: Destination folder; must not exist or be empty unless ``overwrite``.
        preset: A name in ``PRESETS`` ("tiny", "default", "holdout") or a ``SynthConfig``.
        seed: Random seed; None means the preset's ``default_seed`` (0, or 1000 for holdout).
        workers: Rendering processes; None means min(2, cpu_count), and small jobs render in-process.
        overwrite: Replace a non-empty ``out_dir``; the old folder is kept until the new one is complete.

    Returns:
        A JSON-able summary: preset, seed, products, designs, queries and products per split,
        reformulations, images, seconds (wall clock).

    Raises:
        FileExistsError: ``out_dir`` is not empty (or not a folder) and ``overwrite`` is False.
        ValueError: an inconsistent config or unknown preset.
    """
    t0 = time.perf_counter()
    cfg = _resolve_config(preset)
    cfg.validate()
    seed = cfg.default_seed if seed is None else int(seed)
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; refusing to replace it")
    if _is_nonempty_dir(out) and not overwrite:
        raise FileExistsError(f"{out} is not empty; refusing to overwrite it (pass overwrite=True / --overwrite)")
    if overwrite:  # only a dataset this tool generated is ever replaced (vsearch.artifacts)
        artifacts.check_out(out, ours=(CONFIG_FILE,))

    plan = _plan(cfg, seed)
    n_images = len(plan["catalog"]) + len(plan["interactions"])
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if n_images >= 400 else 1

    with artifacts.staged(out) as tmp:  # the old ``out`` is kept until the new one is complete
        (tmp / CATALOG_IMAGE_DIR).mkdir(parents=True)
        (tmp / QUERY_IMAGE_DIR).mkdir(parents=True)
        world = dict(plan["world"], config=cfg, seed=seed, root=str(tmp))
        jobs = [("catalog", i) for i in range(len(plan["catalog"]))]
        jobs += [("query", i) for i in range(len(plan["interactions"]))]
        _render_all(world, jobs, workers)
        plan["catalog"].to_parquet(tmp / CATALOG_FILE, index=False)
        plan["interactions"].to_parquet(tmp / INTERACTIONS_FILE, index=False)
        plan["reformulations"].to_parquet(tmp / REFORMULATIONS_FILE, index=False)
        record = {"generator_version": GENERATOR_VERSION, "preset": cfg.name, "seed": seed, "config": asdict(cfg)}
        (tmp / CONFIG_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        if _is_nonempty_dir(out) and not overwrite:  # appeared while we were generating
            raise FileExistsError(f"{out} is not empty; refusing to overwrite it (pass overwrite=True / --overwrite)")

    inter, catalog = plan["interactions"], plan["catalog"]
    product_split = inter.drop_duplicates("product_id").set_index("product_id")["split"]
    return {
        "out_dir": str(out),
        "preset": cfg.name,
        "seed": seed,
        "products": len(catalog),
        "designs": int(catalog["design_id"].nunique()),
        "queries": {s: int((inter["split"] == s).sum()) for s in SPLITS},
        "products_per_split": {s: int((product_split == s).sum()) for s in SPLITS},
        "reformulations": len(plan["reformulations"]),
        "images": n_images,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def main(argv: list[str] | None = None) -> int:
    """CLI: ``--out DIR --preset NAME --seed N [--overwrite] [--workers N]``; prints a JSON summary."""
    parser = argparse.ArgumentParser(prog="vsearch data synth", description="The generated street-to-shop benchmark: clean catalog renders and cluttered street queries.")
    parser.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the preset's, 1000 for holdout)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder atomically")
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default: min(2, cpus))")
    args = parser.parse_args(argv)
    try:
        summary = generate(args.out, args.preset, seed=args.seed, workers=args.workers, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, sort_keys=True))
    return 0
