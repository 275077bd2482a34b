"""Online DPO (`data.source: online`): rounds of sampling from the live policy, scoring and pairing inside the
training loop; a run killed by SIGKILL in the middle of a round resumes with the same pairs and batches and ends
bitwise like an uninterrupted run (CPU)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from jobs import cpu_env, train_cmd
from reward_helpers import policy_dir, reward_dir, udhr

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def args(tmp_path_factory):
    root = tmp_path_factory.mktemp("online")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": udhr(lang, i)[:100], "language": lang}, ensure_ascii=False) + "\n"
                               for lang in ("en", "vi", "th", "id") for i in range(2)))
    return ["init.checkpoint=null", f"init.hf_dir={policy_dir(root / 'policy')}",
            f"online.reward_model={reward_dir(root / 'rm', seed=1)}", f"online.prompts=[{prompts}]",
            "online.rounds=2", "online.prompts_per_round=4", "online.samples=3", "online.steps_per_round=2",
            "online.max_new_tokens=8", "online.temperature=1.0", "online.language_check=false",
            "data.batch_size=8", "data.seq_len=128", "compute.dtype=float32", "optimizer.schedule.peak_lr=1e-3",
            "checkpoint.every=1", "checkpoint.keep=10", "log.progress=false", "log.tensorboard=false"]


def metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def checkpoints(out: Path) -> list[int]:
    root = out / "checkpoints"
    return sorted(int(p.name) for p in root.glob("*") if p.name.isdigit()) if root.is_dir() else []


@pytest.mark.slow
def test_online_rounds_and_exact_resume_after_sigkill(args, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    reference = subprocess.run(train_cmd(full, args, "demo_online"), cwd=ROOT, env=cpu_env(8), capture_output=True,
                               text=True, timeout=400, check=False)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert "online round 2:" in reference.stdout + reference.stderr
    want = metrics(full)
    assert [m["step"] for m in want] == list(range(1, 5))
    # the rounds trained: DPO's implicit reward margin moves away from 0 as the policy leaves the reference
    assert want[0]["reward_margin"] == pytest.approx(0, abs=1e-6) and abs(want[-1]["reward_margin"]) > 1e-4

    proc = subprocess.Popen(train_cmd(killed, args, "demo_online"), cwd=ROOT, env=cpu_env(8),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and 3 not in checkpoints(killed):
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)   # inside round 2 (steps 3-4): its pairs exist only in the checkpoint
    proc.wait()
    rerun = subprocess.run(train_cmd(killed, args, "demo_online"), cwd=ROOT, env=cpu_env(8), capture_output=True,
                           text=True, timeout=400, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from step" in rerun.stdout
    got = {m["step"]: m for m in metrics(killed)}
    for m in want:
        assert got[m["step"]]["loss"] == m["loss"], (m["step"], got[m["step"]]["loss"], m["loss"])
        assert got[m["step"]]["reward_margin"] == m["reward_margin"]
