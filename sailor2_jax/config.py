"""Typed configs: YAML files plus dotted `key=value` overrides, validated by pydantic with errors that name the field.

Every config class derives from `Config` (frozen, unknown keys are errors). `load(cls, path, overrides)` is the one
way configs enter the program, so a typo in a YAML key or an override fails at start-up, not hours into a run.
"""

from __future__ import annotations

import copy
import glob
import importlib.util
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import pydantic
import yaml

C = TypeVar("C", bound="Config")

DType = Literal["float32", "bfloat16", "float16"]
RematPolicy = Literal["none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable", "save_attention_out"]
AttentionImpl = Literal["xla", "cudnn", "splash", "auto"]


class Config(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    def replace(self: C, **changes: Any) -> C:
        return type(self).model_validate({**self.model_dump(), **changes})


INSERTED_LAYERS_KEY = "sailor2_inserted_layers"  # config.json: the expansion record (transformers keeps unknown keys)
_HF_FIELDS = {  # ModelConfig field -> HF config.json key
    "vocab_size": "vocab_size", "hidden_size": "hidden_size", "intermediate_size": "intermediate_size",
    "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads", "num_kv_heads": "num_key_value_heads",
    "rope_theta": "rope_theta", "rms_norm_eps": "rms_norm_eps", "tie_embeddings": "tie_word_embeddings",
    "max_position_embeddings": "max_position_embeddings", "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id",
}


_ROPE_HF_KEYS = {  # rope type -> the config.json keys it takes (besides type/rope_type/rope_theta)
    "linear": {"factor"}, "dynamic": {"factor"},
    "yarn": {"factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow", "truncate"},
}


class RopeScaling(Config):
    """RoPE scaling as transformers' Qwen2 computes it (`modeling_rope_utils`): `linear` divides every frequency by
    `factor`; `dynamic` (NTK) raises the base once a forward pass's positions pass `max_position_embeddings`; `yarn`
    interpolates the low frequencies by `factor`, keeps the high ones, ramps between the dimensions where a
    wavelength fits `beta_fast`..`beta_slow` times into `original_max_position_embeddings`, and scales sin/cos by
    `attention_factor` (default 0.1·ln(factor) + 1). config.json spells it `rope_scaling` (transformers 4, vLLM) or
    `rope_parameters` (transformers 5, with rope_theta inside); both are read and written."""

    type: Literal["linear", "dynamic", "yarn"]
    factor: float = pydantic.Field(ge=1.0, description="context extension factor (Qwen2.5 128K: yarn with 4)")
    original_max_position_embeddings: int | None = pydantic.Field(
        None, gt=0, description="yarn: the pre-training length (default: max_position_embeddings, as transformers)")
    attention_factor: float | None = pydantic.Field(None, gt=0, description="yarn: sin/cos scale (default from factor)")
    beta_fast: float | None = pydantic.Field(None, gt=0, description="yarn: extrapolation boundary (default 32)")
    beta_slow: float | None = pydantic.Field(None, gt=0, description="yarn: interpolation boundary (default 1)")
    truncate: bool = pydantic.Field(True, description="yarn: round the ramp's ends to whole dimensions")

    @classmethod
    def from_hf(cls, scaling: dict[str, Any]) -> "RopeScaling | None":
        """From config.json's `rope_scaling`/`rope_parameters` dict (None for the default RoPE)."""
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind == "default":
            return None
        if kind not in _ROPE_HF_KEYS:
            raise ValueError(f"unsupported rope scaling type {kind!r} in config.json (supported: default, "
                             f"{', '.join(_ROPE_HF_KEYS)})")
        fields = {k: v for k, v in scaling.items() if k not in ("type", "rope_type", "rope_theta")}
        if unknown := sorted(set(fields) - _ROPE_HF_KEYS[kind]):
            raise ValueError(f"config.json rope scaling {kind!r}: unsupported keys {unknown} "
                             f"(supported: {sorted(_ROPE_HF_KEYS[kind])})")
        try:
            return cls(type=kind, **{k: v for k, v in fields.items() if v is not None})
        except pydantic.ValidationError as e:
            raise ValueError(f"config.json rope scaling: {describe(e)}") from None

    def to_hf(self, max_position_embeddings: int) -> dict[str, Any]:
        """The dict for config.json, in both spellings' keys (`type` for transformers 4 and vLLM, `rope_type`)."""
        out: dict[str, Any] = {"type": self.type, "rope_type": self.type, "factor": self.factor}
        if self.type == "yarn":
            out["original_max_position_embeddings"] = (self.original_max_position_embeddings
                                                       or max_position_embeddings)
            out |= {k: getattr(self, k) for k in ("attention_factor", "beta_fast", "beta_slow")
                    if getattr(self, k) is not None}
            if not self.truncate:
                out["truncate"] = False
        return out


class ModelConfig(Config):
    """A Qwen2.5 decoder's architecture: what a checkpoint fixes (HF `config.json` holds the same; `from_hf`/`to_hf`
    map the two). How a run executes it — dtypes, remat, attention kernel — is `ComputeConfig`, the run's choice."""

    vocab_size: int = pydantic.Field(gt=0, description="V: embedding rows, padded beyond the tokenizer's vocabulary")
    hidden_size: int = pydantic.Field(gt=0, description="D")
    intermediate_size: int = pydantic.Field(gt=0, description="F")
    num_layers: int = pydantic.Field(gt=0, description="L")
    num_heads: int = pydantic.Field(gt=0, description="N: query heads")
    num_kv_heads: int = pydantic.Field(gt=0, description="K: key/value heads")
    head_dim: int = pydantic.Field(gt=0, description="H")
    rope_theta: float = 1e6
    rms_norm_eps: float = 1e-6
    tie_embeddings: bool = False
    max_position_embeddings: int = 32768
    rope_scaling: RopeScaling | None = pydantic.Field(None, description="RoPE scaling (None: plain RoPE)")
    bos_token_id: int | None = 151643
    eos_token_id: int | list[int] | None = pydantic.Field(
        151643, description="one id, or the list a chat model stops on (Qwen2.5/Sailor2 chat: [151645, 151643])")
    inserted_layers: list[int] | None = pydantic.Field(
        None, description="the layers block expansion inserted (`sailor2-jax expand` records them; HF config.json "
        f"key {INSERTED_LAYERS_KEY!r}): skipping them gives the base model's layers (the self draft of speculative "
        "decoding); null: not an expansion")

    @pydantic.model_validator(mode="after")
    def _check_heads(self) -> "ModelConfig":
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.inserted_layers is not None:
            layers = self.inserted_layers
            if sorted(set(layers)) != layers or not 0 < len(layers) < self.num_layers or layers[0] < 0 \
                    or layers[-1] >= self.num_layers:
                raise ValueError(f"inserted_layers {layers}: must be distinct increasing layer indices below "
                                 f"num_layers ({self.num_layers}), some but not all of them")
        return self

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides: Any) -> "ModelConfig":
        """Build from a HF `config.json` dict; refuses architectures and features we do not implement."""
        archs = hf.get("architectures") or ["Qwen2ForCausalLM"]
        if hf.get("model_type", "qwen2") != "qwen2" or archs != ["Qwen2ForCausalLM"]:
            raise ValueError(f"unsupported architecture: model_type={hf.get('model_type')!r}, architectures={archs}; "
                             "only Qwen2ForCausalLM (model_type 'qwen2') is supported")
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"unsupported hidden_act {hf['hidden_act']!r} in config.json (only 'silu')")
        # transformers 5 writes `rope_parameters` (rope_theta inside); transformers 4 and vLLM read `rope_scaling`
        scaling = hf.get("rope_scaling") or (hf.get("rope_parameters") or {})
        if hf.get("use_sliding_window"):
            raise ValueError("unsupported: use_sliding_window=true in config.json")
        kwargs: dict[str, Any] = {}
        for ours, theirs in _HF_FIELDS.items():
            if theirs in hf and (hf[theirs] is not None or ours.endswith("token_id")):
                kwargs[ours] = hf[theirs]
        if "rope_theta" not in hf and "rope_theta" in scaling:  # transformers 5 nests it in rope_parameters
            kwargs["rope_theta"] = scaling["rope_theta"]
        for required in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads"):
            if required not in kwargs:
                raise ValueError(f"config.json lacks required field {_HF_FIELDS[required]!r}")
        kwargs.setdefault("num_kv_heads", kwargs["num_heads"])
        kwargs["head_dim"] = hf.get("head_dim") or kwargs["hidden_size"] // kwargs["num_heads"]
        if kwargs["head_dim"] * kwargs["num_heads"] != kwargs["hidden_size"]:
            raise ValueError("config.json: hidden_size must equal num_attention_heads * head_dim for Qwen2")
        kwargs.setdefault("tie_embeddings", False)
        kwargs["rope_scaling"] = RopeScaling.from_hf(scaling)
        if hf.get(INSERTED_LAYERS_KEY) is not None:
            kwargs["inserted_layers"] = hf[INSERTED_LAYERS_KEY]
        try:
            return cls(**{**kwargs, **overrides})
        except pydantic.ValidationError as e:
            raise ValueError(f"invalid Qwen2 config.json: {e}") from None

    def to_hf(self, torch_dtype: str) -> dict[str, Any]:
        hf: dict[str, Any] = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
                              "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True,
                              "use_sliding_window": False, "sliding_window": None, "max_window_layers":
                              self.num_layers, "head_dim": self.head_dim, "torch_dtype": torch_dtype}
        for ours, theirs in _HF_FIELDS.items():
            hf[theirs] = getattr(self, ours)
        # Both spellings, so transformers 4/vLLM (`rope_scaling`) and transformers 5 (`rope_parameters`) agree.
        scaling = self.rope_scaling.to_hf(self.max_position_embeddings) if self.rope_scaling else None
        hf["rope_scaling"] = scaling
        hf["rope_parameters"] = (scaling or {"rope_type": "default"}) | {"rope_theta": self.rope_theta}
        if self.inserted_layers is not None:
            hf[INSERTED_LAYERS_KEY] = list(self.inserted_layers)
        return hf


