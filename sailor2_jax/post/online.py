"""Online preference tuning (what Oat does with a vLLM sampler and a separate learner), in one process on one mesh:
a batch source whose pairs are sampled from the live policy (`data.source: online`, the `online` config section).

Round r: the next `prompts_per_round` prompts (an endless stream, reshuffled every epoch) → `samples` responses each
from the policy as it is now (the generation engine, one shared prefill per prompt, seed `data.seed + r`) → reward
scores → language verdicts → pairs (post/onpolicy.py `make_pairs`, the rules of the `onpolicy` command) → the
round's `steps_per_round` DPO batches, drawn from the round's pairs (reshuffled, cycled when there are fewer pairs
than rows). A generation that yields no pair is counted and the next prompts are tried.

Why a batch source and not a second loop: the training loop already owns checkpoints, preemption, the NaN guard,
metrics and the step family; all this mode adds is where batches come from. The loop hands the source its live
parameters before each batch (`set_policy`, train/batches.py), so the sampler reads the very arrays the step
updates — no export, no weight sync, no second copy (the generator's compiled programs are reused each round; the
frozen DPO reference is the loop's own, `objective.reference: model`).

Checkpoints and resume: the iterator state (saved with every checkpoint, as any source's) holds the round counters,
the position in the current round and the round's pairs themselves (text and scores: a few hundred kB at most), so
a run killed mid-round resumes with the same pairs and the same batches, and the next round samples from the
restored parameters with the same seed — bitwise the uninterrupted run on CPU (tested with SIGKILL).
"""

from __future__ import annotations

import collections
from typing import Any

import grain
import jax
import numpy as np
from tqdm import tqdm

from sailor2_jax.config import resolve_path
from sailor2_jax.data.config import Batching
from sailor2_jax.data.loader import EpochShuffle
from sailor2_jax.tokenizer import EOS_ID
from sailor2_jax.post import onpolicy
from sailor2_jax.post.preference_data import SIDES, encode_pairs
from sailor2_jax.post.conversation_files import Accounting, PreferencePair, Source
from sailor2_jax.post.sft_data import system_prompt

MAX_EMPTY_ROUNDS = 8  # generations in a row without a pair before the run stops (the policy or the data is broken)


def _say(message: str) -> None:
    if jax.process_index() == 0:
        tqdm.write(message)


