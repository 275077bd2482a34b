"""Test session setup: 8 fake CPU devices, so sharding is tested for real on a laptop-sized machine.

No persistent compilation cache: on CPU, JAX 0.10's multi-device programs loaded back from it deadlock in their
first collective (a resumed training run hangs), see docs/performance.md, "Compilation cache"."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    """Long files first: `make test` hands whole files to two workers in this order, so starting the multi-process,
    subprocess and training-loop files early keeps one worker from running the last long file alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: not (item.path.parent.name == "train" or item.path in slow_files))  # stable
