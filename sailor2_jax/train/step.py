"""The train state and the one step family: `step(state, batch, ref_params) -> (state, metrics)`.

The objective picks the loss; everything else — micro-batch accumulation, masking, clipping, the NaN/inf guard, the
update — is shared. `compile_step` jits it once with explicit in/out shardings and the state donated.

Gradient accumulation: the batch [B, ...] is viewed as [B/M, M, ...] and micro-batch m takes rows m, M+m, 2M+m ...,
so each micro-batch stays spread over every data-parallel device; each micro-batch's loss sum is divided by the
*full* batch's normaliser, so the accumulated gradient is the big-batch gradient.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sailor2_jax.compiled import Recent, shared_jit
from sailor2_jax.config import ModelConfig
from sailor2_jax.model.init import abstract_model
from sailor2_jax.sharding import batch_sharding, shard, state_shardings
from sailor2_jax.train.config import TrainConfig
from sailor2_jax.train.objectives import Batch, Objective
from sailor2_jax.train.optim import optimizer, trainable_mask
from sailor2_jax.train.state import TrainState, init_state

Params = dict[str, Any]


def _micro_batches(batch: Batch, m: int) -> Batch:
    """[B, ...] -> [M, B/M, ...] with micro-batch i = rows i, M+i, 2M+i ... (keeps each one data-parallel)."""
    def split(x):
        return shard(x.reshape((x.shape[0] // m, m) + x.shape[1:]).swapaxes(0, 1), (None, "batch"))
    return jax.tree.map(split, batch)


def _models(graphdef: nnx.GraphDef, params: Params, ref_params: Params | None) -> tuple[Any, Any]:
    """The policy and (if any) the frozen reference model from their parameter dicts."""
    return nnx.merge(graphdef, params), (nnx.merge(graphdef, ref_params) if ref_params is not None else None)


def make_step(graphdef: nnx.GraphDef, objective: Objective, tx: optax.GradientTransformation,
              lr_schedule: optax.Schedule, trainable: Params, micro_batches: int = 1
              ) -> Callable[[TrainState, Batch, Params | None], tuple[TrainState, dict[str, jax.Array]]]:
    """The pure step function (not yet jitted)."""

    def loss_fn(params, mb, ref_params, weight):
        model, ref_model = _models(graphdef, params, ref_params)
        loss_sum, sums = objective.loss(model, mb, ref_model)
        return loss_sum / weight, sums

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, batch: Batch, ref_params: Params | None) -> tuple[TrainState, dict[str, jax.Array]]:
        weight = jnp.maximum(objective.weight(batch), 1.0)
        if micro_batches == 1:
            (_, sums), grads = grad_fn(state.params, batch, ref_params, weight)
        else:
            def accumulate(carry, mb):
                (_, sums), grads = grad_fn(state.params, mb, ref_params, weight)
                return jax.tree.map(jnp.add, carry, (grads, sums)), None
            mbs = _micro_batches(batch, micro_batches)
            (_, sums_shape), grads_shape = jax.eval_shape(grad_fn, state.params, jax.tree.map(lambda x: x[0], mbs),
                                                          ref_params, weight)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (grads_shape, sums_shape))
            (grads, sums), _ = jax.lax.scan(accumulate, zeros, mbs)
        grads = jax.tree.map(lambda g, m: g * m, grads, trainable)
        grad_norm = optax.tree.norm(grads)
        metrics = objective.metrics(sums)
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)

        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # NaN/inf guard: a non-finite step leaves params and optimiser state as they were, and is counted.
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        bad = jnp.where(finite, 0, state.bad_steps + 1)
        new_state = TrainState(step=state.step + 1, params=keep(params, state.params),
                               opt_state=keep(opt_state, state.opt_state), rng=state.rng, bad_steps=bad,
                               skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32))
        # the optimiser's own count advances only on applied updates: this is the rate this step used
        lr = lr_schedule(state.step - state.skipped_steps)
        metrics |= {"grad_norm": grad_norm, "lr": lr, "finite": finite,
                    "bad_steps": bad, "skipped_steps": new_state.skipped_steps}
        return new_state, metrics

    return step


def make_eval_step(graphdef: nnx.GraphDef, objective: Objective) -> Callable[[Params, Batch, Params | None], Any]:
    def eval_step(params, batch, ref_params):
        model, ref_model = _models(graphdef, params, ref_params)
        _, sums = objective.loss(model, batch, ref_model)
        return objective.metrics(sums)["loss"]
    return eval_step


def train_state_shardings(abstract_state: nnx.State, tx: optax.GradientTransformation, mesh: Mesh) -> TrainState:
    """Shardings of the whole train state: parameters by the logical rules, optimiser moments following their
    parameters, counters replicated. optax states are tuples, so a moment is the optimiser-state leaf whose dict keys
    are its parameter's path; a moment of only some layers' rows (`optim.only_rows`) takes its parameter's sharding
    too, since the layers axis is never sharded."""
    params = nnx.to_pure_dict(state_shardings(abstract_state, mesh))
    replicated = NamedSharding(mesh, P())
    dict_keys = lambda path: tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))
    by_path = {dict_keys(path): s for path, s in jax.tree_util.tree_leaves_with_path(params)}
    abstract_opt = jax.eval_shape(tx.init, nnx.to_pure_dict(abstract_state))
    opt_shardings = jax.tree_util.tree_map_with_path(lambda path, _: by_path.get(dict_keys(path), replicated),
                                                     abstract_opt)
    return TrainState(step=replicated, params=params, opt_state=opt_shardings, rng=replicated,
                      bad_steps=replicated, skipped_steps=replicated)


def compile_step(step: Callable, mesh: Mesh, shardings: TrainState, ref_shardings: Params | None) -> Callable:
    """jit once: state in and out with its shardings (donated), batch rows over the data axes, metrics replicated."""
    return shared_jit(step, mesh, in_shardings=(shardings, batch_sharding(mesh, 1), ref_shardings),
                      out_shardings=(shardings, NamedSharding(mesh, P())), donate_argnums=0)


@dataclasses.dataclass(frozen=True, eq=False)  # compared by identity: its compiled steps belong to it
class StepSetup:
    """What a run's step is built from: the model graph and parameter shapes, the trainable mask, the optimiser and
    its schedule, and the shardings of the whole train state (`setup_step`)."""

    graphdef: nnx.GraphDef
    shapes: Params                    # ShapeDtypeStruct leaves
    mask: Params
    tx: optax.GradientTransformation
    lr_schedule: optax.Schedule
    shardings: TrainState
    _compiled: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

    def abstract_state(self) -> TrainState:
        """The train state's shapes and dtypes (nothing allocated)."""
        return jax.eval_shape(lambda p: init_state(p, self.tx, 0), self.shapes)

    def compile(self, objective: Objective, mesh: Mesh, micro_batches: int, with_reference: bool) -> Callable:
        """The jitted step, built once per objective and batching for this setup (a `dataclasses.replace`d copy
        starts with none)."""
        key = (objective.cfg.model_dump_json(), mesh, micro_batches, with_reference)
        if key not in self._compiled:
            step = make_step(self.graphdef, objective, self.tx, self.lr_schedule, self.mask, micro_batches)
            self._compiled[key] = compile_step(step, mesh, self.shardings,
                                               self.shardings.params if with_reference else None)
        return self._compiled[key]


