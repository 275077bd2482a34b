"""Chat generation from the exported DPO model through `sailor2-jax generate --chat`: three languages, two samples
each (a tiny random model trained for a few steps writes gibberish: the pipeline is the point)."""

from __future__ import annotations

import json

from sailor2_jax.demo.stage import Context, StageResult
from sailor2_jax.files import write_jsonl

TITLE = "generate from the exported DPO model with the chat template (en, vi, th; 2 samples each)"
CHATS = [
    {"language": "en", "messages": [{"role": "user", "content": "What are three famous dishes of Southeast Asia?"}]},
    {"language": "vi", "messages": [{"role": "user", "content": "Hãy giới thiệu ngắn gọn về Hà Nội."}]},
    {"language": "th", "messages": [{"role": "user", "content": "ช่วยแนะนำสถานที่ท่องเที่ยวในเชียงใหม่หน่อย"}]},
]
MAX_NEW_TOKENS = 24


def run(ctx: Context) -> StageResult:
    prompts, completions = ctx.out / "generate" / "prompts.jsonl", ctx.out / "generate" / "completions.jsonl"
    write_jsonl(prompts, CHATS)
    ctx.run_command(["generate", "--model", str(ctx.out / "hf_final"), "--input", str(prompts), "--output",
                     str(completions), "--num-samples", "2", "--temperature", "0.8", "--top-p", "0.9",
                     "--max-new-tokens", str(MAX_NEW_TOKENS)])
    records = [json.loads(line) for line in completions.read_text(encoding="utf-8").splitlines()]
    for r in records:
        for i, c in enumerate(r["completions"]):
            ctx.console.print(f"[bold]{r['language']}[/] sample {i} ({c['finish_reason']}, {len(c['token_ids'])} "
                              f"tokens): {c['text']!r}")
    samples = [c for r in records for c in r["completions"]]
    return StageResult(
        {"output": str(completions), "prompts": len(records), "tokens": sum(len(c["token_ids"]) for c in samples)},
        {"two samples for each of the three chats": [len(r["completions"]) for r in records] == [2, 2, 2],
         "each sample ends on a stop token or at the length limit": all(
             (c["finish_reason"] == "length") == (len(c["token_ids"]) == MAX_NEW_TOKENS) for c in samples)})
