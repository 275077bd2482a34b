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
from sailor2_jax.train.config import TrainConfig
from sailor2_jax.train.export import load_checkpoint_model
from sailor2_jax.train.loop import train

BASE = ["model.base=tiny", "model.vocab_size=256", "model.num_layers=2", "model.tie_embeddings=false",
        "data.batch_size=8", "data.seq_len=32", "log.progress=false", "log.tensorboard=false", "checkpoint.every=2",
        "steps=2"]


def _host(tree):
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def test_restore_onto_a_different_mesh_shape(tmp_path):
    cfg = load(TrainConfig, None, BASE + ["mesh.fsdp=8"])
    train(cfg, tmp_path)
    model8, step = load_checkpoint_model(tmp_path, make_mesh(MeshConfig(data=1, fsdp=8, tensor=1)))
    saved = _host(nnx.to_pure_dict(nnx.state(model8)))
    other = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    model222, _ = load_checkpoint_model(tmp_path, other)
    state = nnx.state(model222)
    q = state["layers"]["q"][...]
    assert q.sharding.mesh.shape == other.shape and q.sharding.spec == jax.sharding.PartitionSpec(
        None, "fsdp", "tensor", None)
    jax.tree.map(np.testing.assert_array_equal, _host(nnx.to_pure_dict(state)), saved)
    # and the whole train state resumes onto the new mesh: one more step from step 2
    result = train(cfg.replace(mesh=MeshConfig(data=2, fsdp=2, tensor=2), steps=3), tmp_path)
    assert result.resumed_from == 2 and result.step == 3 and step == 2


@pytest.mark.parametrize("kind", ["pretrain", "sft", "dpo"])
def test_export_from_each_kind_of_checkpoint_loads_in_transformers(tmp_path, kind):
    cfg = load(TrainConfig, None, BASE + [f"objective.kind={kind}", "model.compute_dtype=float32"])
    train(cfg, tmp_path / "run")
    assert cli_main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    ours, _ = load_checkpoint_model(tmp_path / "run" / "checkpoints")
    hf = Qwen2ForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).eval()
    tokens = np.random.default_rng(0).integers(0, 256, (2, 16))
    with torch.no_grad():
        want = hf(torch.tensor(tokens)).logits.numpy()
    got = np.asarray(ours(jnp.asarray(tokens, jnp.int32)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert ckpt.read_config(tmp_path / "run")["train"]["objective"]["kind"] == kind
