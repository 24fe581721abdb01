"""Fixtures of the integration tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def real_milvus(tmp_path_factory, tiny_data, tiny_models):
    """One real Milvus 2.3.5 server run (network namespace, loopback only) shared by the server
    tests: the JSON of milvus_netns.run_on_one_server, each test file's result under ``parts``.
    Skips every test that asks for it, with the reason, where the server cannot start here."""
    from milvus_netns import run_on_one_server

    work = tmp_path_factory.mktemp("milvus-server")
    return run_on_one_server(work, tiny_data, tiny_models["three_tower"], tiny_models["image_only"])
