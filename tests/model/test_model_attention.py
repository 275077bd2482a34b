"""The fused-kernel routes equal the XLA reference on packed batches (real tokens: outputs and gradients).

cuDNN: on CPU the route runs its masks through `jax.nn.dot_product_attention(implementation="xla")`; on an NVIDIA
GPU the same test also runs the fused kernel itself. Splash: on CPU the Pallas TPU kernel itself runs in Pallas's
interpreter (same kernel code, same block tiling), alone and inside the sharded model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from sailor2_jax.config import ComputeConfig, load_model_config
from sailor2_jax.model.attention import attention, cudnn_attention, splash_attention
from sailor2_jax.model.init import create_model, with_compute


def _packed_batch(B=2, T=128, N=4, K=2, H=64, dtype=jnp.float32):
    rng = np.random.default_rng(0)
    seg = np.zeros((B, T), np.int32)
    pos = np.zeros((B, T), np.int32)
    # row 0: three documents, the first a continuation starting at position 7; row 1: two documents + padding
    for b, bounds in enumerate([[(0, 40, 7), (40, 82, 0), (82, 128, 0)], [(0, 60, 0), (60, 100, 0)]]):
        for i, (s, e, start) in enumerate(bounds, 1):
            seg[b, s:e] = i
            pos[b, s:e] = start + np.arange(e - s)
    q = jnp.asarray(rng.normal(size=(B, T, N, H)), dtype)
    k = jnp.asarray(rng.normal(size=(B, T, K, H)), dtype)
    v = jnp.asarray(rng.normal(size=(B, T, K, H)), dtype)
    return q, k, v, jnp.asarray(seg), jnp.asarray(pos)


def _reference(q, k, v, seg, pos):
    return attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, q_positions=pos, kv_positions=pos, impl="xla")


def _check(route, dtype, tol):
    q, k, v, seg, pos = _packed_batch(dtype=dtype)
    real = (seg > 0)[:, :, None, None]

    def loss(fn, q, k, v):
        return jnp.sum(jnp.where(real, fn(q, k, v), 0).astype(jnp.float32) ** 2)

    ref_fn = lambda q, k, v: _reference(q, k, v, seg, pos)
    want, want_grads = jax.value_and_grad(lambda *a: loss(ref_fn, *a), argnums=(0, 1, 2))(q, k, v)
    got, got_grads = jax.value_and_grad(lambda *a: loss(route(seg), *a), argnums=(0, 1, 2))(q, k, v)
    out_ref, out = ref_fn(q, k, v), route(seg)(q, k, v)
    np.testing.assert_allclose(np.where(real, out, 0).astype(np.float32),
                               np.where(real, out_ref, 0).astype(np.float32), rtol=tol, atol=tol)
    np.testing.assert_allclose(float(got), float(want), rtol=tol)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32), rtol=tol, atol=tol)


def test_segment_aware_route_equals_reference_on_packed_batch():
    _check(lambda seg: lambda q, k, v: cudnn_attention(q, k, v, seg, implementation="xla"), jnp.float32,
           2e-5)


def test_route_separates_documents():
    # changing a token of document 1 must not move document 2's outputs (the failure of segment-blind kernels)
    q, k, v, seg, _ = _packed_batch()
    out = cudnn_attention(q, k, v, seg, implementation="xla")
    k2 = k.at[0, 5].set(k[0, 5] + 10.0)
    out2 = cudnn_attention(q, k2, v, seg, implementation="xla")
    np.testing.assert_array_equal(np.asarray(out[0, 40:]), np.asarray(out2[0, 40:]))
    assert not np.allclose(np.asarray(out[0, 5:40]), np.asarray(out2[0, 5:40]))


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs an NVIDIA GPU for the cuDNN kernel")
def test_cudnn_kernel_equals_reference_on_packed_batch():
    route = lambda seg: lambda q, k, v: attention(
        q, k, v, q_segment_ids=seg, kv_segment_ids=seg, q_positions=jnp.zeros_like(seg),
        kv_positions=jnp.zeros_like(seg), impl="cudnn", packed=True)  # positions unused by the route
    _check(route, jnp.bfloat16, 3e-2)

# Splash is a TPU kernel: it runs natively on TPU and in Pallas's interpreter on CPU; GPUs refuse it.
splash_here = pytest.mark.skipif(jax.default_backend() == "gpu", reason="Splash is a TPU kernel")


@splash_here
def test_splash_kernel_equals_reference_on_packed_batch():
    _check(lambda seg: lambda q, k, v: splash_attention(q, k, v, seg), jnp.float32, 2e-5)


@splash_here
def test_splash_kernel_unpacked_rows_are_causal():
    q, k, v, _, _ = _packed_batch()
    ones = jnp.ones(q.shape[:2], jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(q.shape[1]), q.shape[:2])
    np.testing.assert_allclose(splash_attention(q, k, v), _reference(q, k, v, ones, pos), rtol=2e-5, atol=2e-5)


@splash_here
def test_splash_rejects_a_length_its_blocks_cannot_tile():
    q, k, v, seg, _ = _packed_batch()
    with pytest.raises(ValueError, match="divisible by 128, got 96"):
        splash_attention(q[:, :96], k[:, :96], v[:, :96], seg[:, :96])


@splash_here
@pytest.mark.parametrize("remat", ["none", "save_attention_out"])
def test_splash_in_the_sharded_model_equals_xla(mesh8, remat):
    """Under a (2, 2, 2) mesh the kernel runs per shard (rows over data+fsdp, heads over tensor): the packed
    model's loss and every gradient equal the XLA reference model's with the same weights."""
    cfg = load_model_config("tiny", ["vocab_size=320"])
    compute = ComputeConfig(dtype="float32", remat=remat)
    model = create_model(cfg, mesh8, seed=0, compute=compute)
    _, _, _, seg, pos = _packed_batch(B=8, T=128)
    seg, pos = jnp.tile(seg, (4, 1)), jnp.tile(pos, (4, 1))
    toks = jnp.asarray(np.random.default_rng(0).integers(0, 320, seg.shape), jnp.int32)
    rows = NamedSharding(mesh8, P(("data", "fsdp")))
    toks, seg, pos = (jax.device_put(x, rows) for x in (toks, seg, pos))
    graphdef, state = nnx.split(model)

    def loss_and_grads(impl):
        def loss(state):
            m = with_compute(nnx.merge(graphdef, state), compute.replace(attention=impl))
            logits = m(toks, positions_BT=pos, segment_ids_BT=seg)
            return jnp.sum(jnp.where((seg > 0)[..., None], logits, 0.0) ** 2) / 1e4
        with jax.set_mesh(mesh8):
            return jax.jit(jax.value_and_grad(loss))(state)

    (want, want_g), (got, got_g) = loss_and_grads("xla"), loss_and_grads("splash")
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    for g, w in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-6)
