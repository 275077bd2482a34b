"""Reward models: Hugging Face's `Qwen2ForSequenceClassification` with one label — the Qwen2 decoder, its final
norm, and a linear score head [D, 1] (no bias) read at the sequence's last token.

Import and export reuse the LM's tensor table (model/hf.py): the decoder's rows under `model.`, plus
`score.weight` [1, D]; a classifier has no `lm_head`. The score is read where transformers reads it: at the
rightmost token that is not `pad_token_id` (index 0 when a row is all padding), so for right-padded rows it is the
last real token. Rows are scored right-padded with plain causal attention, which leaves every real position exact.

Used by SFT data selection (`select-sft --reward-model`) and by preference tuning (reward training, on-policy
scoring): `rewards` is the pure function for jitted code, `score_sequences` the batched host-level scorer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from sailor2_jax.config import ComputeConfig, ModelConfig
from sailor2_jax.model.batched import apply_batched
from sailor2_jax.model.hf import Row, check_keys, load_module, module_specs, read_config_json, rows_for, write_specs
from sailor2_jax.model.qwen2 import Qwen2, _normal, _param
from sailor2_jax.model.safetensors_io import SafetensorsDir
from sailor2_jax.sharding import batch_sharding

ARCHITECTURE = "Qwen2ForSequenceClassification"
SCORE_ROW = Row("score.weight", "score", ((1,), (0,)))  # HF [1, D] ← ours [D, 1]


class Qwen2Reward(nnx.Module):
    """A Qwen2 decoder with a scalar score head. `cfg` is the architecture as config.json states it; `pad_id` is
    the config's `pad_token_id`, which decides where the score is read."""

    def __init__(self, cfg: ModelConfig, compute: ComputeConfig, *, pad_id: int, rngs: nnx.Rngs):
        self.cfg, self.compute, self.pad_id = cfg, compute, int(pad_id)
        # The decoder without an LM head: a "tied" config has none, and the backbone's logits are never computed.
        self.backbone = Qwen2(backbone_config(cfg), compute, rngs=rngs)
        self.score = _param(rngs, _normal, (cfg.hidden_size, 1), ("embed", None), jnp.dtype(compute.param_dtype))

    def __call__(self, tokens_BT: jax.Array) -> jax.Array:
        """Scores [B] in fp32 of right-padded rows (see `rewards`)."""
        return rewards(self, tokens_BT)


def backbone_config(cfg: ModelConfig) -> ModelConfig:
    return cfg.replace(tie_embeddings=True)


def last_token_index(tokens_BT: jax.Array, pad_id: int) -> jax.Array:
    """transformers' rule: the rightmost position whose token is not `pad_id` (0 for an all-padding row), [B]."""
    positions_T = jnp.arange(tokens_BT.shape[1], dtype=jnp.int32)
    return jnp.argmax(positions_T[None] * (tokens_BT != pad_id).astype(jnp.int32), axis=-1)


def rewards(model: Qwen2Reward, tokens_BT: jax.Array) -> jax.Array:
    """The score of each row [B] in fp32: the score head on the final-normed hidden state at `last_token_index`."""
    x_BTD = model.backbone.hidden(tokens_BT)
    last_B = last_token_index(tokens_BT, model.pad_id)
    x_BD = jnp.take_along_axis(x_BTD, last_B[:, None, None], axis=1)[:, 0]
    score_D1 = model.score[...].astype(x_BD.dtype)
    return jnp.einsum("bd,dl->bl", x_BD, score_D1, preferred_element_type=jnp.float32)[:, 0]


def score_sequences(model: Qwen2Reward, sequences: Sequence[np.ndarray], mesh: Mesh, *, batch_size: int = 32,
                    progress: bool = True) -> np.ndarray:
    """Scores [n] (fp32, numpy) of token sequences (e.g. chat-template ids of whole conversations), batched by
    length, jitted, rows split over the mesh's data-parallel axes."""
    graphdef, state = nnx.split(model)
    step = jax.jit(lambda state, batch: rewards(nnx.merge(graphdef, state), batch["tokens"]),
                   out_shardings=batch_sharding(mesh, 1))
    examples = [{"tokens": np.asarray(s, np.int32)} for s in sequences]
    return apply_batched(step, state, examples, mesh=mesh, batch_size=batch_size, pad={"tokens": model.pad_id},
                         desc="reward scores", progress=progress)


