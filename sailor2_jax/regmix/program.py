"""P proxies as one program: the project's training step (`train.step.make_step`, unchanged) under `jax.vmap` over a
leading proxy axis of the train state and the batch, that axis sharded over the mesh's data axis (logical axis
`proxy` in `sharding.RULES`), so each device trains its share of the proxies whole and no proxy ever talks to
another. The per-language validation loss after the last step is each proxy's result.

A program's progress is checkpointed (`train.checkpoint`: the stacked train state and every proxy's data position
together) every `proxy.checkpoint_every` steps, so a killed search resumes mid-program.

Inside the program the model's activation constraints are inactive (it is traced without an ambient mesh): a proxy
is never split across devices; only the proxy axis is sharded, by the program's in/out shardings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from sailor2_jax.config import MeshConfig, ModelConfig
from sailor2_jax.languages import LANGUAGE_INDEX
from sailor2_jax.model.qwen2 import Qwen2
from sailor2_jax.regmix.config import ProxyConfig
from sailor2_jax.sharding import logical_to_spec, make_mesh
from sailor2_jax.train import checkpoint as ckpt
from sailor2_jax.model import run_dir
from sailor2_jax.train.config import BatchSourceConfig, InitConfig, ObjectiveConfig, TrainConfig
from sailor2_jax.train.objectives import Batch, Objective
from sailor2_jax.train.state import TrainState, init_state
from sailor2_jax.train.step import make_step, setup_step

if TYPE_CHECKING:  # the data side (grain, seqio) is imported where a search reads data, not by the program itself
    from sailor2_jax.regmix.data import ProxyData

PROXY_MESH = MeshConfig(data=-1, fsdp=1, tensor=1)  # every device on the axis the proxies are sharded over


def proxy_mesh() -> Mesh:
    return make_mesh(PROXY_MESH)


def proxy_train_config(proxy: ProxyConfig, model_cfg: ModelConfig) -> TrainConfig:
    """One proxy's run as a TrainConfig: what `setup_step` reads (and checkpoints record)."""
    return TrainConfig(model=model_cfg, compute=proxy.compute, optimizer=proxy.optimizer, steps=proxy.steps,
                       data=BatchSourceConfig(batch_size=proxy.batch_size, seq_len=proxy.seq_len,
                                              micro_batches=proxy.micro_batches),
                       objective=ObjectiveConfig(kind="pretrain", logits_chunk=proxy.logits_chunk),
                       mesh=PROXY_MESH, init=InitConfig(seed=proxy.seed))


def gather(x: jax.Array) -> np.ndarray:
    """A proxy-sharded array whole on every process."""
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


class ProxyProgram:
    """The jitted step, initialisation and evaluation of `size` proxies (a multiple of the mesh's data axis)."""

    def __init__(self, train_cfg: TrainConfig, model_cfg: ModelConfig, mesh: Mesh, size: int):
        if size % mesh.shape["data"]:
            raise ValueError(f"{size} proxies cannot be spread over {mesh.shape['data']} devices: proxy.per_program "
                             "must be a multiple of the device count")
        self.train_cfg, self.model_cfg, self.mesh, self.size = train_cfg, model_cfg, mesh, size
        setup = setup_step(train_cfg, model_cfg, mesh)
        objective = Objective(train_cfg.objective)
        step = make_step(setup.graphdef, objective, setup.tx, setup.lr_schedule, setup.mask,
                         train_cfg.data.micro_batches)
        self.sharding = NamedSharding(mesh, logical_to_spec(("proxy",)))
        self.abstract_state = jax.tree.map(lambda s: jax.ShapeDtypeStruct((size,) + s.shape, s.dtype),
                                           setup.abstract_state())
        state_sh = jax.tree.map(lambda _: self.sharding, self.abstract_state)
        self.state_shardings = state_sh
        compute, seed = train_cfg.compute, train_cfg.init.seed

        def init() -> TrainState:
            # one initialisation (as create_model makes it), the same for every proxy
            params = nnx.to_pure_dict(nnx.state(Qwen2(model_cfg, compute, rngs=nnx.Rngs(seed))))
            stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (size,) + x.shape), params)
            return jax.vmap(lambda p: init_state(p, setup.tx, seed))(stacked)

        def evaluate(params, batch: Batch) -> tuple[jax.Array, jax.Array]:
            def one(p):
                _, sums = objective.loss(nnx.merge(setup.graphdef, p), batch, None)
                return sums["lang_nll"], sums["lang_tokens"]
            return jax.vmap(one)(params)

        self._init = jax.jit(init, out_shardings=state_sh)
        self._step = jax.jit(lambda state, batch: jax.vmap(step, in_axes=(0, 0, None))(state, batch, None),
                             in_shardings=(state_sh, self.sharding), out_shardings=(state_sh, self.sharding),
                             donate_argnums=0)
        self._evaluate = jax.jit(evaluate, out_shardings=self.sharding)
        indices = self.sharding.addressable_devices_indices_map((size,)).values()
        # this process's proxies: its rows of a global [size, ...] array, in order
        self.local = sorted({i for index in indices for i in range(*index[0].indices(size))})
        self._replicated = NamedSharding(mesh, P())

    def init(self) -> TrainState:
        return self._init()

    def step(self, state: TrainState, local_batch: dict[str, np.ndarray]) -> tuple[TrainState, dict[str, Any]]:
        batch = {k: jax.make_array_from_process_local_data(self.sharding, v) for k, v in local_batch.items()}
        return self._step(state, batch)

    def evaluate(self, params: Any, batches: Sequence[Batch], languages: Sequence[int]) -> np.ndarray:
        """Per-language validation loss [size, languages] (languages: indices into LANGUAGES)."""
        nll = tokens = 0.0
        for batch in batches:
            batch = {k: jax.make_array_from_process_local_data(self._replicated, v) for k, v in batch.items()}
            n, t = self._evaluate(params, batch)
            nll, tokens = nll + n, tokens + t
        nll, tokens = gather(nll), gather(tokens)
        idx = np.asarray(languages)
        return nll[:, idx] / np.maximum(tokens[:, idx], 1.0)


