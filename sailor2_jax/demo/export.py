"""The expanded model exported to Hugging Face safetensors and reloaded with `transformers`: the same logits, and the
exported tokenizer gives our ids."""

from __future__ import annotations

import jax
import numpy as np

from sailor2_jax.config import MeshConfig
from sailor2_jax.demo.fixtures import demo_texts, torch_logits
from sailor2_jax.demo.parity import FP32, TOLERANCE, logits
from sailor2_jax.demo.stage import Context, StageResult

TITLE = "export to Hugging Face safetensors and reload with transformers"
PROBE = "Xin chào thế giới. สวัสดีชาวโลก. Kumusta mundo."


def run(ctx: Context) -> StageResult:
    from transformers import AutoTokenizer

    from sailor2_jax.model.hf import export_hf, import_hf
    from sailor2_jax.sharding import make_mesh
    from sailor2_jax.tokenizer import load_tokenizer

    mesh = make_mesh(MeshConfig(data=1, fsdp=-1, tensor=1))
    model = import_hf(ctx.out / "expanded", mesh, FP32)
    exported = export_hf(model, ctx.out / "export", tokenizer=ctx.out / "base", overwrite=True)
    _, tokens, segs = demo_texts()
    with jax.set_mesh(mesh):
        ours = logits(model, tokens)
    reloaded = torch_logits(exported, tokens)
    diff = float(np.abs(ours - reloaded)[segs.astype(bool)].max())
    scale = float(np.abs(reloaded).max())
    same_ids = AutoTokenizer.from_pretrained(exported)(PROBE).input_ids == load_tokenizer().encode(PROBE).ids
    ctx.console.print(f"[bold green]largest logit difference, ours vs transformers on the exported model: "
                      f"{diff:.2e}[/] (logit scale {scale:.2f}); tokenizer ids agree: {same_ids}")
    return StageResult({"dir": str(exported), "max_abs_logit_diff_export_vs_transformers": diff,
                        "tokenizer_ids_agree": same_ids},
                       {"transformers computes our logits from the export": diff <= TOLERANCE * max(1.0, scale),
                        "the exported tokenizer gives our ids": same_ids})
