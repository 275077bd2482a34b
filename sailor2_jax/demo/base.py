"""A random tiny Qwen2.5-architecture base checkpoint (tied embeddings, as Qwen2.5-0.5B) with the real tokenizer."""

from __future__ import annotations

from sailor2_jax.demo.fixtures import make_base_checkpoint
from sailor2_jax.demo.stage import Context, StageResult

TITLE = "base checkpoint: random tiny Qwen2.5 architecture + the real Qwen2.5 tokenizer"


def run(ctx: Context) -> StageResult:
    base = make_base_checkpoint(ctx.out / "base")
    ctx.console.print(f"wrote {base}")
    files = {p.name for p in base.iterdir()}
    return StageResult({"dir": str(base)},
                       {"config, weights and tokenizer written": {"config.json", "model.safetensors",
                                                                  "tokenizer.json"} <= files})
