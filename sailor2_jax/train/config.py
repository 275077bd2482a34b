"""Typed training configs: one `TrainConfig` drives pre-training, SFT and DPO; the objective picks the loss.

`model` (the architecture) is either a name/path (`tiny`, `sailor2-1b`, `configs/model/x.yaml`) or a mapping
`{base: NAME, field: value}` so dotted overrides such as `model.vocab_size=256` work; it is omitted when
`init.hf_dir` (its `config.json`) or `init.checkpoint` (its saved architecture) supplies the model. `compute` is how
this run executes it (dtypes, remat, attention kernel), whatever the checkpoint was trained with.
Configs do no I/O: `train/init.py` reads directories and checkpoints.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic

from sailor2_jax.config import ComputeConfig, Config, MeshConfig, ModelConfig, model_config_field
from sailor2_jax.data.config import Batching

PREFERENCE_OBJECTIVES = ("dpo", "ln_dpo", "simpo", "reward")  # objectives whose batches are (chosen, rejected) pairs


class ScheduleConfig(Config):
    """Learning-rate schedule over `total_steps` steps. `wsd`: linear warmup, a stable plateau, then a decay over the
    last `decay_steps` (MiniCPM; Sailor2 stage 1 is the plateau at 1e-4, stage 2 the anneal towards 1e-5).
    `cosine`: warmup then cosine to `final_lr`. `constant`: `peak_lr` after warmup. Step 1 trains at the warmup's
    first increment above `init_lr` (never at 0), the last step of a decay at `final_lr`; steps past the end keep
    the final value.

    The length is fixed when a run first starts (`total_steps`, default the run's `steps`) and kept on resume, so
    rerunning with more `steps` never raises a decayed learning rate again; to extend a run with a new decay, set
    `optimizer.schedule.total_steps` explicitly."""

    kind: Literal["wsd", "cosine", "constant"] = "wsd"
    peak_lr: float = pydantic.Field(1e-4, ge=0)
    init_lr: float = pydantic.Field(0.0, ge=0, description="where the warmup starts (step 1 is one increment above)")
    final_lr: float = pydantic.Field(1e-5, ge=0, description="end of the wsd decay / of the cosine")
    warmup_steps: int = pydantic.Field(0, ge=0)
    warmup_ratio: float | None = pydantic.Field(
        None, ge=0, lt=1, description="warmup as a fraction of total_steps (sets warmup_steps at the first start; "
        "for runs whose length comes from data.epochs)")
    decay_steps: int = pydantic.Field(0, ge=0, description="wsd: length of the final decay (0: no decay)")
    decay_shape: Literal["exponential", "linear", "cosine"] = "exponential"
    total_steps: int | None = pydantic.Field(
        None, gt=0, description="the schedule's length; default: `steps` at the run's first start (kept on resume)")



class OptimizerConfig(Config):
    """AdamW with decoupled weight decay (none on norms and biases) and global-norm clipping."""

    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = pydantic.Field(0.1, ge=0)
    clip_norm: float | None = pydantic.Field(1.0, gt=0, description="global-norm clip; null disables it")
    schedule: ScheduleConfig = ScheduleConfig()
    trainable: Literal["all", "new_layers"] = "all"
    new_layers: list[bool] | None = pydantic.Field(
        None, description="is_new_layer per layer (trainable=new_layers); default: the expansion record `sailor2-jax "
        "expand` wrote into init.hf_dir")


class ObjectiveConfig(Config):
    """`pretrain`/`sft`: token-averaged NLL under `loss_mask` (SFT masks carry assistant tokens only).
    `dpo`, `ln_dpo` (length-normalised), `simpo` (reference-free): Oat's formulas (recipe.md §6.2).
    `reward`: Bradley-Terry training of a reward model (a Qwen2 with a one-score head) on the same pairs."""

    kind: Literal["pretrain", "sft", "dpo", "ln_dpo", "simpo", "reward"] = "pretrain"
    beta: float = pydantic.Field(0.1, gt=0)
    label_smoothing: float = pydantic.Field(0.0, ge=0, le=0.5)
    gamma_beta_ratio: float = 0.5
    len_reg_alpha: float = pydantic.Field(0.0, ge=0)
    dpop_lambda: float = pydantic.Field(0.0, ge=0)
    sft_coef: float = pydantic.Field(0.0, ge=0, description="weight of an SFT (chosen NLL) term in preference runs")
    reference: Literal["model", "precompute", "cache"] = pydantic.Field(
        "model", description="reference log-probs from a frozen copy of the initial model held during training; "
        "`precompute`: computed by the initial model before training, for every batch the run reads (no reference "
        "model in memory while training); `cache`: from the batches' ref_chosen_logps/ref_rejected_logps")
    logits_chunk: int = pydantic.Field(1024, gt=0, description="T-chunk for log-probs: never a full fp32 [B,T,V]")
    reward_pad_id: int | None = pydantic.Field(
        None, ge=0, description="reward: the score is read at the last token that is not this id (the exported "
        "config's pad_token_id); default: init.hf_dir's pad_token_id for a classifier, else <|endoftext|> (151643)")

    @property
    def is_preference(self) -> bool:
        return self.kind in PREFERENCE_OBJECTIVES


class InitConfig(Config):
    """Where the first parameters (and, with `optimizer_state`, the optimiser state) come from; ignored when a
    checkpoint in the output directory is resumed."""

    hf_dir: str | None = pydantic.Field(None, description="a Hugging Face Qwen2 directory (e.g. from `expand`)")
    checkpoint: str | None = pydantic.Field(None, description="a previous run, or one of its step dirs (parameters)")
    optimizer_state: bool = pydantic.Field(
        False, description="also continue init.checkpoint's AdamW state (moments and Adam's step count) with this "
        "run's learning-rate schedule from its step 0: a new stage of the same optimiser, e.g. the stage-2 anneal of "
        "WSD. Refused when the saved optimiser differs (trainable mask, clipping, state layout). Default: fresh")
    seed: int = 0

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> InitConfig:
        if self.hf_dir and self.checkpoint:
            raise ValueError("init: give hf_dir or checkpoint, not both")
        if self.optimizer_state and not self.checkpoint:
            raise ValueError("init.optimizer_state needs init.checkpoint (the run whose optimiser state continues)")
        return self


class BatchSourceConfig(Config):
    """The batch source, named explicitly (no default: a run never trains on made-up data by accident):
    - `mixture`: pre-training, a seqio/grain mixture from configs/data/ (`stage1`, `demo_stage1`; data/loader.py);
    - `sft`: conversation files (`files`: JSONL/Parquet files or directories; OpenAI `messages` or ShareGPT
      `conversations`, `format`), chat-templated, loss on assistant turns, packed into rows (post/sft_data.py);
    - `preference`: (prompt, chosen, rejected) files for the DPO family (post/preference_data.py);
    - `online`: pairs sampled from the live policy and scored while training (the `online` section, post/online.py);
    - `synthetic`: a deterministic test source for every objective (train/batches.py), by name only.
    Other sources plug in through `train(data_iter=...)`. Batch size, sequence length and seed live here only: the
    loaders take them as arguments (`batching()`)."""

    source: Literal["mixture", "sft", "preference", "online", "synthetic"] | None = pydantic.Field(
        None, description="required to train: mixture | sft | preference | online | synthetic (tests)")
    mixture: str | None = pydantic.Field(None, description="source=mixture: a data config name or YAML path")
    mixture_overrides: list[str] = pydantic.Field(default_factory=list, description="dotted overrides for it")
    files: list[str] = pydantic.Field(default_factory=list, description="source=sft|preference: JSONL/Parquet "
                                      "files or directories (relative paths: from the working directory)")
    format: Literal["auto", "messages", "sharegpt"] = pydantic.Field(
        "auto", description="source=sft: conversation format; auto detects it per file from its first record")
    overlong: Literal["truncate", "drop"] = pydantic.Field(
        "truncate", description="an example longer than seq_len: sft cuts after the last assistant turn that fits, "
        "preference cuts the responses; drop skips it (both counted)")
    packing: Literal["first_fit", "best_fit"] = "first_fit"
    system_prompt: str = pydantic.Field(
        "sailor2", description="system message for conversations without one: sailor2 | qwen | none | any text")
    epochs: float | None = pydantic.Field(
        None, gt=0, description="source=sft|preference: run length in passes over the data (sets `steps`)")
    batch_size: int = pydantic.Field(8, gt=0, description="global rows per step (pairs for preference objectives)")
    seq_len: int = pydantic.Field(128, gt=0)
    micro_batches: int = pydantic.Field(1, gt=0, description="gradient accumulation: micro-batches per step")
    seed: int = 0

    def batching(self, seed_offset: int = 0) -> Batching:
        """What the loaders take; `seed_offset` gives an independent stream of the same source (evaluation)."""
        return Batching(batch_size=self.batch_size, seq_len=self.seq_len, seed=self.seed + seed_offset)


class CheckpointConfig(Config):
    every: int = pydantic.Field(1000, gt=0)
    keep: int = pydantic.Field(3, gt=0)
    async_save: bool = True


class NanGuardConfig(Config):
    """A step with a non-finite loss or gradient is skipped (its update is not applied). After `max_bad_steps` in a
    row the run rolls back to its newest checkpoint not yet rolled back to and goes on with the batches after the
    bad ones (the data window between that checkpoint and now is skipped: PaLM's recipe), at most `max_rollbacks`
    times; then it stops."""

    max_bad_steps: int = pydantic.Field(5, gt=0)
    max_rollbacks: int = pydantic.Field(3, ge=0)


class LogConfig(Config):
    every: int = pydantic.Field(10, gt=0)
    eval_every: int = pydantic.Field(0, ge=0, description="0: no eval")
    eval_batches: int = pydantic.Field(2, gt=0)
    tensorboard: bool = True
    progress: bool = True
    peak_flops: float | None = pydantic.Field(None, description="per-device FLOP/s for MFU; default by device kind")


class OnlineConfig(Config):
    """Online preference tuning (`data.source: online`, train/../post/online.py): each round samples `samples`
    responses to each of `prompts_per_round` prompts from the live policy, scores them with the reward model,
    verifies their language, pairs them, and trains `steps_per_round` DPO steps on the round's pairs; `steps` is
    `rounds` × `steps_per_round`. A round that yields no pair is counted and followed by the next prompts."""

    prompts: list[str] = pydantic.Field(default_factory=list, description="prompt files (JSONL: `prompt` or "
                                        "`messages`, optional `language`, `task: translation` + `target_language`)")
    reward_model: str | None = pydantic.Field(None, description="a reward model directory (sequence classifier)")
    reward_backend: Literal["jax", "transformers"] = "jax"
    reward_batch_size: int = pydantic.Field(32, gt=0)
    rounds: int = pydantic.Field(2, gt=0)
    prompts_per_round: int = pydantic.Field(64, gt=0)
    samples: int = pydantic.Field(4, ge=2, description="responses per prompt (they share one prefill)")
    steps_per_round: int = pydantic.Field(1, gt=0)
    temperature: float = pydantic.Field(0.8, ge=0)
    top_p: float = pydantic.Field(1.0, gt=0, le=1)
    max_new_tokens: int = pydantic.Field(512, gt=0)
    language_check: bool = True
    generation_batch_size: int = pydantic.Field(32, gt=0, description="prompts decoded together")


class TrainConfig(Config):
    model: ModelConfig | None = None
    compute: ComputeConfig = ComputeConfig()
    mesh: MeshConfig = MeshConfig()
    init: InitConfig = InitConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    data: BatchSourceConfig = BatchSourceConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    log: LogConfig = LogConfig()
    steps: int = pydantic.Field(100, gt=0, description="where the run stops (the schedule's length is fixed at the "
                                "first start: optimizer.schedule.total_steps)")
    nan_guard: NanGuardConfig = NanGuardConfig()
    online: OnlineConfig = OnlineConfig()

    @pydantic.field_validator("model", mode="before")
    @classmethod
    def _resolve_model(cls, v: Any) -> Any:
        return model_config_field(v)

    @pydantic.model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.model is None and not self.init.hf_dir and not self.init.checkpoint:
            raise ValueError("model: required unless init.hf_dir or init.checkpoint provides the model")
        if self.model is not None and self.init.hf_dir:
            raise ValueError("model: init.hf_dir's config.json defines the model; drop `model` (override `model=null`)"
                             "; execution choices (dtypes, remat, attention) go in `compute`")
        if self.data.batch_size % self.data.micro_batches:
            raise ValueError(f"data.batch_size ({self.data.batch_size}) must be a multiple of data.micro_batches "
                             f"({self.data.micro_batches})")
        data, kind = self.data, self.objective.kind
        if data.source == "mixture" and (not data.mixture or kind != "pretrain"):
            raise ValueError("data.source=mixture needs data.mixture and objective.kind=pretrain (SFT data: "
                             "data.source=sft, preference data: data.source=preference)")
        if data.source in ("sft", "preference") and not data.files:
            raise ValueError(f"data.source={data.source} needs data.files (e.g. data.files=[a.jsonl,b.parquet])")
        if data.source == "sft" and kind != "sft":
            raise ValueError(f"data.source=sft gives conversations for objective.kind=sft, not {kind}")
        if data.source == "preference" and not self.objective.is_preference:
            raise ValueError(f"data.source=preference gives pairs for {'/'.join(PREFERENCE_OBJECTIVES)}, not {kind}")
        if data.epochs is not None and data.source not in ("sft", "preference"):
            raise ValueError("data.epochs needs a finite data set (data.source=sft or preference); use `steps`")
        if data.source == "online":
            online = self.online
            if kind not in ("dpo", "ln_dpo", "simpo") or not online.prompts or not online.reward_model:
                raise ValueError("data.source=online needs a DPO-family objective, online.prompts and "
                                 "online.reward_model")
            if self.objective.reference == "precompute" or self.log.eval_every:
                raise ValueError("data.source=online: its batches do not exist before training, so "
                                 "objective.reference=precompute and log.eval_every are not possible")
        if kind in ("simpo", "reward") and self.objective.reference != "model":
            raise ValueError(f"objective.reference={self.objective.reference} makes no sense for {kind} "
                             "(reference-free)")
        if kind == "reward" and self.optimizer.trainable == "new_layers":
            raise ValueError("optimizer.trainable=new_layers with objective.kind=reward: the score head is not a "
                             "layer, so it would stay at its random initialisation (train all parameters)")
        return self
