"""`featurestore.allocator`: glibc's malloc keeps freed memory in a process that computes features, unless the
user configured malloc themselves. Each case runs in a fresh interpreter (the setting is process-wide)."""
from __future__ import annotations

import os
import platform

import pytest
from conftest import fresh_python

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")


def run(code: str, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    return fresh_python(code, env={**clean, **env})


@glibc
def test_set_once_per_process():
    assert run("from featurestore.allocator import keep_freed_memory as k; print(k(), k())") == "True True"


@glibc
@pytest.mark.parametrize("env", [{"MALLOC_TRIM_THRESHOLD_": "131072"}, {"MALLOC_ARENA_MAX": "2", "MALLOC_TOP_PAD_": "0"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}])
def test_the_users_malloc_settings_win(env):
    assert run("from featurestore.allocator import keep_freed_memory; print(keep_freed_memory())", **env) == "False"
    assert run("from featurestore.allocator import keep_freed_memory; print(keep_freed_memory())",
               MALLOC_ARENA_MAX="2") == "True"  # the arena count is not a threshold


@glibc
def test_a_feature_run_keeps_freed_memory(tmp_path, seiqa_dir):
    code = f"""
from featurestore import allocator
from featurestore.datasets import load_pairs
from featurestore.extractors import create
from featurestore.store import FeatureStore
assert not allocator._done
FeatureStore({str(tmp_path / "store")!r}).extract(load_pairs({str(seiqa_dir)!r}), [create("frequency")], progress=False)
print(allocator._done)
"""
    assert run(code) == "True"
