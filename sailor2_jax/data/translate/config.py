"""`sailor2-jax translate` settings: a `config.Config` (YAML + dotted `key=value` overrides + the command's flags,
validated in one pass; unknown keys are errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic
from pydantic import Field

from sailor2_jax.config import Config, find_config, load
from sailor2_jax.data.stages.executor import ExecutorConfig
from sailor2_jax.languages import canonical_language
from sailor2_jax.languages import FLORES


class TranslateConfig(Config):
    model: Path = Field(description="NLLB/M2M100 model: a Hugging Face directory or a CTranslate2 one")
    targets: list[str] = Field(min_length=1, description="target languages (ISO codes: th, vi, ...)")
    source: str = "en"
    fields: list[str] = Field(["text"], min_length=1, description="fields to translate: strings, or lists of chat "
                              "messages whose `content` is translated (preference records: prompt, chosen, rejected)")
    engine: Literal["auto", "ctranslate2", "transformers"] = Field(
        "auto", description="auto: CTranslate2 (converting a Hugging Face model once, under OUT/work/) when "
        "installed, else transformers")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = Field("auto", description="CTranslate2: int8, int8_float16, bfloat16, float16, float32...; "
                              "transformers: float32, bfloat16, float16; auto: the engine's fastest for the device")
    beam_size: int = Field(4, gt=0)
    batch_size: int = Field(32, gt=0, description="segments per engine batch")
    records_per_batch: int = Field(256, gt=0, description="records whose segments are translated together")
    max_segment_tokens: int = Field(200, gt=8, description="source tokens per segment (longer sentences are cut)")
    max_output_tokens: int = Field(256, gt=0, description="decoding limit per segment")
    max_document_chars: int = Field(100_000, gt=0, description="longer fields are rejected as too_long")
    threads: int = Field(0, ge=0, description="CPU threads per task (0: the engine's default)")
    executor: ExecutorConfig = ExecutorConfig()
    compression: Literal["gzip", "none"] = "gzip"
    progress: bool = True

    @pydantic.field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return _language(v)

    @pydantic.field_validator("targets")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(_language(t) for t in v))


def _language(code: str) -> str:
    lang = canonical_language(code)
    if lang not in FLORES:
        raise ValueError(f"unknown language {code!r}; languages: {', '.join(FLORES)}")
    return lang


def load_translate_config(name_or_path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
                          ) -> TranslateConfig:
    """A YAML config (a path, or a name in `configs/translate/`; None: no file) with dotted overrides on top (the
    command's flags among them); errors name the field and where its value came from."""
    return load(TranslateConfig, find_config("translate", name_or_path) if name_or_path is not None else None,
                overrides)
