"""The training loop: AdamW + warmup/cosine, grad clipping, bf16 on GPU, exact resume.

``train`` works in ``<out>.partial`` (checkpoints, tokenizer, metrics log) and publishes the
finished model folder to ``<out>`` by rename at the end. A rerun with the same config
resumes from the newest checkpoint and continues the same loss curve.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
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
from vsearch.config import ConfigError, DataConfig, RunConfig, TrainConfig, to_dict
from vsearch.data.dataset import Collator, EngagementDataset, UniqueProductBatchSampler
from vsearch.data.reformulations import mine_reformulations
from vsearch.data.transforms import build_augment
from vsearch.lineage import code_version
from vsearch.memory import keep_freed_memory
from vsearch.model_folder import CONFIG_FILE, METRICS_LOG, RUN_CONFIG_FILE, SUMMARY_FILE, TOKENIZER_DIR
from vsearch.models.multitower import MultiTowerModel, build_model, load_model
from vsearch.models.tokenizer import load_tokenizer, train_title_tokenizer
from vsearch.schema import DataError
from vsearch.training import checkpoint, distributed
from vsearch.training.device import require_cuda
from vsearch.training.task import TrainingTask

FINGERPRINT_FILE = "fingerprint.json"
logger = logging.getLogger(__name__)


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


def check_batch_fits(data: DataConfig, train_rows: pd.DataFrame, data_dir: str) -> None:
    """ConfigError when one batch needs more distinct products than the training split has
    (batches hold unique products: in-batch negatives)."""
    products = int(train_rows["product_id"].nunique())
    if data.batch_size > products:
        raise ConfigError(
            f"data.batch_size={data.batch_size}: must be <= {products}, the number of training products in {data_dir}"
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
    # What trains is this run's choice (the 4-tower fine-tunes the title encoder its 3-tower froze).
    model.set_backbone_training(cfg.model.image, cfg.model.text)
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


@dataclasses.dataclass
class TrainState:
    """Everything one training run carries from ``prepare`` through ``run_epoch`` to ``finish``."""

    cfg: RunConfig
    env: distributed.DistEnv
    device: torch.device
    data_dir: str
    out: Path
    init: str | None
    uris: dict[str, str]
    fingerprint: str
    staging: Path
    tokenizer: object
    dataset: EngagementDataset
    mined: dict
    model: MultiTowerModel
    task: TrainingTask
    train_task: torch.nn.Module  # the task, DDP-wrapped when distributed
    sampler: UniqueProductBatchSampler
    collator: Collator
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    total_steps: int
    step: int = 0
    samples: int = 0
    last: dict = dataclasses.field(default_factory=dict)

    @property
    def ckpt_root(self) -> Path:
        return self.staging / "checkpoints"

    @property
    def log_path(self) -> Path:
        return self.staging / METRICS_LOG

    @property
    def steps_per_epoch(self) -> int:
        return len(self.sampler)

    def stopped(self, stop_after: int | None) -> bool:
        return self.step >= self.total_steps or (stop_after is not None and self.step >= stop_after)


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
    """Train one model and publish it to ``out_dir``: ``prepare``, ``run_epoch`` until done, ``finish``.

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
            the arguments are where one pod mounted them: the summary records these, never
            the pod's folders.

    Returns:
        The training summary (steps, seconds, samples/s, final loss terms, output path).

    Raises:
        DataError: a manifest or image is missing or broken (before any training step).
        ConfigError: a config that does not fit, or an unfinished run of another config.
    """
    data_dir, out = str(data_dir), Path(out_dir)
    init = str(init) if init is not None else None
    env = distributed.detect()
    device = pick_device(cfg.train.device, env)
    keep_freed_memory(device)  # 1.19x on the demo's trainings (vsearch.memory)
    distributed.init(env, device)
    torch.manual_seed(cfg.train.seed)
    fingerprint = _fingerprint(cfg, data_dir, init)
    done = _republish_finished(env, out, fingerprint, restart)
    if done is not None:
        return done
    state = prepare(cfg, data_dir, out, init, env=env, device=device, fingerprint=fingerprint, restart=restart, uris=uris)
    bar = _Progress(state.total_steps, state.step, progress and env.is_main)
    started = time.perf_counter()
    state.model.train()
    while not state.stopped(stop_after):
        run_epoch(state, stop_after=stop_after, bar=bar)
    bar.close()
    return finish(state, time.perf_counter() - started, stop_after=stop_after)


def _republish_finished(env: distributed.DistEnv, out: Path, fingerprint: str, restart: bool) -> dict | None:
    """The summary of a finished run of this fingerprint, published again (after a kill in
    publishing); None when there is a run to train (every rank then goes on)."""
    if env.is_main:
        artifacts.recover(out)  # a previous output a kill inside publish() left aside
    done = _finished_run(out, fingerprint) if not restart else None
    distributed.barrier()  # every rank has read the summary before the main rank publishes
    if done is None:
        return None
    if env.is_main:
        _publish_run(artifacts.staging_path(out), out)
    distributed.barrier()
    distributed.shutdown(env)
    return done


def prepare(
    cfg: RunConfig,
    data_dir: str,
    out: Path,
    init: str | None,
    *,
    env: distributed.DistEnv,
    device: torch.device,
    fingerprint: str,
    restart: bool = False,
    uris: dict[str, str] | None = None,
) -> TrainState:
    """Data, staging folder, tokenizer, model + loss task, optimizer and the step to resume from."""
    catalog, train_rows, mined = _training_data(cfg.data, cfg.train.seed, data_dir)
    dataset = EngagementDataset(data_dir, catalog, train_rows, cfg.model.image_size, cache=cfg.data.cache_images)
    if cfg.data.cache_images:
        dataset.preload()  # every bad image fails here, before a staging folder exists
    staging, tokenizer = _staging_and_tokenizer(cfg, env, out, init, fingerprint, restart, catalog, train_rows)
    model, cfg = _model_for(cfg, init, tokenizer)
    if env.is_main:
        (staging / RUN_CONFIG_FILE).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    model.to(device)
    task = TrainingTask(model, cfg.loss, use_bf16=_use_bf16(cfg.train, device))
    sampler = _sampler_for(dataset, cfg.data, cfg.train.seed, env, data_dir)
    total_steps = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * len(sampler)))
    optimizer = build_optimizer(model, cfg.train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.train.warmup_steps, total_steps))
    state = TrainState(
        cfg=cfg, env=env, device=device, data_dir=data_dir, out=out, init=init, uris=dict(uris or {}),
        fingerprint=fingerprint, staging=staging, tokenizer=tokenizer, dataset=dataset, mined=mined,
        model=model, task=task, train_task=task, sampler=sampler,
        collator=_collator_for(cfg, tokenizer), optimizer=optimizer, scheduler=scheduler, total_steps=total_steps,
    )
    latest = checkpoint.latest_checkpoint(state.ckpt_root)
    if latest is not None:
        state.step = checkpoint.load_checkpoint(latest, model, optimizer, scheduler, device)
        if env.is_main:
            logger.warning("resuming %s from its step-%d checkpoint (%d of %d steps left; --restart discards it)",
                           staging, state.step, total_steps - state.step, total_steps)
    if env.is_main:
        _truncate_log(state.log_path, state.step)
    state.train_task = _distributed_task(task, env, device, cfg.name)
    return state


def _training_data(data: DataConfig, seed: int, data_dir: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Catalog, training rows (with mined reformulations when configured) and what mining added."""
    catalog, train_rows = _training_rows(data_dir)
    check_batch_fits(data, train_rows, data_dir)
    if data.mine_reformulations <= 0:
        return catalog, train_rows, {"rows": 0}
    mined = mine_reformulations(
        catalog, train_rows, group_by=data.reformulation_group, attribute=data.reformulation_attribute,
        per_row=data.mine_reformulations, seed=seed,
    )
    skipped = mined.attrs.get("skipped")
    if skipped:
        logger.warning("mined reformulations skipped: %s", skipped)
        return catalog, train_rows, {"rows": 0, "skipped": skipped}
    first = int(train_rows.index.max()) + 1
    mined.index = pd.RangeIndex(first, first + len(mined))
    return catalog, pd.concat([train_rows.assign(engagement=True), mined]), {"rows": len(mined)}


