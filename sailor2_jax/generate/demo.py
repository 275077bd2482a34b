"""The demo's last stage: chat generation from the exported DPO model, through the `generate` command itself."""

from __future__ import annotations

import json
from pathlib import Path

DEMO_CHATS = [
    {"language": "en", "messages": [{"role": "user", "content": "What are three famous dishes of Southeast Asia?"}]},
    {"language": "vi", "messages": [{"role": "user", "content": "Hãy giới thiệu ngắn gọn về Hà Nội."}]},
    {"language": "th", "messages": [{"role": "user", "content": "ช่วยแนะนำสถานที่ท่องเที่ยวในเชียงใหม่หน่อย"}]},
]


def generate_stage(out: Path, summary: dict, console) -> None:
    """`sailor2-jax generate --chat` on three prompts (en, vi, th), two samples each, from `out/hf_final`."""
    from sailor2_jax.cli import run_command

    prompts, completions = out / "generate" / "prompts.jsonl", out / "generate" / "completions.jsonl"
    prompts.parent.mkdir(parents=True, exist_ok=True)
    prompts.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in DEMO_CHATS), encoding="utf-8")
    argv = ["generate", "--model", str(out / "hf_final"), "--input", str(prompts), "--output", str(completions),
            "--num-samples", "2", "--temperature", "0.8", "--top-p", "0.9", "--max-new-tokens", "24"]
    run_command(argv, console)
    records = [json.loads(line) for line in completions.read_text(encoding="utf-8").splitlines()]
    for r in records:
        for i, c in enumerate(r["completions"]):
            console.print(f"[bold]{r['language']}[/] sample {i} ({c['finish_reason']}, {len(c['token_ids'])} tokens): "
                          f"{c['text']!r}")
    console.print("(a tiny random model trained for a few steps: the text is gibberish; the pipeline is the point)")
    summary["generate"] = {"output": str(completions), "prompts": len(records),
                           "tokens": sum(len(c["token_ids"]) for r in records for c in r["completions"])}
