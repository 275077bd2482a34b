"""The Hugging Face bridge: one declarative table maps `Qwen2ForCausalLM` tensors to our parameters, both ways.

Each row names a HF tensor, our parameter, and how our axes group into the HF axes: `q_proj.weight` is HF
[N*H, D] and ours [D, N, H], so its groups are ((1, 2), (0,)) — HF axis 0 is our axes 1 and 2 flattened, HF axis 1
is our axis 0. Import reshapes and transposes by the groups; export inverts the same mapping. Layer rows repeat for
every layer and fill our stacked [L, ...] parameters. Every shape is asserted and every tensor is used exactly once.

Import streams: each device's shard is read from disk on its own (`jax.make_array_from_callback` + lazy safetensors
slices), so host memory stays near one copy of the model. Export streams tensor by tensor into safetensors shards.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from tqdm import tqdm

from sailor2_jax.config import ComputeConfig, ModelConfig
from sailor2_jax.model.init import abstract_model
from sailor2_jax.model.qwen2 import Qwen2
from sailor2_jax.model.safetensors_io import (SafetensorsDir, TensorSpec, atomic_dir, parse_size,
                                              write_shards)
from sailor2_jax.sharding import state_shardings

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "added_tokens.json", "chat_template.jinja")


@dataclass(frozen=True)
class Row:
    hf: str                               # HF key; "{l}" marks a per-layer tensor
    ours: str                             # our parameter path, dotted
    groups: tuple[tuple[int, ...], ...]   # for each HF axis, the (per-layer) axes of ours it flattens

    @property
    def layered(self) -> bool:
        return "{l}" in self.hf

    def hf_shape(self, ours_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(int(np.prod([ours_shape[i] for i in g])) for g in self.groups)

    def perm(self) -> tuple[int, ...]:
        """Our axes in HF order (the transpose from ours to HF, after which a reshape gives the HF shape)."""
        return tuple(i for g in self.groups for i in g)


_LAYER = "model.layers.{l}."
TABLE: tuple[Row, ...] = (
    Row("model.embed_tokens.weight", "embed", ((0,), (1,))),
    Row(_LAYER + "input_layernorm.weight", "layers.attn_norm", ((0,),)),
    Row(_LAYER + "self_attn.q_proj.weight", "layers.q", ((1, 2), (0,))),
    Row(_LAYER + "self_attn.q_proj.bias", "layers.q_bias", ((0, 1),)),
    Row(_LAYER + "self_attn.k_proj.weight", "layers.k", ((1, 2), (0,))),
    Row(_LAYER + "self_attn.k_proj.bias", "layers.k_bias", ((0, 1),)),
    Row(_LAYER + "self_attn.v_proj.weight", "layers.v", ((1, 2), (0,))),
    Row(_LAYER + "self_attn.v_proj.bias", "layers.v_bias", ((0, 1),)),
    Row(_LAYER + "self_attn.o_proj.weight", "layers.o", ((2,), (0, 1))),
    Row(_LAYER + "post_attention_layernorm.weight", "layers.mlp_norm", ((0,),)),
    Row(_LAYER + "mlp.gate_proj.weight", "layers.gate", ((1,), (0,))),
    Row(_LAYER + "mlp.up_proj.weight", "layers.up", ((1,), (0,))),
    Row(_LAYER + "mlp.down_proj.weight", "layers.down", ((1,), (0,))),
    Row("model.norm.weight", "final_norm", ((0,),)),
    Row("lm_head.weight", "lm_head", ((1,), (0,))),
)


def rows_for(cfg: ModelConfig) -> tuple[Row, ...]:
    return tuple(r for r in TABLE if not (r.ours == "lm_head" and cfg.tie_embeddings))


def hf_keys(cfg: ModelConfig) -> list[str]:
    keys = []
    for row in rows_for(cfg):
        keys += [row.hf.format(l=l) for l in range(cfg.num_layers)] if row.layered else [row.hf]
    return keys


def _path(p) -> str:
    return ".".join(str(k) for k in p)


def check_keys(src: SafetensorsDir, cfg: ModelConfig, extra: tuple[str, ...] = ()) -> None:
    """Every tensor the config implies (plus `extra`, e.g. a classifier's head) is present and nothing else is: no
    weight is silently dropped."""
    present, expected = set(src.keys()), set(hf_keys(cfg)) | set(extra)
    if cfg.tie_embeddings and "lm_head.weight" in present:
        # Some writers store the tied head too; accept it only if it really is the embedding.
        if not np.array_equal(src.read("lm_head.weight"), src.read("model.embed_tokens.weight")):
            raise ValueError(f"{src.path}: tie_word_embeddings is true but lm_head.weight differs from the "
                             "embedding; set tie_word_embeddings=false in config.json")
        expected.add("lm_head.weight")
    if missing := sorted(expected - present):
        raise ValueError(f"{src.path}: missing tensors {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected := sorted(present - expected):
        raise ValueError(f"{src.path}: unexpected tensors {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
                         f" (config.json says {cfg.num_layers} layers, tie_word_embeddings={cfg.tie_embeddings})")


def read_config_json(hf_dir: str | Path) -> dict:
    """An HF directory's config.json, or a one-line error naming the file."""
    cfg_file = Path(hf_dir) / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{hf_dir}: config.json not found")
    try:
        return json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_file}: not valid JSON: {e}") from None


