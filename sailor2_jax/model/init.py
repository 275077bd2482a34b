"""Creating models: abstract shapes → shardings → one jitted init whose outputs are born sharded."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from sailor2_jax.compiled import shared_jit
from sailor2_jax.config import ComputeConfig, ModelConfig
from sailor2_jax.model.qwen2 import Qwen2
from sailor2_jax.sharding import state_shardings


def abstract_model(cfg: ModelConfig, compute: ComputeConfig = ComputeConfig()) -> Qwen2:
    """The model with ShapeDtypeStructs instead of arrays: shapes and counts of any config without memory."""
    return nnx.eval_shape(lambda: Qwen2(cfg, compute, rngs=nnx.Rngs(0)))


def param_count(cfg: ModelConfig) -> int:
    _, state = nnx.split(abstract_model(cfg))
    return sum(x.size for x in jax.tree.leaves(state))


def create_model(cfg: ModelConfig, mesh: Mesh, seed: int = 0, compute: ComputeConfig = ComputeConfig()) -> Qwen2:
    """A randomly initialised model whose parameters are created directly as sharded arrays on `mesh`."""
    graphdef, init = _init_program(cfg, compute, mesh)
    # the key `nnx.Rngs(seed)` would make, passed as host data (every process of a multi-host job passes the same)
    return nnx.merge(graphdef, init(np.asarray(jax.random.key_data(jax.random.key(seed)))))


@functools.lru_cache(maxsize=8)
def _init_program(cfg: ModelConfig, compute: ComputeConfig, mesh: Mesh) -> tuple[nnx.GraphDef, Callable]:
    """The jitted init of one architecture on one mesh, the seed an argument: a process that creates the same model
    again (another seed, a reference model, a second run) reuses the compiled program (threefry for every weight
    takes seconds to compile on CPU)."""
    graphdef, abstract_state = nnx.split(abstract_model(cfg, compute))
    shardings = state_shardings(abstract_state, mesh)

    def init(key_data: jax.Array):
        return nnx.state(Qwen2(cfg, compute, rngs=nnx.Rngs(jax.random.wrap_key_data(key_data))))

    return graphdef, shared_jit(init, mesh, out_shardings=shardings)  # the shardings tree mirrors the state tree


def with_compute(model: Qwen2, compute: ComputeConfig) -> Qwen2:
    """The same weights executed under another policy (another attention kernel, remat, compute dtype); parameters
    are converted (a copy) only when `compute.param_dtype` differs from theirs. Works inside jit and under a mesh."""
    graphdef, state = nnx.split(model)
    if compute.param_dtype != model.compute.param_dtype:
        state = jax.tree.map(lambda x: x.astype(compute.param_dtype), state)
    new = nnx.merge(graphdef, state)
    new.compute = compute  # a static attribute: the architecture and every parameter stay as they are
    return new
