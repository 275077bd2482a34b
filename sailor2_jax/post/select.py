"""Data selection for SFT stage 2 (recipe.md §5.1): perplexity, reward, embedding diversity, balanced quotas.

Sailor2 picks stage-2 examples by the perplexity of the base model (high perplexity: what the model is not yet sure
of) and a reward score (high: exemplary answers), and removes examples too similar to ones already kept. The paper
gives neither the ranking formula nor the thresholds, so both are config (`SelectConfig`):

1. scores, per conversation, in one forward pass of the policy (batched by length, jitted, rows split over the
   mesh; `model/batched.py`):
   - `perplexity` = exp(mean NLL of the assistant tokens — the SFT loss mask), from the training objective's
     token log-prob core (`train/objectives.hidden_logprobs`);
   - `embedding`: the mean of the final hidden states over the conversation's tokens after its system prompt (the
     policy's own representation; no download), or any encoder passed as `embed` (pluggable); centred per
     language (`unit_embeddings`) before cosine similarities;
   - `reward` (optional): a `Qwen2ForSequenceClassification` reward model on the whole templated conversation
     (`model/reward.py`).
2. rank within each group (language, and domain with `per_domain`): the weighted sum of each metric's percentile
   rank in its group (`weights`; defaults: perplexity 1, reward 1 when given);
3. diversity, within each language: examples in rank order; one whose cosine similarity to an already kept
   example exceeds `similarity_threshold` is a near-duplicate and removed (greedy);
4. quotas: `keep` × the examples of the data set, split over the groups in proportion to their size
   (`balance: proportional`) or equally, a small group giving all it has and the rest going to the others
   (`equal`); each group takes its best-ranked non-duplicates.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
from flax import nnx
from jax.sharding import Mesh

from sailor2_jax.config import Config
from sailor2_jax.tokenizer import EOS_ID
from sailor2_jax.model.batched import apply_batched
from sailor2_jax.model.qwen2 import Qwen2
from sailor2_jax.post import chat
from sailor2_jax.post.sft_data import TokenizedConversation
from sailor2_jax.sharding import batch_sharding

UNKNOWN = "unknown"


class SelectConfig(Config):
    keep: float = pydantic.Field(0.2, gt=0, le=1, description="fraction of the (tokenised) examples to select")
    per_language: bool = pydantic.Field(True, description="quotas and ranks per language")
    per_domain: bool = pydantic.Field(False, description="quotas and ranks per domain too (the records' `domain`)")
    balance: Literal["proportional", "equal"] = "proportional"
    weights: dict[Literal["perplexity", "reward"], float] = pydantic.Field(
        default_factory=lambda: {"perplexity": 1.0, "reward": 1.0},
        description="rank = sum of weight × percentile rank of each metric in its group (reward: when scored)")
    similarity_threshold: float = pydantic.Field(0.9, gt=-1, le=1,
                                                 description="cosine above which an example is a near-duplicate")
    batch_size: int = pydantic.Field(32, gt=0, description="examples per forward pass")


@dataclasses.dataclass
class Scores:
    """Per-example metrics, aligned with the examples."""

    nll: np.ndarray          # [n] mean NLL of the assistant tokens
    tokens: np.ndarray       # [n] assistant tokens scored
    embedding: np.ndarray    # [n, E]
    reward: np.ndarray | None = None  # [n]

    @property
    def perplexity(self) -> np.ndarray:
        return np.exp(self.nll)


def scoring_example(ex: TokenizedConversation, system_tokens: int) -> dict[str, np.ndarray]:
    """Model inputs of one conversation: tokens/targets/loss_mask (SFT's) and the pooling mask of its embedding."""
    ids, mask = ex.ids, ex.mask
    n = len(ids) - 1
    pool = np.zeros(n, np.int32)
    pool[min(system_tokens, n - 1):] = 1  # after the system prompt, keeping at least one token
    return {"tokens": ids[:-1], "targets": ids[1:], "loss_mask": mask[1:].astype(np.int32), "pool_mask": pool}


def system_tokens(ex: TokenizedConversation, system: str | None) -> int:
    """Tokens of the leading system message (the conversation's own or the default one): a prefix of the ids, as
    the message ends in `<|im_end|>\n` before a special token."""
    first = ex.conversation.messages[0]
    if first["role"] != "system":
        if system is None:
            return 0
        first = {"role": "system", "content": system}
    return len(chat.encode([first], default_system=None).ids)


def score_policy(model: Qwen2, examples: Sequence[TokenizedConversation], mesh: Mesh, *, system: str | None,
                 batch_size: int = 32, chunk: int = 64, progress: bool = True) -> Scores:
    """Assistant-token NLL and mean-pooled hidden states of every example, one forward pass each. The LM head takes
    `chunk` positions at a time: a whole 256-token row at once made the demo's selection a third slower on the CPU
    mesh (38.9 → 25.8 s, the same scores; measured before the log-softmax went by vocabulary blocks)."""
    out = _policy_pass(model, examples, mesh, system, batch_size, chunk, progress, logprobs=True)
    return Scores(nll=out[:, 0], tokens=out[:, 1], embedding=out[:, 2:])


def policy_embeddings(model: Qwen2, examples: Sequence[TokenizedConversation], mesh: Mesh, *, system: str | None,
                      batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """The policy's mean-pooled hidden states [n, D] alone (no LM head): an `embed` for `score_all`."""
    return _policy_pass(model, examples, mesh, system, batch_size, 0, progress, logprobs=False)


def _policy_pass(model: Qwen2, examples: Sequence[TokenizedConversation], mesh: Mesh, system: str | None,
                 batch_size: int, chunk: int, progress: bool, logprobs: bool) -> np.ndarray:
    """[n, 2 + D] (mean NLL, assistant tokens, embedding) or, without `logprobs`, [n, D]."""
    from sailor2_jax.model.logprobs import hidden_logprobs

    graphdef, state = nnx.split(model)

    def step(state, batch):
        m = nnx.merge(graphdef, state)
        x_BTD = m.hidden(batch["tokens"])  # right-padded rows, plain causal attention: real positions are exact
        pool_BT = batch["pool_mask"].astype(jnp.float32)
        emb_BD = jnp.einsum("bt,btd->bd", pool_BT, x_BTD.astype(jnp.float32)) / jnp.maximum(
            jnp.sum(pool_BT, axis=-1, keepdims=True), 1.0)
        if not logprobs:
            return emb_BD
        logp_BT = hidden_logprobs(m, x_BTD, batch["targets"], chunk)  # (it tiles any T with chunks of ≤ `chunk`)
        mask_BT = batch["loss_mask"].astype(jnp.float32)
        tokens_B = jnp.sum(mask_BT, axis=-1)
        nll_B = -jnp.sum(logp_BT * mask_BT, axis=-1) / jnp.maximum(tokens_B, 1.0)
        return jnp.concatenate([nll_B[:, None], tokens_B[:, None], emb_BD], axis=-1)

    step = jax.jit(step, out_shardings=batch_sharding(mesh, 2))
    sys_len: dict[str | None, int] = {}
    inputs = []
    for ex in examples:
        first = ex.conversation.messages[0]
        key = first["content"] if first["role"] == "system" else None
        if key not in sys_len:
            sys_len[key] = system_tokens(ex, system)
        inputs.append(scoring_example(ex, sys_len[key]))
    return apply_batched(step, state, inputs, mesh=mesh, batch_size=batch_size,
                         pad={"tokens": EOS_ID, "targets": EOS_ID, "loss_mask": 0, "pool_mask": 0},
                         desc="perplexity and embeddings" if logprobs else "embeddings", progress=progress)


# --- ranking, diversity, quotas ----------------------------------------------------------------------------------

def percentile_ranks(values: np.ndarray) -> np.ndarray:
    """Each value's rank in [0, 1] (ties share their mean rank); 0.5 for a single value."""
    from scipy.stats import rankdata

    n = len(values)
    return np.full(n, 0.5) if n == 1 else (rankdata(values, method="average") - 1) / (n - 1)


def near_duplicates(embedding: np.ndarray, order: np.ndarray, threshold: float, block: int = 1024
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy diversity over `order` (best first): (index of the kept example each one duplicates or -1, its
    highest cosine similarity to a kept one; [n], set for the rows in `order`), for rows `embedding` [n, E] (unit
    vectors, see `unit_embeddings`). Blocks of `block` examples are compared with every kept one in one matrix
    product."""
    n = len(embedding)
    dup_of, max_sim = np.full(n, -1), np.full(n, -np.inf)
    e = embedding
    kept: list[int] = []
    for start in range(0, n, block):
        idx = order[start:start + block]
        to_kept = e[idx] @ e[kept].T if kept else np.zeros((len(idx), 0))
        within = e[idx] @ e[idx].T
        block_kept: list[int] = []
        for j, i in enumerate(idx):
            sims = np.concatenate([to_kept[j], within[j, block_kept]])
            if sims.size:
                best = int(np.argmax(sims))
                max_sim[i] = sims[best]
                if sims[best] > threshold:
                    dup_of[i] = (kept + [idx[b] for b in block_kept])[best]
                    continue
            block_kept.append(j)
        kept += [int(idx[b]) for b in block_kept]
    return dup_of, max_sim


CENTRE_MIN = 8  # a language with fewer examples is centred on the whole data set's mean


def unit_embeddings(embedding: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """Centred, then normalised: mean-pooled hidden states share a large common direction (the template, the system
    prompt, the script, the model's anisotropy) which would make every pair look similar. Each group (language) is
    centred on its own mean when it has `CENTRE_MIN` examples or more, else on the data set's."""
    groups = np.asarray(groups)
    e = embedding - embedding.mean(axis=0, keepdims=True)
    for g in np.unique(groups):
        rows = groups == g
        if rows.sum() >= CENTRE_MIN:
            e[rows] = embedding[rows] - embedding[rows].mean(axis=0, keepdims=True)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def quotas(sizes: dict[str, int], total: int, balance: str) -> dict[str, int]:
    """How many each group selects: `total` split in proportion to the sizes, or equally (water-filling)."""
    if balance == "proportional":  # largest remainders, so the quotas add up to `total`
        shares = {g: total * n / max(sum(sizes.values()), 1) for g, n in sizes.items()}
        out = {g: int(v) for g, v in shares.items()}
        for g in sorted(shares, key=lambda g: out[g] - shares[g])[:total - sum(out.values())]:
            out[g] += 1
        return out
    out, left, open_groups = {}, total, dict(sizes)
    while open_groups and left > 0:
        share = left / len(open_groups)
        small = {g: n for g, n in open_groups.items() if n <= share}
        if not small:
            for i, g in enumerate(sorted(open_groups)):
                out[g] = int(share) + (i < left - int(share) * len(open_groups))
            return out | {g: 0 for g in sizes if g not in out}
        for g, n in small.items():
            out[g], left = n, left - n
            del open_groups[g]
    return out | {g: 0 for g in sizes if g not in out}


@dataclasses.dataclass
class Selection:
    selected: np.ndarray       # bool [n]
    rank_score: np.ndarray     # [n] higher is better
    duplicate_of: np.ndarray   # [n] index of the kept example it duplicates, -1 if none
    max_similarity: np.ndarray  # [n]
    group: list[str]
    quota: dict[str, int]


def group_of(language: str | None, domain: str | None, cfg: SelectConfig) -> str:
    parts = ([language or UNKNOWN] if cfg.per_language else ["all"]) + ([domain or UNKNOWN] if cfg.per_domain else [])
    return "/".join(parts)


def select(scores: Scores, languages: Sequence[str | None], domains: Sequence[str | None], cfg: SelectConfig
           ) -> Selection:
    n = len(languages)
    groups = [group_of(lang, dom, cfg) for lang, dom in zip(languages, domains)]
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    metrics = {"perplexity": scores.nll} | ({"reward": scores.reward} if scores.reward is not None else {})
    rank = np.zeros(n)
    for idx in members.values():
        idx = np.asarray(idx)
        for name, values in metrics.items():
            rank[idx] += cfg.weights.get(name, 0.0) * percentile_ranks(values[idx])
    # diversity within each language (whatever the quota groups), best-ranked first
    dup_of, max_sim = np.full(n, -1), np.full(n, -np.inf)
    by_language: dict[str, list[int]] = defaultdict(list)
    for i, lang in enumerate(languages):
        by_language[lang or UNKNOWN].append(i)
    unit = unit_embeddings(scores.embedding, [lang or UNKNOWN for lang in languages])
    for idx in by_language.values():
        idx = np.asarray(idx)
        d, sim = near_duplicates(unit, idx[np.argsort(-rank[idx], kind="stable")], cfg.similarity_threshold)
        dup_of[idx], max_sim[idx] = d[idx], sim[idx]
    quota = quotas({g: len(idx) for g, idx in members.items()}, round(cfg.keep * n), cfg.balance)
    selected = np.zeros(n, bool)
    for g, idx in members.items():
        candidates = [i for i in sorted(idx, key=lambda i: -rank[i]) if dup_of[i] < 0]
        selected[candidates[:quota[g]]] = True
    return Selection(selected, rank, dup_of, max_sim, groups, quota)


def score_all(model: Qwen2, examples: Sequence[TokenizedConversation], mesh: Mesh, cfg: SelectConfig, *,
              system: str | None, reward_model=None,
              embed: Callable[[Sequence[TokenizedConversation]], np.ndarray] | None = None,
              progress: bool = True) -> Scores:
    """Every metric of every example: the policy's pass, the reward model's, and `embed` if given (else the
    policy's mean-pooled hidden states)."""
    scores = score_policy(model, examples, mesh, system=system, batch_size=cfg.batch_size, progress=progress)
    if embed is not None:
        scores.embedding = np.asarray(embed(examples), np.float32)
    if reward_model is not None:
        from sailor2_jax.model.reward import score_sequences
        scores.reward = score_sequences(reward_model, [e.ids for e in examples], mesh, batch_size=cfg.batch_size,
                                        progress=progress)
    return scores

