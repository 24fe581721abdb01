"""embed_shard: embed one contiguous shard of the catalog (one ParallelFor iteration of the backfill)."""

from typing import List, Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def embed_shard(
    model: Input[Model],
    data: Input[Dataset],
    shard: int,
    num_shards: int,
    embeddings: Output[Dataset],
    metrics: Output[Metrics],
    overrides: Optional[List[str]] = None,
) -> None:
    """Embed catalog rows [shard*n/num_shards, (shard+1)*n/num_shards) with the product-image tower.

    Args:
        model: The model folder whose product-image tower embeds the catalog.
        data: Dataset folder whose catalog is embedded.
        shard: This shard's number, 0-based.
        num_shards: Number of shards.
        overrides: Dotted index config overrides, e.g. "backfill.batch_size=256".

    Returns:
        embeddings: Parquet file: product_id, category, embedding (float32, L2-normalised).
        metrics: rows, seconds, rows per second.
    """
    import torch

    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.shards import embed_shard as embed
    from vsearch.training.device import require_cuda

    require_cuda()  # a step given a GPU (VSEARCH_REQUIRE_CUDA=1) that sees none stops here, in one line
    cfg = load_index_config(None, list(overrides or []))
    # A GPU node (compile-time accelerator settings) encodes on the GPU; a CPU one as configured.
    device = "cuda" if torch.cuda.is_available() else cfg.backfill.device
    summary = embed(model.path, data.path, int(shard), int(num_shards), embeddings.path, cfg, device=device)
    metrics.log_metric("rows", float(summary["rows"]))
    metrics.log_metric("seconds", float(summary["seconds"]))
    metrics.log_metric("rows_per_s", round(summary["rows"] / summary["seconds"], 1) if summary["seconds"] > 0 else 0.0)
    embeddings.metadata.update({k: summary[k] for k in ("shard", "num_shards", "rows", "model_version", "dim")})
