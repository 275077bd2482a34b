"""Where a run starts: the architecture, the first parameters and the previous stage, read from disk here (the
configs themselves do no I/O)."""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh

from sailor2_jax.config import ModelConfig
from sailor2_jax.model.hf import import_hf, read_hf_config
from sailor2_jax.model.init import create_model
from sailor2_jax.model.qwen2 import Qwen2
from sailor2_jax.train import checkpoint as ckpt
from sailor2_jax.train.config import TrainConfig

Params = dict[str, Any]


def architecture(cfg: TrainConfig) -> ModelConfig:
    """The model architecture: `model`, else init.hf_dir's config.json, else init.checkpoint's saved one."""
    if cfg.model is not None:
        return cfg.model
    if cfg.init.hf_dir:
        return read_hf_config(cfg.init.hf_dir)
    return ModelConfig.model_validate(ckpt.read_config(cfg.init.checkpoint)["model"])


def initial_params(cfg: TrainConfig, model_cfg: ModelConfig, mesh: Mesh, shardings: Params, shapes: Params,
                   init_model: Qwen2 | None = None) -> Params:
    """The first parameters: a given model, an HF directory, a previous run's checkpoint, or a random init."""
    if init_model is not None:
        params = nnx.to_pure_dict(nnx.state(init_model, nnx.Param))
    elif cfg.init.hf_dir:
        params = nnx.to_pure_dict(nnx.state(import_hf(cfg.init.hf_dir, mesh, cfg.compute)))
    elif cfg.init.checkpoint:
        params = ckpt.restore_params(cfg.init.checkpoint, ckpt.abstract_target(shardings, shapes))
    else:
        params = nnx.to_pure_dict(nnx.state(create_model(model_cfg, mesh, cfg.init.seed, cfg.compute)))
    return jax.device_put(params, shardings)
