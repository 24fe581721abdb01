"""synth_data: generate the embedded street-to-shop benchmark as a Dataset artifact."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def synth_data(data: Output[Dataset], preset: str = "tiny", seed: int = 0) -> None:
    """Generate the street-to-shop benchmark (catalog, street queries, reformulations).

    Args:
        preset: Benchmark preset: tiny, default or holdout.
        seed: Random seed of the generator.

    Returns:
        data: The dataset folder (catalog.parquet, interactions.parquet,
            reformulations.parquet, images/) following the vsearch data contract.
    """
    from vsearch.data.synth import generate

    # overwrite: a retried attempt may find the folder of a failed one.
    summary = generate(data.path, preset, seed=seed, overwrite=True)
    data.metadata.update({k: summary[k] for k in ("preset", "seed", "products", "queries") if k in summary})
