"""Batched scoring (`model/batched.py`): many variable-length examples through one jitted function, on one process and
on two real processes (jax.distributed + gloo, 2 CPU devices each).

One process: results come back per example in the examples' order, equal to scoring each example alone, whatever
the batch size and padding. Two processes: each passes the same examples and places only its own devices' rows of a
batch; both must get every score back, equal to what this single process computes on a mesh of the same shape.

Run as a script (`... worker OUT`), this file is one process of that job.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

MESH = {"data": 2, "fsdp": 2, "tensor": 1}
VOCAB, PAD, BATCH_SIZE = 512, 0, 3  # 3 rows per batch: rounded up to 4, the data-parallel devices
TIMEOUT_S = 180


def sequences() -> list[np.ndarray]:
    """Eleven token sequences of lengths 1..150 (three length buckets of 64), in no particular order."""
    rng = np.random.default_rng(7)
    lengths = [37, 150, 1, 64, 65, 12, 129, 90, 3, 64, 101]
    return [rng.integers(1, VOCAB, n).astype(np.int32) for n in lengths]


def reward_model(mesh):
    from sailor2_jax.config import ComputeConfig, load_model_config
    from sailor2_jax.model.reward import create_reward

    cfg = load_model_config("tiny").replace(vocab_size=VOCAB, num_layers=2)
    return create_reward(cfg, mesh, pad_id=PAD, seed=3, compute=ComputeConfig(dtype="float32", remat="none"))


def token_sums(examples, mesh):
    """A vector result per example from `apply_batched` directly: [sum of tokens, count of non-padding tokens]."""
    import jax.numpy as jnp

    from sailor2_jax.compiled import shared_jit
    from sailor2_jax.model.batched import apply_batched
    from sailor2_jax.sharding import batch_sharding

    step = shared_jit(lambda scale, b: jnp.stack([b["tokens"].sum(1) * scale, (b["tokens"] != PAD).sum(1)], axis=1),
                      mesh, out_shardings=batch_sharding(mesh, 2))
    return apply_batched(step, jnp.int32(1), [{"tokens": s} for s in examples], mesh=mesh, batch_size=BATCH_SIZE,
                         pad={"tokens": PAD}, progress=False)


def test_one_process_in_order_and_equal_to_one_at_a_time():
    import jax

    from sailor2_jax.config import MeshConfig
    from sailor2_jax.model.reward import score_sequences
    from sailor2_jax.sharding import make_mesh

    seqs = sequences()
    mesh = make_mesh(MeshConfig(**MESH), jax.devices()[:4])
    sums = token_sums(seqs, mesh)
    np.testing.assert_array_equal(sums, [[s.sum(), len(s)] for s in seqs])

    model = reward_model(mesh)
    batched = score_sequences(model, seqs, mesh, batch_size=BATCH_SIZE, progress=False)
    alone = np.concatenate([score_sequences(model, [s], mesh, batch_size=1, progress=False) for s in seqs])
    assert batched.shape == (len(seqs),) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-6)  # padding and batching change nothing
    assert len(np.unique(np.round(alone, 4))) == len(seqs)  # every sequence scores differently: order is checked


@pytest.mark.slow
def test_two_processes_score_what_one_process_scores(tmp_path):
    from jobs import job_envs, run_processes  # tests/ (this file also runs as a worker script)

    import jax

    from sailor2_jax.config import MeshConfig
    from sailor2_jax.model.reward import score_sequences
    from sailor2_jax.sharding import make_mesh

    cmd = [sys.executable, __file__, "worker", str(tmp_path)]
    with ThreadPoolExecutor(1) as pool:  # the two processes run while this one computes the same on one process
        job = pool.submit(run_processes, [cmd, cmd], job_envs(2, 2), TIMEOUT_S)
        seqs = sequences()
        mesh = make_mesh(MeshConfig(**MESH), jax.devices()[:4])
        want = score_sequences(reward_model(mesh), seqs, mesh, batch_size=BATCH_SIZE, progress=False)
        job.result()
    for p in range(2):
        with np.load(tmp_path / f"process_{p}.npz") as got:
            np.testing.assert_array_equal(got["sums"], [[s.sum(), len(s)] for s in seqs], err_msg=f"process {p}")
            np.testing.assert_allclose(got["scores"], want, rtol=1e-5, atol=1e-6, err_msg=f"process {p}")


# --- one process of the job ------------------------------------------------------------------------------------

def _worker(out_dir: str) -> None:
    from sailor2_jax.train.multihost import initialize

    assert initialize(timeout_s=60)  # before any other JAX call
    import jax

    from sailor2_jax.config import MeshConfig
    from sailor2_jax.model.reward import score_sequences
    from sailor2_jax.sharding import make_mesh

    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)
    mesh = make_mesh(MeshConfig(**MESH))
    seqs = sequences()
    scores = score_sequences(reward_model(mesh), seqs, mesh, batch_size=BATCH_SIZE, progress=False)
    np.savez(Path(out_dir) / f"process_{jax.process_index()}.npz", scores=scores, sums=token_sums(seqs, mesh))


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        _worker(*sys.argv[2:])
    else:
        sys.exit(f"usage: {sys.argv[0]} worker OUT")