# --- Hugging Face directories --------------------------------------------------------------------------------------

def _rows(cfg: ModelConfig) -> tuple[Row, ...]:
    decoder = tuple(dataclasses.replace(r, ours=f"backbone.{r.ours}") for r in rows_for(backbone_config(cfg)))
    return decoder + (SCORE_ROW,)


def read_reward_config(hf_dir: str | Path) -> tuple[ModelConfig, int]:
    """(architecture, pad_token_id) of a HF `Qwen2ForSequenceClassification` directory with one label."""
    hf = read_config_json(hf_dir)
    cfg_file = Path(hf_dir) / "config.json"
    archs = hf.get("architectures")
    if archs != [ARCHITECTURE]:
        raise ValueError(f"{cfg_file}: architectures is {archs}, a reward model is [{ARCHITECTURE!r}]")
    labels = len(hf["id2label"]) if hf.get("id2label") else hf.get("num_labels", 2)
    if labels != 1:
        raise ValueError(f"{cfg_file}: {labels} labels; a reward model has one score (num_labels=1)")
    if hf.get("pad_token_id") is None:
        raise ValueError(f"{cfg_file}: no pad_token_id (it decides which token is scored)")
    return ModelConfig.from_hf(hf | {"architectures": ["Qwen2ForCausalLM"]}), int(hf["pad_token_id"])


def abstract_reward(cfg: ModelConfig, pad_id: int, compute: ComputeConfig = ComputeConfig()) -> Qwen2Reward:
    return nnx.eval_shape(lambda: Qwen2Reward(cfg, compute, pad_id=pad_id, rngs=nnx.Rngs(0)))


def import_reward(hf_dir: str | Path, mesh: Mesh, compute: ComputeConfig = ComputeConfig()) -> Qwen2Reward:
    """Load a HF `Qwen2ForSequenceClassification` (one label) sharded over `mesh`; every tensor is checked."""
    cfg, pad_id = read_reward_config(hf_dir)
    with SafetensorsDir(hf_dir) as src:
        check_keys(src, backbone_config(cfg), extra=(SCORE_ROW.hf,))
        return load_module(src, abstract_reward(cfg, pad_id, compute), _rows(cfg), mesh, compute.param_dtype)


def export_reward(model: Qwen2Reward, out_dir: str | Path, *, tokenizer: str | Path | None = None,
                  max_shard_size: str | int = "2GB", dtype: str | None = None, overwrite: bool = False) -> Path:
    """Write `model` as a HF directory that `AutoModelForSequenceClassification.from_pretrained` loads."""
    dtype = dtype or model.compute.param_dtype
    specs = module_specs(model, _rows(model.cfg), model.cfg.num_layers, np.dtype(jnp.dtype(dtype)))
    labels = {"architectures": [ARCHITECTURE], "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0},
              "pad_token_id": model.pad_id}
    return write_specs(out_dir, model.cfg, specs, dtype=dtype, tokenizer=tokenizer, max_shard_size=max_shard_size,
                       overwrite=overwrite, hf_config=labels)


def create_reward(cfg: ModelConfig, mesh: Mesh, *, pad_id: int, seed: int = 0,
                  compute: ComputeConfig = ComputeConfig()) -> Qwen2Reward:
    """A randomly initialised reward model, born sharded on `mesh` (e.g. a reward model trained from scratch)."""
    from sailor2_jax.sharding import state_shardings

    graphdef, abstract_state = nnx.split(abstract_reward(cfg, pad_id, compute))
    init = jax.jit(lambda: nnx.state(Qwen2Reward(cfg, compute, pad_id=pad_id, rngs=nnx.Rngs(seed))),
                   out_shardings=state_shardings(abstract_state, mesh))
    return nnx.merge(graphdef, init())
