"""Checkpoints: orbax `CheckpointManager`, async, keep-last-N, one directory per step holding everything a resume
needs — `params` (fp32 master weights), `train` (optimiser state, step, RNG, NaN-guard counters), `config` (the
train config and the resolved model config, JSON) and `data` (each process's data-iterator state, JSON).

Atomic: orbax writes a step into a temporary directory and renames it when every item is complete, so a killed
save leaves the previous step the latest restorable one. Restores take an abstract target with shardings, so a
checkpoint restores onto any mesh shape (arrays are resharded as they are read).

Damage after the fact (a truncated or deleted file, a missing data-iterator state) is survived by `restore_newest`:
it reports the damaged step in one line, moves it aside (`<run>/set_aside/`) and restores the newest step that
restores completely.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from sailor2_jax.config import ModelConfig
from sailor2_jax.model.run_dir import as_epath, read_config, step_dir
from sailor2_jax.train.batches import CheckpointableIterator
from sailor2_jax.train.config import OptimizerConfig, TrainConfig
from sailor2_jax.train.state import TrainState

ITEMS = ("params", "train", "config", "data")


# --- the data iterator as an orbax item: one JSON file per process ------------------------------------------------

class IteratorHandler(ocp.CheckpointHandler):
    """Saves each process's iterator state as `process_I-of-N.json`; restore calls the iterator's `set_state` with
    this process's state or, when the process count has changed, with all of them merged by the iterator's
    `merge_states` (iterators without one restore only on the process count they were saved with)."""

    @staticmethod
    def _file(directory: epath.Path) -> epath.Path:
        return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

    def save(self, directory: epath.Path, args: IteratorSave) -> None:
        self._file(directory).write_text(json.dumps(args.state))

    @classmethod
    def state_for(cls, directory: epath.Path, item: CheckpointableIterator) -> dict[str, Any]:
        own = cls._file(directory)
        if own.exists():
            return json.loads(own.read_text())
        files = sorted(directory.glob("process_*-of-*.json"))
        merge = getattr(item, "merge_states", None)
        if not files or merge is None:
            raise ValueError(f"{directory}: no data-iterator state for this process ({own.name}, saved: "
                             f"{[f.name for f in files]}); this data source restores its order only with the process "
                             "count it was saved with")
        return merge([json.loads(f.read_text()) for f in files])

    def restore(self, directory: epath.Path, args: IteratorRestore) -> CheckpointableIterator:
        args.item.set_state(self.state_for(directory, args.item))
        return args.item

    def metadata(self, directory: epath.Path) -> None:
        return None


@ocp.args.register_with_handler(IteratorHandler, for_save=True)
@dataclasses.dataclass
class IteratorSave(ocp.args.CheckpointArgs):
    state: dict[str, Any]  # taken when the save starts: the loop moves the iterator on while the save runs


@ocp.args.register_with_handler(IteratorHandler, for_restore=True)
@dataclasses.dataclass
class IteratorRestore(ocp.args.CheckpointArgs):
    item: CheckpointableIterator


# --- the manager ---------------------------------------------------------------------------------------------------

def manager(directory: str | Path, every: int, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(save_interval_steps=every, max_to_keep=keep,
                                           enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
    return ocp.CheckpointManager(as_epath(directory), options=options, item_names=ITEMS)


def _train_item(state: TrainState) -> dict[str, Any]:
    return {"step": state.step, "opt_state": state.opt_state, "rng": state.rng, "bad_steps": state.bad_steps,
            "skipped_steps": state.skipped_steps}


def save(mgr: ocp.CheckpointManager, state: TrainState, cfg: TrainConfig, model_cfg: ModelConfig,
         data_iter: CheckpointableIterator, *, step: int, force: bool = False) -> bool:
    """Start saving the state after `step` batches (async: arrays are copied off device before returning)."""
    meta = {"train": cfg.model_dump(mode="json"), "model": model_cfg.model_dump(mode="json")}
    if jax.default_backend() == "cpu":
        # On CPU, "device" and host memory are one: do not rely on orbax's host copy being distinct from the
        # buffers the next (donating) step reuses while the async write still reads them. A private copy is cheap
        # here; on accelerators orbax's synchronous device-to-host transfer already is one.
        state = jax.jit(lambda s: jax.tree.map(jnp.copy, s))(state)
    return mgr.save(step, force=force, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params), train=ocp.args.StandardSave(_train_item(state)),
        config=ocp.args.JsonSave(meta), data=IteratorSave(data_iter.get_state())))


def restore(mgr: ocp.CheckpointManager, step: int, target: TrainState, data_iter: CheckpointableIterator | None
            ) -> TrainState:
    """Restore onto `target` (abstract arrays with the shardings wanted now), then reposition `data_iter` (only once
    every array has been read, so a damaged step leaves the iterator as it was)."""
    out = mgr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target.params),
                                                      train=ocp.args.StandardRestore(_train_item(target))))
    if data_iter is not None:
        mgr.restore(step, args=ocp.args.Composite(data=IteratorRestore(data_iter)))
    t = out["train"]
    return TrainState(step=t["step"], params=out["params"], opt_state=t["opt_state"], rng=t["rng"],
                      bad_steps=t["bad_steps"], skipped_steps=t["skipped_steps"])


def _everywhere(ok: bool) -> bool:
    """True on every process when `ok` is True on every process (a collective: all processes call it together)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils
    return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:240]}{'...' if len(text) > 240 else ''}"