def abstract_for(cfg: TrainConfig, model_cfg: ModelConfig) -> nnx.Module:
    """The module the run trains, as shapes: the Qwen2 LM, or for `objective.kind: reward` the reward model (the same
    decoder with a one-score head; `objective.reward_pad_id` is resolved by train/init.py when a run starts)."""
    if cfg.objective.kind == "reward":
        from sailor2_jax.tokenizer import EOS_ID
        from sailor2_jax.model.reward import abstract_reward
        pad_id = cfg.objective.reward_pad_id
        # unresolved only outside a run (e.g. AOT compilation), where the id changes no shape
        return abstract_reward(model_cfg, EOS_ID if pad_id is None else pad_id, cfg.compute)
    return abstract_model(model_cfg, cfg.compute)


def setup_step(cfg: TrainConfig, model_cfg: ModelConfig, mesh: Mesh) -> StepSetup:
    """The step of `cfg` (its optimiser's schedule spans `optimizer.schedule.total_steps`, else `steps`; the loop
    fixes it at a run's first start, train/init.py `resolve`).

    A process keeps the last few setups, so a run started again in it with the same settings (a resume or a longer
    run, a demo stage of the same shapes, a test) gets the same setup and reuses its compiled programs."""
    total_steps = cfg.optimizer.schedule.total_steps or cfg.steps
    key = (json.dumps([model_cfg.model_dump(mode="json"), cfg.compute.model_dump(mode="json"),
                       cfg.objective.model_dump(mode="json"), cfg.optimizer.model_dump(mode="json"), total_steps],
                      sort_keys=True), mesh)

    def make() -> StepSetup:
        graphdef, abstract = nnx.split(abstract_for(cfg, model_cfg))
        shapes = nnx.to_pure_dict(abstract)
        mask = trainable_mask(cfg.optimizer, shapes)
        tx, lr = optimizer(cfg.optimizer, total_steps, mask)
        return StepSetup(graphdef, shapes, mask, tx, lr, train_state_shardings(abstract, tx, mesh))
    return _SETUPS.get_or_make(key, make)


_SETUPS = Recent(4)
