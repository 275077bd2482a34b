"""LlamaPro block expansion 4 → 8 layers with the embeddings untied (the Sailor2-1B recipe), as `sailor2-jax
expand` does it."""

from __future__ import annotations

from sailor2_jax.demo.stage import Context, StageResult

TITLE = "LlamaPro block expansion 4 → 8 layers, untying the embeddings (the Sailor2-1B recipe)"


def run(ctx: Context) -> StageResult:
    from sailor2_jax.model.expand import expand_hf_dir

    expansion = expand_hf_dir(ctx.out / "base", ctx.out / "expanded", 8, untie=True, overwrite=True)
    new = [i for i, n in enumerate(expansion["is_new_layer"]) if n]
    ctx.console.print(f"new layers at {new}; o_proj and down_proj zeroed there")
    return StageResult({"dir": str(ctx.out / "expanded"), "layers": expansion["layers"], "new_layers": new},
                       {"8 layers, every second one new": expansion["layers"] == 8 and new == [1, 3, 5, 7]})
