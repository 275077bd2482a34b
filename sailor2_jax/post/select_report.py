"""What `select-sft` writes: every score of every example, the selected records, a summary, and a plot.

- `scores.jsonl`: one line per scored example (input order): its source (file:line), language, domain, group,
  perplexity, mean NLL, assistant tokens, reward (when scored), rank score, highest similarity to a kept example,
  the example it near-duplicates (file:line) and whether it was selected;
- `selected.jsonl`: the selected records exactly as read (a training file for SFT stage 2);
- `summary.json`: the accounting of the input (read, kept, skipped by reason), the config, per-group counts, quotas
  and cuts;
- `selection.png`: per language, the perplexity distribution of all examples, the selected ones and the
  near-duplicates, with the cut.
All files are written atomically (temp + rename).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sailor2_jax.files import write_json, write_jsonl
from sailor2_jax.post.conversation_files import Accounting
from sailor2_jax.post.select import Scores, SelectConfig, Selection
from sailor2_jax.post.sft_data import TokenizedConversation



def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def score_rows(examples: Sequence[TokenizedConversation], scores: Scores, sel: Selection) -> list[dict]:
    rows = []
    for i, ex in enumerate(examples):
        conv = ex.conversation
        dup = sel.duplicate_of[i]
        rows.append({"source": str(conv.source), "id": conv.record.get("id"), "language": conv.language,
                     "domain": conv.domain, "group": sel.group[i], "tokens": int(len(ex.ids)),
                     "assistant_tokens": int(scores.tokens[i]), "truncated": ex.truncated,
                     "mean_nll": float(scores.nll[i]), "perplexity": float(scores.perplexity[i]),
                     "reward": None if scores.reward is None else float(scores.reward[i]),
                     "rank_score": float(sel.rank_score[i]), "max_similarity": _finite(sel.max_similarity[i]),
                     "duplicate_of": None if dup < 0 else str(examples[dup].conversation.source),
                     "selected": bool(sel.selected[i])})
    return rows


def summary(examples: Sequence[TokenizedConversation], scores: Scores, sel: Selection, acc: Accounting,
            cfg: SelectConfig, inputs: Sequence[str], model: str, reward_model: str | None) -> dict:
    groups = {}
    for g in sorted(set(sel.group)):
        idx = np.asarray([i for i, x in enumerate(sel.group) if x == g])
        chosen = idx[sel.selected[idx]]
        groups[g] = {"examples": len(idx), "near_duplicates": int((sel.duplicate_of[idx] >= 0).sum()),
                     "quota": sel.quota[g], "selected": len(chosen),
                     "cut_rank_score": float(sel.rank_score[chosen].min()) if len(chosen) else None,
                     "median_perplexity": float(np.median(scores.perplexity[idx])),
                     "median_perplexity_selected": float(np.median(scores.perplexity[chosen])) if len(chosen)
                     else None}
    return {"inputs": list(inputs), "model": model, "reward_model": reward_model, "config": cfg.model_dump(),
            "read": acc.read, "kept": acc.kept, "truncated": acc.truncated, "skipped": dict(acc.rejected),
            "scored": len(examples), "near_duplicates": int((sel.duplicate_of >= 0).sum()),
            "selected": int(sel.selected.sum()), "groups": groups,
            "selected_by_language": dict(Counter(ex.conversation.language or "unknown"
                                                 for ex, s in zip(examples, sel.selected) if s))}


def plot(path: Path, scores: Scores, sel: Selection, languages: Sequence[str | None]) -> None:
    """Per language: the perplexity distribution of all examples, of the selected ones and of the near-duplicates,
    with the cut (the lowest selected perplexity; with a reward in the rank, the reward median is in the title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = sorted({lang or "unknown" for lang in languages})
    cols = min(4, len(langs))
    rows = math.ceil(len(langs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    lang_of = np.asarray([lang or "unknown" for lang in languages])
    log_ppl = np.log10(scores.perplexity)
    bins = np.linspace(log_ppl.min(), log_ppl.max() + 1e-9, 25)
    for ax, lang in zip(axes.flat, langs):
        idx = lang_of == lang
        chosen = idx & sel.selected
        ax.hist(log_ppl[idx], bins=bins, color="0.75", label="all")
        ax.hist(log_ppl[chosen], bins=bins, color="tab:blue", label="selected")
        dups = idx & (sel.duplicate_of >= 0)
        if dups.any():
            ax.hist(log_ppl[dups], bins=bins, histtype="step", color="tab:red", label="near-duplicate")
        if chosen.any():
            ax.axvline(log_ppl[chosen].min(), color="k", ls="--", lw=1)
        reward = "" if scores.reward is None else f", reward₅₀ {np.median(scores.reward[idx]):.3g}"
        ax.set_title(f"{lang}: {int(chosen.sum())}/{int(idx.sum())} selected{reward}", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(langs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.supxlabel("log10 perplexity of the assistant tokens (dashed: the lowest selected)", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_outputs(out: Path, examples: Sequence[TokenizedConversation], scores: Scores, sel: Selection,
                  summary_: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = score_rows(examples, scores, sel)
    write_jsonl(out / "scores.jsonl", rows)
    write_jsonl(out / "selected.jsonl", (ex.conversation.record for ex, s in zip(examples, sel.selected) if s))
    write_json(out / "summary.json", summary_)
    plot(out / "selection.png", scores, sel, [ex.conversation.language for ex in examples])
