"""Exact resume with a real process and a real SIGKILL: the steps a rerun redoes after the checkpoint it resumes from
log, bitwise, the losses the killed (so far uninterrupted) run logged for them (CPU); and an interrupted save leaves
the previous checkpoint the latest restorable one."""

import subprocess
import sys
from pathlib import Path

import pytest
from jobs import cpu_env, resume, train_cmd, train_until_killed

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--steps", "30", "data.source=synthetic", "model.vocab_size=256", "model.hidden_size=128",
        "model.intermediate_size=256", "data.seq_len=128", "data.batch_size=8", "checkpoint.every=5",
        "log.eval_every=0", "log.progress=false"]


@pytest.mark.slow
def test_sigkill_then_rerun_gives_identical_losses(tmp_path):
    out = tmp_path / "run"
    killed_at, before = train_until_killed(
        train_cmd(out, ARGS), out,
        lambda ckpts, rows: bool(ckpts) and ckpts[-1] >= 10 and max(rows, default=0) >= ckpts[-1] + 2, timeout=240)
    assert max(before) < 30
    after, _ = resume(train_cmd(out, ARGS), out, killed_at, before)
    assert sorted(after) == list(range(1, 31))


_INTERRUPTED_SAVE = """
import os, sys
from sailor2_jax.train import checkpoint as ckpt
import jax.numpy as jnp, numpy as np
from sailor2_jax.config import load
from sailor2_jax.train.config import TrainConfig
from sailor2_jax.train.batches import SyntheticLM
from sailor2_jax.train.state import TrainState
cfg = load(TrainConfig, None, ["data.source=synthetic", "model.base=tiny", "model.vocab_size=256"])
it = SyntheticLM(8, 32, 256, seed=0, process_index=0, process_count=1)
mgr = ckpt.manager(sys.argv[1], every=1, keep=5)
def state(step, value):
    z = jnp.zeros((), jnp.int32)
    return TrainState(step=jnp.int32(step), params={"w": jnp.full((512, 512), value)}, opt_state={},
                      rng=jnp.zeros(2, jnp.uint32), bad_steps=z, skipped_steps=z)
ckpt.save(mgr, state(1, 1.0), cfg, cfg.model, it, step=1)
mgr.wait_until_finished()
ckpt.save(mgr, state(2, 2.0), cfg, cfg.model, it, step=2)  # async: still being written ...
os._exit(9)                                                 # ... when the process dies
"""


def test_interrupted_save_leaves_previous_checkpoint(tmp_path):
    import jax
    import numpy as np

    from sailor2_jax.train import checkpoint as ckpt
    from sailor2_jax.train.batches import SyntheticLM
    from sailor2_jax.train.state import TrainState

    done = subprocess.run([sys.executable, "-c", _INTERRUPTED_SAVE, str(tmp_path)], cwd=ROOT, env=cpu_env(8),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 9, done.stderr[-2000:]
    # whatever the dying save left behind, also leave a half-written step directory as a crash mid-rename would
    (tmp_path / "3.orbax-checkpoint-tmp-1234" / "params").mkdir(parents=True)
    mgr = ckpt.manager(tmp_path, every=1, keep=5)
    latest = mgr.latest_step()
    assert latest in (1, 2)
    z = jax.ShapeDtypeStruct((), np.int32)
    target = TrainState(step=z, params={"w": jax.ShapeDtypeStruct((512, 512), np.float32)}, opt_state={},
                        rng=jax.ShapeDtypeStruct((2,), np.uint32), bad_steps=z, skipped_steps=z)
    it = SyntheticLM(8, 32, 256, seed=0, process_index=0, process_count=1)
    restored = ckpt.restore(mgr, latest, target, it)
    np.testing.assert_array_equal(np.asarray(restored.params["w"]), np.full((512, 512), float(latest)))
    assert int(restored.step) == latest
