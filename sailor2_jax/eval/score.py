"""Log-likelihood scoring on our model, with lm-eval's request semantics: one jitted, sharded program per (rows,
length, window) bucket over the shared fp32 log-prob core (model/logprobs.py `hidden_logprobs`).

A scored row is `(ids, n)`: the model reads ids[:-1] and the row's score is the sum of log p(ids[t] | ids[<t]) over
its last n tokens, plus whether each of them is the most likely token (lm-eval's `is_greedy`). Rows are right-padded
to a power-of-two length (padding comes after every real token, so a causal model's scores do not see it), sorted
longest first, and split over the data-parallel devices. The LM head runs only over a window of each row's last
positions, as wide as the batch's longest scored part (a power of two): a multiple-choice row scores a few
continuation tokens after a long context, and at V = 151,936 the head is most of a small model's work.

- `pair_row`: a (context, continuation) request as lm-eval's `loglikelihood` encodes it (trailing whitespace of the
  context moved to the continuation, the continuation's ids taken from the tokenization of the joined string, the
  prefix token as context when the context is empty, the left end cut to the model's length).
- `rolling_rows`: a whole document as lm-eval's `loglikelihood_rolling` (disjoint windows of `max_length` predicted
  tokens, each seeing up to `max_length` tokens before it; the first token conditioned on the prefix token).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding

from sailor2_jax.compiled import shared_jit
from sailor2_jax.generate.engine import Generator, batch_bucket, kept, length_bucket
from sailor2_jax.sharding import logical_to_spec
from sailor2_jax.model.logprobs import hidden_logprobs

Row = tuple[list[int], int]


def encode_pair(encode: Callable[[str], list[int]], context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval's TemplateLM._encode_pair."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = encode(context + continuation)
    context_ids = encode(context)
    return context_ids, whole[len(context_ids):]


def pair_row(context_ids: list[int], continuation_ids: list[int], max_length: int, prefix_id: int) -> Row:
    ids = ((context_ids or [prefix_id]) + continuation_ids)[-(max_length + 1):]
    return ids, min(len(continuation_ids), len(ids) - 1)


def rolling_rows(ids: list[int], max_length: int, prefix_id: int) -> list[Row]:
    """The windows that score every token of a document once."""
    if not ids:
        return []
    first = min(max_length, len(ids))
    rows = [([prefix_id] + ids[:first], first)]
    done = first
    while done < len(ids):
        n = min(len(ids) - done, max_length)
        end = done + n
        rows.append((ids[end - max_length - 1:end], n))
        done = end
    return rows


class Scorer:
    """Scores rows on the model and mesh of a `Generator` (the same weights, no second copy)."""

    # The LM head takes `logits_chunk` window positions at a time (and the vocabulary a block at a time,
    # model/logprobs.py); 64 was the fastest on the demo's 8-device CPU mesh (docs/performance.md, "Evaluation scoring")
    def __init__(self, generator: Generator, *, batch_size: int = 16, logits_chunk: int = 64):
        self.generator, self.mesh, self.batch_size, self.chunk = generator, generator.mesh, batch_size, logits_chunk

    @kept()
    def program(self, rows: int, length: int, window: int) -> Callable:
        graphdef, chunk = self.generator.graphdef, self.chunk

        def score(params, tokens_BT, start_B, targets_BW, mask_BW):
            model = nnx.merge(graphdef, params)
            x_BTD = model.hidden(tokens_BT, positions_BT=None, segment_ids_BT=None)
            index_BW = start_B[:, None] + jnp.arange(window, dtype=jnp.int32)  # each row's window of positions
            x_BWD = jnp.take_along_axis(x_BTD, index_BW[..., None], axis=1)
            logp_BW, greedy_BW = hidden_logprobs(model, x_BWD, targets_BW, chunk, with_greedy=True)
            return jnp.sum(jnp.where(mask_BW, logp_BW, 0.0), axis=-1), jnp.all(greedy_BW | ~mask_BW, axis=-1)

        rows_T = NamedSharding(self.mesh, logical_to_spec(("batch", None)))
        rows_ = NamedSharding(self.mesh, logical_to_spec(("batch",)))
        return shared_jit(score, self.mesh, out_shardings=(rows_, rows_),
                          in_shardings=(self.generator.param_shardings, rows_T, rows_, rows_T, rows_T))

    def score(self, rows: Sequence[Row], on_rows: Callable[[int], None] | None = None) -> list[tuple[float, bool]]:
        """(sum of log-probs, all greedy) per row, in the given order; `on_rows(k)` reports k more rows done."""
        for i, (ids, n) in enumerate(rows):
            if not 1 <= n < len(ids):
                raise ValueError(f"row {i}: {len(ids)} ids cannot score their last {n}")
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(rows)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            B = batch_bucket(len(chunk), self.batch_size, self.generator.data_parallel)
            T = length_bucket(len(rows[chunk[0]][0]) - 1)
            W = min(length_bucket(max(rows[i][1] for i in chunk)), T)  # the window the LM head scores
            tokens, start = np.zeros((B, T), np.int32), np.zeros(B, np.int32)
            targets, mask = np.zeros((B, W), np.int32), np.zeros((B, W), bool)
            for b, i in enumerate(chunk):
                ids, n = rows[i]
                L = len(ids) - 1  # the row reads ids[:-1] and predicts ids[1:]; it scores positions L - n .. L - 1
                tokens[b, :L] = ids[:-1]
                s = max(L - W, 0)  # the window's first position
                start[b] = s
                targets[b, :L - s] = ids[s + 1:]
                mask[b, L - n - s:L - s] = True
            with jax.set_mesh(self.mesh):
                logp, greedy = self.program(B, T, W)(self.generator.params, tokens, start, targets, mask)
            logp, greedy = np.asarray(jax.device_get(logp)), np.asarray(jax.device_get(greedy))
            for b, i in enumerate(chunk):
                out[i] = (float(logp[b]), bool(greedy[b]))
            if on_rows:
                on_rows(len(chunk))
        return out
