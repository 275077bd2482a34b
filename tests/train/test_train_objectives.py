"""Objectives against independent references: torch log_softmax for token log-probs, a numpy transcription of Oat's
formulas (recipe.md §6.2) for the DPO family, the frozen reference model for the reference-log-prob cache; and each
objective lowers its loss over a few steps."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from sailor2_jax.config import ComputeConfig, MeshConfig, load, load_model_config
from sailor2_jax.model.init import create_model
from sailor2_jax.sharding import make_mesh
from sailor2_jax.train.config import ObjectiveConfig, TrainConfig
from sailor2_jax.train.batches import SyntheticPreference
from sailor2_jax.train.loop import train
from sailor2_jax.model.logprobs import hidden_logprobs, token_logprobs
from sailor2_jax.train.objectives import Objective, preference_losses, sequence_logps


@pytest.fixture(scope="module")
def model():
    cfg = load_model_config("tiny", ["vocab_size=256", "num_layers=2"])
    return create_model(cfg, make_mesh(MeshConfig(), jax.devices()[:1]), seed=3, compute=ComputeConfig(dtype="float32"))


def test_token_logprobs_match_torch_log_softmax(model):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, (2, 32)).astype(np.int32)
    targets = rng.integers(0, 256, (2, 32)).astype(np.int32)
    seg = np.ones_like(tokens)
    seg[1, 20:] = 2
    pos = np.concatenate([np.arange(32)[None], np.r_[np.arange(20), np.arange(12)][None]]).astype(np.int32)
    logits = np.asarray(model(jnp.asarray(tokens), positions_BT=jnp.asarray(pos), segment_ids_BT=jnp.asarray(seg)))
    want = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), -1).gather(
        -1, torch.tensor(targets, dtype=torch.long)[..., None])[..., 0].numpy()
    got = token_logprobs(model, jnp.asarray(tokens), jnp.asarray(targets), segment_ids_BT=jnp.asarray(seg),
                         positions_BT=jnp.asarray(pos), chunk=8)  # 4 chunks over T
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_vocabulary_blocks_give_the_log_softmax_its_argmax_and_its_gradient():
    """The LM head's log-probs a vocabulary block at a time (model/logprobs.py: 4 blocks on each of two tensor
    shards) against plain `jax.nn.log_softmax` over the whole logits: values, the greedy flag and the parameters'
    gradient (the one-block case is the test above)."""
    cfg = load_model_config("tiny", ["vocab_size=256", "num_layers=2"])
    mesh = make_mesh(MeshConfig(data=-1, fsdp=1, tensor=2), jax.devices()[:4])
    model = create_model(cfg, mesh, seed=5, compute=ComputeConfig(dtype="float32"))
    graphdef, params = nnx.split(model)
    rng = np.random.default_rng(1)
    tokens = jnp.asarray(rng.integers(0, 256, (2, 16)).astype(np.int32))
    logits = np.asarray(model(tokens))
    targets_np = rng.integers(0, 256, (2, 16)).astype(np.int32)
    targets_np[0, :4] = logits[0, :4].argmax(-1)  # some targets are the greedy token
    targets = jnp.asarray(targets_np)

    def plain(params):
        m = nnx.merge(graphdef, params)
        logp = jax.nn.log_softmax(m(tokens), axis=-1)
        return jnp.sum(jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]), logp

    def blocked(params):
        m = nnx.merge(graphdef, params)
        logp, greedy = hidden_logprobs(m, m.hidden(tokens), targets, chunk=8, with_greedy=True, vocab_block=32)
        return jnp.sum(logp), (logp, greedy)

    with jax.set_mesh(mesh):
        (_, logp_want), grad_want = jax.jit(jax.value_and_grad(plain, has_aux=True))(params)
        (_, (logp, greedy)), grad = jax.jit(jax.value_and_grad(blocked, has_aux=True))(params)
    want = np.take_along_axis(np.asarray(logp_want), targets_np[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(np.asarray(logp), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(greedy), targets_np == logits.argmax(-1))
    want_by_path = dict(nnx.to_flat_state(grad_want))
    for path, g in nnx.to_flat_state(grad):
        np.testing.assert_allclose(np.asarray(g[...]), np.asarray(want_by_path[path][...]), rtol=1e-4, atol=1e-6,
                                   err_msg=str(path))


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def oat_reference(kind, beta, eps, gbr, alpha, lam, pw, pl, rw, rl, lw, ll):
    """Recipe.md §6.2, transcribed independently in float64 numpy."""
    if kind in ("ln_dpo", "simpo"):
        pw, pl, rw, rl = pw / lw, pl / ll, rw / lw, rl / ll
    if kind == "simpo":
        z = (pw - pl) - gbr
    else:
        z = (pw - pl) - (rw - rl)
        z = z + alpha / beta * (lw - ll)
        z = z - lam * np.maximum(rw - pw, 0.0)
    return -_log_sigmoid(beta * z) * (1 - eps) - _log_sigmoid(-beta * z) * eps


@pytest.mark.parametrize("kind,beta,eps,alpha,lam", [
    ("dpo", 0.1, 0.0, 0.0, 0.0), ("dpo", 0.5, 0.2, 0.0, 0.0), ("ln_dpo", 2.0, 0.0, 0.0, 0.0),
    ("simpo", 2.0, 0.1, 0.0, 0.0), ("dpo", 0.1, 0.0, 0.01, 0.0), ("dpo", 0.1, 0.0, 0.0, 5.0)])
def test_preference_losses_match_oat_formulas(kind, beta, eps, alpha, lam):
    rng = np.random.default_rng(1)
    pw, pl, rw, rl = (rng.uniform(-80, -10, 16) for _ in range(4))
    lw, ll = rng.integers(5, 40, 16).astype(np.float64), rng.integers(5, 40, 16).astype(np.float64)
    cfg = ObjectiveConfig(kind=kind, beta=beta, label_smoothing=eps, gamma_beta_ratio=0.7, len_reg_alpha=alpha,
                          dpop_lambda=lam)
    ref = (None, None) if kind == "simpo" else (jnp.float32(rw), jnp.float32(rl))
    got, rewards = preference_losses(cfg, jnp.float32(pw), jnp.float32(pl), *ref, jnp.float32(lw), jnp.float32(ll))
    want = oat_reference(kind, beta, eps, 0.7, alpha, lam, pw, pl, rw, rl, lw, ll)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=1e-6)
    if kind == "dpo":  # implicit rewards β(log π − log π_ref)
        np.testing.assert_allclose(np.asarray(rewards["chosen_reward"]), beta * (pw - rw), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(rewards["rejected_reward"]), beta * (pl - rl), rtol=1e-5)


def test_reference_cache_equals_frozen_reference(model):
    ref_model = nnx.clone(model)
    # make the policy differ from the reference so the reference term matters
    model_state = nnx.state(model)
    policy = nnx.merge(nnx.graphdef(model), jax.tree.map(lambda x: x * 1.05, model_state))
    batch = {k: jnp.asarray(v) for k, v in next(SyntheticPreference(4, 32, 256, seed=0, process_index=0,
                                                                    process_count=1)).items()}
    frozen = Objective(ObjectiveConfig(kind="dpo", reference="model", logits_chunk=16))
    loss_model, _ = frozen.loss(policy, batch, ref_model)
    ref_w, ref_l, _, _ = sequence_logps(ref_model, batch, 32)  # the offline pass that fills the cache
    cached = Objective(ObjectiveConfig(kind="dpo", reference="cache", logits_chunk=16))
    loss_cache, _ = cached.loss(policy, batch | {"ref_chosen_logps": ref_w, "ref_rejected_logps": ref_l}, None)
    assert abs(float(loss_model) - np.log(2) * 4) > 1e-3
    np.testing.assert_allclose(float(loss_cache), float(loss_model), rtol=1e-6)


@pytest.mark.parametrize("kind,extra", [
    ("pretrain", []), ("sft", []), ("dpo", []), ("ln_dpo", ["objective.beta=2.0"]),
    ("simpo", ["objective.beta=2.0"]), ("dpo", ["objective.len_reg_alpha=0.01"]),
    ("dpo", ["objective.dpop_lambda=5.0"])])
def test_each_objective_lowers_its_loss(tmp_path, kind, extra):
    cfg = load(TrainConfig, None, ["data.source=synthetic", "model.base=tiny", "model.vocab_size=256",
                                   "model.num_layers=2", f"objective.kind={kind}", "steps=8", "data.batch_size=8",
                                   "data.seq_len=32",
                                   "optimizer.schedule.kind=constant", "optimizer.schedule.peak_lr=1e-2",
                                   "optimizer.weight_decay=0.0", "log.every=1", "log.progress=false",
                                   "log.tensorboard=false", "checkpoint.every=100"] + extra)
    result = train(cfg, tmp_path)
    assert result.stopped == "done" and result.step == 8
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < losses[0] - 0.05, losses
    assert (tmp_path / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the run's curves, drawn at the end


def _dpo(tmp_path, name, reference, steps, eval_every=0):
    # fp32 compute: the frozen-model and precomputed runs are two different programs, compared with a tolerance
    # that holds on any machine (in bf16 they differ at bf16 rounding)
    cfg = load(TrainConfig, None, ["data.source=synthetic", "model.base=tiny", "model.vocab_size=256",
                                   "model.num_layers=2", "compute.dtype=float32",
                                   "objective.kind=dpo", f"objective.reference={reference}", f"steps={steps}",
                                   "data.batch_size=8", "data.seq_len=32", "optimizer.schedule.kind=constant",
                                   "optimizer.schedule.peak_lr=1e-2", "log.every=1", "log.progress=false",
                                   "log.tensorboard=false", "checkpoint.every=2", f"log.eval_every={eval_every}",
                                   "log.eval_batches=2"])
    train(cfg, tmp_path / name)
    return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]


def test_precomputed_reference_trains_like_the_frozen_model_and_resumes_exactly(tmp_path):
    """objective.reference=precompute: the same run as holding a frozen reference model (every step's loss, implicit
    rewards and eval loss), and a run stopped at step 2 and resumed (the values of the remaining steps recomputed
    from the rebuilt initial model) continues bitwise like the uninterrupted one."""
    frozen = _dpo(tmp_path, "frozen", "model", 4, eval_every=2)
    pre = _dpo(tmp_path, "pre", "precompute", 4, eval_every=2)
    for key in ("loss", "chosen_reward", "reward_margin", "grad_norm"):
        np.testing.assert_allclose([m[key] for m in pre], [m[key] for m in frozen], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose([m["eval_loss"] for m in pre if "eval_loss" in m],
                               [m["eval_loss"] for m in frozen if "eval_loss" in m], rtol=1e-4)
    # policy == reference at step 1 (two programs: equal up to fp32 rounding of summed log-probs)
    assert abs(pre[0]["chosen_reward"]) < 1e-5 and abs(pre[0]["rejected_reward"]) < 1e-5
    _dpo(tmp_path, "resumed", "precompute", 2, eval_every=2)
    resumed = _dpo(tmp_path, "resumed", "precompute", 4, eval_every=2)
    assert [m["step"] for m in resumed] == [1, 2, 3, 4]
    assert [m["loss"] for m in resumed] == [m["loss"] for m in pre]
