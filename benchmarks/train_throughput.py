"""Training throughput: our training step vs a bare forward/backward/step loop, one run.

Both run the same model config and global batch on the same machine, interleaved round by
round (the machine is shared and noisy), and report median samples/s and the ratio
ours / bare. "Ours" is `vsearch.training.loop.train` end to end per step (sampler, image
cache, collate + tokenize, forward, multi-tower loss, backward, clipping, AdamW, scheduler,
JSONL log); "bare" feeds one pre-collated batch to forward + InfoNCE terms + backward +
AdamW. A ratio near 1 means the loop adds little over the model itself.

    python benchmarks/train_throughput.py                   # three_tower, CPU, default preset data
    python benchmarks/train_throughput.py --config vit_b16  # ViT-B/16-sized; needs a GPU (bf16)

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

# ViT-B/16-sized towers for GPU runs: 224 px, patch 16, 12 x 768 image encoder; BERT-base text.
# On top of the tiny 3-tower (architectures built from config): with the lines after the towers'
# it trains as it did on the from-scratch 3-tower recipe (now experiments/configs/).
VIT_B16_OVERRIDES = [
    "model.image.type=vit",
    "model.image.kwargs={image_size: 224, patch_size: 16, hidden_size: 768, num_hidden_layers: 12, "
    "num_attention_heads: 12, intermediate_size: 3072}",
    "model.image.pooling=cls",
    "model.text.kwargs={hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, intermediate_size: 3072}",
    "model.image_size=224",
    "model.embed_dim=512",
    "data.batch_size=128",
    "model.max_text_length=32",
    "model.tokenizer_vocab_size=512",
    "data.augment=light",
    "data.augment_product=strong",
    "train.lr=1e-3",
    "train.log_every=20",
]


def bare_steps(cfg, dataset, steps: int, device: torch.device) -> list[float]:
    """Seconds per step of a bare loop over one pre-collated batch (no data pipeline, no logging)."""
    from vsearch.data.dataset import Collator
    from vsearch.losses import MultiTowerLoss
    from vsearch.models import build_model
    from vsearch.models.tokenizer import train_title_tokenizer
    from vsearch.training.loop import _to_device

    tokenizer = train_title_tokenizer([r.title for r in dataset.records], cfg.model.tokenizer_vocab_size)
    model = build_model(cfg.model, tokenizer).to(device).train()
    loss_fn = MultiTowerLoss(cfg.loss.pairs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    collator = Collator(cfg.model.towers, tokenizer, cfg.model.max_text_length)
    batch = _to_device(collator([dataset[i] for i in range(cfg.data.batch_size)]), device)
    use_bf16 = device.type == "cuda"
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = model(batch)
        loss = sum(loss_fn(**{k: (v.float() if torch.is_floating_point(v) else v) for k, v in out.items()}).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def ours_steps(cfg, data_dir: Path, out: Path, steps: int) -> list[float]:
    from vsearch.training.loop import read_metrics_log, train

    train(cfg, data_dir, out, restart=True, progress=False)
    return [r["step_seconds"] for r in read_metrics_log(out)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="three_tower", help="preset, or vit_b16 for the ViT-B/16-sized GPU config")
    parser.add_argument("--preset", default="default", help="benchmark data preset")
    parser.add_argument("--steps", type=int, default=12, help="steps per round (first 2 are warm-up, dropped)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", help="existing dataset folder (else generated in a temp dir)")
    args = parser.parse_args(argv)

    from vsearch.config import load_config
    from vsearch.data import synth
    from vsearch.data.dataset import EngagementDataset
    from vsearch.schema import read_dataset

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.config == "vit_b16" and device.type != "cuda":
        print(json.dumps({"skipped": "the ViT-B/16-sized config needs a CUDA device"}))
        return 0
    overrides = [f"train.max_steps={args.steps}", "train.checkpoint_every=0", "train.warmup_steps=1"]
    # ViT-B/16 overrides sit on the tiny 3-tower (architectures built from config; the default
    # preset's pretrained MobileNetV2/MiniLM would not take them).
    preset = "tiny" if args.config == "vit_b16" else args.config
    if args.config == "vit_b16":
        overrides += VIT_B16_OVERRIDES
    cfg = load_config(preset, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = Path(args.data) if args.data else tmp / "data"
        if not args.data:
            synth.generate(data_dir, args.preset, seed=0)
        catalog, interactions, _ = read_dataset(data_dir)
        train_rows = interactions[interactions["split"] == "train"]
        dataset = EngagementDataset(data_dir, catalog, train_rows, cfg.model.image_size)
        dataset.preload()
        ours, bare = [], []
        for r in range(args.rounds):
            ours += ours_steps(cfg, data_dir, tmp / f"model{r}", args.steps)[2:]
            bare += bare_steps(cfg, dataset, args.steps, device)[2:]
    batch = cfg.data.batch_size
    ours_sps, bare_sps = batch / statistics.median(ours), batch / statistics.median(bare)
    result = {
        "benchmark": "train_throughput",
        "config": args.config,
        "towers": cfg.model.towers,
        "global_batch": batch,
        "image_size": cfg.model.image_size,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "steps_measured": {"ours": len(ours), "bare": len(bare)},
        "ours_samples_per_s_median": round(ours_sps, 2),
        "bare_samples_per_s_median": round(bare_sps, 2),
        "ratio_ours_over_bare": round(ours_sps / bare_sps, 3),
    }
    if device.type == "cuda" and args.config == "vit_b16":
        result.update(_mfu(cfg, ours_sps))
    print(json.dumps(result))
    return 0


def _mfu(cfg, samples_per_s: float) -> dict:
    """Model FLOPs utilisation: 6 * params * tokens per sample (fwd+bwd), vs bf16 dense peak."""
    from vsearch.models import build_model
    from vsearch.models.tokenizer import train_title_tokenizer

    model = build_model(cfg.model, train_title_tokenizer(["a b c"], 300))
    image_params = sum(p.numel() for p in model.image_encoder.parameters())
    text_params = sum(p.numel() for p in model.text_encoder.parameters())
    patches = (cfg.model.image_size // 16) ** 2 + 1
    # Two images (query + product) and one title of up to max_text_length tokens per sample.
    flops_per_sample = 6 * (2 * image_params * patches + text_params * cfg.model.max_text_length)
    peak = float(os.environ.get("PEAK_BF16_TFLOPS", "989")) * 1e12  # H100 SXM dense bf16
    return {"flops_per_sample": flops_per_sample, "mfu": round(flops_per_sample * samples_per_s / peak, 4)}


if __name__ == "__main__":
    sys.exit(main())