def _staging_and_tokenizer(cfg: RunConfig, env, out: Path, init, fingerprint: str, restart: bool, catalog, train_rows):
    """The main rank owns the staging folder and trains the tokenizer; the others then read."""
    init_model_tokenizer = load_model(init)[1] if init is not None else None
    if env.is_main:
        staging = _prepare_staging(out, fingerprint, restart)
        tokenizer = _tokenizer_for(cfg, staging, init_model_tokenizer, catalog, train_rows)
    distributed.barrier()
    if not env.is_main:
        staging = artifacts.staging_path(out)
        tokenizer = _tokenizer_for(cfg, staging, init_model_tokenizer, catalog, train_rows)
    return staging, tokenizer


def _sampler_for(dataset: EngagementDataset, data: DataConfig, seed: int, env, data_dir: str) -> UniqueProductBatchSampler:
    groups = dataset.groups(data.group_by) if data.group_by else None
    sampler = UniqueProductBatchSampler(
        dataset.product_index, data.batch_size, seed, env.rank, env.world_size, groups, data.groups_per_batch
    )
    if len(sampler) == 0:
        raise DataError(Path(data_dir) / schema.INTERACTIONS_FILE, "too few training rows for one batch", detail=f"batch {data.batch_size}")
    return sampler


def _collator_for(cfg: RunConfig, tokenizer) -> Collator:
    size = cfg.model.image_size
    augment = {
        schema.QUERY_IMAGE: build_augment(cfg.data.augment, size),
        schema.PRODUCT_IMAGE: build_augment(cfg.data.augment_product, size),
    }
    return Collator(cfg.model.towers, tokenizer, cfg.model.max_text_length, cfg.model.image_mean, cfg.model.image_std, augment)


