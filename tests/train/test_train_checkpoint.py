"""Checkpoints restore onto another mesh shape with the same parameters, and `sailor2-jax export` turns a
pre-training, SFT or DPO checkpoint into a HF directory that transformers loads with the same logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import Qwen2ForCausalLM

from sailor2_jax.cli import main as cli_main
from sailor2_jax.config import MeshConfig, load
from sailor2_jax.sharding import make_mesh
from sailor2_jax.train import checkpoint as ckpt
from sailor2_jax.model import run_dir
from sailor2_jax.train.init import architecture
from sailor2_jax.train.config import TrainConfig
from sailor2_jax.model.source import open_run
from sailor2_jax.train.loop import train

BASE = ["data.source=synthetic", "model.base=tiny", "model.vocab_size=256", "model.num_layers=2", "model.tie_embeddings=false",
        "data.batch_size=8", "data.seq_len=32", "log.progress=false", "log.tensorboard=false", "checkpoint.every=2",
        "steps=2"]


def _host(tree):
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def test_restore_onto_a_different_mesh_shape(tmp_path):
    cfg = load(TrainConfig, None, BASE + ["mesh.fsdp=8"])
    train(cfg, tmp_path)
    model8, step = open_run(tmp_path, make_mesh(MeshConfig(data=1, fsdp=8, tensor=1)))
    saved = _host(nnx.to_pure_dict(nnx.state(model8)))
    other = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    model222, _ = open_run(tmp_path, other)
    state = nnx.state(model222)
    q = state["layers"]["q"][...]
    assert q.sharding.mesh.shape == other.shape and q.sharding.spec == jax.sharding.PartitionSpec(
        None, ("fsdp", "context"), "tensor", None)
    jax.tree.map(np.testing.assert_array_equal, _host(nnx.to_pure_dict(state)), saved)
    # and the whole train state resumes onto the new mesh: one more step from step 2
    result = train(cfg.replace(mesh=MeshConfig(data=2, fsdp=2, tensor=2), steps=3), tmp_path)
    assert result.resumed_from == 2 and result.step == 3 and step == 2


@pytest.mark.parametrize("kind", ["pretrain", "sft", "dpo"])
def test_export_from_each_kind_of_checkpoint_loads_in_transformers(tmp_path, kind):
    cfg = load(TrainConfig, None, BASE + [f"objective.kind={kind}", "compute.dtype=float32"])
    train(cfg, tmp_path / "run")
    assert cli_main(["export", "--checkpoint", str(tmp_path / "run"), "--output-dir", str(tmp_path / "hf")]) == 0
    ours, _ = open_run(tmp_path / "run" / "checkpoints", dtype="float32")
    hf = Qwen2ForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).eval()
    tokens = np.random.default_rng(0).integers(0, 256, (2, 16))
    with torch.no_grad():
        want = hf(torch.tensor(tokens)).logits.numpy()
    got = np.asarray(ours(jnp.asarray(tokens, jnp.int32)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert run_dir.read_config(tmp_path / "run")["train"]["objective"]["kind"] == kind


# --- init.optimizer_state: stage 2 continues stage 1's AdamW on its own schedule ------------------------------------

STAGE2 = ["steps=1", "checkpoint.every=1", "optimizer.schedule.peak_lr=3e-3", "optimizer.schedule.final_lr=3e-4",
          "optimizer.schedule.decay_steps=3", "optimizer.schedule.total_steps=3"]
STAGE2_LR = 3e-3 * 0.1 ** (1 / 3)  # pure exponential decay: step 1's rate (stage 1's count, if kept, gives less)


def _saved_state(run, cfg):
    """The whole train state of `run`'s latest checkpoint, with `cfg`'s optimiser, and what built it."""
    from sailor2_jax.train.step import setup_step

    mesh = make_mesh(cfg.mesh)
    setup = setup_step(cfg, architecture(cfg), mesh)
    mgr = ckpt.manager(run / "checkpoints", 1, 5)
    state = ckpt.restore(mgr, mgr.latest_step(), run_dir.abstract_target(setup.shardings, setup.abstract_state()), None)
    mgr.close()
    return state, (mesh, setup)


def test_stage2_continues_the_stage1_optimiser(tmp_path):
    from sailor2_jax.sharding import global_batch
    from sailor2_jax.train.init import data_iterator
    from sailor2_jax.train.objectives import Objective

    stage1 = load(TrainConfig, None, BASE + ["compute.dtype=float32"])
    train(stage1, tmp_path / "s1")
    s2 = BASE + ["compute.dtype=float32", f"init.checkpoint={tmp_path / 's1'}"] + STAGE2
    cont = load(TrainConfig, None, s2 + ["init.optimizer_state=true"])
    lr = train(cont, tmp_path / "cont").metrics["lr"]  # the rate step 1 used, as a float32
    assert lr == pytest.approx(STAGE2_LR, rel=1e-6)
    fresh = load(TrainConfig, None, s2)
    train(fresh, tmp_path / "fresh")

    # by hand: stage 1's whole saved state (moments, Adam count 2), one update at stage 2's first rate (3e-3)
    s1_state, _ = _saved_state(tmp_path / "s1", stage1)
    by_hand = load(TrainConfig, None, BASE + ["compute.dtype=float32", "optimizer.schedule.kind=constant",
                                              f"optimizer.schedule.peak_lr={lr!r}"])
    _, (mesh, setup) = _saved_state(tmp_path / "s1", by_hand)
    step = setup.compile(Objective(by_hand.objective), mesh, 1, with_reference=False)
    batch = next(data_iterator(cont, 256, previous_run=str(tmp_path / "s1")))  # stage 2's first batch
    with jax.set_mesh(mesh):
        want, _ = step(s1_state, global_batch(batch, mesh), None)
    want = _host(want)
    got, _ = _saved_state(tmp_path / "cont", cont)
    got = _host(got)
    jax.tree.map(np.testing.assert_array_equal, got.params, want.params)  # bitwise (CPU)
    assert int(got.opt_state[1][0].count) == 3 and int(got.opt_state[1][2].count) == 1  # Adam's count goes on
    jax.tree.map(np.testing.assert_array_equal, got.opt_state[1][0].mu, want.opt_state[1][0].mu)
    jax.tree.map(np.testing.assert_array_equal, got.opt_state[1][0].nu, want.opt_state[1][0].nu)

    # without optimizer_state the stage starts from stage 1's parameters with zero moments: after one step
    # mu = (1 - b1) * g exactly, Adam's count is 1, and the parameters differ from the continued run's
    started, _ = _saved_state(tmp_path / "fresh", fresh)
    started = _host(started)
    adam = started.opt_state[1][0]
    assert int(adam.count) == 1
    jax.tree.map(lambda m, v: np.testing.assert_allclose(m * m, (1 - 0.9) ** 2 * v / (1 - 0.95), rtol=1e-4,
                                                         atol=1e-30), adam.mu, adam.nu)
    assert not np.array_equal(started.params["embed"], got.params["embed"])


@pytest.mark.parametrize("change, named", [
    (["optimizer.trainable=new_layers", "optimizer.new_layers=[false,true]"], "trainable mask"),
    (["optimizer.clip_norm=null"], "gradient clipping"),
])
def test_stage2_refuses_another_optimiser_state(tmp_path, change, named):
    train(load(TrainConfig, None, BASE), tmp_path / "s1")
    cfg = load(TrainConfig, None, BASE + [f"init.checkpoint={tmp_path / 's1'}", "init.optimizer_state=true"]
               + STAGE2 + change)
    with pytest.raises(ValueError, match=f"init.optimizer_state: .*{named}"):
        train(cfg, tmp_path / "s2")
    assert not (tmp_path / "s2" / "checkpoints" / "1").exists()
