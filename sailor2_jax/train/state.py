"""The train state: everything a step reads and writes, and what a checkpoint holds besides the data position."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

Params = dict[str, Any]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    step: jax.Array            # int32 []: batches consumed
    params: Params             # fp32 master weights (pure dict of the NNX model state)
    opt_state: optax.OptState
    rng: jax.Array             # uint32 [2]: raw key data, for stochastic objectives and checkpoint symmetry
    bad_steps: jax.Array       # int32 []: consecutive non-finite steps (the loop rolls back at nan_guard's limit)
    skipped_steps: jax.Array   # int32 []: steps whose update is not in the parameters (non-finite, or rolled back)


def init_state(params: Params, tx: optax.GradientTransformation, seed: int) -> TrainState:
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=params, opt_state=tx.init(params),
                      rng=jax.random.key_data(jax.random.key(seed)), bad_steps=zero, skipped_steps=zero)
