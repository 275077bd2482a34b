"""Load the model of a train checkpoint (any LM objective: the params item is the same; a `reward` run holds a
reward model), e.g. for HF export."""

from __future__ import annotations

from pathlib import Path

from flax import nnx
from jax.sharding import Mesh

from sailor2_jax.config import ComputeConfig, MeshConfig, ModelConfig
from sailor2_jax.model.init import abstract_model
from sailor2_jax.model.qwen2 import Qwen2
from sailor2_jax.sharding import make_mesh, state_shardings
from sailor2_jax.train import checkpoint as ckpt


def load_checkpoint_model(path: str | Path, mesh: Mesh | None = None, compute: ComputeConfig = ComputeConfig(),
                          *, language_model: bool = False) -> tuple[Qwen2, int]:
    """(model, step) from a run dir, a checkpoints dir or a step dir; sharded over `mesh` (default: FSDP over all),
    executed as `compute` says (parameters restored in its param_dtype). `language_model`: refuse a reward model's
    run before reading its weights. Multi-host: every process calls this (and then `export_hf`)."""
    step_dir = ckpt.step_dir(path)
    saved = ckpt.read_config(step_dir)
    model_cfg = ModelConfig.model_validate(saved["model"])
    mesh = mesh or make_mesh(MeshConfig())
    objective = saved["train"]["objective"]
    if objective["kind"] == "reward" and language_model:  # a classifier: it scores text, it has no LM head
        raise ValueError(f"{path}: a reward model's run (objective kind: reward) cannot generate or score tokens; "
                         "give it where a reward model is asked for (e.g. --reward-model)")
    if objective["kind"] == "reward":  # a Qwen2Reward (model/reward.py), exported as a sequence classifier
        from sailor2_jax.model.reward import abstract_reward
        abstract = abstract_reward(model_cfg, objective["reward_pad_id"], compute)
    else:
        abstract = abstract_model(model_cfg, compute)
    graphdef, abstract_state = nnx.split(abstract)
    shardings = nnx.to_pure_dict(state_shardings(abstract_state, mesh))
    target = ckpt.abstract_target(shardings, nnx.to_pure_dict(abstract_state))
    return nnx.merge(graphdef, ckpt.restore_params(step_dir, target)), int(step_dir.name)
