"""What a pod does to a run: damaged checkpoints, preemption (SIGTERM), a run that blows up (NaN rollback), and a
rerun with more steps than the schedule (no second decay)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from jobs import ROOT, cli_cmd, cpu_env, train_cmd

from sailor2_jax.config import load
from sailor2_jax.train.batches import SyntheticLM
from sailor2_jax.train.config import TrainConfig
from sailor2_jax.train.loop import train

BASE = ["data.source=synthetic", "model.base=tiny", "model.vocab_size=256", "model.num_layers=2", "data.batch_size=8", "data.seq_len=32",
        "optimizer.schedule.kind=constant", "optimizer.schedule.peak_lr=1e-2", "log.progress=false",
        "log.tensorboard=false", "log.every=1"]


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _lines(out) if "loss" in r}


def _cfg(*extra: str) -> TrainConfig:
    return load(TrainConfig, None, BASE + list(extra))


# --- a damaged latest checkpoint ------------------------------------------------------------------------------------

def _damage_params(step_dir: Path) -> None:
    """Truncate the biggest file of a step's parameters (what a disk-full or torn copy leaves)."""
    biggest = max((p for p in (step_dir / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 3])


@pytest.mark.parametrize("damage", ["truncated_params", "missing_data_state"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_good_one(tmp_path, capsys, damage):
    """Steps 3 and 6 saved, step 6 damaged: the rerun reports step 6 in one line, sets it aside, resumes from step 3
    and ends with the losses of an uninterrupted run (bitwise: same program, state and batches)."""
    cfg = _cfg("checkpoint.every=3", "checkpoint.async_save=false")
    full = train(cfg.replace(steps=9), tmp_path / "full")
    train(cfg.replace(steps=6), tmp_path / "run")
    step6 = tmp_path / "run" / "checkpoints" / "6"
    if damage == "truncated_params":
        _damage_params(step6)
    else:
        (step6 / "data" / "process_0-of-1.json").unlink()
    capsys.readouterr()
    result = train(cfg.replace(steps=9), tmp_path / "run")
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("checkpoint step")]
    assert len(said) == 1 and said[0].startswith("checkpoint step 6 is damaged (") and "set aside" in said[0]
    assert result.resumed_from == 3 and result.step == 9 and full.stopped == result.stopped == "done"
    assert (tmp_path / "run" / "set_aside" / "step_6_damaged").is_dir()
    want, got = _losses(tmp_path / "full"), _losses(tmp_path / "run")
    assert [got[s] for s in range(4, 10)] == [want[s] for s in range(4, 10)]


def test_restore_step_picks_a_checkpoint_by_hand(tmp_path):
    cfg = _cfg("checkpoint.every=2", "checkpoint.keep=5", "checkpoint.async_save=false")
    train(cfg.replace(steps=6), tmp_path / "run")
    result = train(cfg.replace(steps=6), tmp_path / "run", restore_step=2)
    assert result.resumed_from == 2 and result.step == 6
    assert sorted(p.name for p in (tmp_path / "run" / "set_aside").iterdir()) == ["step_4_newer", "step_6_newer"]
    with pytest.raises(ValueError, match=r"--restore-step 3: no such checkpoint .*\[2, 4, 6\]"):
        train(cfg.replace(steps=6), tmp_path / "run", restore_step=3)


def test_every_checkpoint_damaged_is_one_clear_error(tmp_path):
    cfg = _cfg("checkpoint.every=2", "checkpoint.async_save=false")
    train(cfg.replace(steps=4), tmp_path / "run")
    for step in (2, 4):
        _damage_params(tmp_path / "run" / "checkpoints" / str(step))
    with pytest.raises(ValueError, match="no checkpoint in .* restores completely: step 4: .*; step 2: "):
        train(cfg.replace(steps=6), tmp_path / "run")


# --- preemption -----------------------------------------------------------------------------------------------------

ARGS = ["--steps", "40", "data.source=synthetic", "model.vocab_size=256", "data.seq_len=64", "data.batch_size=8",
        "checkpoint.every=100", "log.eval_every=0", "log.progress=false", "log.tensorboard=false"]


@pytest.mark.slow
def test_sigterm_saves_the_current_step_exits_0_and_the_rerun_resumes_exactly(tmp_path):
    run, full = tmp_path / "run", tmp_path / "full"
    proc = subprocess.Popen(train_cmd(run, ARGS), cwd=ROOT, env=cpu_env(8), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # a few steps in, far from any scheduled checkpoint
        if (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    saved = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert len(saved) == 1 and 3 <= saved[0] < 40, saved
    assert f"preempted (SIGTERM) at step {saved[0]}: checkpoint {saved[0]} saved and committed" in out
    rerun = subprocess.run(train_cmd(run, ARGS), cwd=ROOT, env=cpu_env(8), capture_output=True, text=True,
                           timeout=300, check=False)
    reference = subprocess.run(train_cmd(full, ARGS), cwd=ROOT, env=cpu_env(8), capture_output=True, text=True,
                               timeout=300, check=False)
    assert rerun.returncode == reference.returncode == 0, rerun.stderr[-2000:] + reference.stderr[-2000:]
    assert f"resumed from step {saved[0]}" in rerun.stdout
    want, got = _losses(full), _losses(run)
    assert sorted(got) == list(range(1, 41)) and [got[s] for s in range(1, 41)] == [want[s] for s in range(1, 41)]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_expand_leaves_no_temporary_directory_when_interrupted(tmp_path, signum):
    """An expansion stopped half-way (8 → 16 layers, ~270 MB): the atomic writer's hidden directory goes with it."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    Qwen2ForCausalLM(Qwen2Config(vocab_size=4096, hidden_size=512, intermediate_size=2048, num_hidden_layers=8,
                                 num_attention_heads=8, num_key_value_heads=2)).save_pretrained(tmp_path / "base")
    cmd = cli_cmd("expand", "--base", str(tmp_path / "base"), "--layers", "16", "--output-dir", str(tmp_path / "out"))
    for _ in range(3):
        # Ctrl-C handled as in a terminal, whatever this test runner inherited (a job started with `&` by a
        # non-interactive shell ignores SIGINT, and so would its children)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=cpu_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not list(tmp_path.glob(".out.tmp-*")):
            time.sleep(0.01)
        assert proc.poll() is None, "the expansion finished before its output directory appeared"
        # Frozen while it writes (a loaded machine may otherwise finish the ~0.6 s write before the signal lands),
        # signalled, then let go: the signal is handled mid-write.
        proc.send_signal(signal.SIGSTOP)
        writing = bool(list(tmp_path.glob(".out.tmp-*")))
        if writing:
            proc.send_signal(signum)
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=60)
        if writing:
            break
        assert proc.returncode == 0 and (tmp_path / "out").is_dir()  # it had finished, atomically: once more
        shutil.rmtree(tmp_path / "out")
    assert writing, "the expansion always finished before it could be interrupted"
    assert proc.returncode == (130 if signum == signal.SIGINT else 143), err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("sailor2-jax expand: ")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


# --- NaN rollback -------------------------------------------------------------------------------------------------

class _Poisoned:
    """Synthetic batches whose loss masks are NaN for batch indices in `bad` (a run that blows up there)."""

    def __init__(self, bad: range, skip_to: tuple[int, int] | None = None):
        self.inner, self.bad, self.skip_to = SyntheticLM(8, 32, 256, seed=0, process_index=0, process_count=1), bad, \
            skip_to

    def __iter__(self):
        return self

    def __next__(self):
        if self.skip_to and self.inner.index == self.skip_to[0]:  # jump over a window (the reference run)
            self.inner.index = self.skip_to[1]
        i, batch = self.inner.index, next(self.inner)
        if i in self.bad:
            batch = dict(batch, loss_mask=batch["loss_mask"] * np.float32("nan"))
        return batch

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def test_a_blow_up_rolls_back_to_the_last_good_checkpoint_and_skips_the_bad_window(tmp_path, capsys):
    """Batches 5-7 (indices 4-6) are poisoned: steps 5, 6, 7 are skipped, the streak of 3 is seen after step 8 was
    dispatched, so the run goes back to checkpoint 4 and on with batch 9. From there it is exactly a run resumed
    from checkpoint 4 that reads batches 9, 10, ... (same program, state and batches: bitwise)."""
    cfg = _cfg("steps=14", "checkpoint.every=2", "checkpoint.keep=5", "nan_guard.max_bad_steps=3")
    result = train(cfg, tmp_path / "run", data_iter=_Poisoned(range(4, 7)))
    assert result.stopped == "done" and result.rollbacks == [(8, 4)]
    said = capsys.readouterr().out
    assert ("step 8: 3 non-finite steps in a row (steps 5..7): rolled back to the checkpoint of step 4 and skipped "
            "the batches of steps 5..8 (rollback 1 of at most 3)") in said
    lines = _lines(tmp_path / "run")
    assert [r["step"] for r in lines] == sorted(r["step"] for r in lines)  # one step counter, in order
    assert {"event": "rollback", "rollback_to": 4, "skipped_batches": 4}.items() <= \
        next(r for r in lines if r.get("event")).items()
    assert lines[-1]["skipped_steps"] == 8 - 4  # the rolled-back updates count as skipped
    # the reference: checkpoint 4 of a clean run, then batches from index 8 on
    train(cfg.replace(steps=4), tmp_path / "ref", data_iter=_Poisoned(range(0)))
    train(cfg.replace(steps=10), tmp_path / "ref", data_iter=_Poisoned(range(0), skip_to=(4, 8)))
    got, want = _losses(tmp_path / "run"), _losses(tmp_path / "ref")
    assert [got[s] for s in range(9, 15)] == [want[s] for s in range(5, 11)]


def test_rollbacks_are_bounded_and_each_goes_further_back(tmp_path):
    cfg = _cfg("steps=30", "checkpoint.every=2", "checkpoint.keep=5", "nan_guard.max_bad_steps=2",
               "nan_guard.max_rollbacks=2")
    result = train(cfg, tmp_path, data_iter=_Poisoned(range(4, 1000)))
    assert result.stopped == "non_finite" and [to for _, to in result.rollbacks] == [4, 2]
    assert "after 2 rollbacks (nan_guard.max_rollbacks); stopping" in result.message
    assert result.message.startswith(f"step {_lines(tmp_path)[-1]['step']}: ")  # the step the metrics show


def test_a_blow_up_before_any_checkpoint_says_so(tmp_path):
    cfg = _cfg("steps=30", "checkpoint.every=10", "nan_guard.max_bad_steps=3")
    result = train(cfg, tmp_path, data_iter=_Poisoned(range(2, 1000)))
    assert result.stopped == "non_finite" and result.rollbacks == []
    assert result.message == ("step 6: 3 non-finite steps in a row (steps 3..5) and nothing to roll back to: no "
                              "checkpoint saved yet (the first is due at step 10); stopping")


# --- schedules ------------------------------------------------------------------------------------------------------

def test_more_steps_after_a_finished_run_never_raise_the_learning_rate_again(tmp_path, capsys):
    wsd = ["optimizer.schedule.kind=wsd", "optimizer.schedule.peak_lr=1e-2", "optimizer.schedule.final_lr=1e-3",
           "optimizer.schedule.warmup_steps=2", "optimizer.schedule.decay_steps=4", "checkpoint.every=4"]
    train(_cfg(*wsd, "steps=8"), tmp_path)
    lrs = {r["step"]: r["lr"] for r in _lines(tmp_path)}
    assert lrs[1] == pytest.approx(5e-3) and lrs[2] == pytest.approx(1e-2) and lrs[8] == pytest.approx(1e-3)
    capsys.readouterr()
    train(_cfg(*wsd, "steps=12"), tmp_path)  # a rerun with --steps 12: the schedule keeps its 8 steps
    assert "steps 9..12 run past the end of the learning-rate schedule (8 steps) at its final value" in \
        capsys.readouterr().out
    lrs = {r["step"]: r["lr"] for r in _lines(tmp_path)}
    assert all(lrs[s] == pytest.approx(1e-3) for s in range(8, 13))
    # extending the schedule is explicit: a new decay over 16 steps from here
    train(_cfg(*wsd, "steps=14", "optimizer.schedule.total_steps=16"), tmp_path)
    assert "learning-rate schedule extended: 8 → 16 steps" in capsys.readouterr().out


def test_lr_of_the_first_step_is_not_zero(tmp_path):
    train(_cfg("steps=2", "optimizer.schedule.kind=cosine", "optimizer.schedule.warmup_steps=4",
               "optimizer.schedule.total_steps=8", "checkpoint.every=100"), tmp_path)
    assert _lines(tmp_path)[0]["lr"] == pytest.approx(1e-2 / 4)


def test_metrics_lines_carry_timestamps(tmp_path):
    t0 = time.time()
    train(_cfg("steps=2", "checkpoint.every=100"), tmp_path)
    assert all(t0 <= r["time"] <= time.time() for r in _lines(tmp_path))
