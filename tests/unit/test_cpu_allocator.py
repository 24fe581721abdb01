"""`vsearch.memory.keep_freed_memory`: batch steps on the CPU reuse the memory they free."""

import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc allocator setting")

# A fresh process each: allocate, touch and free 64 MB twice; count the page faults of the
# second round (the first one may fault its pages in either way).
_PROBE = textwrap.dedent("""
    import ctypes, resource, sys
    from vsearch import memory
    applied = memory.keep_freed_memory() if sys.argv[1] == "keep" else False
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    size = 64 << 20

    def once():
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(ctypes.c_void_p(block))

    once()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    once()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _second_round_faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], check=True, capture_output=True, text=True, timeout=60)
    applied, faults = out.stdout.split()
    return applied, int(faults)


def test_a_freed_block_is_reused_instead_of_being_faulted_in_again():
    default_applied, default_faults = _second_round_faults("default")
    keep_applied, keep_faults = _second_round_faults("keep")
    assert (default_applied, keep_applied) == ("False", "True")
    # glibc's default maps a 64 MB block afresh each time: 16384 faults of 4 kB pages.
    assert default_faults >= (64 << 20) // 4096 // 2
    assert keep_faults < 100


def test_it_can_be_turned_off_for_a_side_by_side(monkeypatch):
    from vsearch import memory

    monkeypatch.setattr(memory, "KEEP_FREED_MEMORY", False)
    assert memory.keep_freed_memory() is False


def test_training_evaluation_drift_snapshots_and_embedding_on_the_cpu_ask_for_it(tiny_data, tiny_models, tmp_path, monkeypatch):
    import importlib

    from vsearch.config import load_config
    from vsearch.indexing.config import IndexConfig

    loop, evaluate, reference, shards = (importlib.import_module(f"vsearch.{name}") for name in
                                         ("training.loop", "evaluation.evaluate", "monitoring.reference", "indexing.shards"))

    calls = []
    for module in (loop, evaluate, reference, shards):
        monkeypatch.setattr(module, "keep_freed_memory", lambda device, module=module: calls.append(module.__name__) or True)
    loop.train(load_config("tiny", ["train.max_steps=1"]), tiny_data, tmp_path / "m", progress=False)
    evaluate.evaluate({"image_only": tiny_models["image_only"]}, tiny_data, tmp_path / "eval", load_config("tiny").eval)
    reference.build_reference(tiny_models["image_only"], tiny_data, tmp_path / "ref")
    shards.embed_shard(tiny_models["image_only"], tiny_data, 0, 2, tmp_path / "shard.parquet", IndexConfig())
    assert calls == ["vsearch.training.loop", "vsearch.evaluation.evaluate", "vsearch.monitoring.reference",
                     "vsearch.indexing.shards"]


def test_a_step_on_another_device_leaves_the_allocator_alone():
    from vsearch import memory

    assert memory.keep_freed_memory("cuda") is False
    assert memory.keep_freed_memory("cuda:1") is False
