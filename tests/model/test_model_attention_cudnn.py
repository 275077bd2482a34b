"""The segment-aware cuDNN route equals the XLA reference on packed batches (real tokens: outputs and gradients).

On CPU the route runs its masks through `jax.nn.dot_product_attention(implementation="xla")`; on an NVIDIA GPU the
same test also runs the fused cuDNN kernel itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sailor2_jax.model.attention import attention, cudnn_attention


def _packed_batch(B=2, T=64, N=4, K=2, H=64, dtype=jnp.float32):
    rng = np.random.default_rng(0)
    seg = np.zeros((B, T), np.int32)
    pos = np.zeros((B, T), np.int32)
    # row 0: three documents, the first a continuation starting at position 7; row 1: two documents + padding
    for b, bounds in enumerate([[(0, 20, 7), (20, 41, 0), (41, 64, 0)], [(0, 30, 0), (30, 50, 0)]]):
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
    np.testing.assert_array_equal(np.asarray(out[0, 20:]), np.asarray(out2[0, 20:]))
    assert not np.allclose(np.asarray(out[0, 5:20]), np.asarray(out2[0, 5:20]))


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs an NVIDIA GPU for the cuDNN kernel")
def test_cudnn_kernel_equals_reference_on_packed_batch():
    route = lambda seg: lambda q, k, v: attention(
        q, k, v, q_segment_ids=seg, kv_segment_ids=seg, q_positions=jnp.zeros_like(seg),
        kv_positions=jnp.zeros_like(seg), impl="cudnn", packed=True)  # positions unused by the route
    _check(route, jnp.bfloat16, 3e-2)
