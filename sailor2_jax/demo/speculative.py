"""Speculative decoding with the self draft: the exported DPO model (`hf_final`, block-expanded 4 → 8 layers by the
`expand` stage; the expansion record rode through training and export in its config) drafts with its 4 original
layers and verifies with all 8. Greedy, so the tokens must be exactly those of the model decoding alone; the
acceptance rate says how far training moved the inserted layers away from the identity."""

from __future__ import annotations

from sailor2_jax.demo.generate import CHATS
from sailor2_jax.demo.stage import Context, StageResult

TITLE = "speculative decoding: the final model drafts for itself with its original layers (--draft-model self)"
MAX_NEW_TOKENS = 24
DRAFT_TOKENS = 4


def run(ctx: Context) -> StageResult:
    from sailor2_jax.generate.engine import Generator
    from sailor2_jax.generate.speculative import make_generator, stats_line
    from sailor2_jax.model.source import ModelSource, open_model
    from sailor2_jax.post.chat import encode
    from sailor2_jax.tokenizer import IM_END_ID

    final = ctx.out / "hf_final"
    ctx.console.print(f"$ sailor2-jax generate --model {final} --chat --draft-model self --draft-tokens "
                      f"{DRAFT_TOKENS} ... (the library calls behind it)")
    opened = open_model(ModelSource(path=str(final), dtype="float32"))
    prompts = [encode(c["messages"], add_generation_prompt=True, tokenizer=opened.tokenizer).ids.tolist()
               for c in CHATS]
    eos = tuple(dict.fromkeys(opened.eos_ids + (IM_END_ID,)))
    speculative = make_generator(opened, "self", DRAFT_TOKENS)
    drafted = speculative.generate(prompts, max_new_tokens=MAX_NEW_TOKENS, eos_ids=eos)
    alone = Generator(opened.model, opened.mesh).generate(prompts, max_new_tokens=MAX_NEW_TOKENS, eos_ids=eos)
    stats = speculative.stats
    ctx.console.print(f"[bold green]{stats_line(speculative)}")
    same = [r[0].token_ids for r in drafted] == [r[0].token_ids for r in alone]
    return StageResult(
        {"inserted_layers": opened.model.cfg.inserted_layers, "acceptance": round(stats["acceptance"], 4),
         "tokens_per_target_step": round(stats["tokens_per_step"], 3), "draft_tokens": DRAFT_TOKENS},
        {"the final model carries the expansion record": opened.model.cfg.inserted_layers == [1, 3, 5, 7],
         "greedy tokens with the self draft are the model's own": same,
         "the draft proposed tokens and the target checked them": stats["drafted"] > 0})
