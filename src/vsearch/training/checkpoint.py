"""Training checkpoints without pickle: tensors in safetensors, the rest in JSON.

A checkpoint folder ``step_<N>/`` holds ``model.safetensors`` (state dict),
``optimizer.safetensors`` (flattened optimizer state tensors), ``rng.safetensors`` (torch
CPU/CUDA generator states) and ``state.json`` (step, optimizer param groups, scheduler
state). It is written to a temporary folder and renamed, so a crash mid-write leaves the
previous checkpoint as the latest.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PREFIX = "step_"


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for param_id, slots in state["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    for param_id, slots in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(slots)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(root: str | os.PathLike, step: int, model: torch.nn.Module, optimizer, scheduler, keep: int = 2) -> Path:
    """Write ``root/step_<step>`` atomically and keep only the newest ``keep`` checkpoints."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{PREFIX}{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda{i}"] = state
    save_file(rng, str(tmp / "rng.safetensors"))
    meta = {"step": step, "optimizer": opt_meta, "scheduler": scheduler.state_dict()}
    (tmp / "state.json").write_text(json.dumps(meta))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob(f"{PREFIX}*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    root = Path(root)
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob(f"{PREFIX}*") if (p / "state.json").is_file())
    return done[-1] if done else None


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer, scheduler, device: torch.device) -> int:
    """Restore model, optimizer, scheduler and RNG state in place; returns the step."""
    path = Path(path)
    meta = json.loads((path / "state.json").read_text())
    model.load_state_dict(load_file(str(path / "model.safetensors"), device=str(device)), strict=True)
    opt_state = _unflatten_optimizer(load_file(str(path / "optimizer.safetensors"), device=str(device)), meta["optimizer"])
    optimizer.load_state_dict(opt_state)
    scheduler.load_state_dict(meta["scheduler"])
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda"))]
        if states:
            torch.cuda.set_rng_state_all(states)
    return int(meta["step"])
