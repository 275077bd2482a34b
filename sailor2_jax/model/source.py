"""The one way to open a model: where it lives (`ModelSource`: a Hugging Face directory or a training run's
checkpoint), how it runs (dtype, mesh), and what comes with it (tokenizer, eos ids) → `open_model` → `OpenModel`.

Every command that reads a model (generate, chat, eval, score, select-sft, filter-ppl, onpolicy, export, serve)
builds a `ModelSource` from its flags (`commands/_args.py`) and calls `open_model`; library code builds one directly.
A run holds a language model or, after a `reward` run, a reward model (`Qwen2Reward`); `head` says which the caller
needs, so a reward run given where a language model is asked for is refused before its weights are read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import pydantic
import tokenizers
from flax import nnx
from jax.sharding import Mesh

from sailor2_jax.config import ComputeConfig, Config, DType, MeshConfig, ModelConfig
from sailor2_jax.model import run_dir
from sailor2_jax.sharding import make_mesh, state_shardings
from sailor2_jax.tokenizer import eos_ids_of, tokenizer_for


class ModelSource(Config):
    path: str = pydantic.Field(description="a Hugging Face directory (it has config.json), or a training run: its "
                                           "output dir, its checkpoints/ dir or one step's dir")
    step: int | None = pydantic.Field(None, ge=0, description="a run's step (default: its latest finished one)")
    dtype: DType | None = pydantic.Field(None, description="weights and activations as run (fp32 for parity "
                                         "checks); default: as stored (a run's trained dtype, config.json's dtype)")
    mesh: MeshConfig = pydantic.Field(MeshConfig(data=-1, fsdp=1, tensor=1),
                                      description="the device mesh (default: rows split over all devices)")
    tokenizer: str | None = pydantic.Field(None, description="a tokenizer.json or a directory holding one; default: "
                                                             "the model directory's, else the Qwen2.5 tokenizer")
    head: Literal["lm", "reward", "any"] = pydantic.Field(
        "lm", description="what the caller needs: a language model, a reward model (one score), or either")

    @property
    def is_hf(self) -> bool:
        return (Path(self.path) / "config.json").is_file()



def _compute(dtype: str) -> ComputeConfig:
    return ComputeConfig(param_dtype=dtype, dtype=dtype, remat="none")


@dataclasses.dataclass
class OpenModel:
    model: nnx.Module            # a Qwen2 (language model) or a Qwen2Reward
    mesh: Mesh
    tokenizer: tokenizers.Tokenizer
    eos_ids: tuple[int, ...]     # what generation stops on (the HF directory's generation_config.json, else Qwen's)
    description: str             # the path, and the step of a run
    step: int | None             # a run's step; None for an HF directory
    hf_dir: Path | None          # the HF directory (its generation_config.json, chat template) or None for a run


def open_model(source: ModelSource, mesh: Mesh | None = None) -> OpenModel:
    """`source`'s model on `mesh` (default: `source.mesh` over all devices), its parameters read straight into their
    shards. Multi-host: every process calls this."""
    path = Path(source.path)
    if not path.is_dir() and "://" not in source.path:
        raise FileNotFoundError(f"{path}: not a directory (a Hugging Face model or a training run)")
    mesh = mesh or make_mesh(source.mesh)
    if source.is_hf:
        if source.step is not None:
            raise ValueError(f"{path} is a Hugging Face directory: it has no steps (step={source.step})")
        model = _open_hf(path, mesh, source.head, source.dtype)
        return OpenModel(model, mesh, tokenizer_for(path, source.tokenizer), eos_ids_of(path), str(path), None, path)
    model, step = open_run(path, mesh, source.dtype, head=source.head, step=source.step)
    return OpenModel(model, mesh, tokenizer_for(None, source.tokenizer), eos_ids_of(None), f"{path} (step {step})",
                     step, None)


def _open_hf(path: Path, mesh: Mesh, head: str, dtype: str | None) -> nnx.Module:
    from sailor2_jax.model.hf import import_hf, read_config_json
    from sailor2_jax.model.reward import import_reward

    hf = read_config_json(path)
    is_reward = hf.get("architectures") == ["Qwen2ForSequenceClassification"]
    if head == "lm" and is_reward:
        raise ValueError(f"{path}: a reward model (Qwen2ForSequenceClassification) cannot generate or score tokens; "
                         "give it where a reward model is asked for (e.g. --reward-model)")
    if head == "reward" and not is_reward:
        raise ValueError(f"{path}: not a reward model (architectures must be ['Qwen2ForSequenceClassification'])")
    stored = hf.get("dtype") or hf.get("torch_dtype") or "float32"  # transformers 5 writes `dtype`
    return (import_reward if is_reward else import_hf)(path, mesh, _compute(dtype or stored))


def open_run(path: str | Path, mesh: Mesh | None = None, dtype: DType | None = None, *,
             head: Literal["lm", "reward", "any"] = "any", step: int | None = None) -> tuple[nnx.Module, int]:
    """(model, step) of a training run's checkpoint (any objective: the params item is the same; a `reward` run
    holds a `Qwen2Reward`), sharded over `mesh` (default: FSDP over all devices), run in `dtype` (default: the
    dtype it was trained in). A run whose kind is not `head` is refused before its weights are read."""
    mesh = mesh or make_mesh(MeshConfig())
    step_dir = run_dir.step_dir(path, step)
    saved = run_dir.read_config(step_dir)
    model_cfg = ModelConfig.model_validate(saved["model"])
    objective = saved["train"]["objective"]
    is_reward = objective["kind"] == "reward"
    compute = _compute(dtype or saved["train"]["compute"]["param_dtype"])
    if head == "lm" and is_reward:  # a classifier: it scores text, it has no LM head
        raise ValueError(f"{path}: a reward model's run (objective kind: reward) cannot generate or score tokens; "
                         "give it where a reward model is asked for (e.g. --reward-model)")
    if head == "reward" and not is_reward:
        raise ValueError(f"{path}: not a reward model's run (objective kind: {objective['kind']})")
    if is_reward:  # a Qwen2Reward (model/reward.py), exported as a sequence classifier
        from sailor2_jax.model.reward import abstract_reward
        abstract = abstract_reward(model_cfg, objective["reward_pad_id"], compute)
    else:
        from sailor2_jax.model.init import abstract_model
        abstract = abstract_model(model_cfg, compute)
    graphdef, abstract_state = nnx.split(abstract)
    shardings = nnx.to_pure_dict(state_shardings(abstract_state, mesh))
    target = run_dir.abstract_target(shardings, nnx.to_pure_dict(abstract_state))
    return nnx.merge(graphdef, run_dir.restore_params(step_dir, target)), int(step_dir.name)
