"""The RegMix search's config (`configs/regmix/*.yaml`): the stage whose mixture is searched, the sampler, the proxies,
their validation text, the regressor and the search. Defaults are the reference implementation's numbers
(sail-sg/regmix; recipe.md §4.2); the field names follow its own where it has them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic

from sailor2_jax.config import ComputeConfig, Config, ModelConfig, find_config, load, model_config_field
from sailor2_jax.train.config import OptimizerConfig, ScheduleConfig


class SampleConfig(Config):
    """RegMix's `generate_weights_dirichlet`: one Dirichlet draw per strength, one of them kept at random, rejection
    past `maximum_usage` epochs, the `minimum` floor and rounding, de-duplication, then `num_mixtures` at random."""

    num_mixtures: int = pydantic.Field(512, gt=0, description="proxy runs (RegMix's num_configs; Sailor2: 1,000)")
    seed: int = 42
    temperature: float = pydantic.Field(
        0.5, gt=0, le=1, description="RegMix's TEMP: the prior is raised to this power and renormalised (0.5 = square "
        "root). Note: the reverse of mixture.temperature, which raises shares to 1/T")
    min_strength: float = pydantic.Field(0.1, gt=0)
    max_strength: float = pydantic.Field(5.0, gt=0)
    num_strengths: int = pydantic.Field(15, gt=0, description="log-spaced strengths between min and max")
    sample_multiplier: int = pydantic.Field(100, gt=0, description="candidates drawn per mixture kept")
    maximum_usage: float = pydantic.Field(15, gt=0, description="a weight may not exceed this many times its prior "
                                          "share (epochs of the language's data, for a budget of all the data)")
    minimum: float = pydantic.Field(2e-4, gt=0, lt=1, description="weights below it become 0; weights are rounded "
                                    "to multiples of it")
    dedup_threshold: float = pydantic.Field(1e-5, ge=0, description="mixtures closer than this (L1) are one")

    @pydantic.model_validator(mode="after")
    def _check(self) -> SampleConfig:
        if self.min_strength > self.max_strength:
            raise ValueError(f"sample.min_strength ({self.min_strength}) exceeds max_strength ({self.max_strength})")
        return self


def _reference_optimizer() -> OptimizerConfig:
    # RegMix's proxies: AdamW (0.9, 0.95), weight decay 0.1, clipping 1.0, lr 4e-4 constant after 100 warmup steps
    return OptimizerConfig(b1=0.9, b2=0.95, weight_decay=0.1, clip_norm=1.0,
                           schedule=ScheduleConfig(kind="constant", peak_lr=4e-4, warmup_steps=100))


class ProxyConfig(Config):
    """The proxy models and how they train. All proxies of a search start from the same initial weights (`seed`) and
    read their tasks in the same document order, as in the reference (one seed for every run): they differ only by
    their mixtures."""

    model: ModelConfig = pydantic.Field(default_factory=lambda: model_config_field("regmix-1m"))
    vocabulary: Literal["compact", "full"] = pydantic.Field(
        "compact", description="compact: the embedding and LM head hold only the token ids that occur in the "
        "stage's data (training and held-out text), remapped in order; full: model.vocab_size rows")
    compute: ComputeConfig = ComputeConfig(remat="none", attention="xla")
    optimizer: OptimizerConfig = pydantic.Field(default_factory=_reference_optimizer)
    steps: int = pydantic.Field(1000, gt=0, description="the validation loss after the last step is the result")
    batch_size: int = pydantic.Field(512, gt=0, description="rows per step and proxy")
    seq_len: int = pydantic.Field(2048, gt=1)
    micro_batches: int = pydantic.Field(1, gt=0, description="gradient accumulation within each proxy's step")
    logits_chunk: int = pydantic.Field(1024, gt=0, description="positions per LM-head chunk (objective.logits_chunk)")
    per_program: int = pydantic.Field(
        64, gt=0, description="proxies trained together in one program (a multiple of the device count); a search "
        "runs its mixtures in programs of this many")
    seed: int = pydantic.Field(3406, description="initial weights and data order of every proxy (RegMix's data_seed)")
    checkpoint_every: int = pydantic.Field(100, gt=0, description="steps between checkpoints of a running program")
    log_every: int = pydantic.Field(10, gt=0, description="steps between lines of proxies/metrics.jsonl")

    @pydantic.field_validator("model", mode="before")
    @classmethod
    def _resolve_model(cls, v: Any) -> Any:
        return model_config_field(v)

    @pydantic.model_validator(mode="after")
    def _check(self) -> ProxyConfig:
        if self.batch_size % self.micro_batches:
            raise ValueError(f"proxy.batch_size ({self.batch_size}) must be a multiple of proxy.micro_batches "
                             f"({self.micro_batches})")
        return self


class ValidationConfig(Config):
    """Held-out text: the last `fraction` of each task's tokens (at most `max_tokens`), never trained on."""

    fraction: float = pydantic.Field(0.1, gt=0, lt=1)
    max_tokens: int | None = pydantic.Field(None, gt=1, description="cap per task (the reference validates on 50 "
                                            "batches of 16 x 2048 tokens per domain: 1,638,400)")
    batch_size: int = pydantic.Field(16, gt=0, description="rows per validation batch")


