"""An SFT run on conversation files killed with SIGKILL resumes exactly: the packed-batch iterator's state travels in
the checkpoint, so the rerun logs the same losses, bitwise, as an uninterrupted run (CPU)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from jobs import cpu_env, train_cmd

ROOT = Path(__file__).resolve().parents[2]
LANGS = ("th", "vi", "id", "tl", "km")


def _conversations(path: Path) -> None:
    lines = []
    for i in range(48):
        lang = LANGS[i % len(LANGS)]
        lines.append(json.dumps({"conversations": [
            {"from": "human", "value": f"Count to {i % 7 + 1} in {lang}, please."},
            {"from": "gpt", "value": " ".join(str(k) for k in range(i % 7 + 1)) + " — xong!" * (i % 3)}],
            "language": lang}, ensure_ascii=False))
    path.write_text("\n".join(lines + ['{"conversations": "broken"}']) + "\n", encoding="utf-8")


def _losses(out: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = {}
    for row in rows:
        if "loss" in row:
            assert row["step"] not in losses, f"step {row['step']} logged twice"
            losses[row["step"]] = row["loss"]
    return losses


@pytest.mark.slow
def test_sft_sigkill_then_rerun_gives_identical_losses(tmp_path):
    data = tmp_path / "conv.jsonl"
    _conversations(data)
    args = ["--steps", "10", f"data.files=[{data}]", "data.system_prompt=none", "data.seq_len=64",
            "data.batch_size=8", "data.epochs=null", "model.num_layers=1", "checkpoint.every=2", "log.eval_every=0",
            "log.progress=false", "log.tensorboard=false", "compute.dtype=float32"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(killed, args, "demo_sft"), cwd=ROOT, env=cpu_env(8),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        steps = sorted(int(p.name) for p in (killed / "checkpoints").glob("*") if p.name.isdigit()) \
            if (killed / "checkpoints").is_dir() else []
        if steps and steps[-1] >= 4 and len(_losses(killed)) > steps[-1]:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(_losses(killed)) < 10

    reference = subprocess.run(train_cmd(full, args, "demo_sft"), cwd=ROOT, env=cpu_env(8), capture_output=True,
                               text=True, timeout=600, check=False)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert "skipped" in reference.stdout and "bad_message 1" in reference.stdout  # the broken line, counted
    rerun = subprocess.run(train_cmd(killed, args, "demo_sft"), cwd=ROOT, env=cpu_env(8), capture_output=True,
                           text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from step" in rerun.stdout
    want, got = _losses(full), _losses(killed)
    assert sorted(got) == list(range(1, 11)) == sorted(want)
    assert [got[s] for s in range(1, 11)] == [want[s] for s in range(1, 11)]  # bitwise: floats from JSON repr
