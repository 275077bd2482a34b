"""The training loop: start or resume, run the jitted step, log, evaluate, checkpoint, survive what a pod does.

- The loop dispatches step t, then reads step t-1's metrics (already computed), so the host never stalls the device
  on logging. A checkpoint step waits for its own step (the save copies the arrays off the device).
- Rerunning with the same output directory resumes from the newest checkpoint that restores completely (a damaged
  one is reported in one line and set aside; `restore_step` picks one by hand), data-iterator position included,
  and continues bitwise as if never interrupted (same program, same state, same batches).
- Preemption: on SIGTERM (or Ctrl-C) the step in flight finishes, a checkpoint of that step is written and
  committed, and the run returns `stopped="preempted"`; multi-host runs agree on the step (train/preemption.py).
- NaN/inf guard: the step itself skips a non-finite update (and counts it). After `nan_guard.max_bad_steps` in a
  row the loop rolls back to the newest checkpoint not rolled back to before and goes on with the next batches
  (the batches in between are skipped), at most `nan_guard.max_rollbacks` times. No checkpoint is written inside a
  streak. Step numbers count batches consumed, so metrics lines stay in order through a rollback.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm import tqdm

from sailor2_jax.compiled import shared_jit
from sailor2_jax.config import ModelConfig
from sailor2_jax.model.qwen2 import Qwen2
from sailor2_jax.sharding import global_batch, make_mesh
from sailor2_jax.train import checkpoint as ckpt
from sailor2_jax.model import run_dir
from sailor2_jax.train import init
from sailor2_jax.train.batches import CheckpointableIterator
from sailor2_jax.train.config import TrainConfig
from sailor2_jax.train.metrics import MetricsWriter, flatten, flops_per_token, peak_flops
from sailor2_jax.train.objectives import Objective
from sailor2_jax.train.preemption import Preemption
from sailor2_jax.train.reference import WithReference, precompute, reference_step
from sailor2_jax.train.state import TrainState
from sailor2_jax.train.step import StepSetup, make_eval_step, setup_step

Params = dict[str, Any]


@dataclasses.dataclass
class TrainResult:
    step: int                      # batches consumed when the loop ended
    stopped: str                   # "done", "preempted" or "non_finite"
    metrics: dict[str, Any]        # the last logged metrics
    resumed_from: int | None       # the checkpoint step the run resumed from, if any
    output_dir: str                # local path or bucket URL
    metrics_dir: Path              # where metrics.jsonl and TensorBoard logs went
    message: str = ""              # why it stopped, for the user (one line)
    rollbacks: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (at step, to checkpoint step)


def say(message: str) -> None:
    """A line for the user, from process 0 only."""
    if jax.process_index() == 0:
        tqdm.write(message)


def train(cfg: TrainConfig, output_dir: str | Path, *, data_iter: CheckpointableIterator | None = None,
          eval_iter: CheckpointableIterator | None = None, init_model: Qwen2 | None = None,
          mesh: Mesh | None = None, restore_step: int | None = None) -> TrainResult:
    """Train until step cfg.steps (resuming from output_dir/checkpoints if present); see the module docstring.

    data_iter: host batches for this process (default: cfg.data's source); its state is checkpointed.
    eval_iter: eval batches (default with log.eval_every: an independent stream of cfg.data's source); the first
      `log.eval_batches` batches are the fixed eval set.
    init_model: the starting model (e.g. an imported, block-expanded checkpoint); overrides cfg.init.
    restore_step: resume from this checkpoint step instead of the newest (newer ones are set aside).
    """
    output_dir = str(output_dir)
    mesh = mesh or make_mesh(cfg.mesh)
    _check_batch(cfg, mesh, init_model)
    mgr = ckpt.manager(f"{output_dir.rstrip('/')}/checkpoints", cfg.checkpoint.every, cfg.checkpoint.keep,
                       cfg.checkpoint.async_save)
    model_cfg = init_model.cfg if init_model is not None else init.architecture(cfg)
    fresh, external_source = not mgr.all_steps(), data_iter is not None
    if data_iter is None:  # a fresh stage that starts from a previous stage's run continues its data streams
        data_iter = init.data_iterator(cfg, model_cfg.vocab_size, previous_run=cfg.init.checkpoint if fresh else None)
    cfg = init.resolve(cfg, mgr, log=say, data_iter=data_iter)
    setup = setup_step(cfg, model_cfg, mesh)
    restored = ckpt.restore_newest(mgr, run_dir.abstract_target(setup.shardings, setup.abstract_state()), data_iter,
                                   step=restore_step, log=say)
    if restored is None:
        state, resumed_from = init.fresh_state(cfg, init.initial_params(cfg, model_cfg, mesh, setup, init_model),
                                               setup), None
    else:
        state, resumed_from = restored
    start = int(jax.device_get(state.step))
    loop = _Loop(cfg, model_cfg, mesh, setup, mgr, output_dir, resumed_from, start)
    loop.prepare_eval(eval_iter)
    loop.summary(type(data_iter).__name__ if external_source else None)
    loop.data_report(data_iter)
    data_iter = loop.prepare_reference(state if resumed_from is None else None, data_iter, init_model)
    try:
        return loop.run(state, data_iter)
    finally:
        loop.close()


def _check_batch(cfg: TrainConfig, mesh: Mesh, init_model: Qwen2 | None) -> None:
    data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.data.batch_size % (data_parallel * cfg.data.micro_batches):
        raise ValueError(f"data.batch_size ({cfg.data.batch_size}) must be a multiple of the data-parallel devices "
                         f"({data_parallel}) times data.micro_batches ({cfg.data.micro_batches})")
    if cfg.init.optimizer_state and init_model is not None:
        raise ValueError("init.optimizer_state continues init.checkpoint's optimiser; it cannot go with init_model")


class _Loop:
    """The state of one run between steps: what logs, evaluates, saves and rolls back."""

    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig, mesh: Mesh, setup: StepSetup, mgr, output_dir: str,
                 resumed_from: int | None, start: int):
        self.cfg, self.model_cfg, self.mesh, self.setup, self.mgr = cfg, model_cfg, mesh, setup, mgr
        self.output_dir, self.resumed_from, self.start = output_dir, resumed_from, start
        self.objective = Objective(cfg.objective)
        # metrics.jsonl is appended line by line, which object stores cannot do: with a bucket as output directory
        # the metrics stay on process 0's disk under runs/<run name>/ (checkpoints go to the bucket).
        self.metrics_dir = (Path("runs") / output_dir.rstrip("/").rsplit("/", 1)[-1] if "://" in output_dir
                            else Path(output_dir))
        self.writer = MetricsWriter(self.metrics_dir, cfg.log.tensorboard, resume_step=resumed_from)
        self.bar = tqdm(total=cfg.steps, initial=start, disable=not cfg.log.progress or jax.process_index() != 0,
                        desc="train", unit="step", dynamic_ncols=True)
        self.tokens_per_step = cfg.data.batch_size * cfg.data.seq_len * (2 if cfg.objective.is_preference else 1)
        self.flops_token = flops_per_token(model_cfg, cfg.data.seq_len)
        self.peak = peak_flops(cfg.log.peak_flops)
        self.eval_fn, self.eval_set, self.ref_params = None, [], None
        self.last: dict[str, Any] = {}
        self.pending: tuple[int, Any] | None = None
        self.extra: dict[int, dict[str, float]] = {}  # eval losses, merged into their step's line
        self.rolled_back_to: set[int] = set()
        self.rollbacks: list[tuple[int, int]] = []
        self.t_last = time.perf_counter()

    # --- before the first step ---------------------------------------------------------------------------------

    def prepare_eval(self, eval_iter: CheckpointableIterator | None) -> None:
        if not self.cfg.log.eval_every:
            return
        self.eval_fn = shared_jit(make_eval_step(self.setup.graphdef, self.objective), self.mesh)
        source = eval_iter or init.data_iterator(self.cfg, self.model_cfg.vocab_size, for_eval=True)
        self.eval_set = [global_batch(next(source), self.mesh) for _ in range(self.cfg.log.eval_batches)]

    def prepare_reference(self, fresh_state: TrainState | None, data_iter: CheckpointableIterator,
                          init_model: Qwen2 | None) -> CheckpointableIterator:
        """The reference of preference objectives is the initial policy: at a fresh start the state's own
        parameters (not yet donated), on resume rebuilt from the same source. `model`: a frozen copy in compute
        dtype; `precompute`: its values for every batch this run reads, computed now (nothing of the reference
        stays in device memory). Returns the data iterator the loop reads."""
        if self.objective.reference not in ("model", "precompute"):
            return data_iter
        cfg, setup = self.cfg, self.setup
        initial = (fresh_state.params if fresh_state is not None else
                   init.initial_params(cfg, self.model_cfg, self.mesh, setup, init_model))
        if self.objective.reference == "model":  # a real copy: the step donates the state
            cdt = jnp.dtype(cfg.compute.dtype)
            self.ref_params = jax.jit(lambda p: jax.tree.map(lambda x: jnp.array(x, dtype=cdt, copy=True), p),
                                      out_shardings=setup.shardings.params)(initial)
            return data_iter
        ref_step = reference_step(setup.graphdef, cfg.objective.logits_chunk, self.mesh)
        self.eval_set = [b | ref_step(initial, b) for b in self.eval_set]
        return WithReference(data_iter, precompute(ref_step, initial, data_iter, cfg.steps - self.start, self.mesh))

    def summary(self, external_source: str | None) -> None:
        """What a user checks first: the model, what trains, where it runs, where it starts, what it reads."""
        cfg, shapes, mask = self.cfg, self.setup.shapes, self.setup.mask
        total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
        trainable = sum(int(np.prod(x.shape) * np.mean(m)) for x, m in zip(jax.tree.leaves(shapes),
                                                                            jax.tree.leaves(mask)))
        m = self.model_cfg
        devices = jax.devices()
        mesh = " × ".join(f"{k} {v}" for k, v in self.mesh.shape.items())
        start = (f"resumed from step {self.resumed_from}" if self.resumed_from is not None else
                 f"init.hf_dir {cfg.init.hf_dir}" if cfg.init.hf_dir else
                 f"init.checkpoint {cfg.init.checkpoint}" if cfg.init.checkpoint else f"random init (seed "
                 f"{cfg.init.seed})")
        source = external_source or (f"mixture {cfg.data.mixture}" if cfg.data.source == "mixture"
                                     else f"{cfg.data.source} batches")
        say(f"model: {m.num_layers} layers, d {m.hidden_size}, {total / 1e9:.3f} B parameters, "
            f"{trainable / 1e9:.3f} B trainable ({cfg.optimizer.trainable}); compute {cfg.compute.dtype}, remat "
            f"{cfg.compute.remat}, attention {cfg.compute.attention}")
        say(f"devices: {len(devices)} × {devices[0].device_kind} on {jax.process_count()} process(es), mesh {mesh}")
        say(f"start: {start}; objective {cfg.objective.kind}; steps {self.start} → {cfg.steps} (schedule "
            f"{cfg.optimizer.schedule.kind}, {cfg.optimizer.schedule.total_steps} steps)")
        say(f"data: {source}, {cfg.data.batch_size} × {cfg.data.seq_len} tokens per step"
            f"{f' in {cfg.data.micro_batches} micro-batches' if cfg.data.micro_batches > 1 else ''}; "
            f"output {self.output_dir}")

    def data_report(self, data_iter: CheckpointableIterator) -> None:
        """What a file source read, kept and skipped (with file:line and reason), on the terminal and as a line of
        metrics.jsonl at the starting step."""
        if hasattr(data_iter, "describe"):
            say(f"data: {data_iter.describe()}")
        accounting = getattr(data_iter, "accounting", None)
        if accounting is not None:
            for line in accounting.lines():
                say(f"data: {line}")
            self.writer.write(self.start, accounting.metrics())

    # --- the loop --------------------------------------------------------------------------------------------

    def run(self, state: TrainState, data_iter: CheckpointableIterator) -> TrainResult:
        cfg = self.cfg
        step_fn = self.setup.compile(self.objective, self.mesh, cfg.data.micro_batches,
                                     with_reference=self.ref_params is not None)
        stopped, message, t = "done", "", self.start
        live = hasattr(data_iter, "set_policy")
        with jax.set_mesh(self.mesh), Preemption() as stop:
            while t < cfg.steps:
                if live:  # a source that samples from the policy (online DPO) reads the live parameters
                    data_iter.set_policy(self.setup.graphdef, state.params, self.mesh)
                state, metrics = step_fn(state, global_batch(next(data_iter), self.mesh), self.ref_params)
                t += 1                                       # step t dispatched before step t-1's metrics are read
                self.settle()
                self.pending = (t, metrics)
                if self.last.get("bad_steps", 0) >= cfg.nan_guard.max_bad_steps:
                    state, message = self.rollback(state)
                    if state is None:
                        stopped = "non_finite"
                        break
                if self.eval_fn is not None and t % cfg.log.eval_every == 0:
                    losses = [self.eval_fn(state.params, b, self.ref_params) for b in self.eval_set]
                    self.extra[t] = {"eval_loss": float(sum(jax.device_get(losses)) / len(losses))}
                if stop.reached(t):
                    self.save(state, data_iter, t, force=True, preempted=True)
                    self.mgr.wait_until_finished()
                    stopped = "preempted"
                    message = (f"preempted ({stop.requested}) at step {t}: checkpoint {t} saved and committed; rerun "
                               "the same command to resume")
                    break
                if t % cfg.checkpoint.every == 0 or t == cfg.steps:
                    self.save(state, data_iter, t, force=t == cfg.steps)
            self.settle()
        if stopped == "done" and self.last.get("bad_steps", 0):
            stopped = "non_finite"
            message = (f"the run ended inside a streak of {self.last['bad_steps']} non-finite steps (no checkpoint "
                       f"written in it); the newest checkpoint is step {self.mgr.latest_step()}")
        self.mgr.wait_until_finished()
        return TrainResult(step=int(jax.device_get(state.step)) if state is not None else t, stopped=stopped,
                           metrics=self.last, resumed_from=self.resumed_from, output_dir=self.output_dir,
                           metrics_dir=self.metrics_dir, message=message, rollbacks=self.rollbacks)

    def settle(self) -> None:
        """Read and log the pending step's metrics (waits for that step)."""
        if self.pending is None:
            return
        step, metrics = self.pending
        self.pending = None
        values = flatten(jax.device_get(metrics))
        now = time.perf_counter()
        values["tokens_per_s"] = self.tokens_per_step / max(now - self.t_last, 1e-9)
        if self.peak:
            values["mfu"] = values["tokens_per_s"] * self.flops_token / self.peak
        self.t_last = now
        values |= self.extra.pop(step, {})
        if (step % self.cfg.log.every == 0 or step == self.cfg.steps or not values["finite"]
                or "eval_loss" in values):
            self.writer.write(step, values)
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
        self.last = values | {"step": step}

    def save(self, state: TrainState, data_iter: CheckpointableIterator, step: int, force: bool = False,
             preempted: bool = False) -> None:
        """A checkpoint of step `step` (waits for that step), unless it is inside a non-finite streak (the guard
        kept the parameters of the last good step, so a preempted run saves anyway and resumes there)."""
        self.settle()
        if self.last["bad_steps"] == 0 or preempted:
            ckpt.save(self.mgr, state, self.cfg, self.model_cfg, data_iter, step=step, force=force)

    def rollback(self, state: TrainState) -> tuple[TrainState | None, str]:
        """After a non-finite streak: the newest checkpoint not rolled back to before, continued with the next
        batches (the step counter keeps counting batches; the updates in between count as skipped). None and the
        reason when there is nothing to roll back to."""
        bad, at = self.last["bad_steps"], self.last["step"]
        self.settle()  # the step dispatched meanwhile is rolled back too
        guard, t = self.cfg.nan_guard, self.last["step"]
        streak = f"step {t}: {bad} non-finite steps in a row (steps {at - bad + 1}..{at})"
        if len(self.rollbacks) >= guard.max_rollbacks:
            return None, f"{streak}, after {len(self.rollbacks)} rollbacks (nan_guard.max_rollbacks); stopping"
        self.mgr.wait_until_finished()
        candidates = [s for s in self.mgr.all_steps() if s not in self.rolled_back_to]
        if not candidates:
            why = ("no checkpoint saved yet (the first is due at step "
                   f"{(t // self.cfg.checkpoint.every + 1) * self.cfg.checkpoint.every})" if not self.mgr.all_steps()
                   else "every checkpoint has been rolled back to already")
            return None, f"{streak} and nothing to roll back to: {why}; stopping"
        to = max(candidates)
        self.rolled_back_to.add(to)
        target = run_dir.abstract_target(self.setup.shardings, self.setup.abstract_state())
        good = ckpt.restore(self.mgr, to, target, None)
        applied = int(jax.device_get(good.step)) - int(jax.device_get(good.skipped_steps))
        state = dataclasses.replace(good, step=jnp.asarray(t, jnp.int32), bad_steps=jnp.zeros((), jnp.int32),
                                    skipped_steps=jnp.asarray(t - applied, jnp.int32))
        state = jax.device_put(state, self.setup.shardings)
        self.rollbacks.append((t, to))
        self.writer.write(t, {"event": "rollback", "rollback_to": to, "skipped_batches": t - to})
        self.last = self.last | {"bad_steps": 0}
        say(f"{streak}: rolled back to the checkpoint of step {to} and skipped the batches of steps {to + 1}..{t} "
            f"(rollback {len(self.rollbacks)} of at most {guard.max_rollbacks})")
        return state, ""

    def close(self) -> None:
        self.mgr.close()
        self.bar.close()
        self.writer.close()
