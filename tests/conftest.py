"""Test session setup: 8 fake CPU devices, so sharding is tested for real on a laptop-sized machine, and JAX's
persistent compilation cache shared by the test workers and the processes they start within one run (many tests
compile the same tiny-model programs), emptied when the run starts so that every run starts as cold as CI's."""

import os
import shutil
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
COMPILATION_CACHE = Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax-compilation-cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(COMPILATION_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")  # the programs worth a file


def pytest_configure(config):
    if not hasattr(config, "workerinput") and os.environ["JAX_COMPILATION_CACHE_DIR"] == str(COMPILATION_CACHE):
        for cache in COMPILATION_CACHE.parent.glob(COMPILATION_CACHE.name + "*"):  # (and the multi-process jobs')
            shutil.rmtree(cache, ignore_errors=True)  # the controller, before any worker starts


def pytest_collection_modifyitems(config, items):
    """Long files first: `make test` hands whole files to two workers in this order, so starting the multi-process,
    subprocess and training-loop files early keeps one worker from running the last long file alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: not (item.path.parent.name == "train" or item.path in slow_files))  # stable
