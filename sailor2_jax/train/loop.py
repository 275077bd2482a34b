"""The training loop: build or resume the state, run the jitted step, log, evaluate, checkpoint, stop on NaN.

- The loop dispatches step t, then reads step t-1's metrics (already computed), so the host never stalls the device
  on logging. A checkpoint step waits for its own step (the save copies the arrays off the device).
- Rerunning with the same output directory resumes from the latest checkpoint, data-iterator position included, and
  continues bitwise as if never interrupted (same program, same state, same batches).
- NaN/inf guard: the step itself skips a non-finite update (and counts it); the loop stops after
  `max_bad_steps` in a row and never checkpoints during such a streak, so the last good checkpoint stays the latest.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh
from tqdm import tqdm

from sailor2_jax.config import ModelConfig
from sailor2_jax.model.init import create_model
from sailor2_jax.model.qwen2 import Qwen2
from sailor2_jax.sharding import global_batch, make_mesh
from sailor2_jax.train import checkpoint as ckpt
from sailor2_jax.train.config import TrainConfig
from sailor2_jax.train.init import architecture, initial_params
from sailor2_jax.train.data import CheckpointableIterator, make_iterator
from sailor2_jax.train.metrics import MetricsWriter, flatten, flops_per_token, peak_flops
from sailor2_jax.train.objectives import Objective
from sailor2_jax.train.optim import new_layer_mask, restart_schedule
from sailor2_jax.train.reference import WithReference, precompute, reference_step
from sailor2_jax.train.step import init_state, make_eval_step, setup_step

Params = dict[str, Any]


@dataclasses.dataclass
class TrainResult:
    step: int                      # batches consumed when the loop ended
    stopped: str                   # "done" or "non_finite"
    metrics: dict[str, Any]        # the last logged metrics
    resumed_from: int | None       # the checkpoint step the run resumed from, if any
    output_dir: str                # local path or bucket URL
    metrics_dir: Path              # where metrics.jsonl and TensorBoard logs went


def train(cfg: TrainConfig, output_dir: str | Path, *, data_iter: CheckpointableIterator | None = None,
          eval_iter: CheckpointableIterator | None = None, init_model: Qwen2 | None = None,
          mesh: Mesh | None = None) -> TrainResult:
    """Train for cfg.steps steps (resuming from output_dir/checkpoints if present); see the module docstring.

    data_iter: host batches for this process (default: cfg.data's source); its state is checkpointed.
    eval_iter: eval batches (default with log.eval_every: an independent stream of cfg.data's source); the first
      `log.eval_batches` batches are the fixed eval set.
    init_model: the starting model (e.g. an imported, block-expanded checkpoint); overrides cfg.init.
    """
    output_dir = str(output_dir)
    # metrics.jsonl is appended line by line, which object stores cannot do: with a bucket as output directory the
    # metrics stay on process 0's disk under runs/<run name>/ (checkpoints go to the bucket).
    metrics_dir = Path("runs") / output_dir.rstrip("/").rsplit("/", 1)[-1] if "://" in output_dir else Path(output_dir)
    mesh = mesh or make_mesh(cfg.mesh)
    data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.data.batch_size % (data_parallel * cfg.data.micro_batches):
        raise ValueError(f"data.batch_size ({cfg.data.batch_size}) must be a multiple of the data-parallel devices "
                         f"({data_parallel}) times data.micro_batches ({cfg.data.micro_batches})")
    if cfg.init.optimizer_state and init_model is not None:
        raise ValueError("init.optimizer_state continues init.checkpoint's optimiser; it cannot go with init_model")
    if cfg.optimizer.trainable == "new_layers":  # record the resolved mask in the checkpoints' config
        cfg = cfg.replace(optimizer=cfg.optimizer.replace(new_layers=new_layer_mask(cfg)))
    model_cfg = init_model.cfg if init_model is not None else architecture(cfg)
    setup = setup_step(cfg, model_cfg, mesh)
    shapes, shardings, p_shardings = setup.shapes, setup.shardings, setup.shardings.params
    objective = Objective(cfg.objective)

    mgr = ckpt.manager(f"{output_dir.rstrip('/')}/checkpoints", cfg.checkpoint.every, cfg.checkpoint.keep,
                       cfg.checkpoint.async_save)
    resumed_from = mgr.latest_step()
    if data_iter is None:  # a fresh stage that starts from a previous stage's run continues its data streams
        data_iter = make_iterator(cfg, model_cfg.vocab_size,
                                  previous_run=cfg.init.checkpoint if resumed_from is None else None)
    target = ckpt.abstract_target(shardings, setup.abstract_state())
    if resumed_from is None:
        params = initial_params(cfg, model_cfg, mesh, p_shardings, shapes, init_model)
        opt_state = None
        if cfg.init.optimizer_state:  # a new stage of the previous run's optimiser, on this run's schedule
            opt_state = ckpt.restore_optimizer(cfg.init.checkpoint, target, cfg.optimizer)

        def first_state(p, o):
            s = init_state(p, setup.tx, cfg.init.seed)
            return s if o is None else dataclasses.replace(s, opt_state=restart_schedule(o))
        state = jax.jit(first_state, out_shardings=shardings)(params, opt_state)
    else:
        state = ckpt.restore(mgr, resumed_from, target, data_iter)
    start = int(jax.device_get(state.step))
    eval_fn, eval_set = None, []
    if cfg.log.eval_every:
        eval_fn = jax.jit(make_eval_step(setup.graphdef, objective))
        source = eval_iter if eval_iter is not None else make_iterator(cfg, model_cfg.vocab_size, for_eval=True)
        eval_set = [global_batch(next(source), mesh) for _ in range(cfg.log.eval_batches)]
    ref_params = None
    if objective.reference in ("model", "precompute"):
        # The reference is the initial policy: at a fresh start the state's own parameters (not yet donated),
        # on resume rebuilt from the same source.
        initial = (state.params if resumed_from is None else
                   initial_params(cfg, model_cfg, mesh, p_shardings, shapes, init_model))
        if objective.reference == "model":  # a frozen copy in compute dtype (a real copy: the step donates state)
            cdt = jnp.dtype(cfg.compute.dtype)
            ref_params = jax.jit(lambda p: jax.tree.map(lambda x: jnp.array(x, dtype=cdt, copy=True), p),
                                 out_shardings=p_shardings)(initial)
        else:  # computed now for every batch this run reads; nothing of the reference stays in device memory
            ref_step = reference_step(setup.graphdef, cfg.objective.logits_chunk, mesh)
            data_iter = WithReference(data_iter, precompute(ref_step, initial, data_iter, cfg.steps - start, mesh))
            eval_set = [b | ref_step(initial, b) for b in eval_set]
        del initial

    step_fn = setup.compile(objective, mesh, cfg.data.micro_batches, with_reference=ref_params is not None)

    tokens_per_step = cfg.data.batch_size * cfg.data.seq_len * (2 if cfg.objective.is_preference else 1)
    flops_token = flops_per_token(model_cfg, cfg.data.seq_len)
    peak = peak_flops(cfg.log.peak_flops)
    writer = MetricsWriter(metrics_dir, cfg.log.tensorboard, resume_step=resumed_from)
    bar = tqdm(total=cfg.steps, initial=start, disable=not cfg.log.progress or jax.process_index() != 0,
               desc="train", unit="step", dynamic_ncols=True)
    last: dict[str, Any] = {}
    stopped = "done"
    pending: tuple[int, Any] | None = None
    extra: dict[int, dict[str, float]] = {}  # eval losses, merged into their step's line
    t_last = time.perf_counter()

    def read(step: int, metrics: Any) -> dict[str, Any]:
        nonlocal t_last
        values = flatten(jax.device_get(metrics))
        now = time.perf_counter()
        values["tokens_per_s"] = tokens_per_step / max(now - t_last, 1e-9)
        if peak:
            values["mfu"] = values["tokens_per_s"] * flops_token / peak
        t_last = now
        values |= extra.pop(step, {})
        if step % cfg.log.every == 0 or step == cfg.steps or not values["finite"] or "eval_loss" in values:
            writer.write(step, values)
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
        return values

    def settle() -> bool:
        """Read the pending step's metrics (if any); True when the run must stop on non-finite steps."""
        nonlocal last, pending
        if pending is not None:
            last, pending = read(*pending), None
        return last.get("bad_steps", 0) >= cfg.max_bad_steps

    with jax.set_mesh(mesh):
        for t in range(start, cfg.steps):
            state, metrics = step_fn(state, global_batch(next(data_iter), mesh), ref_params)  # step t+1 dispatched
            if settle():                                                        # before step t's metrics are read
                stopped = "non_finite"
                break
            pending, done = (t + 1, metrics), t + 1
            if eval_fn is not None and done % cfg.log.eval_every == 0:
                losses = [eval_fn(state.params, b, ref_params) for b in eval_set]
                extra[done] = {"eval_loss": float(sum(jax.device_get(losses)) / len(losses))}
            if done % cfg.checkpoint.every == 0 or done == cfg.steps:
                if settle():  # waits for this step: never save inside a non-finite streak
                    stopped = "non_finite"
                    break
                if last["bad_steps"] == 0:
                    ckpt.save(mgr, state, cfg, model_cfg, data_iter, step=done, force=done == cfg.steps)
        else:
            if settle():
                stopped = "non_finite"
    mgr.wait_until_finished()
    mgr.close()
    bar.close()
    writer.close()
    return TrainResult(step=int(jax.device_get(state.step)), stopped=stopped, metrics=last,
                       resumed_from=resumed_from, output_dir=output_dir, metrics_dir=metrics_dir)
