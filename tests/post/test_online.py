"""Online DPO (`data.source: online`): rounds of sampling from the live policy, scoring and pairing inside the
training loop; a run killed by SIGKILL in the middle of a round resumes with the same pairs and batches: the steps it
redoes log, bitwise, what the killed run logged for them (CPU)."""

from __future__ import annotations

import json

import pytest
from jobs import resume, train_cmd, train_until_killed
from reward_helpers import policy_dir, reward_dir, udhr


@pytest.fixture(scope="module")
def args(tmp_path_factory):
    root = tmp_path_factory.mktemp("online")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": udhr(lang, i)[:100], "language": lang}, ensure_ascii=False) + "\n"
                               for lang in ("en", "vi", "th", "id") for i in range(2)))
    return ["init.checkpoint=null", f"init.hf_dir={policy_dir(root / 'policy')}",
            f"online.reward_model={reward_dir(root / 'rm', seed=1)}", f"online.prompts=[{prompts}]",
            "online.rounds=2", "online.prompts_per_round=4", "online.samples=3", "online.steps_per_round=5",
            "online.max_new_tokens=8", "online.temperature=1.0", "online.language_check=false",
            "data.batch_size=8", "data.seq_len=128", "compute.dtype=float32", "optimizer.schedule.peak_lr=1e-3",
            "checkpoint.every=6", "checkpoint.keep=10", "log.progress=false", "log.tensorboard=false"]


@pytest.mark.slow
def test_online_rounds_and_exact_resume_after_sigkill(args, tmp_path):
    out = tmp_path / "run"
    # round 2 is steps 6-10 and starts with sampling; checkpoint 6 is its first step: its pairs exist only there
    killed_at, before = train_until_killed(train_cmd(out, args, "demo_online"), out,
                                           lambda ckpts, rows: ckpts == [6] and max(rows, default=0) >= 8, 400)
    after, stdout = resume(train_cmd(out, args, "demo_online"), out, killed_at, before, keys=("loss", "reward_margin"))
    assert sorted(after) == list(range(1, 11))
    assert "online round" not in stdout  # the rerun sampled nothing: round 2's pairs came from the checkpoint
    # the rounds trained: DPO's implicit reward margin moves away from 0 as the policy leaves the reference
    assert after[1]["reward_margin"] == pytest.approx(0, abs=1e-6) and abs(after[10]["reward_margin"]) > 1e-4
