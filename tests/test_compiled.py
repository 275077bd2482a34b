"""`shared_jit`: a program two functions lower to is compiled once per process, and one function never runs
another's program (a captured constant, a sharding or a donation makes another program)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sailor2_jax.compiled import shared_jit, stats
from sailor2_jax.config import MeshConfig
from sailor2_jax.sharding import make_mesh


@pytest.fixture(scope="module")
def mesh():
    return make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))


def _delta(before: dict[str, int]) -> tuple[int, int]:
    after = stats()
    return after["compiled"] - before["compiled"], after["shared"] - before["shared"]


def _step(mesh, scale, donate: bool = True):
    """A new function object each call: (x * scale + y, sum of x * y), rows split over the data axes."""
    rows, whole = NamedSharding(mesh, P(("data", "fsdp"))), NamedSharding(mesh, P())

    def step(x, y):
        return x * scale + y, (x * y).sum()
    return shared_jit(step, mesh, in_shardings=(rows, rows), out_shardings=(rows, whole),
                      donate_argnums=0 if donate else ())


def test_two_functions_of_one_program_compile_it_once_and_donate(mesh):
    rows = NamedSharding(mesh, P(("data", "fsdp")))
    x, y = np.arange(16, dtype=np.float32), np.linspace(-1, 1, 16, dtype=np.float32)
    before = stats()
    first = _step(mesh, 2.5)(jax.device_put(x, rows), jax.device_put(y, rows))
    assert _delta(before) == (1, 0)
    donated = jax.device_put(x + 1, rows)
    second = _step(mesh, 2.5)(donated, jax.device_put(y, rows))
    assert _delta(before) == (1, 1)  # the second function found the first one's executable
    assert donated.is_deleted()  # the shared executable donates as its function asked
    np.testing.assert_allclose(np.asarray(first[0]), x * 2.5 + y, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(second[0]), (x + 1) * 2.5 + y, rtol=1e-6)
    np.testing.assert_allclose(float(second[1]), float(((x + 1) * y).sum()), rtol=1e-5)
    assert second[0].sharding == rows


def test_another_constant_donation_or_sharding_is_another_program(mesh):
    x, y = np.arange(16, dtype=np.float32), np.ones(16, np.float32)
    before = stats()
    for scale in (3.25, np.full(16, 4.5, np.float32), np.full(16, 5.5, np.float32)):  # a float, captured arrays
        out, _ = _step(mesh, scale)(x, y)
        np.testing.assert_allclose(np.asarray(out), x * scale + y, rtol=1e-6)
    assert _delta(before) == (3, 0)
    kept = jax.device_put(x, NamedSharding(mesh, P(("data", "fsdp"))))
    _step(mesh, 3.25, donate=False)(kept, y)
    assert not kept.is_deleted() and _delta(before) == (4, 0)
    other = make_mesh(MeshConfig(data=1, fsdp=2, tensor=4))  # the same devices as another mesh shape
    out, _ = _step(other, 3.25)(x, y)
    np.testing.assert_allclose(np.asarray(out), x * 3.25 + y, rtol=1e-6)
    assert _delta(before) == (5, 0)


def test_a_traced_call_inlines_the_function(mesh):
    """Inside another program (or `jax.eval_shape`, as `compile --decode` does) the function is traced, not run."""
    step = _step(mesh, 2.0, donate=False)
    x = np.arange(16, dtype=np.float32)
    outer = jax.jit(lambda a: step(a, a)[1] * 2)
    np.testing.assert_allclose(float(outer(x)), float((x * x).sum() * 2), rtol=1e-6)
    assert jax.eval_shape(step, x, x)[0].shape == (16,)