def read_hf_config(hf_dir: str | Path) -> ModelConfig:
    return ModelConfig.from_hf(read_config_json(hf_dir))


# --- HF -> ours --------------------------------------------------------------------------------------------------

def _read_part(src: SafetensorsDir, key: str, row: Row, shape: tuple[int, ...], index: tuple[slice, ...]):
    """Our (per-layer) tensor's `index`, read from the HF tensor `key` with only the needed HF rows/columns.

    A group of our axes flattens into one HF axis; if only its first axis is sliced, the slice is one contiguous
    HF range (the case for every rule we shard by); otherwise the whole HF axis is read and sliced afterwards.
    """
    expect = row.hf_shape(shape)
    if src.shape(key) != expect:
        raise ValueError(f"{src.path}: tensor {key} has shape {src.shape(key)}, expected {expect}")
    hf_index, rest, part_dims = [], [slice(None)] * len(shape), []
    for g in row.groups:
        starts = [index[i].indices(shape[i]) for i in g]
        tail_full = all(s[0] == 0 and s[1] == shape[i] for s, i in zip(starts[1:], g[1:]))
        inner = int(np.prod([shape[i] for i in g[1:]]))
        if tail_full and starts[0][2] == 1:
            hf_index.append(slice(starts[0][0] * inner, starts[0][1] * inner))
            part_dims += [starts[0][1] - starts[0][0]] + [shape[i] for i in g[1:]]
        else:
            hf_index.append(slice(None))
            part_dims += [shape[i] for i in g]
            for i in g:
                rest[i] = index[i]
    part = src.read(key, tuple(hf_index)).reshape(part_dims)
    return np.transpose(part, np.argsort(row.perm()))[tuple(rest)]


def _array_from_shards(shape: tuple[int, ...], sharding, read) -> jax.Array:
    """Like `jax.make_array_from_callback`, but each shard goes to its device as soon as it is read: the callback
    version gathers every host shard before the transfer, i.e. a second copy of each parameter."""
    arrays = [jax.device_put(read(index), device)
              for device, index in sharding.addressable_devices_indices_map(shape).items()]
    return jax.make_array_from_single_device_arrays(shape, sharding, arrays)


def import_hf(hf_dir: str | Path, mesh: Mesh, compute: ComputeConfig = ComputeConfig()) -> Qwen2:
    """Load a HF Qwen2 checkpoint into a model sharded over `mesh`, executed as `compute` says (its parameters are
    converted to `compute.param_dtype` as they are read)."""
    hf_dir = Path(hf_dir)
    cfg = read_hf_config(hf_dir)
    with SafetensorsDir(hf_dir) as src:
        check_keys(src, cfg)
        return load_module(src, abstract_model(cfg, compute), rows_for(cfg), mesh, compute.param_dtype)


