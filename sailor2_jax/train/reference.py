"""Reference log-probs computed before training (`objective.reference: precompute`), as TRL's
`precompute_ref_log_probs` does: DPO without a second model in accelerator memory.

The reference of DPO is the initial policy, so the values a run needs are known before it starts: the loop runs
`reference_step` (the step family's shared log-prob core, forward only) over every batch the run will read — the
iterator is rewound afterwards — and over the fixed eval set, keeps the results on the host (2 floats per pair per
step, this process's rows only), and feeds them with the batches (`WithReference`). No copy of the parameters is
kept. On resume the values of the remaining steps are recomputed from the initial parameters, which are rebuilt
from the same source, so a resumed run sees exactly the values an uninterrupted one does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from tqdm import tqdm

from sailor2_jax.sharding import batch_sharding, global_batch, logical_to_spec
from sailor2_jax.train.batches import CheckpointableIterator
from sailor2_jax.train.objectives import Batch, sequence_logps

Params = dict[str, Any]
KEYS = ("ref_chosen_logps", "ref_rejected_logps")


def reference_step(graphdef: nnx.GraphDef, chunk: int, mesh: Mesh) -> Callable[[Params, Batch], dict[str, jax.Array]]:
    """Jitted: summed response log-probs [B] of chosen and rejected under `params` (the keys the loss reads)."""
    def step(params: Params, batch: Batch) -> dict[str, jax.Array]:
        logp_w_B, logp_l_B, _, _ = sequence_logps(nnx.merge(graphdef, params), batch, chunk)
        return dict(zip(KEYS, (logp_w_B, logp_l_B)))
    return jax.jit(step, out_shardings=batch_sharding(mesh, 1))


def precompute(step: Callable, params: Params, data_iter: CheckpointableIterator, steps: int, mesh: Mesh
               ) -> dict[str, np.ndarray]:
    """This process's rows of the reference values of the next `steps` batches, {key: [steps, B_local]}; the
    iterator is left where it was."""
    saved = data_iter.get_state()
    with jax.set_mesh(mesh):
        values = [step(params, global_batch(next(data_iter), mesh))  # all dispatched before any is read
                  for _ in tqdm(range(steps), desc="reference log-probs", unit="batch", leave=False,
                                disable=jax.process_index() != 0)]
    data_iter.set_state(saved)
    rows = logical_to_spec(("batch",))
    local = lambda v: np.asarray(multihost_utils.global_array_to_host_local_array(v, mesh, rows))
    return {k: np.stack([local(v[k]) for v in values]) if values else np.zeros((0, 0), np.float32) for k in KEYS}


class WithReference:
    """`data_iter`'s batches with their precomputed reference values; its state is the wrapped iterator's."""

    def __init__(self, data_iter: CheckpointableIterator, values: dict[str, np.ndarray]):
        self.data_iter, self.values, self.i = data_iter, values, 0

    def __iter__(self) -> WithReference:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.i >= len(self.values[KEYS[0]]):
            raise RuntimeError("more batches drawn than reference values were precomputed for")
        batch = dict(next(self.data_iter)) | {k: v[self.i] for k, v in self.values.items()}
        self.i += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        return self.data_iter.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        raise RuntimeError("restore the wrapped iterator, then precompute the reference values again")