class ComputeConfig(Config):
    """How a run executes a model: never part of the architecture or saved with the weights, so the same checkpoint
    trains with fp32 master weights and `dots_saveable` remat, decodes with bf16 weights, and is checked in fp32."""

    param_dtype: DType = pydantic.Field("float32", description="the parameters as held (training: fp32 masters)")
    dtype: DType = pydantic.Field("bfloat16", description="activations and matmul inputs (weights cast per layer)")
    scan_layers: bool = pydantic.Field(True, description="lax.scan over the stacked layers (false: a Python loop)")
    remat: RematPolicy = "dots_saveable"
    attention: AttentionImpl = pydantic.Field(
        "auto", description="auto: Splash on TPU, cuDNN on NVIDIA GPUs, XLA elsewhere")
    context_attention: Literal["all_gather", "ring"] = pydantic.Field(
        "all_gather", description="a sequence split over mesh.context: K/V all-gathered, or passed round a ring")


class MeshConfig(Config):
    """Mesh axis sizes; one of them may be -1 to take the remaining devices. `context` splits each sequence (context
    parallelism, for sequences whose activations do not fit one chip: 32K and beyond); 1 leaves it whole."""

    data: int = 1
    fsdp: int = -1
    context: int = 1
    tensor: int = 1

    @pydantic.model_validator(mode="after")
    def _check(self) -> "MeshConfig":
        sizes = (self.data, self.fsdp, self.context, self.tensor)
        if sum(s == -1 for s in sizes) > 1 or any(s == 0 or s < -1 for s in sizes):
            raise ValueError(f"mesh sizes must be positive with at most one -1, got data={self.data}, "
                             f"fsdp={self.fsdp}, context={self.context}, tensor={self.tensor}")
        return self

    @classmethod
    def parse(cls, text: str) -> "MeshConfig":
        """A mesh written as three sizes DATA,FSDP,TENSOR (`-1,1,1`; `x` or `;` may separate them, as in lm-eval's
        comma-split model arguments), or four, DATA,FSDP,CONTEXT,TENSOR: where a mesh arrives as text (a flag, a
        model argument), it becomes this."""
        parts = text.replace("x", ",").replace(";", ",").split(",")
        try:
            sizes = [int(p) for p in parts]
            if len(sizes) == 3:
                sizes.insert(2, 1)
            if len(sizes) != 4:
                raise ValueError
            data, fsdp, context, tensor = sizes
            return cls(data=data, fsdp=fsdp, context=context, tensor=tensor)
        except (ValueError, pydantic.ValidationError) as e:
            detail = describe(e) if isinstance(e, pydantic.ValidationError) else "three or four integers"
            raise ValueError(f"mesh {text!r}: expected sizes DATA,FSDP,TENSOR or DATA,FSDP,CONTEXT,TENSOR "
                             f"({detail})") from None


