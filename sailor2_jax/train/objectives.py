"""Training objectives on one shared core (model/logprobs.py: fp32 token log-probs), then either masked NLL or a
DPO-family loss.

Every objective returns a *sum* over the batch plus the normaliser of the full batch (tokens for the LM loss, pairs
for preference losses). The step divides by the full-batch normaliser, so gradient accumulation over micro-batches
is the same sum as one big batch.

Batch contract (numpy on host, global arrays on device):
- LM (pre-training, SFT): `tokens`, `targets` (next token), `loss_mask` (1 on real targets; SFT: assistant tokens
  only), `segment_ids` (0 = padding), `positions`, all [B, T]; optional `languages` [B, T] (index into LANGUAGES).
  Unpacked rows (one document per row from position 0) may leave out `segment_ids` and `positions`.
- preference: the same five keys prefixed `chosen_` and `rejected_`, [B, T] each (B pairs; the loss masks cover the
  response tokens only), optional `ref_chosen_logps`/`ref_rejected_logps` [B] (sum over response tokens; read
  when objective.reference is `precompute` (the loop adds them, train/reference.py) or `cache` (the source does)).

Preference formulas follow Oat (recipe.md §6.2); log π(y) is the *sum* of response-token log-probs (`dpo`) or its
mean (`ln_dpo`, `simpo`).

`reward` trains a reward model (model/reward.py `Qwen2Reward`) on the same preference batches: Bradley-Terry,
−log σ(r(x, y_w) − r(x, y_l)), each side scored at its conversation's last token as `Qwen2ForSequenceClassification`
scores it (so a trained model scores the same after export and in `transformers`).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from sailor2_jax.languages import LANGUAGES
from sailor2_jax.model.logprobs import token_logprobs
from sailor2_jax.model.qwen2 import Qwen2
from sailor2_jax.train.config import ObjectiveConfig

Batch = Mapping[str, jax.Array]
LM_KEYS = ("tokens", "targets", "loss_mask", "segment_ids", "positions")


def _lm_logprobs(model: Qwen2, batch: Batch, prefix: str, chunk: int) -> jax.Array:
    # A batch without segment ids/positions promises one document per row from position 0 (unpacked): the model
    # may then use a plain causal kernel.
    return token_logprobs(model, batch[prefix + "tokens"], batch[prefix + "targets"],
                          segment_ids_BT=batch.get(prefix + "segment_ids"),
                          positions_BT=batch.get(prefix + "positions"), chunk=chunk)


# --- LM: pre-training and SFT ------------------------------------------------------------------------------------

def lm_weight(batch: Batch) -> jax.Array:
    """Normaliser of the token-averaged loss: the number of target tokens in the whole batch."""
    return jnp.sum(batch["loss_mask"].astype(jnp.float32))


def lm_loss(model: Qwen2, batch: Batch, cfg: ObjectiveConfig, ref_model: Qwen2 | None = None
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Sum of masked NLL over the batch, with per-language sums when `languages` is present."""
    del ref_model
    mask_BT = batch["loss_mask"].astype(jnp.float32)
    nll_BT = -_lm_logprobs(model, batch, "", cfg.logits_chunk) * mask_BT
    sums = {"nll": jnp.sum(nll_BT), "tokens": jnp.sum(mask_BT)}
    if "languages" in batch:
        onehot_BTl = jax.nn.one_hot(batch["languages"], len(LANGUAGES), dtype=jnp.float32)
        sums["lang_nll"] = jnp.einsum("bt,btl->l", nll_BT, onehot_BTl)
        sums["lang_tokens"] = jnp.einsum("bt,btl->l", mask_BT, onehot_BTl)
    return sums["nll"], sums


