"""plan_shards: the shard numbers a sharded backfill fans out over (dsl.ParallelFor items)."""

from typing import List

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def plan_shards(num_shards: int) -> List[int]:
    """The shard numbers 0..num_shards-1 (a single list output: ParallelFor over a NamedTuple field crashes).

    Args:
        num_shards: How many parallel embedding steps (at least 1).

    Returns:
        Output: [0, 1, ..., num_shards - 1].
    """
    from vsearch.config import ConfigError

    if num_shards < 1:
        raise ConfigError(f"num_shards must be >= 1, got {num_shards}")
    return list(range(num_shards))