def load_module(src: SafetensorsDir, abstract: nnx.Module, rows: tuple[Row, ...], mesh: Mesh, param_dtype: str):
    """`abstract` (a module of ShapeDtypeStructs) with every parameter read from `src` by its row of `rows` (keyed
    by our dotted parameter path), sharded over `mesh` as its logical names say, converted to `param_dtype`."""
    graphdef, abstract_state = nnx.split(abstract)
    shardings = {_path(p): v.get_value() for p, v in nnx.to_flat_state(state_shardings(abstract_state, mesh))}
    rows = {r.ours: r for r in rows}
    dtype = np.dtype(jax.numpy.dtype(param_dtype))

    def load(path, var):
        row = rows[_path(path)]
        shape = var.get_value().shape

        def callback(index):
            if not row.layered:
                # astype copies: a view would pin the whole read buffer inside the device array
                return _read_part(src, row.hf, row, shape, index).astype(dtype)
            layers = range(*index[0].indices(shape[0]))
            parts = [_read_part(src, row.hf.format(l=l), row, shape[1:], index[1:]) for l in layers]
            return np.stack(parts).astype(dtype, copy=False)  # np.stack already copied

        return var.replace(_array_from_shards(shape, shardings[_path(path)], callback))

    return nnx.merge(graphdef, nnx.map_state(load, abstract_state))


# --- ours -> HF --------------------------------------------------------------------------------------------------

def _host(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


EXPORT_BLOCK_BYTES = 64 << 20


def _hf_row_blocks(a: jax.Array, row: Row, np_dtype: np.dtype):
    """Yield the HF tensor of our (per-layer) array `a` in blocks of HF rows, each gathered on its own.

    HF rows are the first group of our axes; blocks are cut along that group's first axis, so each block is one
    device slice, transposed and reshaped on the host — never the whole matrix at once.
    """
    axis = row.groups[0][0]
    row_bytes = a.size // a.shape[axis] * np_dtype.itemsize
    step = max(1, EXPORT_BLOCK_BYTES // row_bytes)
    for start in range(0, a.shape[axis], step):
        part = _host(jax.lax.slice_in_dim(a, start, min(start + step, a.shape[axis]), axis=axis))
        part = np.transpose(part, row.perm())
        yield part.reshape((-1,) + row.hf_shape(a.shape)[1:]).astype(np_dtype, copy=False)


def export_specs(model: Qwen2, dtype: str | None = None) -> list[TensorSpec]:
    """One TensorSpec per HF tensor, in table order; values are gathered block by block only when written."""
    return module_specs(model, rows_for(model.cfg), model.cfg.num_layers,
                        np.dtype(jax.numpy.dtype(dtype or model.compute.param_dtype)))


def module_specs(module: nnx.Module, rows: tuple[Row, ...], num_layers: int, np_dtype: np.dtype) -> list[TensorSpec]:
    """The TensorSpecs of `module`'s parameters named by `rows` (our dotted paths), in `rows` order."""
    params = {_path(p): v for p, v in nnx.to_flat_state(nnx.state(module, nnx.Param))}
    specs = []
    for row in rows:
        arr = params[row.ours][...]
        if row.layered:
            shape = row.hf_shape(arr.shape[1:])
            specs += [TensorSpec(row.hf.format(l=l), np_dtype, shape,
                                 lambda a=arr, l=l, row=row: _hf_row_blocks(a[l], row, np_dtype))
                      for l in range(num_layers)]
        else:
            specs.append(TensorSpec(row.hf, np_dtype, row.hf_shape(arr.shape),
                                    lambda a=arr, row=row: _hf_row_blocks(a, row, np_dtype)))
    return specs


def write_hf_config(out: Path, cfg: ModelConfig, dtype: str, extra: dict | None = None) -> None:
    """config.json (`extra` updates it, e.g. a classifier's architecture and labels) and generation_config.json."""
    hf = cfg.to_hf(torch_dtype=dtype) | (extra or {})
    hf["dtype"] = dtype
    (out / "config.json").write_text(json.dumps(hf, indent=2))
    generation = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "pad_token_id": 151643,
                  "do_sample": False}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2))