def set_aside(mgr: ocp.CheckpointManager, step: int, why: str) -> epath.Path:
    """Move a step's directory out of the manager's sight, to `<run>/set_aside/step_<N>_<why>` (nothing is deleted),
    so the run can write that step again."""
    dest = mgr.directory.parent / "set_aside" / f"step_{step}_{why}"
    if jax.process_index() == 0:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            dest = dest.with_name(f"{dest.name}_{len(list(dest.parent.glob(dest.name + '*')))}")
        (mgr.directory / str(step)).rename(dest)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(f"set_aside {step}")
    mgr.reload()
    return dest


def restore_newest(mgr: ocp.CheckpointManager, target: TrainState, data_iter: CheckpointableIterator | None, *,
                   step: int | None = None, log=print) -> tuple[TrainState, int] | None:
    """The newest checkpoint that restores completely (arrays and this process's data position), or exactly `step`
    when given; None when the run has no checkpoint. A damaged step is reported in one line and set aside; with
    `step`, the newer steps are set aside too (the run continues from `step` and writes them again)."""
    steps = sorted(mgr.all_steps(), reverse=True)
    if not steps:
        if step is not None:
            raise FileNotFoundError(f"--restore-step {step}: {mgr.directory} holds no checkpoint")
        return None
    if step is not None:
        if step not in steps:
            raise ValueError(f"--restore-step {step}: no such checkpoint in {mgr.directory} (there are "
                             f"{sorted(steps)})")
        for newer in (s for s in steps if s > step):
            log(f"checkpoint step {newer} set aside (--restore-step {step}): {set_aside(mgr, newer, 'newer')}")
        steps = [step]
    failures = []
    for s in steps:
        try:
            state, error = restore(mgr, s, target, data_iter), None
        except Exception as e:  # noqa: BLE001 -- any failure to read a step means that step cannot be resumed
            state, error = None, e
        if _everywhere(error is None):
            return state, s
        failures.append(f"step {s}: {_reason(error) if error else 'damaged on another process'}")
        if step is not None:
            raise ValueError(f"checkpoint step {s} does not restore: {failures[-1]}")
        log(f"checkpoint step {s} is damaged ({failures[-1].split(': ', 1)[1]}); set aside to "
            f"{set_aside(mgr, s, 'damaged')}")
    raise ValueError(f"no checkpoint in {mgr.directory} restores completely: " + "; ".join(failures))


# --- a new stage's optimiser and data iterator from a previous run (its parameters: model/run_dir.py) -----------

def restore_iterator(path: str | Path, item: CheckpointableIterator) -> None:
    """Position `item` where a checkpoint's data iterator was (see IteratorHandler)."""
    item.set_state(IteratorHandler.state_for(step_dir(path) / "data", item))


def _array_specs(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """'path/to/leaf' -> (shape, dtype) for a pytree of arrays, optax NamedTuples and orbax metadata dicts alike."""
    key = lambda k: str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k))))
    return {"/".join(map(key, path)): (tuple(x.shape), str(x.dtype))
            for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def restore_optimizer(path: str | Path, target: TrainState, optimizer: OptimizerConfig) -> Any:
    """Only the optimiser state of a checkpoint, onto `target.opt_state` (abstract arrays with shardings), for a new
    stage that continues the same optimiser (init.optimizer_state). `optimizer` is the new run's optimiser config
    (with `new_layers` resolved). Refuses, naming what differs, a state saved by another optimiser: another
    trainable mask, gradient clipping on/off, or another layout or shape of the state's arrays."""
    d = step_dir(path)
    saved_opt = OptimizerConfig.model_validate(read_config(d)["train"]["optimizer"])
    diffs = []
    layers = lambda o: o.new_layers if o.trainable == "new_layers" else None
    if (saved_opt.trainable, layers(saved_opt)) != (optimizer.trainable, layers(optimizer)):
        diffs.append(f"trainable mask: checkpoint trainable={saved_opt.trainable} new_layers={layers(saved_opt)}, "
                     f"this run trainable={optimizer.trainable} new_layers={layers(optimizer)}")
    if (saved_opt.clip_norm is None) != (optimizer.clip_norm is None):
        diffs.append(f"gradient clipping: checkpoint clip_norm={saved_opt.clip_norm}, this run "
                     f"clip_norm={optimizer.clip_norm}")
    saved = _array_specs(ocp.StandardCheckpointHandler().metadata(d / "train").tree["opt_state"])
    wanted = _array_specs(target.opt_state)
    for what, keys in (("only in the checkpoint", saved.keys() - wanted.keys()),
                       ("only in this run", wanted.keys() - saved.keys())):
        if keys:
            diffs.append(f"{len(keys)} state arrays {what} ({', '.join(sorted(keys)[:3])}{', ...' * (len(keys) > 3)})")
    diffs += [f"state array {k}: checkpoint {saved[k]}, this run {wanted[k]} (shape, dtype)"
              for k in sorted(saved.keys() & wanted.keys()) if saved[k] != wanted[k]][:3]
    if diffs:
        raise ValueError(f"init.optimizer_state: the optimiser state in {d} does not fit this run's optimiser: "
                         + "; ".join(diffs) + ". Match the previous stage's optimizer settings, or set "
                         "init.optimizer_state=false to start fresh AdamW moments.")
    return ocp.StandardCheckpointer().restore(d / "train", _train_item(target))["opt_state"]