def _use_bf16(train_cfg: TrainConfig, device: torch.device) -> bool:
    return train_cfg.precision == "bf16" or (train_cfg.precision == "auto" and device.type == "cuda")


def _distributed_task(task: TrainingTask, env: distributed.DistEnv, device: torch.device, name: str) -> torch.nn.Module:
    """The task as the loop calls it: DDP-wrapped (with SyncBatchNorm on CUDA) when distributed."""
    if not env.enabled:
        return task
    if device.type == "cuda":  # batch-norm statistics over the global batch (CUDA only)
        task = torch.nn.SyncBatchNorm.convert_sync_batchnorm(task)
    elif env.is_main and distributed.uses_batch_statistics(task):
        # torch's SyncBatchNorm rejects CPU tensors: each rank normalises its own slice.
        print(
            f"warning: {name}: BatchNorm layers use per-rank batch statistics on {device.type} "
            "(SyncBatchNorm needs CUDA); the loss curve will differ slightly from one process",
            file=sys.stderr,
            flush=True,
        )
    return torch.nn.parallel.DistributedDataParallel(task, device_ids=[device.index] if device.type == "cuda" else None)


def run_epoch(state: TrainState, *, stop_after: int | None = None, bar: _Progress | None = None) -> None:
    """Train from ``state.step`` to the end of its epoch (or to the last / ``stop_after`` step)."""
    train_cfg, env = state.cfg.train, state.env
    epoch, offset = divmod(state.step, state.steps_per_epoch)
    state.sampler.set_epoch(epoch, offset)
    # Its own generator: making a loader must not draw from the global RNG, or a run
    # resumed mid-epoch would see other dropout masks than the uninterrupted one.
    loader = torch.utils.data.DataLoader(
        state.dataset,
        batch_sampler=state.sampler,
        collate_fn=state.collator,
        num_workers=state.cfg.data.num_workers,
        generator=torch.Generator().manual_seed(train_cfg.seed * 100_003 + epoch + 10_007 * env.rank),
    )
    if (rank_seed := distributed.rank_seed(train_cfg.seed, state.step, env)) is not None:
        torch.manual_seed(rank_seed)  # this rank's augmentation + dropout stream for the next batch
    t0 = time.perf_counter()  # a step's time includes fetching and collating its batch
    progressed = False
    for batch in loader:
        progressed = True
        state.last = _train_step(state, batch, epoch, t0)
        if env.is_main:
            with state.log_path.open("a") as fh:
                fh.write(json.dumps(state.last) + "\n")
        if bar is not None:
            bar.update(state.step, state.last, train_cfg.log_every)
        if env.is_main and train_cfg.checkpoint_every and state.step % train_cfg.checkpoint_every == 0:
            checkpoint.save_checkpoint(state.ckpt_root, state.step, state.model, state.optimizer, state.scheduler)
            faults.fault_point("train.checkpoint")
        if state.stopped(stop_after):
            break
        if (rank_seed := distributed.rank_seed(train_cfg.seed, state.step, env)) is not None:
            torch.manual_seed(rank_seed)
        t0 = time.perf_counter()
    if not progressed:
        raise RuntimeError(f"the sampler yielded no batch for epoch {epoch} at offset {offset}")


