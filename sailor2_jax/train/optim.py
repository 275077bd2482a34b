"""The optimiser: learning-rate schedules, AdamW with a weight-decay mask, and the trainable mask.

Parameters are a pure nested dict (`nnx.to_pure_dict` of the model state) in fp32: the master weights. The model
casts them to the compute dtype layer by layer.

Trainable mask: one float array per leaf, broadcastable to it. Most leaves get a scalar 1 or 0; the stacked decoder
layers get a [L, 1, ...] column, so `trainable: new_layers` trains exactly the layers that block expansion added
(recipe.md §1.3) while their neighbours in the same stacked array stay frozen. The step multiplies gradients by the
mask (so clipping and the grad-norm metric see only trainable weights). AdamW runs inside `only_rows`, on the
trainable rows alone: Adam's moments are [L_new, ...] for the stacked layers and absent for the frozen embeddings,
final norm and LM head (for a 20B model training 16 new of 64 layers, ~120 GB less fp32 state), and weight decay
cannot reach a frozen weight. With `trainable: all` every leaf is whole and the state is plain clip → AdamW's.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sailor2_jax.train.config import OptimizerConfig, ScheduleConfig

Params = dict[str, Any]


def schedule(cfg: ScheduleConfig, total_steps: int) -> optax.Schedule:
    """The learning rate as a function of the update count c = 0, 1, ...: update c is the run's step c + 1 and takes
    the schedule's value at step c + 1, so the first step trains one warmup increment above `init_lr` (never at 0
    when warmup starts there) and the last step of a decay at `final_lr`."""
    if cfg.kind == "wsd" and cfg.warmup_steps + cfg.decay_steps > total_steps:
        raise ValueError(f"optimizer.schedule: warmup_steps ({cfg.warmup_steps}) + decay_steps ({cfg.decay_steps}) "
                         f"exceed the schedule's {total_steps} steps (set optimizer.schedule.total_steps)")
    by_step = _by_step(cfg, total_steps)
    return lambda count: by_step(count + 1)


def _by_step(cfg: ScheduleConfig, total_steps: int) -> optax.Schedule:
    """The schedule over steps 0..total_steps: warmup from `init_lr` at 0 to `peak_lr` at `warmup_steps`, then its
    kind's shape, ending at step `total_steps` (constant after)."""
    warmup = optax.linear_schedule(cfg.init_lr, cfg.peak_lr, max(cfg.warmup_steps, 1))
    ratio = cfg.final_lr / cfg.peak_lr if cfg.peak_lr else 0.0
    if cfg.kind == "constant":
        return optax.join_schedules([warmup, optax.constant_schedule(cfg.peak_lr)], [cfg.warmup_steps])
    if cfg.kind == "cosine":
        decay = optax.cosine_decay_schedule(cfg.peak_lr, max(total_steps - cfg.warmup_steps, 1), alpha=ratio)
        return optax.join_schedules([warmup, decay], [cfg.warmup_steps])
    # wsd: warmup, stable, then decay over the last decay_steps steps of the run.
    stable_end = max(total_steps - cfg.decay_steps, cfg.warmup_steps)
    n = max(cfg.decay_steps, 1)
    if cfg.decay_shape == "linear":
        decay = optax.linear_schedule(cfg.peak_lr, cfg.final_lr, n)
    elif cfg.decay_shape == "cosine":
        decay = optax.cosine_decay_schedule(cfg.peak_lr, n, alpha=ratio)
    else:  # MiniCPM's exponential anneal, ending exactly at final_lr
        decay = lambda s: cfg.peak_lr * ratio ** (jnp.minimum(s, n) / n)
    return optax.join_schedules([warmup, optax.constant_schedule(cfg.peak_lr), decay],
                                [cfg.warmup_steps, stable_end])


def decay_mask(params: Params) -> Params:
    """Weight decay on matrices and embeddings; none on norms and biases."""
    def decays(path, _):
        name = str(getattr(path[-1], "key", path[-1]))
        return not name.endswith(("norm", "bias"))
    return jax.tree_util.tree_map_with_path(decays, params)


def trainable_mask(cfg: OptimizerConfig, params: Params) -> Params:
    """Per-leaf float masks (see the module docstring); all ones when everything trains. `trainable: new_layers`
    reads `cfg.new_layers` (resolved from the expansion record by train/init.py)."""
    if cfg.trainable == "all":
        return jax.tree.map(lambda p: np.ones((), np.float32), params)
    if cfg.new_layers is None:
        raise ValueError("optimizer.trainable=new_layers needs optimizer.new_layers (the expansion's is_new_layer)")
    is_new_L = np.asarray(cfg.new_layers, np.float32)

    def leaf(path, p):
        if str(getattr(path[0], "key", path[0])) != "layers":
            return np.zeros((), np.float32)  # embeddings, final norm, LM head: frozen during expansion training
        if p.shape[0] != is_new_L.shape[0]:
            raise ValueError(f"optimizer.new_layers has {is_new_L.shape[0]} entries, the model has "
                             f"{p.shape[0]} layers")
        return is_new_L.reshape((-1,) + (1,) * (p.ndim - 1))
    return jax.tree_util.tree_map_with_path(leaf, params)


def only_rows(inner: optax.GradientTransformation, mask: Params) -> optax.GradientTransformation:
    """`inner` on the trainable part of each leaf only, read off its trainable mask: a whole leaf (scalar 1), none of
    it (scalar 0: an `optax.MaskedNode` to `inner`, so no state), or the rows of axis 0 where a column is 1 (`inner`
    sees and keeps state for just those rows). Entries `inner` does not see get a zero update."""
    def part(x, m):
        if m.ndim:
            return x[np.flatnonzero(m)]
        return x if m else optax.MaskedNode()

    def merge(u, new, m):
        if m.ndim:
            return jnp.zeros_like(u).at[np.flatnonzero(m)].set(new)
        return new if m else jnp.zeros_like(u)

    view = lambda tree: jax.tree.map(part, tree, mask)

    def update(updates, state, params=None):
        new, state = inner.update(view(updates), state, None if params is None else view(params))
        return jax.tree.map(merge, updates, new, mask), state
    return optax.GradientTransformation(lambda params: inner.init(view(params)), update)


def optimizer(cfg: OptimizerConfig, total_steps: int, mask: Params
              ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """clip → AdamW (decoupled decay on matrices) on the trainable rows only; frozen entries get zero updates.

    Clipping stays outside `only_rows`: the step's masked gradients have the trainable rows' global norm already.
    decay_mask goes in as a function, so it is read off `only_rows`' view of the parameters."""
    lr = schedule(cfg.schedule, total_steps)
    chain = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm else []
    chain += [only_rows(optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                                    mask=decay_mask), mask)]
    return optax.chain(*chain), lr


def restart_schedule(opt_state: optax.OptState) -> optax.OptState:
    """`opt_state` with the learning-rate schedule's count back at 0: a new stage (init.optimizer_state) keeps the
    Adam moments and Adam's own count (its bias correction) but runs its own schedule from that schedule's step 0."""
    is_schedule = lambda s: isinstance(s, optax.ScaleByScheduleState)
    return jax.tree.map(lambda s: s._replace(count=jnp.zeros_like(s.count)) if is_schedule(s) else s, opt_state,
                        is_leaf=is_schedule)