def program_size(n: int, devices: int) -> int:
    """Proxies in a program for `n` mixtures: padded to a multiple of the device count."""
    return -(-n // devices) * devices


def train_program(program: ProxyProgram, data: ProxyData, ids: Sequence[int], weights: np.ndarray,
                  directory: Path, proxy: ProxyConfig, *, progress: bool = True, metrics_file: Path | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Train the proxies of mixtures `ids` (weights [n, K]) for `proxy.steps` steps, resuming from `directory`'s
    checkpoint if it holds one; their per-language validation losses [n, K] and last training losses [n].

    Rows past n (padding up to `program.size`) repeat the last mixture; their results are dropped."""
    from sailor2_jax.regmix.data import ProxyBatches

    n = len(ids)
    pad = program.size - n
    names = [f"mixture_{i}" for i in ids] + [f"padding_{j}" for j in range(pad)]
    all_weights = np.concatenate([weights, np.repeat(weights[-1:], pad, axis=0)])
    batches = ProxyBatches(data, [names[i] for i in program.local], all_weights[program.local])
    mgr = ckpt.manager(directory, proxy.checkpoint_every, keep=1, async_save=True)
    writer = metrics_file.open("a", encoding="utf-8") if metrics_file and jax.process_index() == 0 else None
    try:
        start = mgr.latest_step()
        if start is None:
            state, start = program.init(), 0
        else:
            target = run_dir.abstract_target(program.state_shardings, program.abstract_state)
            state = ckpt.restore(mgr, start, target, batches)
        tokens_per_step = program.size * proxy.batch_size * proxy.seq_len
        bar = tqdm(total=proxy.steps, initial=start, desc=f"{n} proxies", unit="step", leave=False,
                   disable=not progress or jax.process_index() != 0)
        t_last, steps_since = time.perf_counter(), 0
        for t in range(start, proxy.steps):
            state, metrics = program.step(state, next(batches))
            done, steps_since = t + 1, steps_since + 1
            bar.update()
            if done % proxy.log_every == 0 or done == proxy.steps:
                loss = gather(metrics["loss"])[:n]
                now = time.perf_counter()
                line = {"first_mixture": int(ids[0]), "last_mixture": int(ids[-1]), "step": done,
                        "loss_mean": float(loss.mean()), "loss_min": float(loss.min()), "loss_max": float(loss.max()),
                        "proxy_tokens_per_s": tokens_per_step * steps_since / (now - t_last)}
                t_last, steps_since = now, 0
                bar.set_postfix(loss=f"{line['loss_mean']:.3f}", refresh=False)
                if writer:
                    writer.write(json.dumps(line) + "\n")
                    writer.flush()
            if done % proxy.checkpoint_every == 0 and done < proxy.steps:
                ckpt.save(mgr, state, program.train_cfg, program.model_cfg, batches, step=done)
        bar.close()
        train_loss = gather(metrics["loss"])[:n]  # a checkpoint never holds the last step: the loop ran
        losses = program.evaluate(state.params, data.validation, [LANGUAGE_INDEX[lang] for lang in data.languages])[:n]
    finally:
        mgr.wait_until_finished()
        mgr.close()
        if writer:
            writer.close()
    return losses, train_loss