TargetName = str  # one of TARGET_NAMES (their functions: regmix.fit.TARGETS) or `package.module:function`
TARGET_NAMES = ("sum", "sum_log", "log_sum", "mean", "max")


class FitConfig(Config):
    """LightGBM, one regressor per target, as the reference notebook fits them: gbdt, objective `regression`, metrics
    l1 and l2, 1,000 iterations at learning rate 0.01, seed 42, early stopping (patience 3) on held-out mixtures."""

    target: TargetName = pydantic.Field(
        "sum", description="what the search minimises, from the per-language losses: sum (default), sum_log, log_sum "
        "(three readings of Sailor2's 'log sum across all languages', docs/regmix.md), mean, max, or an importable "
        "module:function")
    heldout_fraction: float = pydantic.Field(1 / 3, gt=0, lt=1, description="mixtures held out for early stopping "
                                             "and Spearman (the reference: 256 of 768)")
    num_iterations: int = pydantic.Field(1000, gt=0)
    learning_rate: float = pydantic.Field(1e-2, gt=0)
    early_stopping_rounds: int = pydantic.Field(3, gt=0)
    seed: int = 42
    lightgbm: dict[str, Any] = pydantic.Field(
        default_factory=dict, description="further LightGBM parameters (e.g. min_data_in_leaf for a small search)")

    @pydantic.field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if v not in TARGET_NAMES and ":" not in v:  # checked before hours of proxies, not at the fit
            raise ValueError(f"{v!r} is none of {', '.join(TARGET_NAMES)}, nor an importable module:function")
        return v


class SearchConfig(Config):
    """Simulated mixtures from Dirichlet(prior x strength), the regressor's prediction for each, and the mean of the
    `top_k` best as the answer — among the mixtures the data can supply: with a `budget_tokens`, a mixture that asks
    a language for more than `max_epochs` passes over its available tokens is set aside."""

    num_samples: int = pydantic.Field(100_000, gt=0)
    top_k: int = pydantic.Field(128, gt=0)
    strength: float = pydantic.Field(1.0, gt=0)
    seed: int = 42
    budget_tokens: float | None = pydantic.Field(
        None, gt=0, description="the stage's token budget: tokens.json gets each language's weight times it, and the "
        "epoch cap applies over it")
    max_epochs: float | None = pydantic.Field(
        4.0, gt=0, description="the most passes over a language's available tokens the answer may ask for over "
        "budget_tokens (RegMix finds ~4 epochs harmless; Sailor2's stage-1 mixture asks at most ~3.8); null: no cap")
    available_tokens: dict[str, float] | None = pydantic.Field(
        None, description="raw tokens per language the stage can supply; default: the training tokens the search "
        "counted (mixtures.json: the cache's token statistics less the held-out text)")

    @pydantic.field_validator("available_tokens")
    @classmethod
    def _available(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and (bad := sorted(k for k, n in v.items() if not n > 0)):
            raise ValueError(f"every language needs a positive count, not {', '.join(bad)}")
        return v

    @pydantic.model_validator(mode="after")
    def _check(self) -> SearchConfig:
        if self.top_k > self.num_samples:
            raise ValueError(f"search.top_k ({self.top_k}) exceeds search.num_samples ({self.num_samples})")
        return self


class RegMixConfig(Config):
    data: str = pydantic.Field(description="the stage's data config (a name in configs/data/ or a YAML path): its "
                               "tasks and languages are searched over; its own rates are what the search replaces")
    data_overrides: list[str] = pydantic.Field(default_factory=list, description="dotted overrides for it")
    sample: SampleConfig = SampleConfig()
    proxy: ProxyConfig = ProxyConfig()
    validation: ValidationConfig = ValidationConfig()
    fit: FitConfig = FitConfig()
    search: SearchConfig = SearchConfig()

    def frozen_part(self) -> dict[str, Any]:
        """What the mixtures and proxy results already in an output directory depend on: a search grows (more
        `sample.num_mixtures`) and refits (`fit`, `search`) in place, but never mixes proxies trained otherwise."""
        dump = self.model_dump(mode="json")
        dump["sample"].pop("num_mixtures")
        for how in ("per_program", "checkpoint_every", "log_every", "logits_chunk"):  # how proxies run, not what
            dump["proxy"].pop(how)
        return {k: dump[k] for k in ("data", "data_overrides", "sample", "proxy", "validation")}


def load_regmix_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RegMixConfig:
    """A RegMix config by path or by name in `configs/regmix/` (`demo`, `sailor2_stage1`)."""
    return load(RegMixConfig, find_config("regmix", name_or_path), overrides)
