"""Context parallelism: the sequence split over the mesh's `context` axis (2 and 4 of the 8 fake devices, in the
load-balanced order) gives the unsplit attention's outputs and gradients on packed rows, for every backend (Splash in
Pallas's interpreter, cuDNN's masked route through its XLA path on CPU), with K/V all-gathered or passed round a ring
(and the two agree)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from sailor2_jax.config import ComputeConfig, MeshConfig, load_model_config
from sailor2_jax.model.attention import attention
from sailor2_jax.model.init import create_model, with_compute
from sailor2_jax.sharding import balanced_order, make_mesh

MESHES = {2: MeshConfig(data=1, fsdp=2, context=2, tensor=2), 4: MeshConfig(data=1, fsdp=2, context=4, tensor=1)}


def _packed(T: int, B=2, N=4, K=2, H=16):
    """Packed rows: row 0 a continued document (from position 7) then two more, row 1 two documents and padding."""
    rng = np.random.default_rng(0)
    seg, pos = np.zeros((B, T), np.int32), np.zeros((B, T), np.int32)
    cuts = [[(0, T // 3, 7), (T // 3, T * 2 // 3, 0), (T * 2 // 3, T, 0)], [(0, T // 2, 0), (T // 2, T * 7 // 8, 0)]]
    for b, bounds in enumerate(cuts):
        for i, (s, e, start) in enumerate(bounds, 1):
            seg[b, s:e], pos[b, s:e] = i, start + np.arange(e - s)
    q, k, v = (rng.normal(size=(B, T, n, H)).astype(np.float32) for n in (N, K, K))
    return q, k, v, seg, pos


def _loss_and_grads(q, k, v, seg, pos, impl, mesh=None, n=1, context="all_gather"):
    """Attention's output and d(sum of squares of real outputs)/d(q, k, v), in natural order; with `n` > 1 the rows
    go in as the model sends them (balanced order) and come back."""
    order = balanced_order(q.shape[1], n) if n > 1 else np.arange(q.shape[1])
    back = np.argsort(order)
    real = (seg > 0)[:, :, None, None]

    def f(q, k, v):
        s, p = jnp.asarray(seg[:, order]), jnp.asarray(pos[:, order])
        out = attention(q[:, order], k[:, order], v[:, order], q_segment_ids=s, kv_segment_ids=s, q_positions=p,
                        kv_positions=p, impl=impl, context=context)[:, back]
        return jnp.sum(jnp.where(real, out, 0.0) ** 2), out

    fn = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))
    if mesh is None:
        (loss, out), grads = fn(q, k, v)
    else:
        with jax.set_mesh(mesh):
            # the split path ran, not a replicated one, and passed K/V the way asked
            assert {"all_gather": "all_gather", "ring": "ppermute"}[context] in str(jax.make_jaxpr(f)(q, k, v))
            (loss, out), grads = fn(q, k, v)
    return np.where(real, out, 0), float(loss), [np.asarray(g) for g in grads]


def _assert_same(got, want):
    (got_out, got, got_g), (want_out, want, want_g) = got, want
    np.testing.assert_allclose(got_out, want_out, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, w in zip(got_g, want_g):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("context", ["all_gather", "ring"])
@pytest.mark.parametrize("impl,n,T", [("xla", 2, 64), ("xla", 4, 64), ("cudnn", 4, 64), ("splash", 2, 512)])
def test_context_attention_equals_unsplit_on_packed_rows(impl, n, T, context):
    q, k, v, seg, pos = _packed(T)
    got = _loss_and_grads(q, k, v, seg, pos, impl, make_mesh(MESHES[n]), n, context)
    _assert_same(got, _loss_and_grads(q, k, v, seg, pos, "xla"))
    if context == "ring":
        _assert_same(got, _loss_and_grads(q, k, v, seg, pos, impl, make_mesh(MESHES[n]), n, "all_gather"))


def test_balanced_order_gives_each_shard_chunks_i_and_2n_minus_1_minus_i():
    order = balanced_order(16, 4)  # 8 chunks of 2
    shards = order.reshape(4, 4) // 2  # chunk index of each token, per shard
    assert [sorted(set(s)) for s in shards] == [[0, 7], [1, 6], [2, 5], [3, 4]]
    with pytest.raises(ValueError, match="divisible by 8"):
        balanced_order(20, 4)
