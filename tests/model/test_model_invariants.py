"""Properties the model must have whatever its weights: causality, scan/remat/sharding invariance, packing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_helpers import run_model, tokens
from flax import nnx

from sailor2_jax.config import ComputeConfig, load_model_config
from sailor2_jax.model.attention import attention
from sailor2_jax.model.init import create_model, with_compute

VOCAB = 320


CFG = load_model_config("tiny", [f"vocab_size={VOCAB}"])


def fp32(**policy) -> ComputeConfig:
    return ComputeConfig(dtype="float32", attention="xla", **policy)


def test_causality_via_gradients(mesh1):
    """d logits[t] / d input[s] is zero exactly for s > t and non-zero for s <= t."""
    model = create_model(CFG, mesh1, seed=1, compute=fp32())
    inputs_BTD = model.embed[...][jnp.asarray(tokens(1, 12))]
    for position in (0, 5, 11):
        grad = jax.grad(lambda e: model.logits(model.decode(e))[0, position].sum())(inputs_BTD)
        norms = np.linalg.norm(np.asarray(grad[0]), axis=-1)
        assert np.all(norms[position + 1:] == 0), f"output {position} depends on later tokens"
        assert np.all(norms[: position + 1] > 0), f"output {position} ignores earlier tokens"


def _loss_and_grad(model, compute, x):
    graphdef, state = nnx.split(with_compute(model, compute))

    @jax.jit
    def f(state):
        return jnp.mean(nnx.merge(graphdef, state)(x) ** 2)

    return jax.value_and_grad(f)(state)


@pytest.fixture(scope="module")
def remat_reference(mesh1):
    """Loss and gradients of the plainest path: a Python loop over layers, no rematerialisation."""
    model = create_model(CFG, mesh1, seed=2, compute=fp32(remat="none", scan_layers=False))
    x = jnp.asarray(tokens(2, 10))
    return model, x, _loss_and_grad(model, fp32(remat="none", scan_layers=False), x)


@pytest.mark.parametrize("remat,scan", [("none", True), ("full", True), ("full", False), ("dots_saveable", True),
                                        ("dots_with_no_batch_dims_saveable", True), ("save_attention_out", True)])
def test_scan_and_remat_do_not_change_values_or_gradients(remat, scan, remat_reference):
    model, x, (ref_loss, ref_grad) = remat_reference
    loss, grad = _loss_and_grad(model, fp32(remat=remat, scan_layers=scan), x)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_sharded_forward_equals_single_device(mesh1, mesh8):
    x = tokens(8, 16)
    single = run_model(create_model(CFG, mesh1, seed=3, compute=fp32()), mesh1, x)
    sharded_model = create_model(CFG, mesh8, seed=3, compute=fp32())
    assert len(sharded_model.layers.gate[...].sharding.device_set) == 8
    sharded = run_model(sharded_model, mesh8, x)
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-5)


def test_packed_batch_equals_documents_one_at_a_time(mesh1):
    model = create_model(CFG, mesh1, seed=4, compute=fp32())
    rng = np.random.RandomState(5)
    docs = [rng.randint(0, VOCAB, n) for n in (5, 7, 3)]
    T = 18  # 15 tokens + 3 padding
    toks, segs, pos = np.zeros((1, T), np.int32), np.zeros((1, T), np.int32), np.zeros((1, T), np.int32)
    start = 0
    for i, d in enumerate(docs):
        toks[0, start:start + len(d)], segs[0, start:start + len(d)] = d, i + 1
        pos[0, start:start + len(d)] = np.arange(len(d))
        start += len(d)
    packed = run_model(model, mesh1, toks, positions_BT=jnp.asarray(pos), segment_ids_BT=jnp.asarray(segs))
    start = 0
    for d in docs:
        alone = run_model(model, mesh1, d[None].astype(np.int32))
        np.testing.assert_allclose(packed[0, start:start + len(d)], alone[0], rtol=1e-5, atol=1e-5)
        start += len(d)
    assert np.isfinite(packed).all()  # padding rows too


@pytest.mark.parametrize("impl", ["xla", "auto"])
def test_every_attention_backend_respects_segments(impl):
    """Backends on this machine against an explicit per-document softmax reference."""
    rng = np.random.RandomState(0)
    B, T, N, K, H = 2, 9, 4, 2, 8
    q, k, v = (rng.randn(B, T, n, H).astype(np.float32) for n in (N, K, K))
    segs = np.array([[1, 1, 1, 2, 2, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1]], np.int32)
    pos = np.array([[0, 1, 2, 0, 1, 2, 3, 0, 0], list(range(9))], np.int32)
    out = np.asarray(attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), q_segment_ids=segs,
                               kv_segment_ids=segs, q_positions=pos, kv_positions=pos, impl=impl))
    for b in range(B):
        for t in range(T):
            keys = [s for s in range(T) if segs[b, s] == segs[b, t] and pos[b, s] <= pos[b, t]]
            for n in range(N):
                kv = n // (N // K)
                scores = np.array([q[b, t, n] @ k[b, s, kv] for s in keys]) / np.sqrt(H)
                p = np.exp(scores - scores.max())
                p /= p.sum()
                np.testing.assert_allclose(out[b, t, n], p @ v[b, keys, kv], rtol=1e-5, atol=1e-5)


def test_creating_the_same_model_again_compiles_nothing_and_the_seed_still_counts(mesh8):
    """`create_model` keeps its compiled init per architecture and mesh (the seed is an argument, not part of the
    program): the second model costs no compile, and each seed gives the weights `nnx.Rngs(seed)` gives."""
    from sailor2_jax.model.qwen2 import Qwen2

    compiles = []

    def listener(event, seconds, **_):
        if event.endswith("backend_compile_duration"):
            compiles.append(event)
    cfg = load_model_config("tiny", ["vocab_size=96", "num_layers=1"])
    first = create_model(cfg, mesh8, seed=3, compute=fp32())
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        second = create_model(cfg, mesh8, seed=4, compute=fp32())
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    for seed, model in ((3, first), (4, second)):
        direct = jax.jit(lambda: nnx.state(Qwen2(cfg, fp32(), rngs=nnx.Rngs(seed))))()
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(nnx.state(model)), jax.device_get(direct))
    assert not np.array_equal(np.asarray(first.embed[...]), np.asarray(second.embed[...]))
