"""LlamaPro block expansion (recipe.md §1.3): deepen a model so that it computes the same function at step 0.

After every `split = old // (new - old)` original layers, a copy of the preceding layer is inserted with its o_proj
and down_proj zeroed. Qwen2 has no bias on either, so both residual branches of the copy add exactly zero.
24→48 inserts after every layer (new at odd indices), 28→32 at 7, 15, 23, 31, and 48→64 at every 4th index.
Options: untie the embeddings (Qwen2.5-0.5B ties them, Sailor2-1B does not: the head starts as a copy of the
embedding) and resize the embedding rows (152064 → 151936 for 8B/20B: the rows beyond Qwen's 151,665 real tokens are
padding, so keeping the first rows loses nothing).

Two entry points share `expansion_plan`: `expand_model` on an in-memory (sharded) model, and `expand_hf_dir`, which
streams tensor by tensor from one HF directory to another without materialising the model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from sailor2_jax.config import ModelConfig
from sailor2_jax.model.hf import check_keys, hf_keys, read_hf_config, write_specs
from sailor2_jax.model.init import abstract_model
from sailor2_jax.model.qwen2 import Qwen2
from sailor2_jax.model.safetensors_io import SafetensorsDir, TensorSpec
from sailor2_jax.sharding import state_shardings

EXPANSION_FILE = "sailor2_expansion.json"  # what `expand_hf_dir` records beside the weights (read_expansion)
ZEROED = ("o", "down")  # our names of the output projections zeroed in new layers
ZEROED_HF = ("self_attn.o_proj.weight", "mlp.down_proj.weight")


def expansion_plan(old_layers: int, new_layers: int) -> tuple[list[int], list[bool]]:
    """(source layer of each new layer, whether it is an inserted one)."""
    added = new_layers - old_layers
    if added <= 0:
        raise ValueError(f"expansion must add layers: {old_layers} -> {new_layers}")
    if old_layers % added:
        raise ValueError(f"LlamaPro expansion needs the added layers to divide the original ones evenly: "
                         f"{old_layers} -> {new_layers} adds {added}, which does not divide {old_layers}")
    split = old_layers // added
    src, is_new = [], []
    for i in range(old_layers):
        src.append(i)
        is_new.append(False)
        if (i + 1) % split == 0:
            src.append(i)
            is_new.append(True)
    return src, is_new


def expanded_config(cfg: ModelConfig, new_layers: int, vocab_size: int | None, untie: bool,
                    **fields: float | int | None) -> ModelConfig:
    """The expanded architecture; `fields` (rms_norm_eps, max_position_embeddings) change no weight and are set
    when given: Qwen2.5-14B has eps 1e-5 and 131,072 positions, the released Sailor2-20B 1e-6 and 4,096."""
    if untie and not cfg.tie_embeddings:
        raise ValueError("--untie-embeddings given but the base model's embeddings are not tied")
    return cfg.replace(num_layers=new_layers, vocab_size=vocab_size or cfg.vocab_size,
                       tie_embeddings=cfg.tie_embeddings and not untie,
                       inserted_layers=inserted_layers(cfg, new_layers),
                       **{k: v for k, v in fields.items() if v is not None})


def inserted_layers(cfg: ModelConfig, new_layers: int) -> list[int]:
    """The expanded model's layers that are not the base's own: the ones inserted now, and copies of layers an
    earlier expansion inserted. Recorded in the config (`ModelConfig.inserted_layers`, config.json), so every
    checkpoint and export of the expanded model knows which of its layers form the original model (the self draft
    of speculative decoding runs those alone)."""
    src, is_new = expansion_plan(cfg.num_layers, new_layers)
    before = set(cfg.inserted_layers or ())
    return [i for i, (s, new) in enumerate(zip(src, is_new)) if new or s in before]


def _resize_rows(x, rows: int, axis: int):
    """Keep the first `rows` along `axis`, or append zero rows (new tokens start with zero embeddings); works on
    numpy (the streaming HF path) and on jax arrays (in memory) alike."""
    if rows <= x.shape[axis]:
        return x[(slice(None),) * axis + (slice(0, rows),)]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, rows - x.shape[axis])
    return (jnp if isinstance(x, jax.Array) else np).pad(x, pad)


def expand_model(model: Qwen2, new_layers: int, mesh: Mesh, *, vocab_size: int | None = None,
                 untie: bool = False) -> tuple[Qwen2, list[bool]]:
    """Expanded copy of `model` (sharded on `mesh`) and the per-layer mask of inserted layers."""
    cfg = model.cfg
    src, is_new = expansion_plan(cfg.num_layers, new_layers)
    new_cfg = expanded_config(cfg, new_layers, vocab_size, untie)
    graphdef, abstract_state = nnx.split(abstract_model(new_cfg, model.compute))
    old = nnx.state(model, nnx.Param)

    def build(old):
        layers = {name: jnp.take(var[...], jnp.asarray(src), axis=0) for name, var in old["layers"].items()}
        keep = jnp.asarray(np.logical_not(is_new), jnp.float32)
        for name in ZEROED:
            layers[name] = layers[name] * keep.reshape((-1,) + (1,) * (layers[name].ndim - 1)).astype(
                layers[name].dtype)
        embed = _resize_rows(old["embed"][...], new_cfg.vocab_size, 0)
        head = embed.T if untie else (None if new_cfg.tie_embeddings else
                                      _resize_rows(old["lm_head"][...], new_cfg.vocab_size, 1))
        values = {"embed": embed, "final_norm": old["final_norm"][...], "lm_head": head,
                  **{f"layers.{k}": v for k, v in layers.items()}}
        return nnx.map_state(lambda p, v: v.replace(values[".".join(map(str, p))]), abstract_state)

    state = jax.jit(build, out_shardings=state_shardings(abstract_state, mesh))(old)
    return nnx.merge(graphdef, state), is_new


def read_expansion(hf_dir: str | Path) -> dict | None:
    """The expansion record of a directory written by `expand_hf_dir` (`is_new_layer`, `source_layer`, ...), or None
    for a directory that is not an expansion."""
    path = Path(hf_dir) / EXPANSION_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None


_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def expand_hf_dir(base: str | Path, out: str | Path, new_layers: int, *, vocab_size: int | None = None,
                  untie: bool = False, overwrite: bool = False, rms_norm_eps: float | None = None,
                  max_position_embeddings: int | None = None) -> dict:
    """Expand a HF Qwen2 directory into a new one, streaming; returns the summary written to EXPANSION_FILE."""
    base = Path(base)
    cfg = read_hf_config(base)
    new_cfg = expanded_config(cfg, new_layers, vocab_size, untie, rms_norm_eps=rms_norm_eps,
                              max_position_embeddings=max_position_embeddings)
    src_of, is_new = expansion_plan(cfg.num_layers, new_layers)
    with SafetensorsDir(base) as src:
        check_keys(src, cfg)
        dtypes = {k: src.dtype(k) for k in src.keys()}
        dtype = str(dtypes["model.embed_tokens.weight"])
        specs = [_spec_for(key, src, dtypes, new_cfg, src_of, is_new, untie) for key in hf_keys(new_cfg)]
        summary = {"base_layers": cfg.num_layers, "layers": new_layers, "source_layer": src_of,
                   "is_new_layer": is_new, "inserted_layers": new_cfg.inserted_layers, "vocab_size": new_cfg.vocab_size,
                   "untied": untie}
        tokenizer = base if (base / "tokenizer.json").is_file() else None
        extra = {EXPANSION_FILE: json.dumps(summary, indent=2)}
        if (base / "generation_config.json").is_file():  # the base's decoding defaults and eos list go along
            extra["generation_config.json"] = (base / "generation_config.json").read_text()
        write_specs(out, new_cfg, specs, dtype=dtype, tokenizer=tokenizer, max_shard_size="5GB",
                    overwrite=overwrite, extra_files=extra)
    return summary


def _spec_for(key, src, dtypes, cfg, src_of, is_new, untie) -> TensorSpec:
    if m := _LAYER_KEY.match(key):
        layer, rest = int(m.group(1)), m.group(2)
        src_key = f"model.layers.{src_of[layer]}.{rest}"
        shape = src.shape(src_key)
        if is_new[layer] and rest in ZEROED_HF:
            return TensorSpec(key, dtypes[src_key], shape, lambda: np.zeros(shape, dtypes[src_key]))
        return TensorSpec(key, dtypes[src_key], shape, lambda: src.read(src_key))
    if key in ("model.embed_tokens.weight", "lm_head.weight"):
        src_key = "model.embed_tokens.weight" if (untie or key not in src.keys()) else key
        shape = (cfg.vocab_size, src.shape(src_key)[1])
        return TensorSpec(key, dtypes[src_key], shape, lambda: _resize_rows(src.read(src_key), cfg.vocab_size, 0))
    return TensorSpec(key, dtypes[key], src.shape(key), lambda: src.read(key))
