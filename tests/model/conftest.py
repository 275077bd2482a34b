"""Fixtures of the model tests (no downloads: reference models are random and tiny)."""

from __future__ import annotations

import jax
import pytest

from sailor2_jax.config import MeshConfig
from sailor2_jax.sharding import make_mesh


@pytest.fixture
def save_hf(tmp_path):
    """Save a transformers model as a HF directory under tmp_path; returns its path."""
    counter = iter(range(1000))

    def save(model, **kwargs) -> str:
        path = tmp_path / f"hf{next(counter)}"
        model.save_pretrained(path, **kwargs)
        return str(path)

    return save


@pytest.fixture(scope="session")
def mesh8():
    return make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))


@pytest.fixture(scope="session")
def mesh1():
    return make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