def copy_tokenizer(tokenizer: str | Path, out: Path) -> None:
    """Copy the tokenizer files from a directory (or a single tokenizer.json) next to the weights."""
    tokenizer = Path(tokenizer)
    if tokenizer.is_file():
        shutil.copy2(tokenizer, out / "tokenizer.json")
        return
    found = [f for f in TOKENIZER_FILES if (tokenizer / f).is_file()]
    if "tokenizer.json" not in found:
        raise FileNotFoundError(f"{tokenizer}: no tokenizer.json")
    for f in found:
        shutil.copy2(tokenizer / f, out / f)


def write_specs(out_dir: str | Path, cfg: ModelConfig, specs: list[TensorSpec], *, dtype: str,
                tokenizer: str | Path | None, max_shard_size: str | int, overwrite: bool,
                extra_files: dict[str, str] | None = None, hf_config: dict | None = None) -> Path:
    """Write a complete HF directory (atomically): config (`hf_config` updates it), generation config, weights,
    tokenizer, extras.

    Multi-host: every process calls this and takes part in the gathers (collectives) of every tensor; process 0
    alone writes. So that no process is left waiting in a collective the others never enter, all processes first
    learn whether process 0 will write (it refuses an existing `out_dir` without `overwrite`), and each returns only
    once process 0 has put the complete directory in place (or raises when process 0 failed after the gathers).
    """
    out_dir = Path(out_dir)
    writer = jax.process_index() == 0
    if not _from_process_0(not (writer and out_dir.exists() and not overwrite)):
        raise FileExistsError(f"output directory exists: {out_dir} (pass overwrite to replace it)")
    if not writer:
        for spec in specs:
            for _ in spec.blocks():
                pass
    else:
        gathered = False
        try:
            with atomic_dir(out_dir, overwrite=overwrite) as tmp:
                write_hf_config(tmp, cfg, dtype, hf_config)
                bar = lambda it: tqdm(it, desc=f"writing {out_dir.name}", unit="shard", leave=False)  # noqa: E731
                write_shards(tmp, specs, parse_size(max_shard_size), progress=bar)
                gathered = True
                if tokenizer is not None:
                    copy_tokenizer(tokenizer, tmp)
                for name, text in (extra_files or {}).items():
                    (tmp / name).write_text(text)
        except BaseException:
            if gathered:  # the others wait for the outcome below (a failure mid-gather cannot be reported)
                _from_process_0(False)
            raise
    if not _from_process_0(True):
        raise RuntimeError(f"process 0 failed to write {out_dir} (its error says why)")
    return out_dir


def _from_process_0(value: bool) -> bool:
    """Process 0's `value`, on every process: a collective, so every process must call it at the same point."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils
    return bool(multihost_utils.broadcast_one_to_all(np.int32(value)))


def export_hf(model: Qwen2, out_dir: str | Path, *, tokenizer: str | Path | None = None,
              max_shard_size: str | int = "2GB", dtype: str | None = None, overwrite: bool = False,
              extra_files: dict[str, str] | None = None) -> Path:
    """Write `model` as a HF directory that `transformers.AutoModelForCausalLM.from_pretrained` loads."""
    dtype = dtype or model.compute.param_dtype
    return write_specs(out_dir, model.cfg, export_specs(model, dtype), dtype=dtype, tokenizer=tokenizer,
                       max_shard_size=max_shard_size, overwrite=overwrite, extra_files=extra_files)


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = True) -> str:
    """Upload an exported folder to the Hub. The token comes from HF_TOKEN and is never printed or logged."""
    from huggingface_hub import HfApi

    token = os.environ.get("HF_TOKEN")
    if not token:
        raise ValueError("pushing to the Hub needs a token in the HF_TOKEN environment variable")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                             commit_message="Upload from sailor2_jax")
    return str(getattr(info, "commit_url", info))
