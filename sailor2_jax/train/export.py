"""Load the model of a train checkpoint (any objective: the params item is the same), e.g. for HF export."""

from __future__ import annotations

from pathlib import Path

from flax import nnx
from jax.sharding import Mesh

from sailor2_jax.config import ComputeConfig, MeshConfig, ModelConfig
from sailor2_jax.model.init import abstract_model
from sailor2_jax.model.qwen2 import Qwen2
from sailor2_jax.sharding import make_mesh, state_shardings
from sailor2_jax.train import checkpoint as ckpt


def load_checkpoint_model(path: str | Path, mesh: Mesh | None = None, compute: ComputeConfig = ComputeConfig()
                          ) -> tuple[Qwen2, int]:
    """(model, step) from a run dir, a checkpoints dir or a step dir; sharded over `mesh` (default: FSDP over all),
    executed as `compute` says (parameters restored in its param_dtype). Multi-host: every process calls this (and
    then `export_hf`)."""
    step_dir = ckpt.step_dir(path)
    model_cfg = ModelConfig.model_validate(ckpt.read_config(step_dir)["model"])
    mesh = mesh or make_mesh(MeshConfig())
    graphdef, abstract_state = nnx.split(abstract_model(model_cfg, compute))
    shardings = nnx.to_pure_dict(state_shardings(abstract_state, mesh))
    target = ckpt.abstract_target(shardings, nnx.to_pure_dict(abstract_state))
    return nnx.merge(graphdef, ckpt.restore_params(step_dir, target)), int(step_dir.name)
