"""Where a run starts, read from disk here (the configs themselves do no I/O): the architecture, the settings a
resumed run keeps (schedule length), the expansion mask, the first parameters and optimiser state, and the data
iterator (fresh, or continuing the previous stage's streams)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh

from sailor2_jax.compiled import shared_jit
from sailor2_jax.config import ModelConfig
from sailor2_jax.model.expand import EXPANSION_FILE, read_expansion
from sailor2_jax.model.hf import import_hf, read_hf_config
from sailor2_jax.model.init import create_model
from sailor2_jax.model.qwen2 import Qwen2
from sailor2_jax.sharding import state_shardings
from sailor2_jax.train import checkpoint as ckpt
from sailor2_jax.model import run_dir
from sailor2_jax.train.batches import CheckpointableIterator, SyntheticLM, SyntheticPreference
from sailor2_jax.train.config import TrainConfig
from sailor2_jax.train.optim import restart_schedule
from sailor2_jax.train.state import TrainState, init_state
from sailor2_jax.train.step import StepSetup

Params = dict[str, Any]
EVAL_SEED_OFFSET = 1_000_003  # the eval stream: an independent stream of the same source


def is_reward_dir(hf_dir: str) -> bool:
    """Whether an HF directory holds a reward model (`Qwen2ForSequenceClassification`) rather than a Qwen2 LM."""
    from sailor2_jax.model.reward import ARCHITECTURE

    file = Path(hf_dir) / "config.json"
    try:
        return json.loads(file.read_text()).get("architectures") == [ARCHITECTURE]
    except (OSError, json.JSONDecodeError):
        return False  # read_hf_config reports it


def architecture(cfg: TrainConfig) -> ModelConfig:
    """The model architecture: `model`, else init.hf_dir's config.json, else init.checkpoint's saved one."""
    if cfg.model is not None:
        return cfg.model
    if cfg.init.hf_dir:
        if is_reward_dir(cfg.init.hf_dir):
            from sailor2_jax.model.reward import read_reward_config
            return read_reward_config(cfg.init.hf_dir)[0]
        return read_hf_config(cfg.init.hf_dir)
    return ModelConfig.model_validate(run_dir.read_config(cfg.init.checkpoint)["model"])


def new_layers(cfg: TrainConfig) -> list[bool]:
    """The mask of `optimizer.trainable: new_layers`: from the config, or the expansion record `sailor2-jax expand`
    wrote into init.hf_dir."""
    if cfg.optimizer.new_layers is not None:
        mask, where = list(cfg.optimizer.new_layers), "optimizer.new_layers"
    elif cfg.init.hf_dir and (record := read_expansion(cfg.init.hf_dir)) is not None:
        mask, where = list(record["is_new_layer"]), f"{cfg.init.hf_dir}/{EXPANSION_FILE}"
    else:
        raise ValueError("optimizer.trainable=new_layers needs optimizer.new_layers or an init.hf_dir written by "
                         f"`sailor2-jax expand` (with {EXPANSION_FILE})")
    if not any(mask):
        raise ValueError(f"optimizer.trainable=new_layers: {where} marks no layer as new; nothing would train")
    return mask


def _saved_schedule_steps(mgr: ocp.CheckpointManager) -> int | None:
    """The schedule length the run being resumed was started with (its newest readable saved config)."""
    for step in sorted(mgr.all_steps(), reverse=True):
        try:
            saved = run_dir.read_config(mgr.directory / str(step))["train"]
        except Exception:  # noqa: BLE001 -- a damaged step; restore_newest reports it
            continue
        return saved["optimizer"]["schedule"].get("total_steps") or saved["steps"]
    return None


def resolve(cfg: TrainConfig, mgr: ocp.CheckpointManager, log=print, data_iter: Any = None) -> TrainConfig:
    """`cfg` with what the run fixes at its first start filled in, so the checkpoints record it: the expansion mask,
    `steps` from `data.epochs` (the data iterator's `batches_per_epoch`) or from the online rounds, the schedule
    length (kept on resume unless optimizer.schedule.total_steps is given explicitly) and where a reward model
    reads its score (`objective.reward_pad_id`)."""
    if cfg.data.epochs is not None:
        per_epoch = getattr(data_iter, "batches_per_epoch", None)
        if per_epoch is None:
            raise ValueError(f"data.epochs: the data source ({type(data_iter).__name__}) has no epoch length")
        steps = max(1, math.ceil(cfg.data.epochs * per_epoch))
        log(f"data.epochs {cfg.data.epochs:g} × {per_epoch} steps per epoch: steps {steps}")
        cfg = cfg.replace(steps=steps)
    if cfg.data.source == "online":
        cfg = cfg.replace(steps=cfg.online.rounds * cfg.online.steps_per_round)
    optimizer = cfg.optimizer
    if optimizer.trainable == "new_layers":
        optimizer = optimizer.replace(new_layers=new_layers(cfg))
    schedule = optimizer.schedule
    saved = _saved_schedule_steps(mgr)
    if schedule.total_steps is None:
        schedule = schedule.replace(total_steps=saved or cfg.steps)
    elif saved is not None and saved != schedule.total_steps:
        log(f"learning-rate schedule extended: {saved} → {schedule.total_steps} steps "
            "(optimizer.schedule.total_steps)")
    if schedule.warmup_ratio is not None:
        schedule = schedule.replace(warmup_steps=round(schedule.warmup_ratio * schedule.total_steps))
    objective = cfg.objective
    if objective.kind == "reward" and objective.reward_pad_id is None:
        objective = objective.replace(reward_pad_id=_reward_pad_id(cfg))
    if cfg.steps > schedule.total_steps:
        log(f"steps {schedule.total_steps + 1}..{cfg.steps} run past the end of the learning-rate schedule "
            f"({schedule.total_steps} steps) at its final value; to extend the schedule set "
            "optimizer.schedule.total_steps")
    return cfg.replace(optimizer=optimizer.replace(schedule=schedule), objective=objective)


def _reward_pad_id(cfg: TrainConfig) -> int:
    """Where a reward model reads its score (objective.reward_pad_id): a classifier's own pad_token_id, a previous
    reward run's, else <|endoftext|>."""
    from sailor2_jax.tokenizer import EOS_ID
    from sailor2_jax.model.reward import read_reward_config

    if cfg.init.hf_dir and is_reward_dir(cfg.init.hf_dir):
        return read_reward_config(cfg.init.hf_dir)[1]
    if cfg.init.checkpoint:
        saved = run_dir.read_config(cfg.init.checkpoint)["train"]["objective"]
        if saved.get("reward_pad_id") is not None:
            return int(saved["reward_pad_id"])
    return EOS_ID


def initial_params(cfg: TrainConfig, model_cfg: ModelConfig, mesh: Mesh, setup: StepSetup,
                   init_model: Qwen2 | None = None) -> Params:
    """The first parameters: a given model, an HF directory, a previous run's checkpoint, or a random init."""
    shardings = setup.shardings.params
    if cfg.objective.kind == "reward" and init_model is None:
        params = _reward_params(cfg, model_cfg, mesh, setup)
    elif init_model is not None:
        params = nnx.to_pure_dict(nnx.state(init_model, nnx.Param))
    elif cfg.init.hf_dir:
        params = nnx.to_pure_dict(nnx.state(import_hf(cfg.init.hf_dir, mesh, cfg.compute)))
    elif cfg.init.checkpoint:
        params = run_dir.restore_params(cfg.init.checkpoint, run_dir.abstract_target(shardings, setup.shapes))
    else:
        params = nnx.to_pure_dict(nnx.state(create_model(model_cfg, mesh, cfg.init.seed, cfg.compute)))
    return jax.device_put(params, shardings)


def _reward_params(cfg: TrainConfig, model_cfg: ModelConfig, mesh: Mesh, setup: StepSetup) -> Params:
    """A reward model's first parameters: a reward model (HF classifier directory or a reward run) as it is; a
    language model (HF directory or an LM run, e.g. the SFT model) as the backbone under a new score head, as
    reward models are usually started; or a random init."""
    from sailor2_jax.model.init import abstract_model
    from sailor2_jax.model.reward import create_reward, import_reward

    if cfg.init.hf_dir and is_reward_dir(cfg.init.hf_dir):
        return nnx.to_pure_dict(nnx.state(import_reward(cfg.init.hf_dir, mesh, cfg.compute)))
    reward_run = (cfg.init.checkpoint is not None and
                  run_dir.read_config(cfg.init.checkpoint)["train"]["objective"]["kind"] == "reward")
    if reward_run:
        return run_dir.restore_params(cfg.init.checkpoint, run_dir.abstract_target(setup.shardings.params, setup.shapes))
    if not cfg.init.hf_dir and not cfg.init.checkpoint:
        return nnx.to_pure_dict(nnx.state(create_reward(model_cfg, mesh, pad_id=cfg.objective.reward_pad_id,
                                                        seed=cfg.init.seed, compute=cfg.compute)))
    if cfg.init.hf_dir:
        lm = nnx.to_pure_dict(nnx.state(import_hf(cfg.init.hf_dir, mesh, cfg.compute)))
    else:
        _, abstract = nnx.split(abstract_model(model_cfg, cfg.compute))
        lm_shardings = nnx.to_pure_dict(state_shardings(abstract, mesh))
        lm = run_dir.restore_params(cfg.init.checkpoint, run_dir.abstract_target(lm_shardings, nnx.to_pure_dict(abstract)))
    lm.pop("lm_head", None)  # a reward model reads hidden states, never the LM head
    shape = setup.shapes["score"]
    score = jax.jit(lambda: 0.02 * jax.random.normal(jax.random.key(cfg.init.seed), shape.shape, shape.dtype),
                    out_shardings=setup.shardings.params["score"])()
    return {"backbone": lm, "score": score}


def fresh_state(cfg: TrainConfig, params: Params, setup: StepSetup) -> TrainState:
    """Step 0: `params` with a new optimiser state, or (init.optimizer_state) the previous stage's, on this run's
    schedule."""
    opt_state = None
    if cfg.init.optimizer_state:
        target = run_dir.abstract_target(setup.shardings, setup.abstract_state())
        opt_state = ckpt.restore_optimizer(cfg.init.checkpoint, target, cfg.optimizer)

    def first(p, o):
        s = init_state(p, setup.tx, cfg.init.seed)
        return s if o is None else dataclasses.replace(s, opt_state=restart_schedule(o))
    return shared_jit(first, setup.shardings.step.mesh, out_shardings=setup.shardings)(params, opt_state)


def data_iterator(cfg: TrainConfig, vocab: int, *, for_eval: bool = False, previous_run: str | None = None
                  ) -> CheckpointableIterator:
    """This process's batches for cfg.data (host numpy; the loop assembles global arrays).

    `for_eval` gives an independent stream of the same source. `previous_run` (a checkpoint of the previous stage,
    e.g. stage 1 for stage 2) makes a mixture continue every task stream the two stages share where that run left
    it, so replayed stage-1 data is not seen twice.
    """
    batching = cfg.data.batching(EVAL_SEED_OFFSET if for_eval else 0)
    progress = cfg.log.progress and jax.process_index() == 0
    if cfg.data.source is None:
        raise ValueError("data.source is not set: mixture (pre-training, with data.mixture), sft or preference (with "
                         "data.files), or synthetic (made-up test batches)")
    if cfg.data.source == "sft":
        from sailor2_jax.post.sft_data import sft_batches
        return sft_batches(cfg.data, batching, progress)
    if cfg.data.source == "preference":
        from sailor2_jax.post.preference_data import preference_batches
        return preference_batches(cfg.data, batching, progress)
    if cfg.data.source == "online":
        from sailor2_jax.post.online import OnlinePairs
        return OnlinePairs(cfg, batching)
    if cfg.data.source == "synthetic":
        args = (batching.batch_size, batching.seq_len, vocab, batching.seed)
        if cfg.objective.is_preference:
            return SyntheticPreference(*args)
        return SyntheticLM(*args, prompt_frac=0.5 if cfg.objective.kind == "sft" else 0.0)
    from sailor2_jax.data.config import load_data_config
    from sailor2_jax.data.loader import PretrainIterator

    it = PretrainIterator(load_data_config(cfg.data.mixture, cfg.data.mixture_overrides), batching)
    if previous_run is not None and not for_eval:
        prev_cfg = TrainConfig.model_validate(run_dir.read_config(previous_run)["train"])
        if prev_cfg.data.source == "mixture":
            previous = PretrainIterator(load_data_config(prev_cfg.data.mixture, prev_cfg.data.mixture_overrides),
                                        prev_cfg.data.batching())
            ckpt.restore_iterator(previous_run, previous)
            it.continue_from(previous)
    return it