class OnlinePairs:
    """This process's rows of DPO batches sampled from the live policy (module docstring)."""

    def __init__(self, cfg, batching: Batching, *, process_index: int | None = None,
                 process_count: int | None = None):
        """`cfg`: the run's TrainConfig (its `online`, `data` and `mesh` sections)."""
        from sailor2_jax.tokenizer import load_tokenizer
        from sailor2_jax.post.reward import load_reward_model
        from sailor2_jax.post.verifier import LanguageVerifier
        from sailor2_jax.sharding import make_mesh

        online = cfg.online
        self.online, self.data, self.batching = online, cfg.data, batching
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if batching.batch_size % self.process_count:
            raise ValueError(f"batch size {batching.batch_size} is not divisible by {self.process_count} processes")
        read = collections.Counter()
        self.prompts = [p for f in online.prompts for p in onpolicy.read_prompts(resolve_path(f), read, log=_say)]
        if not self.prompts:
            raise ValueError(f"online.prompts: no usable prompt in {online.prompts} ({read['malformed']} malformed)")
        self.order = EpochShuffle(grain.MapDataset.source(list(range(len(self.prompts)))), batching.seed)
        self.system = system_prompt(cfg.data.system_prompt)
        self.generation = 0              # generations so far (a round is a generation that gave pairs)
        self.round = 0
        self.step_in_round = 0
        self.records: list[dict[str, Any]] = []   # the current round's pairs, as the onpolicy command writes them
        self.encoded = []
        self.counts: collections.Counter = collections.Counter({"prompts_malformed": read["malformed"]})
        self.policy, self.generator = None, None
        # loaded here, before the loop enters its mesh context (where flax cannot build abstract models with
        # logical axis names); on the run's mesh (an equal Mesh object), sharded like the policy
        self.tokenizer = load_tokenizer()
        self.reward = load_reward_model(online.reward_model, online.reward_backend,
                                        batch_size=online.reward_batch_size, mesh=make_mesh(cfg.mesh),
                                        progress=False)
        self.verifier = LanguageVerifier() if online.language_check else None

    # --- the loop's side ---------------------------------------------------------------------------------------
    def set_policy(self, graphdef, params, mesh) -> None:
        """The live parameters (read when a round starts; the loop calls this before every batch)."""
        self.policy = (graphdef, params, mesh)

    def __iter__(self) -> OnlinePairs:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if not self.encoded or self.step_in_round >= self.online.steps_per_round:
            self._new_round()
        batch = self._batch(self.step_in_round)
        self.step_in_round += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        return {"source": "online", "seed": self.batching.seed, "prompts": len(self.prompts),
                "generation": self.generation, "round": self.round, "step_in_round": self.step_in_round,
                "pairs": self.records, "counts": dict(self.counts)}

    def set_state(self, state: dict[str, Any]) -> None:
        if (state.get("source"), state.get("seed"), state.get("prompts")) != ("online", self.batching.seed,
                                                                                len(self.prompts)):
            raise ValueError(f"the data-iterator state is not this online source's (saved: source "
                             f"{state.get('source')}, seed {state.get('seed')}, {state.get('prompts')} prompts)")
        self.generation, self.round = int(state["generation"]), int(state["round"])
        self.step_in_round = int(state["step_in_round"])
        self.records, self.counts = list(state["pairs"]), collections.Counter(state["counts"])
        self.encoded = self._encode(self.records) if self.records else []

    # --- rounds ------------------------------------------------------------------------------------------------
    def _generator(self):
        """The generator over the live parameters: built once, its parameters swapped each round."""
        if self.policy is None:
            raise RuntimeError("OnlinePairs needs the policy: the training loop calls set_policy before each batch")
        graphdef, params, mesh = self.policy
        if self.generator is None:
            from flax import nnx

            from sailor2_jax.generate.engine import Generator
            self.generator = Generator(nnx.merge(graphdef, params), mesh)
        else:
            self.generator.set_params(params)
        return self.generator

    def _new_round(self) -> None:
        from sailor2_jax.tokenizer import DEFAULT_EOS_IDS
        from sailor2_jax.generate.sampling import SamplingConfig

        cfg = self.online
        generator = self._generator()
        sampling = SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p)
        for _ in range(MAX_EMPTY_ROUNDS):
            start = self.generation * cfg.prompts_per_round
            prompts = [self.prompts[self.order[start + i]] for i in range(cfg.prompts_per_round)]
            sample = onpolicy.generator_sampler(generator, self.tokenizer, sampling=sampling,
                                                max_new_tokens=cfg.max_new_tokens, seed=self.batching.seed +
                                                self.generation, eos_ids=DEFAULT_EOS_IDS,
                                                batch_size=cfg.generation_batch_size)
            responses = sample(onpolicy.encode_prompts(prompts, self.tokenizer, self.system), cfg.samples)
            counts = collections.Counter()
            records = onpolicy.make_pairs(prompts, responses, self.reward, self.verifier, counts)
            self.generation += 1
            self.counts.update({k: v for k, v in counts.items() if k != "read"})
            encoded = self._encode(records) if records else []
            if encoded:
                break
            self.counts["empty_generations"] += 1
            _say(f"online: generation {self.generation} gave no pair ({dict(counts)}); sampling the next prompts")
        else:
            raise RuntimeError(f"online: {MAX_EMPTY_ROUNDS} generations in a row gave no preference pair "
                               f"(counts so far: {dict(self.counts)})")
        self.round += 1
        self.step_in_round = 0
        self.records, self.encoded = records, encoded
        scores = np.asarray([r["all_scores"] for r in records])
        _say(f"online round {self.round}: {len(records)} pairs from {cfg.prompts_per_round} prompts × "
             f"{cfg.samples} samples ({counts['rejected_for_language']} wrong-language rejected; no pair: "
             f"{counts['no_consistent_response']} without a consistent sample, {counts['all_scores_equal']} ties); "
             f"mean reward {scores.mean():.3f}")

    def _encode(self, records: list[dict[str, Any]]) -> list:
        pairs = []
        for i, r in enumerate(records):
            prompt = ([{"role": "user", "content": r["prompt"]}] if isinstance(r["prompt"], str) else r["prompt"])
            pairs.append(PreferencePair(prompt, [{"role": "assistant", "content": r["chosen"]}],
                                        [{"role": "assistant", "content": r["rejected"]}], r.get("language"),
                                        Source(f"online round {self.round}", i + 1)))
        acc = Accounting(read=len(pairs))
        encoded = encode_pairs(pairs, self.batching.seq_len + 1, overlong=self.data.overlong, system=self.system,
                               acc=acc, progress=False)
        for reason, n in acc.rejected.items():
            self.counts[f"pairs_{reason}"] += n
        return encoded

    def _batch(self, j: int) -> dict[str, np.ndarray]:
        """Batch j of the round: positions [jB, (j+1)B) of the round's pairs in a per-round order, cycled."""
        B, T = self.batching.batch_size, self.batching.seq_len
        n = B // self.process_count
        order = np.random.default_rng([self.batching.seed, self.round]).permutation(len(self.encoded))
        rows = [self.encoded[order[(j * B + self.process_index * n + r) % len(order)]] for r in range(n)]
        out = {}
        for side in SIDES:
            sides = [p.row(side, T, EOS_ID) for p in rows]
            out |= {f"{side}_{k}": np.stack([s[k] for s in sides]) for k in sides[0]}
        return out
