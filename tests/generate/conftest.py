"""Fixtures of the decoding tests: meshes (8 fake CPU devices) and one tiny random model imported per mesh."""

from __future__ import annotations

import pytest
from generate_helpers import hf_model, one_device_mesh, ours

from sailor2_jax.config import MeshConfig
from sailor2_jax.sharding import make_mesh


@pytest.fixture(scope="session")
def mesh1():
    return one_device_mesh()


@pytest.fixture(scope="session")
def mesh8():
    return make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))


@pytest.fixture(scope="session")
def ref():
    return hf_model()


@pytest.fixture(scope="session")
def model1(ref, mesh1, tmp_path_factory):
    return ours(ref, tmp_path_factory.mktemp("hf"), mesh1)
