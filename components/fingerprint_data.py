"""fingerprint_data: the content fingerprint of a dataset, so that KFP's cache key follows content, not the URI."""

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def fingerprint_data(data_uri: str) -> str:
    """Fingerprint the manifests of the dataset at ``data_uri`` (never cached).

    The importer of the import pipelines carries the fingerprint as artifact metadata: KFP
    reuses an imported artifact only when URI *and* metadata match, and the cache key of every
    later step names its input artifacts. A changed dataset under the same URI (``.../latest``)
    therefore imports as a new artifact and validation, training and evaluation run again;
    an unchanged one keeps their cached results.

    Args:
        data_uri: Dataset folder (local path or fsspec URI) following the vsearch data contract.

    Returns:
        Output: sha256 (16 hex) over catalog, interactions and reformulations manifests.
    """
    from vsearch.lineage import data_fingerprint
    from vsearch.schema import DataError

    fingerprint = data_fingerprint(data_uri)
    if fingerprint is None:
        raise DataError(data_uri, "dataset folder not found")
    return fingerprint
