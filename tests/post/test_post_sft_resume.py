"""An SFT run on conversation files killed with SIGKILL resumes exactly: the packed-batch iterator's state travels in
the checkpoint, so the steps the rerun redoes log the same losses, bitwise, as the killed run did before the kill
(CPU); the broken record is counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jobs import resume, train_cmd, train_until_killed

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


@pytest.mark.slow
def test_sft_sigkill_then_rerun_gives_identical_losses(tmp_path):
    data = tmp_path / "conv.jsonl"
    _conversations(data)
    args = ["--steps", "12", f"data.files=[{data}]", "data.system_prompt=none", "data.seq_len=64",
            "data.batch_size=8", "data.epochs=null", "model.num_layers=1", "checkpoint.every=4", "log.eval_every=0",
            "log.progress=false", "log.tensorboard=false", "compute.dtype=float32"]
    out = tmp_path / "run"
    # two steps logged after the latest checkpoint, before the next one (steps 4 and 8) lands
    killed_at, before = train_until_killed(
        train_cmd(out, args, "demo_sft"), out,
        lambda ckpts, rows: bool(ckpts) and ckpts[-1] + 2 <= max(rows, default=0) < 12, timeout=300)
    after, stdout = resume(train_cmd(out, args, "demo_sft"), out, killed_at, before)
    assert sorted(after) == list(range(1, 13))
    assert "skipped" in stdout and "bad_message 1" in stdout  # the broken line, counted