def lm_metrics(sums: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    out = {"loss": sums["nll"] / jnp.maximum(sums["tokens"], 1.0), "loss_tokens": sums["tokens"]}
    if "lang_nll" in sums:
        # NaN marks a language absent from this batch; the logger drops it.
        out["lang_loss"] = jnp.where(sums["lang_tokens"] > 0, sums["lang_nll"] / jnp.maximum(sums["lang_tokens"], 1),
                                     jnp.nan)
    return out


# --- preference: DPO, LN-DPO, SimPO (+ length regularisation, DPOP, SFT term) -------------------------------------

def preference_weight(batch: Batch) -> jax.Array:
    """Normaliser of the pair-averaged loss: the number of pairs."""
    return jnp.asarray(batch["chosen_tokens"].shape[0], jnp.float32)


def sequence_logps(model: Qwen2, batch: Batch, chunk: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Summed response log-probs and response lengths of chosen and rejected, in one forward pass ([2B, T])."""
    both = {k: jnp.concatenate([batch["chosen_" + k], batch["rejected_" + k]]) for k in LM_KEYS
            if "chosen_" + k in batch}
    mask_bT = both["loss_mask"].astype(jnp.float32)
    logp_b = jnp.sum(_lm_logprobs(model, both, "", chunk) * mask_bT, axis=-1)
    len_b = jnp.sum(mask_bT, axis=-1)
    B = batch["chosen_tokens"].shape[0]
    return logp_b[:B], logp_b[B:], len_b[:B], len_b[B:]


def preference_losses(cfg: ObjectiveConfig, pi_w_B: jax.Array, pi_l_B: jax.Array, ref_w_B: jax.Array | None,
                      ref_l_B: jax.Array | None, len_w_B: jax.Array, len_l_B: jax.Array
                      ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Per-pair losses [B] and implicit rewards from *summed* log-probs (Oat's DPOLoss / SimPOLoss)."""
    beta = cfg.beta
    if cfg.kind in ("ln_dpo", "simpo"):  # Oat's average_log_prob=True, for policy and reference alike
        pi_w_B, pi_l_B = pi_w_B / jnp.maximum(len_w_B, 1), pi_l_B / jnp.maximum(len_l_B, 1)
        if ref_w_B is not None:
            ref_w_B, ref_l_B = ref_w_B / jnp.maximum(len_w_B, 1), ref_l_B / jnp.maximum(len_l_B, 1)
    if cfg.kind == "simpo":
        z_B = (pi_w_B - pi_l_B) - cfg.gamma_beta_ratio
        reward_w_B, reward_l_B = beta * pi_w_B, beta * pi_l_B
    else:
        z_B = (pi_w_B - pi_l_B) - (ref_w_B - ref_l_B)
        if cfg.len_reg_alpha > 0:  # arXiv 2403.19159, Eq. 9, as in Oat
            z_B = z_B + cfg.len_reg_alpha / beta * (len_w_B - len_l_B)
        if cfg.dpop_lambda > 0:  # DPO-Positive: penalise the chosen log-prob falling below the reference's
            z_B = z_B - cfg.dpop_lambda * jax.nn.relu(ref_w_B - pi_w_B)
        reward_w_B, reward_l_B = beta * (pi_w_B - ref_w_B), beta * (pi_l_B - ref_l_B)
    eps = cfg.label_smoothing
    loss_B = -jax.nn.log_sigmoid(beta * z_B) * (1 - eps) - jax.nn.log_sigmoid(-beta * z_B) * eps
    reward_w_B, reward_l_B = jax.lax.stop_gradient(reward_w_B), jax.lax.stop_gradient(reward_l_B)
    return loss_B, {"chosen_reward": reward_w_B, "rejected_reward": reward_l_B}


def preference_loss(model: Qwen2, batch: Batch, cfg: ObjectiveConfig, ref_model: Qwen2 | None = None
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
    pi_w_B, pi_l_B, len_w_B, len_l_B = sequence_logps(model, batch, cfg.logits_chunk)
    if cfg.kind == "simpo":
        ref_w_B = ref_l_B = None
    elif cfg.reference != "model":  # precomputed, by the loop (`precompute`) or by the data source (`cache`)
        ref_w_B, ref_l_B = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
    else:
        ref_w_B, ref_l_B, _, _ = jax.lax.stop_gradient(sequence_logps(ref_model, batch, cfg.logits_chunk))
    loss_B, rewards = preference_losses(cfg, pi_w_B, pi_l_B, ref_w_B, ref_l_B, len_w_B, len_l_B)
    if cfg.sft_coef > 0:
        loss_B = loss_B + cfg.sft_coef * (-pi_w_B / jnp.maximum(len_w_B, 1))
    margin_B = rewards["chosen_reward"] - rewards["rejected_reward"]
    sums = {"loss": jnp.sum(loss_B), "pairs": jnp.asarray(loss_B.shape[0], jnp.float32),
            "chosen_reward": jnp.sum(rewards["chosen_reward"]), "rejected_reward": jnp.sum(rewards["rejected_reward"]),
            "reward_margin": jnp.sum(margin_B), "reward_accuracy": jnp.sum((margin_B > 0).astype(jnp.float32)),
            "chosen_logp": jnp.sum(pi_w_B), "rejected_logp": jnp.sum(pi_l_B),
            "tokens": jnp.sum(len_w_B + len_l_B)}
    return sums["loss"], sums


def preference_metrics(sums: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    n = jnp.maximum(sums["pairs"], 1.0)
    return {k: sums[k] / n for k in ("loss", "chosen_reward", "rejected_reward", "reward_margin", "reward_accuracy",
                                     "chosen_logp", "rejected_logp")} | {"loss_tokens": sums["tokens"]}


# --- reward model: Bradley-Terry on preference pairs -----------------------------------------------------------

def conversation_tokens(batch: Batch, prefix: str, pad_id: int) -> jax.Array:
    """The whole conversations of one side, [B, T + 1], right-padded with `pad_id`: the rows hold inputs
    (`tokens`, ids[:-1]) and next-token `targets` (ids[1:]), so ids = tokens[:, :1] ++ targets. The reward is read at
    the last id, which the inputs alone leave out."""
    real_BT = batch[prefix + "segment_ids"] > 0 if prefix + "segment_ids" in batch else batch[prefix + "loss_mask"] > 0
    ids_BT1 = jnp.concatenate([batch[prefix + "tokens"][:, :1], batch[prefix + "targets"]], axis=1)
    real_BT1 = jnp.concatenate([real_BT[:, :1], real_BT], axis=1)
    return jnp.where(real_BT1, ids_BT1, pad_id)


def reward_loss(model, batch: Batch, cfg: ObjectiveConfig, ref_model=None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Sum over pairs of −log σ(r_w − r_l); chosen and rejected scored in one forward pass ([2B, T + 1])."""
    from sailor2_jax.model.reward import rewards

    del ref_model
    both = jnp.concatenate([conversation_tokens(batch, "chosen_", model.pad_id),
                            conversation_tokens(batch, "rejected_", model.pad_id)])
    r_b = rewards(model, both)
    B = batch["chosen_tokens"].shape[0]
    r_w_B, r_l_B = r_b[:B], r_b[B:]
    margin_B = r_w_B - r_l_B
    loss_B = -jax.nn.log_sigmoid(margin_B)
    sums = {"loss": jnp.sum(loss_B), "pairs": jnp.asarray(B, jnp.float32),
            "chosen_score": jnp.sum(r_w_B), "rejected_score": jnp.sum(r_l_B), "score_margin": jnp.sum(margin_B),
            "accuracy": jnp.sum((margin_B > 0).astype(jnp.float32)),
            "tokens": jnp.sum((both != model.pad_id).astype(jnp.float32))}
    return sums["loss"], sums


def reward_metrics(sums: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    n = jnp.maximum(sums["pairs"], 1.0)
    return {k: sums[k] / n for k in ("loss", "chosen_score", "rejected_score", "score_margin", "accuracy")
            } | {"loss_tokens": sums["tokens"]}


# --- dispatch ----------------------------------------------------------------------------------------------------

class Objective:
    """The three functions the step needs, chosen once from the config."""

    def __init__(self, cfg: ObjectiveConfig):
        self.cfg = cfg
        if cfg.kind == "reward":
            self.weight, self._loss, self.metrics = preference_weight, reward_loss, reward_metrics
        elif cfg.is_preference:
            self.weight, self._loss, self.metrics = preference_weight, preference_loss, preference_metrics
        else:
            self.weight, self._loss, self.metrics = lm_weight, lm_loss, lm_metrics

    @property
    def reference(self) -> str | None:
        """Where reference log-probs come from: `model`, `precompute`, `cache`, or None (no reference needed)."""
        return self.cfg.reference if self.cfg.is_preference and self.cfg.kind not in ("simpo", "reward") else None

    def loss(self, model: Qwen2, batch: Batch, ref_model: Qwen2 | None) -> tuple[jax.Array, dict[str, jax.Array]]:
        return self._loss(model, batch, self.cfg, ref_model)
