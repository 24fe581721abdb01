"""The training loop: AdamW + warmup/cosine, grad clipping, bf16 on GPU, exact resume.

``train`` works in ``<out>.partial`` (checkpoints, tokenizer, metrics log) and publishes the
finished model folder to ``<out>`` by rename at the end. A rerun with the same config
resumes from the newest checkpoint and continues the same loss curve.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from vsearch import artifacts, faults, schema
from vsearch.config import ConfigError, RunConfig, TrainConfig, to_dict
from vsearch.data.dataset import Collator, EngagementDataset, UniqueProductBatchSampler
from vsearch.data.reformulations import mine_reformulations
from vsearch.data.transforms import build_augment
from vsearch.lineage import code_version
from vsearch.losses import MultiTowerLoss
from vsearch.model_folder import CONFIG_FILE, METRICS_LOG, RUN_CONFIG_FILE, SUMMARY_FILE, TOKENIZER_DIR
from vsearch.models.multitower import MultiTowerModel, build_model, load_model
from vsearch.models.tokenizer import load_tokenizer, train_title_tokenizer
from vsearch.schema import DataError
from vsearch.training import checkpoint, distributed
from vsearch.training.device import require_cuda

FINGERPRINT_FILE = "fingerprint.json"


def pick_device(name: str, env: distributed.DistEnv) -> torch.device:
    """The torch device for ``train.device``; ConfigError when this machine has no such device,
    or when the step was given an accelerator and sees no CUDA (`vsearch.training.device`)."""
    require_cuda()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device("cuda", env.local_rank) if name == "cuda" else torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ConfigError(f"train.device={name!r}: no such device on this machine ({count} CUDA device(s))")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"train.device={name!r}: MPS is not available on this machine")
    return device


def lr_lambda(warmup_steps: int, total_steps: int):
    """Linear warmup to 1 then cosine decay to 0 (multiplier of the base lr)."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and the temperature (as CLIP/open_clip).

    The image backbone's parameters get ``lr * cfg.image_backbone_lr_scale`` and the text
    backbone's ``lr * cfg.text_backbone_lr_scale`` (a pretrained backbone is usually fine-tuned
    more gently than the freshly initialised heads).
    """
    scales = {"image_encoder.backbone.": cfg.image_backbone_lr_scale, "text_encoder.backbone.": cfg.text_backbone_lr_scale}
    # Plain groups first (decay, no decay: the historical order, and group 0's lr is the one
    # logged), then image backbone groups, then text backbone groups, each only when scaled.
    buckets: dict[tuple[str, bool], list] = {(g, d): [] for g in ("", *scales) for d in (True, False)}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decays = not (param.ndim < 2 or "logit_scale" in name)
        group = next((prefix for prefix, scale in scales.items() if scale != 1.0 and prefix in name), "")
        buckets[(group, decays)].append(param)
    groups = [
        {"params": params, "weight_decay": cfg.weight_decay if decays else 0.0, "lr": cfg.lr * scales.get(group, 1.0)}
        for (group, decays), params in buckets.items()
        if params or not group  # keep the two plain groups even when empty (as before)
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def _fingerprint(cfg: RunConfig, data_dir: str, init: str | None) -> str:
    payload = json.dumps({"config": to_dict(cfg), "data": str(Path(data_dir).resolve()), "init": init}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _staged_fingerprint(staging: Path) -> str | None:
    """The fingerprint of the run in ``staging``: its marker, or (from the moment the
    finished model is written there) the summary's, so a kill in the publish window
    leaves a run the same command finishes."""
    for name in (FINGERPRINT_FILE, SUMMARY_FILE):
        try:
            return json.loads((staging / name).read_text())["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _finished(staging: Path) -> bool:
    """The run in ``staging`` is complete: only the publish (a rename) is left to do."""
    return (staging / SUMMARY_FILE).is_file()


def _prepare_staging(out: Path, fingerprint: str, restart: bool) -> Path:
    """The staging dir of ``out``: kept when it holds a run of this fingerprint (to resume),
    created when absent; a leftover run of another config is refused unless ``restart``.
    A leftover with nothing to resume (no checkpoint, not finished) is simply replaced."""
    staging = artifacts.staging_path(out)
    if staging.exists() and not restart and _staged_fingerprint(staging) != fingerprint:
        resumable = checkpoint.latest_checkpoint(staging / "checkpoints") is not None or _finished(staging)
        if resumable:
            raise ConfigError(
                f"{staging}: an unfinished run with a different config, data or init is there; "
                "pass --restart to discard it"
            )
        restart = True
    if staging.exists() and restart:
        shutil.rmtree(staging)
    if staging.exists():
        return staging
    staging.mkdir(parents=True)
    with artifacts.staged_file(staging / FINGERPRINT_FILE) as tmp:
        tmp.write_text(json.dumps({"fingerprint": fingerprint}))
    return staging


def check_batch_fits(cfg: RunConfig, train_rows: pd.DataFrame, data_dir: str) -> None:
    """ConfigError when one batch needs more distinct products than the training split has
    (batches hold unique products: in-batch negatives)."""
    products = int(train_rows["product_id"].nunique())
    if cfg.data.batch_size > products:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size}: must be <= {products}, the number of training products in {data_dir}"
        )


def _training_rows(data_dir: str):
    catalog, interactions, _ = schema.read_dataset(data_dir)
    schema.product_splits(interactions)  # leakage between splits stops training here
    train_rows = interactions[interactions["split"] == "train"]
    if train_rows.empty:
        raise DataError(Path(data_dir) / schema.INTERACTIONS_FILE, "no rows with split == 'train'")
    return catalog, train_rows


def _tokenizer_for(cfg: RunConfig, staging: Path, init_tokenizer, catalog, train_rows):
    if not any(t in schema.TEXT_TOWERS for t in cfg.model.towers) and init_tokenizer is None:
        return None
    tok_dir = staging / TOKENIZER_DIR
    if tok_dir.is_dir():
        return load_tokenizer(str(tok_dir))
    if init_tokenizer is not None:
        tokenizer = init_tokenizer
    elif cfg.model.text.pretrained:
        tokenizer = load_tokenizer(cfg.model.text.pretrained)
    else:
        # Trained on training-split titles and query texts only: nothing from test products.
        train_products = catalog[catalog["product_id"].isin(train_rows["product_id"])]
        texts = list(train_products["title"]) + list(train_rows["query_text"])
        tokenizer = train_title_tokenizer(texts, cfg.model.tokenizer_vocab_size, cfg.model.max_text_length)
    tokenizer.save_pretrained(tok_dir)
    return tokenizer


def _model_for(cfg: RunConfig, init: str | None, tokenizer) -> tuple[MultiTowerModel, RunConfig]:
    if init is None:
        return build_model(cfg.model, tokenizer), cfg
    model, _ = load_model(init)
    if any(t in schema.TEXT_TOWERS for t in cfg.model.towers) and not model.has_text:
        raise ConfigError(f"--init {init}: that model has no text encoder; towers {cfg.model.towers} need one")
    model.set_towers(cfg.model.towers)
    model.cfg = dataclasses.replace(model.cfg, fusion_text_weight=cfg.model.fusion_text_weight)
    # The architecture is the init model's; record that in the run config.
    return model, dataclasses.replace(cfg, model=model.cfg)


class _Progress:
    """tqdm bar on an interactive main process; plain periodic lines otherwise."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
        self.enabled, self.total = enabled, total

    def update(self, step: int, record: dict, every: int) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", sps=f"{record['samples_per_s']:.0f}")
        elif step % every == 0 or step == self.total:
            print(
                f"step {step}/{self.total} loss {record['loss']:.4f} lr {record['lr']:.2e} "
                f"{record['samples_per_s']:.0f} samples/s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(
    cfg: RunConfig,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    init: str | os.PathLike | None = None,
    *,
    restart: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    uris: dict[str, str] | None = None,
) -> dict:
    """Train one model and publish it to ``out_dir``.

    Long because: data, DDP, checkpoints and publishing in one pass; the prepare / epoch / finish split is issue 22 item 2.

    Args:
        cfg: the run config (towers, loss pairs, data, optimisation).
        data_dir: folder with the manifests of the data contract.
        out_dir: where the finished model folder is published.
        init: a model folder to start from (the 4-tower model starts from the 3-tower one).
        restart: discard an unfinished run in ``<out_dir>.partial`` instead of resuming it.
        stop_after: stop (without publishing) once this step is reached: simulates a
            preemption in tests; the next call resumes.
        progress: show a progress bar / progress lines on the main process.
        uris: the durable URIs of ``data``, ``out`` and ``init`` (KFP artifacts' ``uri``) when
            the arguments are where one pod mounted them: the summary and the drift reference
            record these, never the pod's folders.

    Returns:
        The training summary (steps, seconds, samples/s, final loss terms, output path).

    Raises:
        DataError: a manifest or image is missing or broken (before any training step).
        ConfigError: a config that does not fit, or an unfinished run of another config.
    """
    data_dir, out = str(data_dir), Path(out_dir)
    init = str(init) if init is not None else None
    record = dict(uris or {})
    env = distributed.detect()
    device = pick_device(cfg.train.device, env)
    distributed.init(env, device)
    torch.manual_seed(cfg.train.seed)
    fingerprint = _fingerprint(cfg, data_dir, init)
    if env.is_main:
        artifacts.recover(out)  # a previous output a kill inside publish() left aside
    done = _finished_run(out, fingerprint) if not restart else None
    distributed.barrier()  # every rank has read the summary before the main rank publishes
    if done is not None:
        if env.is_main:
            _publish_run(artifacts.staging_path(out), out)
        distributed.barrier()
        distributed.shutdown(env)
        return done

    catalog, train_rows = _training_rows(data_dir)
    check_batch_fits(cfg, train_rows, data_dir)
    if cfg.data.mine_reformulations > 0:
        mined = mine_reformulations(
            catalog, train_rows, group_by=cfg.data.reformulation_group, attribute=cfg.data.reformulation_attribute,
            per_row=cfg.data.mine_reformulations, seed=cfg.train.seed,
        )
        mined.index = pd.RangeIndex(int(train_rows.index.max()) + 1, int(train_rows.index.max()) + 1 + len(mined))
        train_rows = pd.concat([train_rows.assign(engagement=True), mined])
    dataset = EngagementDataset(data_dir, catalog, train_rows, cfg.model.image_size, cache=cfg.data.cache_images)
    if cfg.data.cache_images:
        dataset.preload()  # every bad image fails here, before a staging folder exists

    init_model_tokenizer = load_model(init)[1] if init is not None else None
    # The main rank owns the staging folder and trains the tokenizer; the others then read.
    if env.is_main:
        staging = _prepare_staging(out, fingerprint, restart)
        tokenizer = _tokenizer_for(cfg, staging, init_model_tokenizer, catalog, train_rows)
    distributed.barrier()
    if not env.is_main:
        staging = artifacts.staging_path(out)
        tokenizer = _tokenizer_for(cfg, staging, init_model_tokenizer, catalog, train_rows)
    model, cfg = _model_for(cfg, init, tokenizer)
    if env.is_main:
        (staging / RUN_CONFIG_FILE).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    model.to(device)
    loss_fn = MultiTowerLoss(cfg.loss.pairs)
    groups = dataset.groups(cfg.data.group_by) if cfg.data.group_by else None
    sampler = UniqueProductBatchSampler(
        dataset.product_index, cfg.data.batch_size, cfg.train.seed, env.rank, env.world_size, groups, cfg.data.groups_per_batch
    )
    steps_per_epoch = len(sampler)
    if steps_per_epoch == 0:
        raise DataError(Path(data_dir) / schema.INTERACTIONS_FILE, "too few training rows for one batch", detail=f"batch {cfg.data.batch_size}")
    total_steps = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * steps_per_epoch))
    optimizer = build_optimizer(model, cfg.train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.train.warmup_steps, total_steps))
    size = cfg.model.image_size
    augment = {
        schema.QUERY_IMAGE: build_augment(cfg.data.augment, size),
        schema.PRODUCT_IMAGE: build_augment(cfg.data.augment_product, size),
    }
    collator = Collator(cfg.model.towers, tokenizer, cfg.model.max_text_length, cfg.model.image_mean, cfg.model.image_std, augment)

    step = 0
    ckpt_root = staging / "checkpoints"
    latest = checkpoint.latest_checkpoint(ckpt_root)
    if latest is not None:
        step = checkpoint.load_checkpoint(latest, model, optimizer, scheduler, device)
    log_path = staging / METRICS_LOG
    if env.is_main:
        _truncate_log(log_path, step)

    train_model = model
    if env.enabled:
        if device.type == "cuda":  # batch-norm statistics over the global batch (CUDA only)
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif env.is_main and distributed.uses_batch_statistics(model):
            # torch's SyncBatchNorm rejects CPU tensors: each rank normalises its own slice.
            print(
                f"warning: {cfg.name}: BatchNorm layers use per-rank batch statistics on {device.type} "
                "(SyncBatchNorm needs CUDA); the loss curve will differ slightly from one process",
                file=sys.stderr,
                flush=True,
            )
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    use_bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
    bar = _Progress(total_steps, step, progress and env.is_main)
    started, samples = time.perf_counter(), 0
    last: dict = {}
    model.train()
    while step < total_steps and (stop_after is None or step < stop_after):
        epoch, offset = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch, offset)
        # Its own generator: making a loader must not draw from the global RNG, or a run
        # resumed mid-epoch would see other dropout masks than the uninterrupted one.
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collator,
            num_workers=cfg.data.num_workers,
            generator=torch.Generator().manual_seed(cfg.train.seed * 100_003 + epoch + 10_007 * env.rank),
        )
        if (rank_seed := distributed.rank_seed(cfg.train.seed, step, env)) is not None:
            torch.manual_seed(rank_seed)  # this rank's augmentation + dropout stream for the next batch
        t0 = time.perf_counter()  # a step's time includes fetching and collating its batch
        progressed = False
        for batch in loader:
            progressed = True
            batch = _to_device(batch, device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                out_features = train_model(batch)
            terms = loss_fn(**{k: (v.float() if torch.is_floating_point(v) else v) for k, v in out_features.items()})
            loss = sum(terms.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip) if cfg.train.grad_clip > 0 else None
            optimizer.step()
            scheduler.step()
            step += 1
            dt = time.perf_counter() - t0
            samples += cfg.data.batch_size
            last = {
                "step": step,
                "epoch": epoch,
                "lr": scheduler.get_last_lr()[0],
                "loss": distributed.all_reduce_mean(float(loss.detach())),
                **{k: float(v.detach()) for k, v in terms.items()},
                "logit_scale": float(out_features["logit_scale"].detach()),
                "grad_norm": float(grad_norm) if grad_norm is not None else None,
                "step_seconds": dt,
                "samples_per_s": cfg.data.batch_size / dt if dt > 0 else 0.0,
            }
            if not math.isfinite(last["loss"]):
                raise FloatingPointError(f"loss is {last['loss']} at step {step}; see {log_path}")
            if env.is_main:
                with log_path.open("a") as fh:
                    fh.write(json.dumps(last) + "\n")
            bar.update(step, last, cfg.train.log_every)
            if env.is_main and cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0:
                checkpoint.save_checkpoint(ckpt_root, step, model, optimizer, scheduler)
                faults.fault_point("train.checkpoint")
            if step >= total_steps or (stop_after is not None and step >= stop_after):
                break
            if (rank_seed := distributed.rank_seed(cfg.train.seed, step, env)) is not None:
                torch.manual_seed(rank_seed)
            t0 = time.perf_counter()
        if not progressed:
            raise RuntimeError(f"the sampler yielded no batch for epoch {epoch} at offset {offset}")
    bar.close()
    seconds = time.perf_counter() - started
    summary = {
        "name": cfg.name,
        "steps": step,
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "global_batch": cfg.data.batch_size,
        "world_size": env.world_size,
        "device": str(device),
        "seconds": seconds,
        "samples_per_s": samples / seconds if seconds > 0 else 0.0,
        "final": last,
        "init": artifacts.durable_uri(record.get("init") or init) if init else None,
        "data": artifacts.durable_uri(record.get("data") or data_dir),
        "train_rows": len(dataset),
        "towers": list(cfg.model.towers),
        "loss_terms": loss_fn.term_names,
        "code_version": code_version(),
    }
    if stop_after is not None and step < total_steps:
        if env.is_main:  # a preemption: the state to resume from is the checkpoint
            checkpoint.save_checkpoint(ckpt_root, step, model, optimizer, scheduler)
        return {**summary, "published": False, "out": str(staging)}
    summary["published"], summary["out"] = True, artifacts.durable_uri(record.get("out") or out)
    if env.is_main:
        faults.fault_point("train.save_model")
        model.save_pretrained(staging, tokenizer=tokenizer)
        # The drift monitor's reference window, saved with the model (vsearch.monitoring).
        from vsearch.monitoring.reference import save_reference

        save_reference(staging, data_dir, model=model, published_as=summary["out"], data_uri=summary["data"])
        # Written last and atomically: from here on the staged run is finished, and a rerun
        # of the same command (same fingerprint) only publishes it.
        with artifacts.staged_file(staging / SUMMARY_FILE) as tmp:
            tmp.write_text(json.dumps({**summary, "fingerprint": fingerprint}, indent=2))
        faults.fault_point("train.finished")
        _publish_run(staging, out)
    distributed.barrier()
    distributed.shutdown(env)
    return summary


def _finished_run(out: Path, fingerprint: str) -> dict | None:
    """The summary of a finished, unpublished run of this fingerprint in ``<out>.partial``."""
    staging = artifacts.staging_path(out)
    if not (_finished(staging) and _staged_fingerprint(staging) == fingerprint):
        return None
    summary = json.loads((staging / SUMMARY_FILE).read_text())
    summary.pop("fingerprint", None)
    return summary


def _publish_run(staging: Path, out: Path) -> None:
    """Drop the resume state of a finished run and publish it; safe to repeat after a kill."""
    shutil.rmtree(staging / "checkpoints", ignore_errors=True)
    (staging / FINGERPRINT_FILE).unlink(missing_ok=True)
    artifacts.publish(staging, out)


def _to_device(batch: dict, device: torch.device) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, dict):
            out[key] = {k: v.to(device, non_blocking=True) for k, v in value.items()}
        elif torch.is_tensor(value):
            out[key] = value.to(device, non_blocking=True)
        else:
            out[key] = value
    return out


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines after ``step`` (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def read_metrics_log(model_dir: str | os.PathLike) -> list[dict]:
    path = Path(model_dir) / METRICS_LOG
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def main(argv: list[str] | None = None) -> int:
    """``vsearch train --config NAME --data DIR --out DIR [--init MODEL] [key=value ...]``."""
    import argparse

    from vsearch.config import load_config

    parser = argparse.ArgumentParser(prog="vsearch train", description="Train an image-only, 3-tower or 4-tower model.")
    parser.add_argument("--config", required=True, help="preset name (image_only, three_tower, four_tower, tiny ...) or YAML path")
    parser.add_argument("--data", required=True, help="dataset folder (catalog/interactions parquet + images)")
    parser.add_argument("--out", required=True, help="model folder to publish (written atomically)")
    parser.add_argument("--init", help="start from this model folder (4-tower from the 3-tower model)")
    parser.add_argument("--restart", action="store_true", help="discard an unfinished run instead of resuming it")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument(
        "--nproc-per-node", type=int, default=1, metavar="N",
        help="run N processes on this node under torchrun (DDP: gloo on CPU, NCCL with one GPU each); "
        "data.batch_size stays the global batch",
    )
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4 data.batch_size=32")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    artifacts.check_out(args.out, [args.data, args.init], ours=(CONFIG_FILE,))
    if args.nproc_per_node != 1:
        return _launch_torchrun(list(sys.argv[1:] if argv is None else argv), args.nproc_per_node, cfg)
    summary = train(cfg, args.data, args.out, args.init, restart=args.restart, progress=not args.quiet)
    if distributed.detect().rank != 0:
        return 0
    final = summary["final"]
    print(json.dumps({k: summary[k] for k in ("name", "steps", "seconds", "samples_per_s", "out")} | {"loss": final.get("loss")}))
    return 0


def _launch_torchrun(argv: list[str], nproc: int, cfg: RunConfig) -> int:
    """Re-run this command under ``torch.distributed.run --standalone`` with ``nproc`` workers.

    Equivalent to ``torchrun --standalone --nproc-per-node N -m vsearch.training.loop ARGS``;
    returns the launcher's exit status.
    """
    import subprocess

    if nproc < 1:
        raise ConfigError(f"--nproc-per-node must be >= 1, got {nproc}")
    if "LOCAL_RANK" in os.environ:
        raise ConfigError("--nproc-per-node with torchrun: the launcher already sets the world size; drop one of them")
    if cfg.data.batch_size % nproc:
        raise ConfigError(f"data.batch_size {cfg.data.batch_size} (the global batch) must be divisible by --nproc-per-node {nproc}")
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            rest.append(arg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "vsearch.training.loop", *rest]
    return subprocess.run(cmd, check=False).returncode


if __name__ == "__main__":  # torchrun -m vsearch.training.loop ...: same errors and exit codes as `vsearch train`
    from vsearch.errors import run_stage
    from vsearch.training import loop  # the package's copy of this module, the one `vsearch train` runs

    sys.exit(run_stage("train", loop.main, sys.argv[1:]))