def _train_step(state: TrainState, batch: dict, epoch: int, t0: float) -> dict:
    """One optimizer step; its metrics record (the line the metrics log gets)."""
    train_cfg, batch_size = state.cfg.train, state.cfg.data.batch_size
    out = state.train_task(_to_device(batch, state.device))
    loss = out.pop("loss")
    logit_scale = out.pop("logit_scale")
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_clip = train_cfg.grad_clip
    grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), grad_clip) if grad_clip > 0 else None
    state.optimizer.step()
    state.scheduler.step()
    state.step += 1
    dt = time.perf_counter() - t0
    state.samples += batch_size
    record = {
        "step": state.step,
        "epoch": epoch,
        "lr": state.scheduler.get_last_lr()[0],
        "loss": distributed.all_reduce_mean(float(loss.detach())),
        **{k: float(v.detach()) for k, v in out.items()},
        "logit_scale": float(logit_scale.detach()),
        "grad_norm": float(grad_norm) if grad_norm is not None else None,
        "step_seconds": dt,
        "samples_per_s": batch_size / dt if dt > 0 else 0.0,
    }
    if not math.isfinite(record["loss"]):
        raise FloatingPointError(f"loss is {record['loss']} at step {state.step}; see {state.log_path}")
    return record


def finish(state: TrainState, seconds: float, *, stop_after: int | None = None) -> dict:
    """The summary; a finished run is saved and published, a stopped one checkpointed."""
    summary = _summary(state, seconds)
    env = state.env
    if stop_after is not None and state.step < state.total_steps:
        if env.is_main:  # a preemption: the state to resume from is the checkpoint
            checkpoint.save_checkpoint(state.ckpt_root, state.step, state.model, state.optimizer, state.scheduler)
        return {**summary, "published": False, "out": str(state.staging)}
    summary["published"], summary["out"] = True, artifacts.durable_uri(state.uris.get("out") or state.out)
    if env.is_main:
        faults.fault_point("train.save_model")
        state.model.save_pretrained(state.staging, tokenizer=state.tokenizer)
        # Written last and atomically: from here on the staged run is finished, and a rerun
        # of the same command (same fingerprint) only publishes it.
        with artifacts.staged_file(state.staging / SUMMARY_FILE) as tmp:
            tmp.write_text(json.dumps({**summary, "fingerprint": state.fingerprint}, indent=2))
        faults.fault_point("train.finished")
        _publish_run(state.staging, state.out)
    distributed.barrier()
    distributed.shutdown(env)
    return summary


def _summary(state: TrainState, seconds: float) -> dict:
    cfg, init, uris = state.cfg, state.init, state.uris
    return {
        "name": cfg.name,
        "steps": state.step,
        "total_steps": state.total_steps,
        "steps_per_epoch": state.steps_per_epoch,
        "global_batch": cfg.data.batch_size,
        "world_size": state.env.world_size,
        "device": str(state.device),
        "seconds": seconds,
        "samples_per_s": state.samples / seconds if seconds > 0 else 0.0,
        "final": state.last,
        "init": artifacts.durable_uri(uris.get("init") or init) if init else None,
        "data": artifacts.durable_uri(uris.get("data") or state.data_dir),
        "train_rows": len(state.dataset),
        "mined_reformulations": state.mined,
        "towers": list(cfg.model.towers),
        "loss_terms": state.task.term_names,
        "code_version": code_version(),
    }


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