# --- loading -----------------------------------------------------------------------------------------------------

def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; values are parsed as YAML scalars/lists (`1e-4`, `true`, `[1, 2]`)."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form dotted.key=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw else ""
    return data


def override(key: str, value: Any) -> str:
    """A dotted override setting `key` to `value` exactly (written as JSON, which YAML reads back unchanged: a path,
    a language code such as `no`, a list): how a command's flags join its `key=value` overrides, so that the file,
    the overrides and the flags are merged and validated in one pass."""
    return f"{key}={json.dumps(value, default=str, ensure_ascii=False)}"


def load(cls: type[C], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
         **base: Any) -> C:
    """Load `cls` from YAML (optional) + overrides; raise one ValueError line naming each bad field and where it
    came from: the override that set it, else the file."""
    data = apply_overrides({**base, **(read_yaml(path) if path else {})}, overrides)
    try:
        return cls.model_validate(data)
    except pydantic.ValidationError as e:
        given = {item.partition("=")[0]: item for item in overrides}
        problems = []
        for err in e.errors():
            field = ".".join(map(str, err["loc"]))
            culprit = next((given[k] for k in given if field and (field == k or field.startswith(k + "."))), None)
            origin = f"override {culprit!r}" if culprit else (str(path) if path else cls.__name__)
            if not field and overrides:  # a check across fields: the file and the overrides together
                origin += f" with overrides {' '.join(overrides)}"
            problems.append(f"{_problem(field, err['msg'])} ({origin})")
        raise ValueError("invalid config: " + "; ".join(problems)) from None


