"""Context parallelism in the whole train step: with the sequence split over `context` = 2 and 4 (of 8 fake devices)
the loss and every gradient equal the unsplit step's, for packed pre-training rows, SFT rows (prompt tokens without
loss) and DPO pairs (right-padded, with a frozen reference model) — the objectives, masks and batches unchanged; with
K/V all-gathered or passed round a ring (`compute.context_attention`), which also agree with each other."""

import functools

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from sailor2_jax.compiled import shared_jit
from sailor2_jax.config import load
from sailor2_jax.model.init import abstract_model, create_model
from sailor2_jax.sharding import global_batch, make_mesh
from sailor2_jax.train.batches import SyntheticLM, SyntheticPreference
from sailor2_jax.train.config import TrainConfig
from sailor2_jax.train.objectives import Objective
from sailor2_jax.train.step import init_state, make_step, train_state_shardings

BASE = ["data.source=synthetic", "model.base=tiny", "model.vocab_size=256", "model.num_layers=2",
        "compute.dtype=float32", "compute.remat=none", "data.batch_size=8", "data.seq_len=32", "steps=1"]
MESHES = {1: ["mesh.fsdp=8"], 2: ["mesh.fsdp=2", "mesh.context=2", "mesh.tensor=2"],
          4: ["mesh.fsdp=2", "mesh.context=4"]}


def _batch(kind: str):
    if kind == "dpo":
        return next(SyntheticPreference(8, 32, 256, seed=3, process_index=0, process_count=1))
    return next(SyntheticLM(8, 32, 256, seed=3, process_index=0, process_count=1,
                            prompt_frac=0.5 if kind == "sft" else 0.0))


@functools.cache
def _weights(seed: int):
    """Host copies of a tiny model's weights (built once, placed on each mesh)."""
    cfg = load(TrainConfig, None, BASE + MESHES[1])
    model = create_model(cfg.model, make_mesh(cfg.mesh), seed=seed, compute=cfg.compute)
    return nnx.split(model)[0], jax.device_get(nnx.to_pure_dict(nnx.state(model)))


@functools.cache
def _loss_and_grads(kind: str, context: int, strategy: str = "all_gather", remat: str = "none"):
    """One SGD step with rate 1 (parameters move by −gradient): the loss and the gradient, on host."""
    cfg = load(TrainConfig, None, BASE + [f"objective.kind={kind}", f"compute.context_attention={strategy}",
                                          f"compute.remat={remat}"] + MESHES[context])
    mesh = make_mesh(cfg.mesh)
    assert mesh.shape["context"] == context
    graphdef, params = _weights(0)
    tx = optax.sgd(1.0)
    shardings = train_state_shardings(nnx.state(abstract_model(cfg.model, cfg.compute)), tx, mesh)
    step = make_step(graphdef, Objective(cfg.objective), tx, lambda s: 1.0, jax.tree.map(lambda _: 1.0, params))
    # a reference other than the policy for DPO, so the loss is not the constant log 2
    ref = jax.device_put(_weights(1)[1], shardings.params) if kind == "dpo" else None
    with jax.set_mesh(mesh):
        state = jax.device_put(init_state(params, tx, 0), shardings)
        # shared: the settings that lower to the same program (e.g. SFT's step and pretraining's) compile it once
        state, metrics = shared_jit(step, mesh)(state, global_batch(_batch(kind), mesh), ref)
        after = jax.device_get(state.params)
    grads = jax.tree.map(lambda b, a: np.asarray(b) - np.asarray(a), params, after)
    return float(metrics["loss"]), grads


@pytest.fixture(scope="module")
def unsplit():
    return {kind: _loss_and_grads(kind, 1) for kind in ("pretrain", "sft", "dpo")}


def _assert_same(got, want):
    (got_loss, got), (want_loss, want) = got, want
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(want))
    assert scale > 0
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale), got, want)


# (ring's backward is its own custom VJP: checked under a remat policy too, which may replay its forward)
@pytest.mark.parametrize("kind,context,strategy,remat", [
    ("pretrain", 4, "all_gather", "none"), ("sft", 4, "all_gather", "none"), ("dpo", 2, "all_gather", "none"),
    ("pretrain", 4, "ring", "none"), ("pretrain", 2, "ring", "save_attention_out"), ("dpo", 2, "ring", "none")])
def test_split_step_equals_unsplit(unsplit, kind, context, strategy, remat):
    want_loss = unsplit[kind][0]
    assert np.isfinite(want_loss) and abs(want_loss - np.log(2)) > 1e-3
    got = _loss_and_grads(kind, context, strategy, remat)
    _assert_same(got, unsplit[kind])
    if strategy == "ring":
        _assert_same(got, _loss_and_grads(kind, context))