def _problem(field: str, message: str) -> str:
    message = message.removeprefix("Value error, ")
    return f"{field}: {message}" if field else message


def describe(error: pydantic.ValidationError) -> str:
    """A pydantic error as one line: `field: message; field: message`."""
    return "; ".join(_problem(".".join(map(str, err["loc"])), err["msg"]) for err in error.errors())


def load_model_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ModelConfig:
    """A model config by name (`sailor2-1b`, one of the packaged `configs/model/`) or by YAML path."""
    return load(ModelConfig, find_config("model", name_or_path), overrides)


def model_config_field(value: Any) -> Any:
    """What a config's `model:` field may hold, resolved before validation: a name or path, or a mapping
    `{base: NAME, field: value}` (so dotted overrides such as `model.vocab_size=256` work); anything else as is."""
    if isinstance(value, (str, Path)):
        return load_model_config(value)
    if isinstance(value, dict) and "base" in value:
        fields = {k: v for k, v in value.items() if k != "base"}
        return load_model_config(value["base"]).replace(**fields)
    return value


def _shipped(package: str) -> Path:
    """A directory shipped as a data package: top-level `configs/` and `data/` of the checkout, which pyproject.toml
    installs as `sailor2_jax.configs` and `sailor2_jax.data_files` (an editable install maps them to the checkout)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{package} is not installed: install sailor2_jax (pip install -e . in a checkout)")
    return Path(next(iter(spec.submodule_search_locations)))


CONFIG_DIR = _shipped("sailor2_jax.configs")   # configs/ of the checkout
DATA_DIR = _shipped("sailor2_jax.data_files")  # data/ of the checkout: the embedded data (README.md: provenance)
_SHIPPED = {"configs": CONFIG_DIR, "data": DATA_DIR}


def resolve_path(path: str | Path) -> Path:
    """A path as given where it exists (or is absolute); else a relative `configs/...` or `data/...` names the shipped
    files, so the packaged configs' `data/udhr/en.jsonl` and a `configs/train/x.yaml` resolve from any working
    directory, checkout or installed wheel alike."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists() or glob.glob(str(path)):
        return path
    if len(path.parts) > 1 and path.parts[0] in _SHIPPED:
        shipped = _SHIPPED[path.parts[0]].joinpath(*path.parts[1:])
        if shipped.exists() or glob.glob(str(shipped)):
            return shipped
    return path  # missing: errors name it as the user gave it


def find_config(kind: str, name_or_path: str | Path) -> Path:
    """A config file: a path (see `resolve_path`), or a bare name (`demo_pretrain`) of a packaged
    `configs/<kind>/<name>.yaml`. A name that matches nothing is an error listing the packaged ones."""
    given = Path(name_or_path)
    if given.suffix in (".yaml", ".yml"):
        path = resolve_path(given)
    else:
        path = CONFIG_DIR / kind / f"{given}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIG_DIR / kind).glob("*.yaml"))
        raise FileNotFoundError(f"{kind} config not found: {name_or_path} (a YAML path, or one of: "
                                f"{', '.join(known)})")
    return path
